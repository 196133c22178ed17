"""`destination serve` against a real cluster, seen through a real gRPC channel.

Scope: the whole Get path for local services (watch → index → view →
broadcast → stream), error status codes, gRPC health and reflection.
The server runs in the test's event loop (`destination.app.run`), the
cluster is the session's `east`.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.integration.destination_client import Server, open_stream, running_server, values
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration


async def test_get_streams_the_whole_set_then_adds_and_removes_as_a_deployment_scales(
    server: Server, east: Kube, namespace: str
) -> None:
    ips = await east.deploy_service(namespace, "web", replicas=3)
    stream = open_stream(server, f"web.{namespace}.svc.cluster.local:80")
    await eventually(lambda: values(stream.ips()), lambda got: got == ips, what="3 endpoints")
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
    await eventually(lambda: values(stream.ips()), lambda got: got == five, what="5 endpoints")

    await east.scale(namespace, "web", 1)
    one = await east.wait_for_ready_endpoints(namespace, "web", 1)
    await eventually(lambda: values(stream.ips()), lambda got: got == one, what="1 endpoint")
    assert any(u.HasField("remove") for u in stream.updates)

    await east.core.delete_namespaced_service("web", namespace)
    await eventually(lambda: values(stream.ips()), lambda got: got == [], what="all removed")
    assert not stream.call.done(), "the stream stays open after the service is deleted"
    await east.create_service(namespace, "web")
    await eventually(lambda: values(stream.ips()), lambda got: got == one, what="re-added")
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

    async def rejection() -> grpc.StatusCode:
        stream = open_stream(server, f"ext.{namespace}.svc.cluster.local:80")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            assert stream.task is not None
            await stream.task
        code: grpc.StatusCode = failure.value.code()
        return code

    # NOT_FOUND only until the server's watch has seen the new Service.
    code = await eventually(
        rejection, lambda c: c != grpc.StatusCode.NOT_FOUND, what="the Service to be known"
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_reflection_lists_the_destination_and_health_services(server: Server) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in response.list_services_response.service}
        break
    assert {"io.linkerd.proxy.destination.Destination", "grpc.health.v1.Health"} <= names


async def test_server_shutdown_ends_open_streams_with_ok(east: Kube, namespace: str) -> None:
    ips = await east.deploy_service(namespace, "web", replicas=1)
    # A channel of the test's own: the fixture closes its channel on exit.
    async with running_server(east, shutdown_grace_s=2.0) as own:
        channel = grpc.aio.insecure_channel(own.address)
        stream = open_stream(
            Server(own.address, own.admin, channel), f"web.{namespace}.svc.cluster.local:80"
        )
        await eventually(lambda: values(stream.ips()), lambda got: got == ips, what="1 endpoint")
    try:
        assert stream.task is not None
        async with asyncio.timeout(10):
            await stream.task  # raises if the stream ended with any status but OK
        assert await stream.call.code() == grpc.StatusCode.OK
    finally:
        await channel.close()
