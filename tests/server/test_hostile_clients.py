"""Hostile gRPC clients against a real grpc.aio server (hardening issue #7, #8, #12).

Scope: the Get handler, broadcasts and stream queues behind a real server on
loopback, with discovery state fed by the test through `ClusterCache.apply`
(no Kubernetes). Clients that open too many streams on one connection are
refused with RESOURCE_EXHAUSTED and counted, without touching other
connections; clients naming thousands of made-up nodes share one broadcast and
one view, so a change costs one encoding and bounded event-loop time; huge
paths and tokens get INVALID_ARGUMENT (or are ignored) with short messages and
log lines; clients that abandon lagging streams leave no queue, broadcast,
view, admission count or stuck-stream timer behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
import structlog
from grpc_health.v1 import health
from prometheus_client import CollectorRegistry

import destination.api.get as get_module
from destination._proto import destination_pb2 as pb
from destination.api.assembly import build_api
from destination.api.get import GetHandler
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcasts
from destination.streams.stream_queue import StreamQueue
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.connection import LOCAL_KINDS
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind
from discovery.ports import PortSet
from discovery.project import project_node, project_service, project_slice
from discovery.reflector import Listed, Upserted
from tests.integration.destination_client import Stream, values
from tests.kube.workloads import eventually

PATH = "web.default.svc.cluster.local:80"
GET = "/io.linkerd.proxy.destination.Destination/Get"
# A small flow-control window, so that a client that stops reading blocks the
# server's writes after a few updates (as in test_backpressure.py).
STALLING = [("grpc.http2.lookahead_bytes", 16384), ("grpc.http2.bdp_probe", 0)]


def slice_raw(generation: int, endpoints: int) -> dict[str, object]:
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
            {
                "addresses": [f"10.{1 + i // 250}.{third}.{i % 250}"],
                "zone": "zone-a" if i % 2 else "zone-b",
            }
            for i in range(endpoints)
        ],
    }


@dataclass
class World:
    cache: ClusterCache
    broadcasts: Broadcasts
    handler: GetHandler
    registry: CollectorRegistry
    address: str
    endpoints: int
    generation: int = 0
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def change(self) -> None:
        self.generation += 1
        record = project_slice(slice_raw(self.generation, self.endpoints))
        self.cache.apply(Upserted(Kind.ENDPOINT_SLICE, record), time.perf_counter())  # type: ignore[arg-type]

    def final_ips(self) -> list[str]:
        third = self.generation % 200
        return sorted(f"10.{1 + i // 250}.{third}.{i % 250}" for i in range(self.endpoints))

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def connection(self, options: list[tuple[str, int]] | None = None) -> grpc.aio.Channel:
        """A channel on a TCP connection of its own (no shared subchannel)."""
        channel = grpc.aio.insecure_channel(
            self.address,
            options=[
                *(options or []),
                ("grpc.use_local_subchannel_pool", 1),
                ("test.connection", len(self.channels)),
            ],
        )
        self.channels.append(channel)
        return channel

    def call(
        self, channel: grpc.aio.Channel, path: str = PATH, token: str = ""
    ) -> grpc.aio.UnaryStreamCall:
        method = channel.unary_stream(
            GET,
            request_serializer=pb.GetDestination.SerializeToString,
            response_deserializer=pb.Update.FromString,
        )
        return method(pb.GetDestination(scheme="k8s", path=path, context_token=token))

    def open(self, channel: grpc.aio.Channel, path: str = PATH, token: str = "") -> Stream:
        stream = Stream(call=self.call(channel, path, token))
        stream.task = asyncio.create_task(stream.consume())
        return stream

    async def released(self) -> None:
        """Wait until no stream, broadcast, view or admission is left."""
        await eventually(
            lambda: values(
                [
                    self.broadcasts.streams,
                    len(self.broadcasts),
                    self.cache.topics.views(),
                    self.handler.admitted,
                ]
            ),
            lambda got: got == [0, 0, 0, 0],
            what="streams, broadcasts, views and admissions released",
            timeout_s=30,
        )


@asynccontextmanager
async def start_world(
    *,
    endpoints: int = 200,
    max_streams_per_connection: int = 10_000,
    capacity: int = 100,
    stuck_deadline_s: float = 30.0,
) -> AsyncIterator[World]:
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
    nodes = tuple(
        project_node({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}})
        for name, zone in (("node-a", "zone-a"), ("node-b", "zone-b"))
    )
    for kind in LOCAL_KINDS:
        records = {
            Kind.SERVICE: (service,),
            Kind.ENDPOINT_SLICE: (project_slice(slice_raw(0, endpoints)),),
            Kind.NODE: nodes,
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
        max_streams_per_connection=max_streams_per_connection,
        health_servicer=health.aio.HealthServicer(),
    )
    broadcasts, handler, server = api.broadcasts, api.get, api.server
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    world = World(
        cache=cache,
        broadcasts=broadcasts,
        handler=handler,
        registry=registry,
        address=f"127.0.0.1:{port}",
        endpoints=endpoints,
    )
    try:
        yield world
    finally:
        for channel in world.channels:
            await channel.close()
        broadcasts.close_all()
        await server.stop(1)


async def first_update(stream: Stream, timeout_s: float = 30) -> None:
    await eventually(
        lambda: values([len(stream.updates)]),
        lambda got: got[0] > 0,
        what="the initial update",
        timeout_s=timeout_s,
        interval_s=0.05,
    )


async def refusal(stream: Stream) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        assert stream.task is not None
        await asyncio.wait_for(stream.task, timeout=30)
    return ended.value


class LoopLag:
    """The longest the event loop went without running a 5 ms ticker, while running."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - start - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# --------------------------------------------------------------------------
