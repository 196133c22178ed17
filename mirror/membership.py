"""Writing one member's entry of a shared `<svc>-federated` Service (read-modify-write).

Several writers share a federated Service: every Link whose target has a
member, and the local federation (the local cluster's own member). Each
owns only its entry of the membership annotations, so each writes with a
fresh read and the object's resourceVersion as a precondition, and retries
on conflict: two writers joining at once both end up listed (reference Q23).

The cached copy (our watch of mirror objects) is consulted first, so a
reconcile that changes nothing costs no request at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from discovery.models import ServiceRef

from .desired import FederatedMember
from .federation import is_source, next_federated
from .naming import MIRRORED_SERVICE
from .objects import LocalObject, normalize
from .writer import Writer

__all__ = ["ATTEMPTS", "write_membership"]

ATTEMPTS = 3


def as_manifest(obj: LocalObject | None) -> dict[str, Any] | None:
    """A cached federated Service in the form `next_federated` reads."""
    if obj is None:
        return None
    return {
        "metadata": {
            "name": obj.ref.name,
            "namespace": obj.ref.namespace,
            "labels": dict(obj.labels),
            "annotations": dict(obj.annotations),
        },
        "spec": {"ports": list(obj.normalized.get("ports", []))},
    }


def same(new: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> bool:
    if new is None or current is None:
        return new is None and current is None
    return normalize("Service", new) == normalize("Service", current)


async def write_membership(
    writer: Writer,
    *,
    writer_name: str,
    ref: ServiceRef,
    cluster: str,
    member: FederatedMember | None,
    created: Mapping[str, str],
    cached: LocalObject | None,
) -> tuple[str | None, bool]:
    """Make `cluster`'s entry of federated Service `ref` say `member` (None: leave).

    Returns (error, wrote): the error for the member's status, if the write
    failed, and whether any request was sent.
    """
    view = as_manifest(cached)
    new = next_federated(
        view,
        service=ref,
        cluster=cluster,
        member=member,
        source=is_source(view, cluster, created),
    )
    if same(new, view):
        return None, False
    for _ in range(ATTEMPTS):
        read = await writer.read(writer_name, "Service", ref.namespace, ref.name)
        if not read.ok and not read.not_found:
            return f"Failed to get federated service: {read.error}", True
        current = dict(read.body) if read.ok and read.body is not None else None
        labels = ((current or {}).get("metadata") or {}).get("labels") or {}
        if current is not None and labels.get(MIRRORED_SERVICE) != "true":
            # Someone's own Service of that name: reported, never adopted.
            return (
                f"Failed to update federated service: a Service {ref.namespace}/{ref.name} "
                f"exists that is not a mirror (no {MIRRORED_SERVICE} label)",
                True,
            )
        new = next_federated(
            current,
            service=ref,
            cluster=cluster,
            member=member,
            source=is_source(current, cluster, created),
        )
        if same(new, current):
            return None, True
        if new is None:
            assert current is not None
            uid = (current.get("metadata") or {}).get("uid")
            written = await writer.delete(writer_name, "Service", ref.namespace, ref.name, uid=uid)
            verb = "delete"
        elif current is None:
            written = await writer.create(writer_name, new)
            verb = "create"
        else:
            new["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get(
                "resourceVersion"
            )
            written = await writer.replace(writer_name, new)
            verb = "update"
        if written.ok:
            return None, True
        # A conflict (someone wrote it meanwhile, or created it first) or a failed
        # precondition (deleted and re-created): read again and merge.
        if not written.conflict:
            return f"Failed to {verb} federated service: {written.error}", True
    return "Failed to update federated service: conflicting writers", True
