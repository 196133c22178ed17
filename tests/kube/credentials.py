"""Kubeconfigs that are not admin, so a test meets RBAC as the product would.

Every test cluster's own kubeconfig is `system:masters`, which no RBAC rule
can deny: a test run with it would pass even if `deploy/` forgot a
permission. These helpers mint real ServiceAccount tokens through the
TokenRequest API and embed them, with the cluster CA, in a self-contained
kubeconfig: the form an operator stores in a link Secret, and the only form
the server accepts there.

They are synchronous because they shell out to the pinned kubectl
(`LocalCluster.kubectl`); async tests call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from .binaries import REPO_ROOT
from .cluster import LocalCluster, kubeconfig_text

REMOTE_ACCESS_MANIFEST = REPO_ROOT / "deploy" / "remote-access.yaml"

# The TokenRequest API refuses shorter tokens (expirationSeconds >= 600).
MIN_TOKEN_EXPIRATION_S = 600
RBAC_PROPAGATION_TIMEOUT_S = 30.0

_FIELD_MANAGER = "mcd-tests"


def service_account_kubeconfig(
    cluster: LocalCluster,
    *,
    namespace: str,
    service_account: str,
    server: str | None = None,
    expiration_s: int = 3600,
) -> str:
    """Kubeconfig YAML text that authenticates as `namespace/service_account`.

    The namespace and the ServiceAccount are created if missing (calling this
    twice is fine). The token is a fresh bound token of `expiration_s` seconds.
    `server` defaults to the cluster's primary API server; pass an extra API
    server's URL (`ExtraApiServer.server`) to talk to that one: both serve a
    certificate of the cluster CA and accept the same tokens.
    """
    if expiration_s < MIN_TOKEN_EXPIRATION_S:
        raise ValueError(
            f"expiration_s must be at least {MIN_TOKEN_EXPIRATION_S} (TokenRequest minimum), "
            f"got {expiration_s}"
        )
    assert cluster.pki is not None, "the cluster is not started"
    _ensure_service_account(cluster, namespace, service_account)
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, f"--duration={expiration_s}s"
    ).strip()
    if not token:
        raise RuntimeError(f"{cluster.name}: kubectl create token printed no token")
    return kubeconfig_text(
        cluster=cluster.name,
        server=server or cluster.server,
        ca=cluster.pki.ca.cert,
        user=service_account_user(namespace, service_account),
        credentials={"token": token},
    )


def service_account_user(namespace: str, service_account: str) -> str:
    """The user name the API server gives a ServiceAccount's tokens (RBAC subjects, errors)."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def remote_reader() -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount that deploy/remote-access.yaml binds.

    Read from the manifest, so the tests follow the file rather than a copy of it.
    """
    documents = [d for d in yaml.safe_load_all(REMOTE_ACCESS_MANIFEST.read_text()) if d]
    subjects = [
        subject
        for document in documents
        if document.get("kind") == "ClusterRoleBinding"
        for subject in document.get("subjects") or []
        if subject.get("kind") == "ServiceAccount"
    ]
    if len(subjects) != 1:
        raise ValueError(
            f"{REMOTE_ACCESS_MANIFEST} should bind exactly one ServiceAccount, found {subjects}"
        )
    return str(subjects[0]["namespace"]), str(subjects[0]["name"])


def apply_remote_access(cluster: LocalCluster) -> tuple[str, str]:
    """Apply deploy/remote-access.yaml; return the reader's (namespace, ServiceAccount).

    Returns once the API server enforces the new binding: the RBAC authorizer
    reads roles from an informer, so a request made right after `apply` could
    still be denied for a moment, and a test would fail for no reason of ours.
    """
    cluster.kubectl("apply", "-f", str(REMOTE_ACCESS_MANIFEST))
    namespace, account = remote_reader()
    user = service_account_user(namespace, account)
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    deadline = time.monotonic() + RBAC_PROPAGATION_TIMEOUT_S
    while not _allowed(cluster, user, groups, "list", "discovery.k8s.io", "endpointslices"):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{cluster.name}: {user} still may not list endpointslices "
                f"{RBAC_PROPAGATION_TIMEOUT_S}s after applying {REMOTE_ACCESS_MANIFEST.name}"
            )
        time.sleep(0.2)
    return namespace, account


def _ensure_service_account(cluster: LocalCluster, namespace: str, name: str) -> None:
    """Server-side apply of just the names: creates what is missing, changes nothing else."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
    ]
    cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={_FIELD_MANAGER}",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )


def _allowed(
    cluster: LocalCluster, user: str, groups: list[str], verb: str, group: str, resource: str
) -> bool:
    """Ask the API server's authorizer (a SubjectAccessReview, sent as the admin)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [*groups, "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource},
        },
    }
    answer = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(answer).get("status", {}).get("allowed"))
