"""The identity a target cluster grants its source clusters, and what it may do.

This is `deploy/remote-access.yaml` as code (a unit test keeps the two
equal): ServiceAccount `multicluster-destination/destination-remote-reader`,
bound to ClusterRole `multicluster-destination-remote-reader`, which may
`list` and `watch` Services, Pods and EndpointSlices in every namespace.
The mirror controller and the destination server read exactly that, with
the same credentials. No `get`, no Secrets, no ConfigMaps, no writes: a
leaked link exposes the target's service topology, never its control.

`REQUIRED` is what `link-gen` verifies with the token it minted and what
`check` verifies with a Link's credentials (SelfSubjectAccessReviews, which
every authenticated identity may make); `EXCESS` is a short list of
permissions a link should not have, which `check` reports as a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .api import Api

__all__ = [
    "EXCESS",
    "READER_CLUSTER_ROLE",
    "READER_NAMESPACE",
    "READER_RULES",
    "READER_SERVICE_ACCOUNT",
    "REQUIRED",
    "Permission",
    "access_objects",
    "allowed",
    "binding_name",
    "denied",
    "token_secret",
    "token_secret_name",
]

READER_NAMESPACE = "multicluster-destination"
READER_SERVICE_ACCOUNT = "destination-remote-reader"
READER_CLUSTER_ROLE = "multicluster-destination-remote-reader"
READER_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
)
CREATED_BY = "multicluster-destination.io/created-by"
TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"


@dataclass(frozen=True, slots=True)
class Permission:
    verb: str
    group: str
    resource: str

    def __str__(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {resource}"


REQUIRED: tuple[Permission, ...] = tuple(
    Permission(verb, group, resource)
    for rule in READER_RULES
    for group in rule["apiGroups"]
    for resource in rule["resources"]
    for verb in rule["verbs"]
)

EXCESS: tuple[Permission, ...] = (
    Permission("get", "", "secrets"),
    Permission("list", "", "secrets"),
    Permission("create", "", "pods"),
    Permission("create", "", "pods/exec"),
    Permission("update", "", "services"),
    Permission("delete", "", "services"),
    Permission("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
)
"""Far more than a link needs: a sample of what would turn a leaked link into control."""


def binding_name(namespace: str, service_account: str) -> str:
    """The ClusterRoleBinding that grants the reader role to `namespace/service_account`.

    The default identity's binding has the name deploy/remote-access.yaml
    gives it, so that link-gen and the manifest create one object, not two.
    """
    if (namespace, service_account) == (READER_NAMESPACE, READER_SERVICE_ACCOUNT):
        return READER_CLUSTER_ROLE
    return f"{READER_CLUSTER_ROLE}:{namespace}:{service_account}"


def token_secret_name(service_account: str) -> str:
    return f"{service_account}-token"


def access_objects(
    namespace: str, service_account: str, *, created_by: str
) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ClusterRole and ClusterRoleBinding of a reader identity."""
    annotations = {CREATED_BY: created_by}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": annotations},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": service_account,
                "namespace": namespace,
                "annotations": annotations,
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": READER_CLUSTER_ROLE, "annotations": annotations},
            "rules": [dict(rule) for rule in READER_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {
                "name": binding_name(namespace, service_account),
                "annotations": annotations,
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": READER_CLUSTER_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
            ],
        },
    ]


def token_secret(namespace: str, service_account: str, *, created_by: str) -> dict[str, Any]:
    """A long-lived token Secret: the token controller fills `data.token` for the account."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": TOKEN_SECRET_TYPE,
        "metadata": {
            "name": token_secret_name(service_account),
            "namespace": namespace,
            "annotations": {
                SERVICE_ACCOUNT_NAME_ANNOTATION: service_account,
                CREATED_BY: created_by,
            },
        },
    }


async def allowed(api: Api, permission: Permission) -> bool:
    """Whether `api`'s own credentials may do `permission` in every namespace."""
    review = await api.create(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": permission.verb,
                    "group": permission.group,
                    "resource": permission.resource.split("/")[0],
                    **(
                        {"subresource": permission.resource.split("/", 1)[1]}
                        if "/" in permission.resource
                        else {}
                    ),
                }
            },
        },
    )
    status = review.get("status")
    return isinstance(status, dict) and status.get("allowed") is True


async def denied(api: Api, permissions: Iterable[Permission]) -> list[Permission]:
    """Those of `permissions` that `api`'s credentials do not have, in order."""
    return [p for p in permissions if not await allowed(api, p)]


async def granted(api: Api, permissions: Iterable[Permission]) -> list[Permission]:
    """Those of `permissions` that `api`'s credentials have, in order."""
    return [p for p in permissions if await allowed(api, p)]
