"""Backpressure on a real grpc.aio server: a client that stops reading.

Scope: the gRPC layer (Get handler, broadcasts, stream queues, HTTP/2 flow
control) with discovery state fed by the test through `ClusterCache.apply`,
no Kubernetes. A stalled stream's queue overflows and is coalesced into one
catch-up diff when it reads again; a stream stalled past the deadline is
ended; a reading stream on the same view is unaffected throughout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health
from prometheus_client import CollectorRegistry

from destination._proto import destination_pb2 as pb
from destination.api.assembly import build_api
from destination.ops.metrics import DestinationMetrics
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.connection import LOCAL_KINDS
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind
from discovery.ports import PortSet
from discovery.project import project_service, project_slice
from discovery.reflector import Listed, Upserted
from tests.integration.destination_client import Stream, values
from tests.kube.workloads import eventually

PATH = "web.default.svc.cluster.local:80"
ENDPOINTS = 400  # per change: one Add and one Remove of ~20 KB together
# The client holds at most this much unread data per stream, so a stalled
# reader makes the server's writes block after a few changes.
CLIENT_OPTIONS = [("grpc.http2.lookahead_bytes", 16384), ("grpc.http2.bdp_probe", 0)]


def slice_raw(generation: int) -> dict[str, object]:
    third = generation % 200
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": [f"10.{1 + i // 250}.{third}.{i % 250}"], "conditions": {"ready": True}}
            for i in range(ENDPOINTS)
        ],
    }


@dataclass
class World:
    cache: ClusterCache
    registry: CollectorRegistry
    channel: grpc.aio.Channel
    generation: int = 0

    def change(self) -> None:
        self.generation += 1
        record = project_slice(slice_raw(self.generation))
        self.cache.apply(Upserted(Kind.ENDPOINT_SLICE, record), time.perf_counter())  # type: ignore[arg-type]

    def final_ips(self) -> list[str]:
        return sorted(
            f"10.{1 + i // 250}.{self.generation % 200}.{i % 250}" for i in range(ENDPOINTS)
        )

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    def open(self) -> Stream:
        method = self.channel.unary_stream(
            "/io.linkerd.proxy.destination.Destination/Get",
            request_serializer=pb.GetDestination.SerializeToString,
            response_deserializer=pb.Update.FromString,
        )
        return Stream(call=method(pb.GetDestination(scheme="k8s", path=PATH)))


async def start_world(*, capacity: int, stuck_deadline_s: float) -> AsyncIterator[World]:
    registry = CollectorRegistry()
    cache = ClusterCache(
        name=ClusterName("local"),
        metrics=DiscoveryMetrics(registry),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=True,
    )
    service = project_service(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }
    )
    for kind in LOCAL_KINDS:
        records = {
            Kind.SERVICE: (service,),
            Kind.ENDPOINT_SLICE: (project_slice(slice_raw(0)),),
        }.get(kind, ())
        cache.apply(Listed(kind, records), time.perf_counter())  # type: ignore[arg-type]
    cache.mark_synced()
    metrics = DestinationMetrics(registry)
    mesh = MeshSettings(
        controller_namespace="linkerd",
        trust_domain="cluster.local",
        enable_h2_upgrade=True,
        force_opaque_transport=True,
    )
    api = build_api(
        local=cache,
        store=None,
        mesh=mesh,
        metrics=metrics,
        cluster_domain="cluster.local",
        queue_capacity=capacity,
        stuck_deadline_s=stuck_deadline_s,
        max_streams_per_connection=10_000,
        health_servicer=health.aio.HealthServicer(),
    )
    server = api.server
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS)
    try:
        yield World(cache=cache, registry=registry, channel=channel)
    finally:
        await channel.close()
        api.close_all()
        await server.stop(1)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async for w in start_world(capacity=4, stuck_deadline_s=30):
        yield w


@pytest.fixture
async def impatient_world() -> AsyncIterator[World]:
    async for w in start_world(capacity=4, stuck_deadline_s=0.5):
        yield w


async def read_until(stream: Stream, ips: list[str], *, timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        async for update in stream.call:
            stream.updates.append(update)
            stream.apply(update)
            if stream.ips() == ips:
                return
    raise AssertionError(f"stream ended before reaching {len(ips)} endpoints")


async def stall_until_overflow(world: World, *, before: float = 0.0) -> None:
    for _ in range(300):
        world.change()
        await asyncio.sleep(0.005)  # lets the server write to the reading streams
        if world.metric("destination_stream_queue_overflows_total") > before:
            return
    raise AssertionError("the stalled stream never overflowed its queue")


async def test_a_stalled_stream_is_coalesced_and_converges_while_others_keep_up(
    world: World,
) -> None:
    reader, stalled = world.open(), world.open()
    reader.task = asyncio.create_task(reader.consume())
    await read_until(stalled, world.final_ips())  # the initial set, then stop reading

    await stall_until_overflow(world)
    changes = world.generation
    await eventually(
        lambda: values(reader.ips()),
        lambda got: got == world.final_ips(),
        what="the reading stream keeps up with every change",
    )
    # Every change as its own Add and Remove, unless the reader's writer found a
    # backlog, which it sends as one diff: never more messages than changes.
    assert 1 < len(reader.updates) <= 1 + 2 * changes, "the reader got the changes"

    before = len(stalled.updates)
    await read_until(stalled, world.final_ips())
    caught_up = len(stalled.updates) - before
    assert caught_up < 2 * changes, (caught_up, changes)
    assert world.metric("destination_stream_queue_overflows_total") == 1, "only the stalled one"
    assert world.metric("destination_stuck_streams_ended_total") == 0
    reader.call.cancel()
    stalled.call.cancel()


async def test_a_stream_stalled_past_the_deadline_is_ended_and_others_are_not(
    impatient_world: World,
) -> None:
    world = impatient_world
    reader, stalled = world.open(), world.open()
    reader.task = asyncio.create_task(reader.consume())
    await read_until(stalled, world.final_ips())

    await stall_until_overflow(world)
    await eventually(
        lambda: values([str(world.metric("destination_stuck_streams_ended_total"))]),
        lambda got: got == ["1.0"],
        what="the stalled stream ended",
        timeout_s=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(10):
            async for update in stalled.call:
                stalled.updates.append(update)
    # Ended with a status the proxy reconnects on, after what it had buffered.
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE

    world.change()
    await eventually(
        lambda: values(reader.ips()),
        lambda got: got == world.final_ips(),
        what="the reading stream is unaffected",
    )
    assert not reader.call.done()
    reader.call.cancel()
