"""deploy/remote-access.yaml against a real API server: what the remote reader may do.

Scope: the reader ServiceAccount that the manifest creates, authenticated by a
real token from the TokenRequest API (not the admin, whom RBAC never
denies), may list and watch, cluster-wide, every kind that remote discovery
reads, and is refused everything else we tried: reading Secrets, Nodes, or a
single object by name, and writes. Each case is one HTTP request to the
session `west` cluster and the status it gets. The client is built by the
server's own link-Secret loader and transport (discovery/kubeconfig.py,
discovery/transport.py), so the kubeconfig
that tests/kube/credentials.py writes is one the server accepts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml

from discovery.connection import REMOTE_KINDS
from discovery.models import Kind
from discovery.reflector import LIST_PATHS
from discovery.transport import ApiTransport, remote_transport_from_kubeconfig
from tests.kube.credentials import (
    REMOTE_ACCESS_MANIFEST,
    apply_remote_access,
    service_account_kubeconfig,
    service_account_user,
)
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

# (method, path, body): requests the reader must be refused with 403.
FORBIDDEN: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "get-secret": ("GET", "/api/v1/namespaces/kube-system/secrets/anything", None),
    "list-secrets": ("GET", "/api/v1/secrets", None),
    "list-nodes": ("GET", "/api/v1/nodes", None),
    "get-pod-by-name": ("GET", "/api/v1/namespaces/default/pods/anything", None),
    "create-service": (
        "POST",
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "intruder"},
            "spec": {"ports": [{"port": 80}]},
        },
    ),
    # Names that do not exist: authorization comes first, and should it ever
    # let a write through, nothing that other tests rely on is touched.
    "delete-endpointslice": (
        "DELETE",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/anything",
        None,
    ),
    "delete-pod": ("DELETE", "/api/v1/namespaces/default/pods/anything", None),
}


@pytest.fixture(scope="module")
async def reader(west: Kube) -> AsyncIterator[tuple[ApiTransport, str]]:
    """An API client of `west` as the remote reader, and that reader's user name."""
    namespace, account = await asyncio.to_thread(apply_remote_access, west.cluster)
    kubeconfig = await asyncio.to_thread(
        service_account_kubeconfig, west.cluster, namespace=namespace, service_account=account
    )
    api = await remote_transport_from_kubeconfig(kubeconfig.encode())
    assert api.server == west.cluster.server
    try:
        yield api, service_account_user(namespace, account)
    finally:
        await api.close()


async def send(
    api: ApiTransport,
    method: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """One request with the client's credentials; its status and body."""
    response = await api.request(
        method,
        path,
        query=query or [],
        headers={"Accept": "application/json"},
        json_body=body,
        client_timeout=aiohttp.ClientTimeout(total=30),
    )
    async with response:
        # A watch that was allowed streams until its timeout: its status is enough.
        text = "" if query and response.status == 200 else await response.text()
        return int(response.status), text


@pytest.mark.parametrize("kind", REMOTE_KINDS, ids=lambda kind: kind.value)
async def test_the_reader_lists_and_watches_what_remote_discovery_reads(
    reader: tuple[ApiTransport, str], kind: Kind
) -> None:
    api, _ = reader
    path = LIST_PATHS[kind]
    status, body = await send(api, "GET", path, query=[("limit", 1)])
    assert status == 200, body
    status, body = await send(api, "GET", path, query=[("watch", "true"), ("timeoutSeconds", 1)])
    assert status == 200, body


@pytest.mark.parametrize(("method", "path", "body"), FORBIDDEN.values(), ids=FORBIDDEN.keys())
async def test_the_reader_is_refused_everything_else(
    reader: tuple[ApiTransport, str], method: str, path: str, body: dict[str, Any] | None
) -> None:
    api, user = reader
    status, text = await send(api, method, path, body=body)
    assert status == 403, text
    # Refused as the reader: the token was accepted (a bad one would be 401) and
    # RBAC said no, rather than the request failing for some other reason.
    message = json.loads(text)["message"]
    assert f'User "{user}" cannot' in message, message


def test_the_cluster_role_grants_list_and_watch_on_three_kinds_only() -> None:
    """The whole grant, read from the file: no rule can hide from the sampled requests above."""
    documents = [d for d in yaml.safe_load_all(REMOTE_ACCESS_MANIFEST.read_text()) if d]
    (role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        (group, resource, verb)
        for group, resource in (
            ("", "services"),
            ("", "pods"),
            ("discovery.k8s.io", "endpointslices"),
        )
        for verb in ("list", "watch")
    }
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"]), (
        "no resourceNames or nonResourceURLs"
    )
