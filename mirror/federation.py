"""Federated Services: one `<svc>-federated` per namespace, shared by every Link (§3.9).

A federated Service has many writers: every Link whose target exports a
member, and the local mirror for the local cluster's own member. Each writer
owns only its entry of the membership annotations (`svc@cluster` in
`multicluster.linkerd.io/remote-discovery`, `svc` in
`multicluster.linkerd.io/local-discovery`); the Service's labels,
annotations and ports come from one *source* member: the local one when
there is one, else the member of the oldest Link (by creation time, then
name), as in the reference since 2.18. `next_federated` computes what one
writer should make of the current object; the caller writes it with the
object's resourceVersion as a precondition and retries on conflict, so two
Links joining at once both end up listed (reference quirk Q23).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from discovery.models import ServiceRef

from .desired import FederatedMember
from .metadata import mirror_ports
from .naming import LOCAL_DISCOVERY, MIRRORED_SERVICE, REMOTE_DISCOVERY

__all__ = ["LOCAL", "is_source", "next_federated", "parse_remote_members"]

LOCAL = ""  # the cluster name of the local mirror's member


def parse_remote_members(value: str | None) -> list[tuple[str, str]]:
    """`svc@cluster,svc@cluster` as (service, cluster) pairs, in order; malformed items dropped."""
    members: list[tuple[str, str]] = []
    for item in (value or "").split(","):
        parts = [part.strip() for part in item.split("@")]
        if len(parts) != 2 or not all(parts):
            continue
        pair = (parts[0], parts[1])
        if pair not in members:
            members.append(pair)
    return members


def is_source(
    current: Mapping[str, Any] | None,
    cluster: str,
    link_created: Mapping[str, str],
) -> bool:
    """Whether `cluster`'s member gives the federated Service its metadata."""
    if cluster == LOCAL:
        return True
    annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(LOCAL_DISCOVERY):
        return False  # the local member always wins
    mine = (link_created.get(cluster, ""), cluster)
    for _, other in parse_remote_members(annotations.get(REMOTE_DISCOVERY)):
        if other != cluster and other in link_created and (link_created[other], other) < mine:
            return False
    return True


def next_federated(
    current: Mapping[str, Any] | None,
    *,
    service: ServiceRef,
    cluster: str,
    member: FederatedMember | None,
    source: bool,
) -> dict[str, Any] | None:
    """The federated Service after `cluster` joins with `member` (or leaves, with None).

    Returns the whole object to write, or None when nobody is left (delete it,
    or do not create it). `service` is the federated Service itself.
    """
    metadata = (current or {}).get("metadata") or {}
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    remote = parse_remote_members(annotations.get(REMOTE_DISCOVERY))
    local = annotations.get(LOCAL_DISCOVERY) or None
    if cluster == LOCAL:
        local = member.service.name if member is not None else None
    elif member is None:
        remote = [(name, c) for name, c in remote if c != cluster]
    else:
        # A member already listed keeps its place (§3.9: insertion order), so
        # that a rejoin on every resync writes nothing.
        entry = (member.service.name, cluster)
        listed = [i for i, (_, c) in enumerate(remote) if c == cluster]
        if listed:
            remote[listed[0]] = entry
            remote = [item for i, item in enumerate(remote) if i not in listed[1:]]
        else:
            remote.append(entry)
    if not remote and local is None:
        return None
    labels: dict[str, str] = dict(metadata.get("labels") or {})
    ports = ((current or {}).get("spec") or {}).get("ports") or []
    if member is not None and (source or current is None):
        labels = dict(member.labels)
        annotations = dict(member.annotations)
        ports = mirror_ports(member.ports)
    labels[MIRRORED_SERVICE] = "true"
    annotations.pop(REMOTE_DISCOVERY, None)
    annotations.pop(LOCAL_DISCOVERY, None)
    if remote:
        annotations[REMOTE_DISCOVERY] = ",".join(f"{name}@{c}" for name, c in remote)
    if local is not None:
        annotations[LOCAL_DISCOVERY] = local
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.name,
            "namespace": service.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"type": "ClusterIP", "ports": ports},
    }
