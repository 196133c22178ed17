"""Helpers of the tests that take a remote API server away: a second API server of west
linked in place of the primary, a mirror of its `web`, and the changes made while away.
"""

from __future__ import annotations

from destination._proto import destination_pb2 as pb
from tests.integration.destination_client import Server, Stream, _key
from tests.integration.links import (
    create_remote_mirror,
    link_name,
    link_secret,
    put_link,
    reader_kubeconfig,
    wait_for_state,
)
from tests.kube.cluster import ExtraApiServer
from tests.kube.workloads import Kube, eventually


async def linked_mirror(
    server: Server, east: Kube, west: Kube, extra: ExtraApiServer, namespace: str
) -> str:
    """Link west through `extra` and create the mirror `web-west` of its `web`."""
    cluster = link_name(west.cluster)
    kubeconfig = await reader_kubeconfig(west.cluster, server=extra.server)
    await put_link(east, link_secret(cluster, kubeconfig=kubeconfig, trust_domain="west.example"))
    await create_remote_mirror(east, namespace, cluster=cluster)
    await wait_for_state(server.admin, cluster, "synced")
    return cluster


def by_ip(stream: Stream) -> dict[str, pb.WeightedAddr]:
    return {key.rsplit(":", 1)[0]: addr for key, addr in stream.addresses.items()}


def changes(stream: Stream, since: int) -> tuple[list[str], list[str]]:
    """IPs in Adds and in Removes after the first `since` updates, in order, with repeats."""
    added, removed = [], []
    for update in stream.updates[since:]:
        if update.HasField("add"):
            added += [_key(a.addr).rsplit(":", 1)[0] for a in update.add.addrs]
        else:
            removed += [_key(a).rsplit(":", 1)[0] for a in update.remove.addrs]
    return sorted(added), sorted(removed)


async def pods_by_ip(kube: Kube, namespace: str) -> dict[str, str]:
    """Ready endpoint IP -> name of the pod holding it now."""
    ready = set(await kube.ready_endpoint_ips(namespace, "web"))
    pods = await kube.core.list_namespaced_pod(namespace, label_selector="app=web")
    return {
        p.status.pod_ip: p.metadata.name
        for p in pods.items
        if p.status.pod_ip in ready and p.metadata.deletion_timestamp is None
    }


async def change_while_away(west: Kube, namespace: str, before: dict[str, str]) -> dict[str, str]:
    """Scale 3 -> 5 and delete one original pod; returns the final IP -> pod map.

    kwok may give the replacement pod the deleted pod's IP: that address then
    changes pods, which a proxy must hear as an Add (new metric labels), not
    as a Remove.
    """
    await west.scale(namespace, "web", 5)
    await west.wait_for_ready_endpoints(namespace, "web", 5)
    victim = sorted(before.values())[0]
    await west.core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
    return await eventually(
        lambda: pods_by_ip(west, namespace),
        lambda now: len(now) == 5 and victim not in now.values(),
        what="5 ready pods without the deleted one",
        timeout_s=60,
    )
