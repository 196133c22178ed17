"""The server across an API server outage, on a cluster of its own.

Scope: the reflectors reconnect with backoff and relist when the API server
returns; open Get streams stay open, receive nothing for what did not change
(no duplicate Adds after the relist) and then follow changes exactly.
A dedicated cluster (`south`) is used because its API server is stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.destination_client import open_stream, running_server, values
from tests.kube.cluster import LocalCluster, specs_for, start_clusters, stop_clusters
from tests.kube.workloads import Kube, eventually, new_api_client

pytestmark = pytest.mark.integration


@pytest.fixture
async def south() -> AsyncIterator[Kube]:
    (cluster,) = await asyncio.to_thread(start_clusters, specs_for(["south"]))
    api = await new_api_client(cluster.kubeconfig)
    try:
        yield Kube(cluster=cluster, api=api)
    finally:
        await api.close()
        await asyncio.to_thread(stop_clusters, [cluster], remove_dir=cluster.directory.parent)


async def metric(admin: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://{admin}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def restart(cluster: LocalCluster) -> None:
    await asyncio.to_thread(cluster.stop_apiserver)
    await asyncio.sleep(3)
    await asyncio.to_thread(cluster.restart_apiserver)


async def test_streams_survive_an_api_server_outage_and_follow_changes_after_it(
    south: Kube,
) -> None:
    await south.create_namespace("shop")
    ips = await south.deploy_service("shop", "web", replicas=2)
    async with running_server(south) as server:
        stream = open_stream(server, "web.shop.svc.cluster.local:80")
        await eventually(lambda: values(stream.ips()), lambda got: got == ips, what="2 endpoints")
        restarts_before = await metric(server.admin, "watch_restarts_total")
        lists_before = await metric(server.admin, "watch_lists_total")

        await restart(south.cluster)
        await eventually(
            lambda: metric(server.admin, "watch_lists_total"),
            lambda n: n >= lists_before + 4,
            what="reflectors relisted",
            timeout_s=60,
        )
        updates_after_outage = len(stream.updates)
        assert updates_after_outage == 1, "a relist of unchanged state sends nothing"
        assert await metric(server.admin, "watch_restarts_total") > restarts_before

        await south.scale("shop", "web", 4)
        four = await south.wait_for_ready_endpoints("shop", "web", 4)
        await eventually(lambda: values(stream.ips()), lambda got: got == four, what="4 endpoints")
        added = [a for u in stream.updates[1:] if u.HasField("add") for a in u.add.addrs]
        assert len(added) == 2, "only the two new pods were added"
        assert not stream.call.done()
        stream.call.cancel()
