"""What an operator sees with grpcurl, using server reflection only (no .proto files).

Scope: `list`, `describe` and a streaming `Get` from a running server, with
the pinned grpcurl binary (deploy/local/build-binaries.sh builds it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import pytest

from tests.integration.destination_client import Server
from tests.kube.binaries import Binaries
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

SERVICE = "io.linkerd.proxy.destination.Destination"


async def grpcurl(*args: str, timeout_s: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(Binaries.locate().grpcurl),
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def json_documents(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty-printed JSON document per streamed message."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while (position := _skip_space(text, position)) < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


async def test_grpcurl_lists_and_describes_the_destination_service(server: Server) -> None:
    code, out, err = await grpcurl(server.address, "list")
    assert code == 0, err
    assert SERVICE in out.split()
    assert "grpc.health.v1.Health" in out.split()

    code, out, err = await grpcurl(server.address, "describe", SERVICE)
    assert code == 0, err
    assert "rpc Get ( .io.linkerd.proxy.destination.GetDestination )" in out
    assert "returns ( stream .io.linkerd.proxy.destination.Update )" in out


async def test_grpcurl_streams_get_for_a_service(
    server: Server, east: Kube, namespace: str
) -> None:
    ips = await east.deploy_service(namespace, "web", replicas=2)
    request = json.dumps({"scheme": "k8s", "path": f"web.{namespace}.svc.cluster.local:80"})
    # The stream never ends by itself: grpcurl's deadline ends it after the first update.
    code, out, err = await grpcurl(
        "-max-time", "3", "-d", request, server.address, f"{SERVICE}/Get"
    )
    assert "DeadlineExceeded" in err, (code, err)
    documents = json_documents(out)
    assert documents, err
    added = documents[0]["add"]
    streamed = sorted(str(ipaddress.IPv4Address(a["addr"]["ip"]["ipv4"])) for a in added["addrs"])
    assert streamed == ips
    assert added["metric_labels"] == {"service": "web", "namespace": namespace}
