"""GetProfile seen through operators' tools: grpcurl (reflection only) and `destination profile`.

Scope: grpcurl describes and streams GetProfile from the running server with
no .proto files; `destination profile AUTHORITY --once --json` prints what
the server sends, field for field (the same message a GetProfile client
receives), picks the client-side profile with --context-token, prints the
empty profile of an undeclared port, and exits 1 with the status for an
unknown Service; the text form names the profile and its routes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from google.protobuf import json_format

from tests.integration.destination_client import Server, open_known_profile_stream
from tests.integration.mesh_objects import client_token, fqn, put_service_profile
from tests.integration.test_grpcurl import SERVICE, grpcurl, json_documents
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

ROUTES: dict[str, Any] = {
    "routes": [
        {
            "name": "books",
            "condition": {"method": "GET", "pathRegex": "/books"},
            "responseClasses": [{"condition": {"status": {"min": 500}}, "isFailure": True}],
            "timeout": "300ms",
        }
    ]
}


async def profile_cli(server: Server, authority: str, *flags: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "destination",
        "profile",
        authority,
        "--server",
        server.address,
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def served(server: Server, authority: str, token: str = "") -> dict[str, Any]:
    """The first profile a GetProfile client gets, in the protobuf JSON mapping."""
    stream = await open_known_profile_stream(server, authority, token)
    try:
        await stream.count(1, what=authority)
    finally:
        stream.cancel()
    document: dict[str, Any] = json_format.MessageToDict(
        stream.profiles[0], preserving_proto_field_name=True
    )
    return document


async def test_grpcurl_describes_and_streams_get_profile(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_service(namespace, "web")
    await put_service_profile(east, namespace, fqn("web", namespace), ROUTES)
    authority = f"{fqn('web', namespace)}:80"
    expected = await served(server, authority)
    assert expected["routes"], "the profile applies before grpcurl asks"

    code, out, err = await grpcurl(server.address, "describe", SERVICE)
    assert code == 0, err
    assert "rpc GetProfile ( .io.linkerd.proxy.destination.GetDestination )" in out
    assert "returns ( stream .io.linkerd.proxy.destination.DestinationProfile )" in out

    request = json.dumps({"scheme": "k8s", "path": authority})
    code, out, err = await grpcurl(
        "-max-time", "3", "-d", request, server.address, f"{SERVICE}/GetProfile"
    )
    assert "DeadlineExceeded" in err, (code, err)  # the stream stays open: the deadline ends it
    (document,) = json_documents(out)
    assert document["fully_qualified_name"] == fqn("web", namespace)
    assert document["routes"][0]["metrics_labels"] == {"route": "books"}
    assert document["routes"][0]["timeout"] == "0.300s"
    assert document["profile_ref"]["resource"]["kind"] == "ServiceProfile"
    assert document["retry_budget"]["ttl"] == "10s"
    assert document["parent_ref"] == expected["parent_ref"]


async def test_destination_profile_once_json_prints_what_the_server_sends(
    server: Server, east: Kube, namespace: str
) -> None:
    ns = namespace
    client_ns = f"{ns[:50]}-client"
    await east.create_namespace(client_ns)
    try:
        await east.create_service(ns, "web")
        await put_service_profile(east, ns, fqn("web", ns), ROUTES)
        await put_service_profile(
            east,
            client_ns,
            fqn("web", ns),
            {"routes": [{"name": "client-side", "condition": {"method": "POST"}}]},
        )
        authority = f"{fqn('web', ns)}:80"
        for token in ("", client_token(client_ns)):
            expected = await served(server, authority, token)
            flags = ["--once", "--json", "--timeout", "20", "--context-token", token]
            status, out, err = await profile_cli(server, authority, *flags)
            assert (status, err) == (0, "")
            (line,) = out.splitlines()
            assert json.loads(line) == expected
        assert expected["routes"][0]["metrics_labels"] == {"route": "client-side"}

        # An undeclared port: the empty profile, printed as an empty document.
        status, out, err = await profile_cli(
            server, f"{fqn('web', ns)}:81", "--once", "--json", "--timeout", "20"
        )
        assert (status, out, err) == (0, "{}\n", "")

        # The text form.
        status, out, err = await profile_cli(server, authority, "--once", "--timeout", "20")
        assert status == 0, err
        lines = out.splitlines()
        assert lines[0] == f"{authority}  profile 1"
        assert f"name        {fqn('web', ns)}" in lines
        assert f"profile     linkerd.io/ServiceProfile {ns}/{fqn('web', ns)}" in lines
        assert "  books: all(GET, path~/books)  [timeout 300ms]" in lines
        assert "    status 500-* -> failure" in lines

        # An unknown Service: the status, exit 1.
        status, out, err = await profile_cli(
            server, f"{fqn('nope', ns)}:80", "--once", "--json", "--timeout", "20"
        )
        assert (status, out) == (1, "")
        assert err == 'error: UNKNOWN: service "nope" not found\n'
    finally:
        await east.delete_namespace(client_ns)
