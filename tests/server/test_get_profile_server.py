"""GetProfile behind a real grpc.aio server, over discovery state the test feeds itself.

Scope: what a real API server cannot show or would make slow to show: the
per-connection stream limit, shared by Get and GetProfile (a proxy opens
both per destination); two Services claiming one ClusterIP (an API server's
allocator never lets that happen, a cache fed out of order or a hostile
remote could); and shutdown ending every kind of GetProfile stream with OK,
the idle empty profile of an undeclared port included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health
from prometheus_client import CollectorRegistry

from destination._proto import destination_pb2 as pb
from destination.api.assembly import Api, build_api
from destination.ops.metrics import DestinationMetrics
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.connection import LOCAL_KINDS
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind
from discovery.ports import PortSet
from discovery.project import project_service
from discovery.reflector import Listed
from tests.integration.destination_client import GET, GET_PROFILE, values
from tests.kube.workloads import eventually

WEB = "web.default.svc.cluster.local:80"
SHARED_IP = "10.96.0.10"


def service(name: str, cluster_ip: str) -> object:
    return project_service(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "ports": [{"name": "http", "port": 80}],
                "clusterIP": cluster_ip,
                "clusterIPs": [cluster_ip],
            },
        }
    )


@dataclass
class World:
    api: Api
    registry: CollectorRegistry
    address: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def connection(self) -> grpc.aio.Channel:
        """A channel on a TCP connection of its own."""
        channel = grpc.aio.insecure_channel(
            self.address,
            options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("test.connection", len(self.channels)),
            ],
        )
        self.channels.append(channel)
        return channel

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def start_world(*, max_streams_per_connection: int = 10_000) -> AsyncIterator[World]:
    registry = CollectorRegistry()
    cache = ClusterCache(
        name=ClusterName("local"),
        metrics=DiscoveryMetrics(registry),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=True,
    )
    services = (
        service("web", "10.96.0.1"),
        service("twin-a", SHARED_IP),
        service("twin-b", SHARED_IP),
    )
    for kind in LOCAL_KINDS:
        records = services if kind is Kind.SERVICE else ()
        cache.apply(Listed(kind, records), time.perf_counter())  # type: ignore[arg-type]
    cache.mark_synced()
    api = build_api(
        local=cache,
        store=None,
        mesh=MeshSettings(
            controller_namespace="linkerd",
            trust_domain="cluster.local",
            enable_h2_upgrade=True,
            force_opaque_transport=True,
        ),
        metrics=DestinationMetrics(registry),
        cluster_domain="cluster.local",
        queue_capacity=100,
        stuck_deadline_s=30,
        max_streams_per_connection=max_streams_per_connection,
        health_servicer=health.aio.HealthServicer(),
    )
    port = api.server.add_insecure_port("127.0.0.1:0")
    await api.server.start()
    world = World(api=api, registry=registry, address=f"127.0.0.1:{port}")
    try:
        yield world
    finally:
        for channel in world.channels:
            await channel.close()
        api.close_all()
        await api.server.stop(1)


class Call:
    """One stream of either RPC: its messages, and how it ended."""

    def __init__(self, channel: grpc.aio.Channel, method: str, path: str) -> None:
        stub = channel.unary_stream(
            method,
            request_serializer=pb.GetDestination.SerializeToString,
            response_deserializer=None,
        )
        self.call = stub(pb.GetDestination(scheme="k8s", path=path))
        self.messages: list[bytes] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.call:
            self.messages.append(message)

    async def first(self) -> bytes:
        await eventually(
            lambda: values(len(self.messages)),
            lambda n: n > 0,
            what="a first message",
            interval_s=0.02,
            timeout_s=10,
        )
        return self.messages[0]

    async def error(self) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(self.task, timeout=10)
        return ended.value

    async def ended_ok(self) -> bool:
        await asyncio.wait_for(self.task, timeout=10)  # raises if it ended with an error
        return await self.call.code() == grpc.StatusCode.OK


async def test_get_and_get_profile_share_one_stream_limit_per_connection() -> None:
    async with start_world(max_streams_per_connection=4) as world:
        greedy = world.connection()
        held = [Call(greedy, GET_PROFILE, WEB), Call(greedy, GET_PROFILE, "10.9.9.9:80")]
        held += [Call(greedy, GET, WEB), Call(greedy, GET, "twin-a.default.svc.cluster.local:80")]
        for call in held[:2]:
            await call.first()  # Gets of a service without endpoints send nothing: counted below
        await eventually(
            lambda: values(world.api.limit.admitted),
            lambda n: n == 4,
            what="four streams admitted",
            timeout_s=10,
        )
        for method in (GET_PROFILE, GET):
            refused = await Call(greedy, method, WEB).error()
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, method
            assert "too many streams on this connection" in (refused.details() or "")
        assert (
            world.metric("destination_streams_total", rpc="GetProfile", code="RESOURCE_EXHAUSTED")
            == 1
        )
        # Another connection is not affected.
        polite = Call(world.connection(), GET_PROFILE, WEB)
        await polite.first()
        # A GetProfile that ends frees its place.
        held[0].call.cancel()
        await eventually(
            lambda: values(world.api.limit.admitted),
            lambda n: n == 4,
            what="the cancelled stream's place freed",
        )
        again = Call(greedy, GET_PROFILE, WEB)
        assert await again.first() == held[0].messages[0]
        for call in (*held, polite, again):
            call.call.cancel()
        await eventually(
            lambda: values(world.api.limit.admitted),
            lambda n: n == 0,
            what="every place freed",
        )


async def test_two_services_at_one_cluster_ip_are_failed_precondition() -> None:
    async with start_world() as world:
        channel = world.connection()
        for path in (f"{SHARED_IP}:80", f"[::ffff:{SHARED_IP}]:80"):
            error = await Call(channel, GET_PROFILE, path).error()
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error.details() == f"found 2 services with conflicting cluster IP {SHARED_IP}"
        by_name = Call(channel, GET_PROFILE, "twin-a.default.svc.cluster.local:80")
        profile = pb.DestinationProfile.FromString(await by_name.first())
        assert profile.fully_qualified_name == "twin-a.default.svc.cluster.local"
        by_name.call.cancel()


async def test_shutdown_ends_every_kind_of_profile_stream_with_ok() -> None:
    async with start_world() as world:
        channel = world.connection()
        calls = [
            Call(channel, GET_PROFILE, WEB),  # a service profile
            Call(channel, GET_PROFILE, "10.9.9.9:80"),  # an endpoint profile
            Call(channel, GET_PROFILE, "web.default.svc.cluster.local:81"),  # undeclared port
        ]
        for call in calls:
            await call.first()
        assert calls[2].messages == [b""]
        world.api.close_all()
        for call in calls:
            assert await call.ended_ok()
