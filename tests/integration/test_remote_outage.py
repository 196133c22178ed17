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

import pytest

from tests.integration.destination_client import Server, open_stream, running_server
from tests.integration.links import converge, delete_link, metric, wait_for_state
from tests.integration.outages import (
    by_ip,
    change_while_away,
    changes,
    linked_mirror,
    pods_by_ip,
)
from tests.kube.cluster import ExtraApiServer
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration


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
    held = {ip: a.metric_labels["pod"] for ip, a in by_ip(stream).items()}
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
