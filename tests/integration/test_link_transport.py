"""A link's client against a real API server, in a process that cannot write a file.

Scope: the client the server builds for a link Secret (discovery/transport.py)
lists Services of the session `west` cluster over https with the cluster's
inline CA, both as the remote-access reader (bearer token) and with a client
certificate and key (the admin identity of the test PKI), in a child process
where every filesystem write fails with EROFS and TMPDIR does not exist, as in
the shipped Deployment (read-only root filesystem, no writable /tmp). The
child's audit hook records each write it refused: there must be none. The
sockets it used carry TCP keepalive and a user timeout.

A client library that writes inline certificates to temp files (as
kubernetes-asyncio's kubeconfig loader does) fails here.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from discovery import transport
from tests import audited_client
from tests.integration.links import reader_kubeconfig
from tests.kube.binaries import REPO_ROOT
from tests.kube.cluster import kubeconfig_text
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration


def client_certificate_kubeconfig(west: Kube) -> str:
    pki = west.cluster.pki
    assert pki is not None
    return kubeconfig_text(
        cluster=west.cluster.name,
        server=west.cluster.server,
        ca=pki.ca.cert,
        user="admin",
        credentials={
            "client-certificate-data": base64.b64encode(pki.admin.cert_pem()).decode(),
            "client-key-data": base64.b64encode(pki.admin.key_pem()).decode(),
        },
    )


@pytest.fixture(scope="module")
async def reports(west: Kube) -> dict[str, dict[str, Any]]:
    kubeconfigs = {
        "token": await reader_kubeconfig(west.cluster),
        "client-certificate": client_certificate_kubeconfig(west),
    }
    job = {
        "cases": [
            {"kubeconfig": base64.b64encode(text.encode()).decode()}
            for text in kubeconfigs.values()
        ],
        "request": {"path": "/api/v1/namespaces/default/services"},
        "deny_writes": True,
    }
    results = await asyncio.to_thread(audited_client.run, job, cwd=REPO_ROOT)
    return dict(zip(kubeconfigs, results, strict=True))


@pytest.mark.parametrize("user", ["token", "client-certificate"])
def test_a_link_client_lists_services_without_writing_a_file(
    reports: dict[str, dict[str, Any]], user: str
) -> None:
    report = reports[user]
    assert report["writes"] == [], "the client tried to write to the filesystem"
    assert report["error"] is None, report["error"]
    assert report["status"] == 200
    assert "kubernetes" in report["names"]
    assert report["processes"] == []


def test_the_link_client_sockets_notice_a_vanished_peer(
    reports: dict[str, dict[str, Any]],
) -> None:
    options = reports["token"]["socket_options"]
    assert options == {
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": transport.KEEPALIVE_IDLE_S,
        "TCP_KEEPINTVL": transport.KEEPALIVE_INTERVAL_S,
        "TCP_KEEPCNT": transport.KEEPALIVE_PROBES,
        "TCP_USER_TIMEOUT": transport.USER_TIMEOUT_MS,
    }
