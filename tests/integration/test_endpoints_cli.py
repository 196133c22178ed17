"""``destination endpoints`` as a user runs it: a subprocess against a real server.

Scope: the command end to end (``python -m destination endpoints``) talking
to the session's in-process ``destination serve`` on the ``east`` cluster:
the JSON and table output of a deployed service, live updates while a
Deployment scales, exit status and stderr for gRPC errors and for a service
with no endpoints. The subprocess runs under asyncio so that the server,
which lives in the test's event loop, keeps serving while we wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.destination_client import Server
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 60.0
LINE_TIMEOUT_S = 60.0


def _command(server: Server, authority: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "destination",
        "endpoints",
        authority,
        "--server",
        server.address,
        *flags,
    ]


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DESTINATION_SERVER"}


async def run_cli(server: Server, authority: str, *flags: str) -> tuple[int, str, str]:
    """Run the command to completion; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *_command(server, authority, *flags),
        cwd=REPO_ROOT,
        env=_environ(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def live_cli(
    server: Server, authority: str, *flags: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The command running in the background; terminated and reaped when the block exits."""
    proc = await asyncio.create_subprocess_exec(
        *_command(server, authority, *flags),
        cwd=REPO_ROOT,
        env=_environ(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.communicate()
        assert proc.returncode is not None


async def next_document(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(LINE_TIMEOUT_S):
        line = await proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        err = await proc.stderr.read()
        raise AssertionError(f"the command ended early: {err.decode()!r}")
    document: dict[str, Any] = json.loads(line)
    return document


def ips(addrs: list[dict[str, Any]]) -> list[str]:
    return sorted(a["ip"] for a in addrs)


async def test_json_once_lists_the_ready_endpoints(
    server: Server, east: Kube, namespace: str
) -> None:
    ready = await east.deploy_service(namespace, "web", replicas=2)

    status, out, err = await run_cli(
        server, f"web.{namespace}.svc.cluster.local:80", "--json", "--once", "--timeout", "20"
    )

    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1, "--once prints exactly one document"
    document = json.loads(lines[0])
    assert document["update"] == 1
    assert ips(document["endpoints"]) == ready
    assert ips(document["added"]) == ready
    assert document["removed"] == []
    assert document["labels"] == {"service": "web", "namespace": namespace}
    for endpoint in document["endpoints"]:
        assert endpoint["port"] == 8080
        assert endpoint["weight"] == 10_000
        assert endpoint["metric_labels"]["deployment"] == "web"
        assert endpoint["metric_labels"]["pod"].startswith("web-")
        assert endpoint["identity"] is None, "unmeshed pods get no identity"
        assert endpoint["protocol_hint"] is None
        assert endpoint["http2"] is False


async def test_table_once_shows_one_marked_row_per_endpoint(
    server: Server, east: Kube, namespace: str
) -> None:
    ready = await east.deploy_service(namespace, "web", replicas=2)
    authority = f"web.{namespace}.svc.cluster.local:80"

    status, out, err = await run_cli(server, authority, "--once", "--timeout", "20")

    assert (status, err) == (0, "")
    header, columns, *rows = out.splitlines()
    assert header.startswith(f"{authority}  update 1 (+2 ~0 -0)  2 endpoints")
    assert header.endswith(f"labels namespace={namespace},service=web")
    assert columns.split() == [
        "ADDRESS",
        "POD",
        "WORKLOAD",
        "IDENTITY",
        "PROTOCOL",
        "ZONE",
        "LOCALITY",
    ]
    cells = [row.split() for row in rows]
    assert [c[1] for c in cells] == [f"{ip}:8080" for ip in ready]
    for marker, _, pod, workload, identity, protocol, zone, locality in cells:
        assert marker == "+"
        assert pod.startswith("web-")
        assert (workload, identity, protocol, locality) == ("deployment=web", "-", "-", "unknown")
        assert zone in {"east-a", "east-b"}


async def test_live_json_sees_a_scale_up_as_one_added_endpoint(
    server: Server, east: Kube, namespace: str
) -> None:
    two = await east.deploy_service(namespace, "web", replicas=2)

    async with live_cli(server, f"web.{namespace}.svc.cluster.local:80", "--json") as proc:
        first = await next_document(proc)
        assert ips(first["endpoints"]) == two

        await east.scale(namespace, "web", 3)
        three = await east.wait_for_ready_endpoints(namespace, "web", 3)
        document = first
        while len(document["endpoints"]) < 3:
            document = await next_document(proc)
        assert proc.returncode is None, "without --once the command keeps streaming"

    assert ips(document["endpoints"]) == three
    assert ips(document["added"]) == sorted(set(three) - set(two))
    assert document["removed"] == []
    assert document["update"] >= 2


@pytest.mark.parametrize(
    ("authority", "code"),
    [
        pytest.param("missing.{ns}.svc.cluster.local:80", "NOT_FOUND", id="unknown-service"),
        pytest.param("web.{ns}.svc.cluster.local:0", "INVALID_ARGUMENT", id="port-zero"),
        pytest.param("10.11.0.1:80", "INVALID_ARGUMENT", id="ip"),
    ],
)
async def test_grpc_errors_exit_1_with_the_status_code(
    server: Server, namespace: str, authority: str, code: str
) -> None:
    status, out, err = await run_cli(
        server, authority.format(ns=namespace), "--json", "--once", "--timeout", "20"
    )

    assert status == 1
    assert out == ""
    assert err.startswith(f"error: {code}: ")
    assert err.count("\n") == 1


async def test_once_on_a_service_without_endpoints_exits_3(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_service(namespace, "empty")

    status, out, err = await run_cli(
        server, f"empty.{namespace}.svc.cluster.local:80", "--once", "--timeout", "2"
    )

    assert (status, out) == (3, "")
    assert err == "no endpoints received within 2s\n"
