"""Get and GetProfile clients for tests, as a proxy would use them, and an in-process server.

`running_server` runs `destination.app.run` in the test's event loop against
one test cluster; `open_stream` opens a Get stream and keeps its state the
way a proxy does (addresses by ip:port, set-level labels), recording every
update for assertions; `open_profile_stream` opens a GetProfile stream and
records every profile with its exact bytes (a proxy keeps the latest).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from destination._proto import destination_pb2 as pb
from destination.app import run
from destination.config import ServerConfig
from tests.kube.workloads import Kube, eventually

V = TypeVar("V")

GET = "/io.linkerd.proxy.destination.Destination/Get"
GET_PROFILE = "/io.linkerd.proxy.destination.Destination/GetProfile"


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


@dataclass
class ProfileStream:
    """A GetProfile stream: every profile received, in order, and the bytes it came as."""

    call: grpc.aio.UnaryStreamCall
    payloads: list[bytes] = field(default_factory=list)
    profiles: list[pb.DestinationProfile] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first profile

    async def consume(self) -> None:
        async for payload in self.call:
            self.payloads.append(payload)
            self.profiles.append(pb.DestinationProfile.FromString(payload))
            self.arrived.set()

    async def first_or_end(self, timeout_s: float = 10) -> None:
        """Wait for the first profile or the end of the stream, whichever comes first."""
        assert self.task is not None
        arrived = asyncio.ensure_future(self.arrived.wait())
        try:
            await asyncio.wait(
                {self.task, arrived}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            arrived.cancel()

    @property
    def latest(self) -> pb.DestinationProfile | None:
        return self.profiles[-1] if self.profiles else None

    @property
    def open(self) -> bool:
        """Still streaming: neither ended by the server nor failed."""
        return self.task is not None and not self.task.done()

    async def until(
        self,
        done: Callable[[pb.DestinationProfile], bool],
        *,
        what: str,
        timeout_s: float = 30,
    ) -> pb.DestinationProfile:
        """Wait until the latest profile satisfies `done`; return it."""

        async def latest() -> pb.DestinationProfile | None:
            if self.task is not None and self.task.done():
                self.task.result()  # a failed stream fails the wait at once, with its status
            return self.latest

        found = await eventually(
            latest,
            lambda profile: profile is not None and done(profile),
            what=what,
            timeout_s=timeout_s,
            interval_s=0.05,
        )
        assert found is not None
        return found

    async def count(self, n: int, *, what: str, timeout_s: float = 30) -> None:
        """Wait until at least `n` profiles arrived."""
        await eventually(
            lambda: values([len(self.profiles)]),
            lambda got: got[0] >= n,
            what=f"{n} profiles: {what}",
            timeout_s=timeout_s,
            interval_s=0.05,
        )

    async def failure(self, timeout_s: float = 30) -> grpc.aio.AioRpcError:
        """The status the server ended the stream with (the stream must fail)."""
        assert self.task is not None
        try:
            async with asyncio.timeout(timeout_s):
                await self.task
        except grpc.aio.AioRpcError as err:
            return err
        raise AssertionError(f"the stream ended without an error after {self.profiles!r}")

    def cancel(self) -> None:
        self.call.cancel()


def open_profile_stream(server: Server, path: str, token: str = "") -> ProfileStream:
    method = server.channel.unary_stream(
        GET_PROFILE,
        request_serializer=pb.GetDestination.SerializeToString,
        response_deserializer=None,  # the bytes as sent: an empty profile is b""
    )
    stream = ProfileStream(
        call=method(pb.GetDestination(scheme="k8s", path=path, context_token=token))
    )
    stream.task = asyncio.create_task(stream.consume())
    return stream


async def open_known_profile_stream(
    server: Server, path: str, token: str = "", *, timeout_s: float = 30
) -> ProfileStream:
    """A GetProfile stream of a Service just created: opened again while the server has
    not seen the Service yet (UNKNOWN "not found"); returned once it streams, or fails
    otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        stream = open_profile_stream(server, path, token)
        await stream.first_or_end()
        assert stream.task is not None
        if stream.profiles or not stream.task.done():
            return stream
        error = stream.task.exception()
        unseen = (
            isinstance(error, grpc.aio.AioRpcError)
            and error.code() == grpc.StatusCode.UNKNOWN
            and (error.details() or "").endswith("not found")
        )
        if not unseen or asyncio.get_running_loop().time() > deadline:
            return stream
        await asyncio.sleep(0.05)


async def values(value: V) -> V:
    """Wrap a value as an awaitable, for `eventually` probes of in-memory state."""
    return value
