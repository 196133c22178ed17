"""The manifests in deploy/ against a real API server, and the server under their RBAC.

Scope: `deploy/destination.yaml` applies cleanly; a `destination serve` that
authenticates as its ServiceAccount (a real token from the TokenRequest API)
syncs every watch and streams Get, so a permission missing from the
ClusterRole fails here; and the role grants nothing beyond reading.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.destination_client import open_stream, running_server, values
from tests.kube.binaries import REPO_ROOT
from tests.kube.cluster import write_kubeconfig
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

NAMESPACE = "multicluster-destination"
SUBJECT = f"system:serviceaccount:{NAMESPACE}:destination"


def service_account_kubeconfig(kube: Kube, directory: Path) -> Path:
    # The controller namespace, where link Secrets live, exists before our manifest.
    namespaces = kube.cluster.kubectl("get", "namespaces", "-o", "name").split()
    if "namespace/linkerd" not in namespaces:
        kube.cluster.kubectl("create", "namespace", "linkerd")
    kube.cluster.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "destination.yaml"))
    token = kube.cluster.kubectl(
        "create", "token", "destination", "-n", NAMESPACE, "--duration=1h"
    ).strip()
    assert kube.cluster.pki is not None
    path = directory / "destination.kubeconfig"
    write_kubeconfig(
        path,
        cluster=kube.cluster.name,
        server=kube.cluster.server,
        ca=kube.cluster.pki.ca.cert,
        user="destination",
        credentials={"token": token},
    )
    return path


def can_i(kube: Kube, *args: str) -> bool:
    try:
        kube.cluster.kubectl("auth", "can-i", *args, f"--as={SUBJECT}")
    except RuntimeError as err:
        if "(1)" in str(err):  # kubectl exits 1 for "no"
            return False
        raise
    return True


async def test_the_server_runs_with_exactly_the_deployed_role(
    east: Kube, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(east, tmp_path)
    ips = await east.deploy_service(namespace, "web", replicas=2)
    async with running_server(east, kubeconfig=str(kubeconfig)) as server:
        stream = open_stream(server, f"web.{namespace}.svc.cluster.local:80")
        await eventually(
            lambda: values(stream.ips()),
            lambda got: got == ips,
            what="endpoints through the ServiceAccount's permissions",
        )
        stream.call.cancel()


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        pytest.param("watch", "pods", True, id="watch-pods"),
        pytest.param("list", "endpointslices.discovery.k8s.io", True, id="list-slices"),
        pytest.param("watch", "replicasets.apps", True, id="watch-replicasets"),
        pytest.param("watch", "servers.policy.linkerd.io", True, id="watch-servers"),
        pytest.param(
            "list", "externalworkloads.workload.linkerd.io", True, id="list-externalworkloads"
        ),
        pytest.param("watch", "serviceprofiles.linkerd.io", True, id="watch-serviceprofiles"),
        pytest.param("update", "serviceprofiles.linkerd.io", False, id="no-profile-writes"),
        pytest.param("list", "secrets", False, id="no-secrets-cluster-wide"),
        pytest.param("get", "secrets", False, id="no-secret-reads-by-name"),
        pytest.param("create", "pods", False, id="no-writes"),
        pytest.param("delete", "endpointslices.discovery.k8s.io", False, id="no-deletes"),
    ],
)
def test_the_role_only_reads_what_discovery_watches(
    east: Kube, tmp_path: Path, verb: str, resource: str, allowed: bool
) -> None:
    service_account_kubeconfig(east, tmp_path)
    assert can_i(east, verb, resource, "-A") is allowed


@pytest.mark.parametrize(
    ("verb", "namespace", "allowed"),
    [
        pytest.param("watch", "linkerd", True, id="watch-links"),
        pytest.param("list", "linkerd", True, id="list-links"),
        pytest.param("get", "linkerd", False, id="no-get"),
        pytest.param("create", "linkerd", False, id="no-create"),
        pytest.param("list", "default", False, id="not-elsewhere"),
    ],
)
def test_link_secrets_are_readable_in_the_controller_namespace_only(
    east: Kube, tmp_path: Path, verb: str, namespace: str, allowed: bool
) -> None:
    service_account_kubeconfig(east, tmp_path)
    assert can_i(east, verb, "secrets", "-n", namespace) is allowed
