"""`destination serve` against a real cluster, seen through a real gRPC channel.

Scope: the whole Get path for local services (watch → index → view →
broadcast → stream), error status codes, gRPC health and reflection.
The server runs in the test's event loop (`destination.app.run`), the
cluster is the session's `east`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from destination._proto import destination_pb2 as pb
from destination.app import run
from destination.config import ServerConfig
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
async def server(east: Kube) -> AsyncIterator[Server]:
    grpc_port, admin_port = _free_port(), _free_port()
    config = ServerConfig(
        listen_address=f"127.0.0.1:{grpc_port}",
        admin_address=f"127.0.0.1:{admin_port}",
        kubeconfig=str(east.cluster.kubeconfig),
        cluster_name="east",
        log_format="console",
    )
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


async def _value(value: list[str]) -> list[str]:
    return value


async def test_get_streams_the_whole_set_then_adds_and_removes_as_a_deployment_scales(
    server: Server, east: Kube, namespace: str
) -> None:
    ips = await east.deploy_service(namespace, "web", replicas=3)
    stream = open_stream(server, f"web.{namespace}.svc.cluster.local:80")
    await eventually(lambda: _value(stream.ips()), lambda got: got == ips, what="3 endpoints")
    assert len(stream.updates) == 1, "the first message holds the whole set"
    assert stream.labels == {"service": "web", "namespace": namespace}
    addr = next(iter(stream.addresses.values()))
    assert addr.weight == 10000
    assert addr.addr.port == 8080
    assert addr.metric_labels["deployment"] == "web"
    assert addr.metric_labels["serviceaccount"] == "default"
    assert addr.metric_labels["pod"].startswith("web-")
    assert not addr.HasField("tls_identity"), "unmeshed pods get no identity"

    await east.scale(namespace, "web", 5)
    five = await east.wait_for_ready_endpoints(namespace, "web", 5)
    await eventually(lambda: _value(stream.ips()), lambda got: got == five, what="5 endpoints")

    await east.scale(namespace, "web", 1)
    one = await east.wait_for_ready_endpoints(namespace, "web", 1)
    await eventually(lambda: _value(stream.ips()), lambda got: got == one, what="1 endpoint")
    assert any(u.HasField("remove") for u in stream.updates)

    await east.core.delete_namespaced_service("web", namespace)
    await eventually(lambda: _value(stream.ips()), lambda got: got == [], what="all removed")
    assert not stream.call.done(), "the stream stays open after the service is deleted"
    await east.create_service(namespace, "web")
    await eventually(lambda: _value(stream.ips()), lambda got: got == one, what="re-added")
    stream.call.cancel()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        pytest.param(
            "web.default.svc.cluster.local:0", grpc.StatusCode.INVALID_ARGUMENT, id="port-zero"
        ),
        pytest.param("10.11.0.1:80", grpc.StatusCode.INVALID_ARGUMENT, id="ip"),
        pytest.param(
            "web.default.svc.other.domain:80", grpc.StatusCode.INVALID_ARGUMENT, id="other-domain"
        ),
        pytest.param(
            "missing.default.svc.cluster.local:80", grpc.StatusCode.NOT_FOUND, id="unknown-service"
        ),
    ],
)
async def test_get_rejects_bad_authorities_with_precise_status(
    server: Server, path: str, code: grpc.StatusCode
) -> None:
    stream = open_stream(server, path)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        assert stream.task is not None
        await stream.task
    assert failure.value.code() == code


async def test_external_name_service_is_an_invalid_authority(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_service(
        namespace,
        "ext",
        selector={},
        ports={},
        extra_spec={"type": "ExternalName", "externalName": "example.com"},
    )
    stream = open_stream(server, f"ext.{namespace}.svc.cluster.local:80")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        assert stream.task is not None
        await stream.task
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reflection_lists_the_destination_and_health_services(server: Server) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in response.list_services_response.service}
        break
    assert {"io.linkerd.proxy.destination.Destination", "grpc.health.v1.Health"} <= names
