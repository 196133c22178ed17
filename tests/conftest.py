"""Fixtures shared by every test layer.

The Kubernetes fixtures start real control planes (tests/kube) once per
session, and only when a test asks for them: unit tests never pay for them.
A missing binary fails the test with the command to run; nothing is skipped.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.kube.binaries import BinariesMissing
from tests.kube.cluster import LocalCluster, running_clusters
from tests.kube.workloads import Kube, new_api_client

# The clusters every integration session gets; later layers ask for more by name.
# east runs the server under test; west and north are the remote clusters it links.
SESSION_CLUSTERS = tuple(os.environ.get("MCD_TEST_CLUSTERS", "east,west,north").split(","))


@pytest.fixture(scope="session")
def clusters() -> Iterator[dict[str, LocalCluster]]:
    """Real clusters on loopback, started in parallel, stopped at session end."""
    try:
        with running_clusters(SESSION_CLUSTERS) as started:
            yield {cluster.name: cluster for cluster in started}
    except BinariesMissing as err:
        pytest.fail(str(err), pytrace=False)


async def _kube(clusters: dict[str, LocalCluster], name: str) -> AsyncIterator[Kube]:
    if name not in clusters:
        pytest.fail(f"cluster {name!r} is not started; MCD_TEST_CLUSTERS={SESSION_CLUSTERS}")
    cluster = clusters[name]
    api = await new_api_client(cluster.kubeconfig)
    try:
        yield Kube(cluster=cluster, api=api)
    finally:
        await api.close()


@pytest.fixture(scope="session")
async def east(clusters: dict[str, LocalCluster]) -> AsyncIterator[Kube]:
    async for kube in _kube(clusters, "east"):
        yield kube


@pytest.fixture(scope="session")
async def west(clusters: dict[str, LocalCluster]) -> AsyncIterator[Kube]:
    async for kube in _kube(clusters, "west"):
        yield kube


@pytest.fixture(scope="session")
async def north(clusters: dict[str, LocalCluster]) -> AsyncIterator[Kube]:
    async for kube in _kube(clusters, "north"):
        yield kube


@pytest.fixture
async def namespace(request: pytest.FixtureRequest, east: Kube, west: Kube) -> AsyncIterator[str]:
    """A fresh namespace, named after the test, created in east and west alike."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    for kube in (east, west):
        await kube.create_namespace(name)
    yield name
    for kube in (east, west):
        await kube.delete_namespace(name)