# many streams on one connection


async def test_streams_per_connection_are_capped_and_refusals_counted() -> None:
    async with start_world(max_streams_per_connection=20) as world:
        greedy = world.connection()
        streams = [world.open(greedy) for _ in range(20)]
        for stream in streams:
            await first_update(stream)
        extra = [world.open(greedy) for _ in range(5)]
        for stream in extra:
            error = await refusal(stream)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too many streams on this connection" in (error.details() or "")
        assert world.metric("destination_streams_total", rpc="Get", code="RESOURCE_EXHAUSTED") == 5
        # Another connection is not affected by the greedy one.
        polite = world.open(world.connection())
        await first_update(polite)
        # Ending streams frees their places on the greedy connection.
        for stream in streams[:3]:
            stream.call.cancel()
        await eventually(
            lambda: values([world.handler.admitted]),
            lambda got: got == [18],
            what="three places freed",
        )
        again = world.open(greedy)
        await first_update(again)
        for stream in [*streams, polite, again]:
            stream.call.cancel()
        await world.released()


# --------------------------------------------------------------------------
# many distinct node names


class Tally:
    """A client that only counts the messages of its stream: its own memory is negligible."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self.call = call
        self.messages = 0
        self.task = asyncio.create_task(self._count())

    async def _count(self) -> None:
        async for _ in self.call:
            self.messages += 1


async def test_thousands_of_made_up_node_names_share_one_view_with_bounded_cost() -> None:
    async with start_world(endpoints=200) as world:
        flushes: list[float] = []
        flush = world.cache._flush

        def timed_flush() -> None:
            start = time.perf_counter()
            flush()
            flushes.append(time.perf_counter() - start)

        world.cache._flush = timed_flush  # type: ignore[method-assign]
        watched = world.open(world.connection())  # one full client, to check the content
        await first_update(watched)
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tallies = []
            for connection in range(2):
                channel = world.connection()
                for i in range(600):
                    token = json.dumps({"nodeName": f"made-up-{connection}-{i}", "ns": "x"})
                    tallies.append(Tally(world.call(channel, token=token)))
            await eventually(
                lambda: values(sorted({t.messages for t in tallies})),
                lambda got: got == [1],
                what="every stream's initial update",
            )
            per_stream = (tracemalloc.get_traced_memory()[0] - baseline) / len(tallies)
        finally:
            tracemalloc.stop()
        assert len(world.broadcasts) == 1
        assert world.cache.topics.views() == 1
        # Server and client Python objects per stream (gRPC core's buffers are not traced).
        assert per_stream < 32_000, per_stream

        with LoopLag() as lag:
            world.change()  # 200 endpoints removed, 200 added
            await eventually(
                lambda: values(sorted({t.messages for t in tallies})),
                lambda got: got == [3],  # the initial Add, then one Add and one Remove
                what="every stream got the change",
                interval_s=0.05,
            )
        await eventually(
            lambda: values(watched.ips()),
            lambda got: got == world.final_ips(),
            what="the watched stream converged",
        )
        # The fan-out (refresh, filter, diff, encode once, 1,201 offers) is one
        # short loop step: with one view per made-up node it took seconds.
        assert flushes and max(flushes) < 0.1, flushes
        # Writes to 1,201 streams are separate loop steps: no long stall anywhere.
        assert lag.worst < 1.0, lag.worst
        watched.call.cancel()
        for tally in tallies:
            tally.call.cancel()
        await world.released()


# --------------------------------------------------------------------------
# huge paths and tokens


@pytest.fixture
def get_log(monkeypatch: pytest.MonkeyPatch) -> structlog.testing.CapturingLogger:
    """What destination.api.get logs, each event rendered as the JSON line it would be."""
    captured = structlog.testing.CapturingLogger()
    logger = structlog.wrap_logger(
        captured,
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr(get_module, "log", logger)
    return captured


def lines(captured: structlog.testing.CapturingLogger) -> list[str]:
    return [str(call.args[0]) for call in captured.calls]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("w" * 3_900_000 + ".default.svc.cluster.local:80", id="3.9MB-path"),
        pytest.param("a" * 64 + ".default.svc.cluster.local:80", id="64-char-label"),
        pytest.param(".".join(["a" * 50] * 5) + ".svc.cluster.local:80", id="254-char-host"),
        pytest.param("web.default.svc.cluster.local:" + "0" * 400 + "80", id="zeros-port"),
    ],
)
async def test_oversized_paths_are_invalid_with_short_messages_and_log_lines(
    path: str, get_log: structlog.testing.CapturingLogger
) -> None:
    async with start_world() as world:
        stream = world.open(world.connection(), path=path)
        error = await refusal(stream)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(error.details() or "") < 400
        logged = lines(get_log)
        assert any('"get_rejected"' in line for line in logged), logged
        assert max(len(line) for line in logged) < 2000
        assert world.metric("destination_streams_total", rpc="Get", code="INVALID_ARGUMENT") == 1
        await world.released()


async def test_a_huge_context_token_is_ignored_and_the_stream_served(
    get_log: structlog.testing.CapturingLogger,
) -> None:
    async with start_world() as world:
        token = json.dumps({"nodeName": "n" * 2_000_000})
        stream = world.open(world.connection(), token=token)
        await first_update(stream)
        logged = lines(get_log)
        assert any('"context_token_ignored"' in line for line in logged), logged
        assert max(len(line) for line in logged) < 2000
        stream.call.cancel()
        await world.released()


# --------------------------------------------------------------------------
# abandoned streams


def stuck_timers() -> int:
    """Stuck-stream timers still scheduled on the running loop."""
    loop = asyncio.get_running_loop()
    scheduled = loop._scheduled  # type: ignore[attr-defined]
    return sum(
        1
        for handle in scheduled
        if not handle.cancelled()
        and getattr(handle._callback, "__func__", None) is StreamQueue._check_stuck
    )


async def test_abandoned_lagging_streams_leave_no_queue_timer_or_count_behind() -> None:
    """Hardening #12: a disconnected lagging client was reported stuck 30 s later."""
    async with start_world(endpoints=400, capacity=1, stuck_deadline_s=0.5) as world:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            channel = world.connection(STALLING)
            calls = [world.call(channel) for _ in range(50)]  # never read
            await eventually(
                lambda: values([world.broadcasts.streams]),
                lambda got: got == [50],
                what="every stream attached",
            )
            for _ in range(100):
                world.change()
                await asyncio.sleep(0.01)
                if stuck_timers() == 50:
                    break
            assert stuck_timers() == 50, "every stream overflowed and started its timer"
            for call in calls:
                call.cancel()
            await world.released()
            assert stuck_timers() == 0
            await channel.close()
            del calls
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        await asyncio.sleep(1.0)  # past the deadline: nothing may fire now
        assert world.metric("destination_stuck_streams_ended_total") == 0
        assert after - before < 2_000_000, after - before
