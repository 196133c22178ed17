"""Discovery against a real API server: reflectors, index and topics together.

Scope: list-then-watch of the local kinds feeding one view of a (service,
port); the view's diffs follow a Deployment as it scales and its Service as it
is deleted and recreated. Excluded: gRPC (tests/integration/test_get_*.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from discovery.cluster import ClusterCache
from discovery.connection import LOCAL_KINDS, Connection
from discovery.kubernetes_client import KubernetesClientTransport
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, ServiceRef
from discovery.ports import PortSet
from discovery.topics import AddressDiff, AddressSnapshot, ViewKey
from tests.kube.workloads import Kube, eventually, new_api_client

pytestmark = pytest.mark.integration


class RecordingSink:
    def __init__(self) -> None:
        self.diffs: list[AddressDiff] = []
        self.snapshot: AddressSnapshot | None = None

    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        self.diffs.append(diff)
        self.snapshot = snapshot

    def ips(self) -> list[str]:
        return sorted(a.ip for a in self.snapshot.addresses.values()) if self.snapshot else []


@pytest.fixture
async def east_cache(east: Kube) -> AsyncIterator[ClusterCache]:
    api = await new_api_client(east.cluster.kubeconfig)
    metrics = DiscoveryMetrics(CollectorRegistry())
    cache = ClusterCache(
        name=ClusterName("east"),
        metrics=metrics,
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=True,
    )
    connection = Connection(
        cluster=cache.name,
        api=KubernetesClientTransport(api),
        kinds=LOCAL_KINDS,
        sink=cache.apply,
        metrics=metrics,
    )

    async def watch() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(connection.run())
            await connection.synced.wait()
            cache.mark_synced()

    task = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(30):
            await cache.wait_synced()
        yield cache
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await api.close()


async def _async(value: list[str]) -> list[str]:
    return value


async def test_view_follows_scaling_and_service_recreation(
    east: Kube, east_cache: ClusterCache, namespace: str
) -> None:
    sink = RecordingSink()
    subscription = east_cache.topics.subscribe(
        service=ServiceRef(namespace, "web"), port=80, key=ViewKey(), sink=sink
    )
    assert subscription.initial.addresses == {}

    ips = await east.deploy_service(namespace, "web", replicas=3)
    await eventually(lambda: _async(sink.ips()), lambda got: got == ips, what="3 addresses")
    snapshot = sink.snapshot
    assert snapshot is not None
    assert dict(snapshot.labels) == {"service": "web", "namespace": namespace}
    # Target port resolved by name: the service port "http" maps to containerPort 8080.
    assert {a.port for a in snapshot.addresses.values()} == {8080}
    assert all(a.pod is not None and a.owner is not None for a in snapshot.addresses.values())
    assert {a.owner.kind for a in snapshot.addresses.values() if a.owner} == {"Deployment"}

    await east.scale(namespace, "web", 1)
    remaining = await east.wait_for_ready_endpoints(namespace, "web", 1)
    await eventually(lambda: _async(sink.ips()), lambda got: got == remaining, what="1 address")
    removed = {a.ip for d in sink.diffs for a in d.removed}
    assert removed == set(ips) - set(remaining)

    await east.core.delete_namespaced_service("web", namespace)
    await eventually(lambda: _async(sink.ips()), lambda got: got == [], what="no addresses")
    assert {a.ip for a in sink.diffs[-1].removed} == set(remaining)

    await east.create_service(namespace, "web")
    await eventually(lambda: _async(sink.ips()), lambda got: got == remaining, what="re-added")
    subscription.close()
    assert east_cache.topics.views() == 0
