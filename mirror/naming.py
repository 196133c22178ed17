"""Names, labels and annotations of mirror objects: the contract with their readers.

The destination server, `check`, `gateways`, `unlink` and Linkerd's own
tooling find mirror objects by these names and keys (reference §3.6, §3.13),
so they are fixed here, once.
"""

from __future__ import annotations

from discovery.project import (
    LOCAL_DISCOVERY,
    MIRROR_CLUSTER_LABEL,
    OPAQUE_PORTS_ANNOTATION,
    REMOTE_DISCOVERY,
    REMOTE_GATEWAY_IDENTITY,
    REMOTE_SERVICE_LABEL,
    REMOTE_SVC_FQ_NAME,
)

__all__ = [
    "CLUSTER_NAME",
    "FEDERATED_SUFFIX",
    "HEADLESS_MIRROR_OF",
    "LOCAL_DISCOVERY",
    "MAX_NAME",
    "MIRRORED_GATEWAY",
    "MIRRORED_SERVICE",
    "OPAQUE_PORTS_ANNOTATION",
    "REMOTE_DISCOVERY",
    "REMOTE_GATEWAY_IDENTITY",
    "REMOTE_RESOURCE_VERSION",
    "REMOTE_SERVICE",
    "REMOTE_SVC_FQ_NAME",
    "endpoint_mirror_name",
    "federated_name",
    "fq_name",
    "lease_name",
    "mirror_name",
    "probe_service_name",
    "remote_name",
]

MAX_NAME = 63  # a Service name is a DNS label

MIRRORED_SERVICE = "mirror.linkerd.io/mirrored-service"  # "true" on everything we write
CLUSTER_NAME = MIRROR_CLUSTER_LABEL  # mirror.linkerd.io/cluster-name: <target cluster>
MIRRORED_GATEWAY = "mirror.linkerd.io/mirrored-gateway"
HEADLESS_MIRROR_OF = "mirror.linkerd.io/headless-mirror-svc-name"  # on per-pod mirrors
REMOTE_RESOURCE_VERSION = "mirror.linkerd.io/remote-resource-version"
REMOTE_SERVICE = REMOTE_SERVICE_LABEL  # multicluster.linkerd.io/remote-service
FEDERATED_SUFFIX = "-federated"


def mirror_name(service: str, cluster: str) -> str:
    """The local mirror of remote Service `service`: `<service>-<cluster>`, same namespace."""
    return f"{service}-{cluster}"


def endpoint_mirror_name(hostname: str, cluster: str) -> str:
    """The per-pod mirror of a headless Service's endpoint `hostname`."""
    return f"{hostname}-{cluster}"


def federated_name(service: str) -> str:
    return f"{service}{FEDERATED_SUFFIX}"


def remote_name(local: str, cluster: str) -> str | None:
    """The remote name a mirror was made from, or None if `local` is not one of `cluster`."""
    suffix = f"-{cluster}"
    if local.endswith(suffix) and len(local) > len(suffix):
        return local[: -len(suffix)]
    return None


def fq_name(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def lease_name(link: str) -> str:
    """The Lease whose holder writes a Link's mirrors (one writer among replicas)."""
    return f"service-mirror-write-{link}"


def probe_service_name(link: str) -> str:
    return f"probe-{link}"
