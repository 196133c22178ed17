"""A remote cluster's API server going away and coming back, under live streams.

The link points at an extra kube-apiserver of `west` (same etcd, its own
port): stopping it takes the API away from the destination server only,
while west's controllers, on the primary API server, keep changing the
endpoints. Scope: with the default policy the stream keeps the last known
endpoints while the cluster is `stale`; when the API server returns, the
stream receives exactly the differences (Adds of new pods, Removes of gone
ones, nothing re-sent) and the watches count their restarts. With
`--remote-withdraw-after-s`, the endpoints are withdrawn once the cluster has
been stale that long, and sent again when it is back.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from destination._proto import destination_pb2 as pb
from tests.integration.destination_client import (
    Server,
    Stream,
    _key,
    open_stream,
    running_server,
)
from tests.integration.links import (
    converge,
    create_remote_mirror,
    delete_link,
    link_name,
    link_secret,
    metric,
    put_link,
    reader_kubeconfig,
    wait_for_state,
)
from tests.kube.cluster import ExtraApiServer
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def west_ha(west: Kube) -> AsyncIterator[ExtraApiServer]:
    """A second API server of west, for this test only."""
    extra = await asyncio.to_thread(west.cluster.add_apiserver, f"apiserver-{secrets.token_hex(3)}")
    try:
        yield extra
    finally:
        await asyncio.to_thread(extra.stop)


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


def _by_ip(stream: Stream) -> dict[str, pb.WeightedAddr]:
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


async def test_an_outage_keeps_endpoints_then_sends_exactly_what_changed(
    server: Server, east: Kube, west: Kube, west_ha: ExtraApiServer, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=3, meshed_by="linkerd")
    await west.create_service(namespace, "web")
    await west.wait_for_ready_endpoints(namespace, "web", 3)
    before = await pods_by_ip(west, namespace)
    cluster = await linked_mirror(server, east, west, west_ha, namespace)
    stream = open_stream(server, f"web-west.{namespace}.svc.cluster.local:80")
    await converge(stream, list(before), "the remote pods")
    restarts = await metric(server.admin, "watch_restarts_total", cluster=cluster)
    mark = len(stream.updates)

    await asyncio.to_thread(west_ha.stop)
    stale = await wait_for_state(server.admin, cluster, "stale")
    assert stale["error"]
    after = await change_while_away(west, namespace, before)
    await asyncio.sleep(1)
    assert stream.ips() == sorted(before), "stale endpoints are kept while the cluster is away"
    assert stream.updates[mark:] == []
    assert await metric(server.admin, "remote_cluster_state", cluster=cluster, state="stale") == 1

    await asyncio.to_thread(west_ha.start)
    await converge(stream, list(after), "the changes made during the outage")
    await wait_for_state(server.admin, cluster, "synced")
    held = {ip: a.metric_labels["pod"] for ip, a in _by_ip(stream).items()}
    assert held == after, "every address names the pod that holds it now"
    added, removed = changes(stream, mark)
    changed = sorted(ip for ip, pod in after.items() if before.get(ip) != pod)
    assert added == changed, "only new or re-assigned addresses are added, once each"
    assert removed == sorted(set(before) - set(after)), "only gone addresses are removed"
    assert await metric(server.admin, "watch_restarts_total", cluster=cluster) > restarts
    stream.call.cancel()
    await delete_link(east, cluster)


async def test_the_withdraw_policy_removes_and_restores_a_stale_cluster(
    east: Kube, west: Kube, west_ha: ExtraApiServer, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=2, meshed_by="linkerd")
    await west.create_service(namespace, "web")
    ips = await west.wait_for_ready_endpoints(namespace, "web", 2)
    async with running_server(east, remote_withdraw_after_s=2.0) as server:
        cluster = await linked_mirror(server, east, west, west_ha, namespace)
        stream = open_stream(server, f"web-west.{namespace}.svc.cluster.local:80")
        await converge(stream, ips, "the remote pods")

        await asyncio.to_thread(west_ha.stop)
        await wait_for_state(server.admin, cluster, "withdrawn", timeout_s=30)
        await converge(stream, [], "endpoints withdrawn after 2 s stale")
        assert stream.task is not None and not stream.task.done()

        await asyncio.to_thread(west_ha.start)
        await wait_for_state(server.admin, cluster, "synced")
        await converge(stream, ips, "endpoints restored")
        stream.call.cancel()
        await delete_link(east, cluster)
