"""GetProfile on a cluster without the ServiceProfile CRD, on a cluster of its own.

Scope: `destination serve` as a process (JSON logs on stderr) against a
dedicated cluster whose ServiceProfile CRD is deleted: first under a live
stream (its profile gives way to the default one, the stream stays open),
then before a server starts (it syncs, serves default profiles, and logs
`resource_not_served` once for the missing resource). A dedicated cluster
because the shared ones must keep their CRDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.integration.destination_client import Server, open_profile_stream
from tests.integration.mesh_objects import fqn, put_service_profile
from tests.kube.cluster import specs_for, start_clusters, stop_clusters
from tests.kube.workloads import Kube, eventually, new_api_client

pytestmark = pytest.mark.integration

SP_PATH = "/apis/linkerd.io/v1alpha2/serviceprofiles"


@pytest.fixture(scope="module")
async def bare_cluster() -> AsyncIterator[Kube]:
    (cluster,) = await asyncio.to_thread(start_clusters, specs_for(["sp-less"]))
    api = await new_api_client(cluster.kubeconfig)
    try:
        yield Kube(cluster=cluster, api=api)
    finally:
        await api.close()
        await asyncio.to_thread(stop_clusters, [cluster], remove_dir=cluster.directory.parent)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(kube: Kube, log_file: Path) -> AsyncIterator[Server]:
    """`destination serve` as a process, JSON logs into `log_file`, until the block ends."""
    grpc_address = f"127.0.0.1:{_free_port()}"
    admin_address = f"127.0.0.1:{_free_port()}"
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "destination",
            "serve",
            "--kubeconfig",
            str(kube.cluster.kubeconfig),
            "--cluster-name",
            kube.cluster.name,
            "--listen-address",
            grpc_address,
            "--admin-address",
            admin_address,
            "--log-format",
            "json",
            stdout=log,
            stderr=log,
        )
    channel = grpc.aio.insecure_channel(grpc_address)
    try:

        async def ready() -> int:
            if process.returncode is not None:
                raise AssertionError(f"the server exited: {_tail(log_file)}")
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://{admin_address}/ready") as response,
                ):
                    return response.status
            except aiohttp.ClientError:
                return 0

        await eventually(ready, lambda status: status == 200, what="/ready", timeout_s=30)
        yield Server(grpc_address, admin_address, channel)
    finally:
        await channel.close()
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(30):
            assert await process.wait() == 0


def _tail(log_file: Path) -> str:
    return log_file.read_text()[-2000:]


def log_events(log_file: Path, event: str) -> list[dict[str, Any]]:
    records = []
    for line in log_file.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                records.append(record)
    return records


async def test_without_the_crd_default_profiles_are_served(
    bare_cluster: Kube, tmp_path: Path
) -> None:
    kube = bare_cluster
    await kube.create_namespace("shop")
    await kube.create_service("shop", "web")
    name = fqn("web", "shop")
    await put_service_profile(
        kube, "shop", name, {"routes": [{"name": "r", "condition": {"method": "GET"}}]}
    )

    # The CRD deleted under a live stream: its profiles go, the default one comes.
    async with serving(kube, tmp_path / "first.log") as server:
        stream = open_profile_stream(server, f"{name}:80")
        await stream.until(lambda p: len(p.routes) == 1, what="the ServiceProfile")
        await asyncio.to_thread(
            kube.cluster.kubectl, "delete", "crd", "serviceprofiles.linkerd.io", "--wait=true"
        )
        default = await stream.until(
            lambda p: not p.routes and not p.profile_ref.resource.name,
            what="the default profile once the CRD is gone",
        )
        assert default.fully_qualified_name == name
        assert stream.open
        stream.cancel()

    # A server started without the CRD syncs, serves default profiles, says so once.
    log_file = tmp_path / "second.log"
    async with serving(kube, log_file) as server:
        stream = open_profile_stream(server, f"{name}:80")
        await stream.count(1, what="a profile without the CRD")
        assert stream.profiles[0] == default
        empty = open_profile_stream(server, f"{name}:81")
        await empty.count(1, what="the empty profile of an undeclared port")
        assert empty.payloads == [b""]
        for each in (stream, empty):
            assert each.open
            each.cancel()
    not_served = log_events(log_file, "resource_not_served")
    assert [record["path"] for record in not_served] == [SP_PATH], not_served
    assert not_served[0]["kind"] == "ServiceProfile"
