"""Integration fixtures: a destination server on `east`, a second API server of west."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.integration.destination_client import Server, running_server
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
