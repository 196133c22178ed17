"""Kubernetes Events on a Link: what an operator sees with `kubectl describe link`.

The reference records its Events on the remote Service, in the target
cluster (§3.12); this controller reads targets with a read-only identity, so
it records them on the Link, in the local cluster, where the operator who
wrote the Link looks. Only the replica holding the Link's Lease records them.
"""

from __future__ import annotations

import time

import structlog

from .links import Link
from .writer import Writer

__all__ = ["COMPONENT", "MAX_MESSAGE", "record_link_event"]

log = structlog.get_logger("mirror.events")

COMPONENT = "multicluster-mirror"
MAX_MESSAGE = 1024


async def record_link_event(
    writer: Writer, link: Link, event_type: str, reason: str, message: str
) -> bool:
    """Create one Event about `link`; False (logged) when the API refused it."""
    namespace = link.ref.namespace
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{link.name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "multicluster.linkerd.io/v1alpha3",
            "kind": "Link",
            "name": link.name,
            "namespace": namespace,
            "uid": link.uid,
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": event_type,
        "source": {"component": COMPONENT},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    written = await writer.raw(
        link.name, "Event", "create", "POST", f"/api/v1/namespaces/{namespace}/events", body
    )
    if not written.ok:
        log.info("event_not_recorded", link=link.name, reason=reason, error=written.error)
    return written.ok
