"""A Get client for tests, as a proxy would use it, and an in-process server.

`running_server` runs `destination.app.run` in the test's event loop against
one test cluster; `open_stream` opens a Get stream and keeps its state the
way a proxy does (addresses by ip:port, set-level labels), recording every
update for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from destination._proto import destination_pb2 as pb
from destination.app import run
from destination.config import ServerConfig
from tests.kube.workloads import Kube, eventually

GET = "/io.linkerd.proxy.destination.Destination/Get"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    address: str
    admin: str
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def running_server(kube: Kube, **settings: object) -> AsyncIterator[Server]:
    """`destination serve` in this event loop against `kube`, until the block exits."""
    grpc_port, admin_port = _free_port(), _free_port()
    values: dict[str, object] = {
        "listen_address": f"127.0.0.1:{grpc_port}",
        "admin_address": f"127.0.0.1:{admin_port}",
        "kubeconfig": str(kube.cluster.kubeconfig),
        "cluster_name": kube.cluster.name,
        "log_format": "console",
    }
    config = ServerConfig(**(values | settings))  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop=stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> int:
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(service=""))
                return int(response.status)
            except grpc.aio.AioRpcError:
                return -1

        await eventually(
            serving,
            lambda s: s == health_pb2.HealthCheckResponse.SERVING,
            what="gRPC health SERVING",
            timeout_s=30,
        )
        yield Server(f"127.0.0.1:{grpc_port}", f"127.0.0.1:{admin_port}", channel)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            assert await task == 0
        await channel.close()


@dataclass
class Stream:
    """A Get stream's state as a proxy would keep it: addresses by ip:port."""

    call: grpc.aio.UnaryStreamCall
    addresses: dict[str, pb.WeightedAddr] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    updates: list[pb.Update] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def consume(self) -> None:
        async for update in self.call:
            self.updates.append(update)
            self.apply(update)

    def apply(self, update: pb.Update) -> None:
        """Apply one update as a proxy does: Adds replace by ip:port, Removes delete."""
        if update.HasField("add"):
            self.labels = dict(update.add.metric_labels)
            for addr in update.add.addrs:
                self.addresses[_key(addr.addr)] = addr
        elif update.HasField("remove"):
            for tcp in update.remove.addrs:
                self.addresses.pop(_key(tcp), None)

    def ips(self) -> list[str]:
        return sorted(key.rsplit(":", 1)[0] for key in self.addresses)


def _key(tcp: object) -> str:
    ip = tcp.ip  # type: ignore[attr-defined]
    if ip.HasField("ipv4"):
        return f"{ipaddress.IPv4Address(ip.ipv4)}:{tcp.port}"  # type: ignore[attr-defined]
    value = (ip.ipv6.first << 64) | ip.ipv6.last
    return f"[{ipaddress.IPv6Address(value)}]:{tcp.port}"  # type: ignore[attr-defined]


def open_stream(server: Server, path: str, token: str = "") -> Stream:
    method = server.channel.unary_stream(
        GET,
        request_serializer=pb.GetDestination.SerializeToString,
        response_deserializer=pb.Update.FromString,
    )
    stream = Stream(call=method(pb.GetDestination(scheme="k8s", path=path, context_token=token)))
    stream.task = asyncio.create_task(stream.consume())
    return stream


async def values(value: list[str]) -> list[str]:
    """Wrap a value as an awaitable, for `eventually` probes of in-memory state."""
    return value
