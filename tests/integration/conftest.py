"""Integration fixtures: a destination server on `east`, a second API server of west, and
the service-mirror controller with a namespace of its own."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.integration.destination_client import Server, running_server
from tests.integration.mirror_controller import (
    Mirror,
    create_controller_namespace,
    delete_controller_namespace,
    running_mirror,
)
from tests.kube.cluster import ExtraApiServer
from tests.kube.workloads import Kube


@pytest.fixture(scope="session")
async def server(east: Kube) -> AsyncIterator[Server]:
    """One `destination serve` for the session, watching `east` with default settings."""
    async with running_server(east) as started:
        yield started


@pytest.fixture
async def west_ha(west: Kube) -> AsyncIterator[ExtraApiServer]:
    """A second API server of west, for this test only (a link can point at it).

    Stopping or pausing it takes the API away from the server under test only:
    west's controllers use the primary, and go on changing the cluster.
    """
    extra = await asyncio.to_thread(west.cluster.add_apiserver, f"apiserver-{secrets.token_hex(3)}")
    try:
        yield extra
    finally:
        await asyncio.to_thread(extra.stop)


@pytest.fixture
async def controller_namespace(east: Kube) -> AsyncIterator[str]:
    """A fresh namespace of `east` for one test's mirror controller, its Links and Leases."""
    name = await create_controller_namespace(east)
    yield name
    await delete_controller_namespace(east, name)


@pytest.fixture
async def mirror(east: Kube, controller_namespace: str) -> AsyncIterator[Mirror]:
    """`destination mirror` on `east` for this test, with short repair and lease periods."""
    async with running_mirror(east, controller_namespace) as started:
        yield started
