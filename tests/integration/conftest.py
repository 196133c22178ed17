"""Fixtures of the integration layer: a destination server on the `east` cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.destination_client import Server, running_server
from tests.kube.workloads import Kube


@pytest.fixture(scope="session")
async def server(east: Kube) -> AsyncIterator[Server]:
    """One `destination serve` for the session, watching `east` with default settings."""
    async with running_server(east) as started:
        yield started
