"""Remote API servers that hang or crawl, under live streams: real servers, real sockets.

A hung server: the link points at an extra kube-apiserver of `west` (same
etcd) that the test stops with SIGSTOP. Its sockets stay open and the kernel
still acknowledges what we send, so nothing resets or refuses: only the
connection's liveness probe can tell. Scope: the cluster shows `stale` within
seconds (< 15 s with the default probe settings), its stream keeps the last
endpoints (or, with `--remote-withdraw-after-s`, has them withdrawn), and
after SIGCONT the cluster is `synced` again and the stream receives exactly
what changed meanwhile.

A slow server: a TCP proxy on loopback (tests/integration/slow_proxy.py) in
front of west's API server, which passes its answers on one byte at a time.
Scope: another link to west, not behind the proxy, keeps streaming changes
promptly, the admin endpoint stays responsive, the slowed cluster shows
`stale` (its probes cannot get an answer through), and once the proxy lets
answers through again that cluster converges exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.integration.destination_client import Server, open_stream, running_server
from tests.integration.links import (
    cluster_statuses,
    converge,
    create_remote_mirror,
    delete_link,
    link_name,
    link_secret,
    put_link,
    reader_kubeconfig,
    wait_for_state,
)
from tests.integration.outages import by_ip, change_while_away, changes, linked_mirror, pods_by_ip
from tests.integration.slow_proxy import SlowProxy
from tests.kube.cluster import ExtraApiServer
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

# With the default liveness settings a hung server is found within 11 s
# (discovery/connection.py); the state is polled every 0.25 s on top of that.
STALE_WITHIN_S = 15.0


async def test_a_hung_api_server_is_stale_within_seconds_then_sends_exactly_what_changed(
    server: Server, east: Kube, west: Kube, west_ha: ExtraApiServer, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=3, meshed_by="linkerd")
    await west.create_service(namespace, "web")
    await west.wait_for_ready_endpoints(namespace, "web", 3)
    before = await pods_by_ip(west, namespace)
    cluster = await linked_mirror(server, east, west, west_ha, namespace)
    stream = open_stream(server, f"web-west.{namespace}.svc.cluster.local:80")
    await converge(stream, list(before), "the remote pods")
    mark = len(stream.updates)

    await asyncio.to_thread(west_ha.pause)
    try:
        paused = time.monotonic()
        stale = await wait_for_state(server.admin, cluster, "stale", timeout_s=STALE_WITHIN_S)
        detected_s = time.monotonic() - paused
        assert stale["error"].startswith("API server not answering"), stale["error"]
        after = await change_while_away(west, namespace, before)
        await asyncio.sleep(1)
        assert stream.ips() == sorted(before), "stale endpoints are kept while it hangs"
        assert stream.updates[mark:] == []
        assert (await cluster_statuses(server.admin))[cluster]["state"] == "stale"
    finally:
        await asyncio.to_thread(west_ha.resume)
    resumed = time.monotonic()
    await converge(stream, list(after), "the changes made while it hung")
    await wait_for_state(server.admin, cluster, "synced")
    recovered_s = time.monotonic() - resumed
    held = {ip: a.metric_labels["pod"] for ip, a in by_ip(stream).items()}
    assert held == after, "every address names the pod that holds it now"
    added, removed = changes(stream, mark)
    assert added == sorted(ip for ip, pod in after.items() if before.get(ip) != pod)
    assert removed == sorted(set(before) - set(after))
    print(f"hung server: stale after {detected_s:.1f} s, synced {recovered_s:.1f} s after SIGCONT")
    stream.call.cancel()
    await delete_link(east, cluster)


async def test_a_hung_api_server_is_withdrawn_by_policy_and_restored(
    east: Kube, west: Kube, west_ha: ExtraApiServer, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=2, meshed_by="linkerd")
    await west.create_service(namespace, "web")
    ips = await west.wait_for_ready_endpoints(namespace, "web", 2)
    async with running_server(east, remote_withdraw_after_s=2.0) as server:
        cluster = await linked_mirror(server, east, west, west_ha, namespace)
        stream = open_stream(server, f"web-west.{namespace}.svc.cluster.local:80")
        await converge(stream, ips, "the remote pods")

        await asyncio.to_thread(west_ha.pause)
        try:
            await wait_for_state(server.admin, cluster, "withdrawn", timeout_s=STALE_WITHIN_S + 2)
            await converge(stream, [], "endpoints withdrawn 2 s after it went stale")
            assert stream.task is not None and not stream.task.done()
        finally:
            await asyncio.to_thread(west_ha.resume)
        await wait_for_state(server.admin, cluster, "synced")
        await converge(stream, ips, "endpoints restored")
        stream.call.cancel()
        await delete_link(east, cluster)


@pytest.fixture
async def slow_west(west: Kube) -> AsyncIterator[SlowProxy]:
    proxy = SlowProxy(west.cluster.apiserver_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def admin_latency_s(server: Server) -> float:
    started = time.monotonic()
    await cluster_statuses(server.admin)
    return time.monotonic() - started


async def test_a_crawling_api_server_holds_back_no_other_cluster(
    server: Server, east: Kube, west: Kube, slow_west: SlowProxy, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=2, meshed_by="linkerd")
    await west.create_service(namespace, "web")
    ips = await west.wait_for_ready_endpoints(namespace, "web", 2)
    # Two links to west: one through the proxy, one straight to its API server.
    slow, fast = link_name(west.cluster), link_name(west.cluster)
    slow_config = await reader_kubeconfig(west.cluster, server=slow_west.url)
    fast_config = await reader_kubeconfig(west.cluster)
    await put_link(east, link_secret(slow, kubeconfig=slow_config, trust_domain="west.example"))
    await put_link(east, link_secret(fast, kubeconfig=fast_config, trust_domain="west.example"))
    slow_path = await create_remote_mirror(east, namespace, cluster=slow, name="web-slow")
    fast_path = await create_remote_mirror(east, namespace, cluster=fast, name="web-fast")
    await wait_for_state(server.admin, slow, "synced")
    await wait_for_state(server.admin, fast, "synced")
    slow_stream, fast_stream = open_stream(server, slow_path), open_stream(server, fast_path)
    await converge(slow_stream, ips, "the slow link's pods")
    await converge(fast_stream, ips, "the fast link's pods")
    mark = len(slow_stream.updates)

    slow_west.mode = "trickle"  # one byte of every answer each 50 ms
    scaled = time.monotonic()
    await west.scale(namespace, "web", 4)
    four = await west.wait_for_ready_endpoints(namespace, "web", 4)
    ready_s = time.monotonic() - scaled
    await converge(fast_stream, four, "the fast link follows while the other crawls")
    fast_s = time.monotonic() - scaled
    assert fast_s < ready_s + 5, "the fast link is as prompt as west's own endpoints"
    assert await admin_latency_s(server) < 1.0
    stale = await wait_for_state(server.admin, slow, "stale", timeout_s=STALE_WITHIN_S + 5)
    assert stale["error"].startswith("API server not answering"), stale["error"]
    assert (await cluster_statuses(server.admin))[fast]["state"] == "synced"
    scaled = time.monotonic()
    await west.scale(namespace, "web", 3)
    three = await west.wait_for_ready_endpoints(namespace, "web", 3)
    ready_again_s = time.monotonic() - scaled
    await converge(fast_stream, three, "the fast link still follows")
    fast_again_s = time.monotonic() - scaled
    assert fast_again_s < ready_again_s + 5

    slow_west.mode = "pass"
    await converge(slow_stream, three, "the slow link catches up once answers flow")
    await wait_for_state(server.admin, slow, "synced")
    added, removed = changes(slow_stream, mark)
    assert added == sorted(set(three) - set(ips)) and removed == sorted(set(ips) - set(three))
    print(
        f"crawling server: fast link held the scaled endpoints {fast_s:.1f} s and "
        f"{fast_again_s:.1f} s after each scale (west ready after {ready_s:.1f} s, "
        f"{ready_again_s:.1f} s)"
    )
    for stream in (slow_stream, fast_stream):
        stream.call.cancel()
    for name in (slow, fast):
        await delete_link(east, name)
