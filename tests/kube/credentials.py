"""Non-admin kubeconfigs for test clusters, so that RBAC is really enforced.

The admin kubeconfig of a test cluster is `system:masters` and passes every
check; a server running with it would hide a permission missing from
`deploy/`. These helpers mint real ServiceAccount tokens (TokenRequest API,
through the pinned kubectl) and embed them in portable kubeconfigs, the kind
an operator puts in a link Secret. Synchronous: async tests call them through
`asyncio.to_thread`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .binaries import REPO_ROOT
from .cluster import LocalCluster, write_kubeconfig

REMOTE_ACCESS = REPO_ROOT / "deploy" / "remote-access.yaml"
REMOTE_READER = ("multicluster-destination", "destination-remote-reader")


def service_account_kubeconfig(
    cluster: LocalCluster,
    *,
    namespace: str,
    service_account: str,
    server: str | None = None,
    expiration_s: int = 3600,
) -> str:
    """Kubeconfig YAML authenticating as `namespace/service_account` with a fresh token.

    The namespace and the ServiceAccount are created when missing. `server`
    defaults to the cluster's API server (pass another API server of the same
    cluster to reach it through that one).
    """
    assert cluster.pki is not None, "the cluster is not started"
    if not cluster.kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "name"):
        cluster.kubectl("create", "namespace", namespace)
    if not cluster.kubectl(
        "get",
        "serviceaccount",
        service_account,
        "-n",
        namespace,
        "--ignore-not-found",
        "-o",
        "name",
    ):
        cluster.kubectl("create", "serviceaccount", service_account, "-n", namespace)
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, f"--duration={expiration_s}s"
    ).strip()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kubeconfig"
        write_kubeconfig(
            path,
            cluster=cluster.name,
            server=server or cluster.server,
            ca=cluster.pki.ca.cert,
            user=f"{namespace}-{service_account}",
            credentials={"token": token},
        )
        return path.read_text()


def apply_remote_access(cluster: LocalCluster) -> tuple[str, str]:
    """Apply deploy/remote-access.yaml; returns the reader's (namespace, ServiceAccount)."""
    cluster.kubectl("apply", "-f", str(REMOTE_ACCESS))
    return REMOTE_READER
