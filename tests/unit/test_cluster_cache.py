"""Unit tests for discovery.cluster.ClusterCache: batching and service listeners.

Scope: events applied in one loop iteration are flushed together; service
listeners (which re-plan federated and remote-discovery streams) hear only
of Service objects that changed, never of endpoint or pod changes, which
would re-plan every stream of a service on each event of a rollout; a
failure during a flush (a listener, the refresh) is logged with the cluster's
name instead of reaching asyncio's default handler, and the other listeners
still hear of the batch.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from discovery import cluster as cluster_module
from discovery.cluster import ClusterCache
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef, ServiceRef
from discovery.ports import PortSet
from discovery.reflector import Deleted, Upserted
from tests.unit import builders as b
from tests.unit.log_recorder import LogRecorder

WEB = ServiceRef(b.NS, "web")


def new_cache() -> tuple[ClusterCache, list[set[ServiceRef]]]:
    cache = ClusterCache(
        name=ClusterName("east"),
        metrics=DiscoveryMetrics(CollectorRegistry()),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=False,
    )
    heard: list[set[ServiceRef]] = []
    cache.add_service_listener(heard.append)
    return cache, heard


def upsert(cache: ClusterCache, raw: dict[str, object]) -> None:
    record = b.projected(raw)
    kind = {"Service": Kind.SERVICE, "Pod": Kind.POD}.get(str(raw["kind"]), Kind.ENDPOINT_SLICE)
    cache.apply(Upserted(kind, record), time.perf_counter())


async def test_listeners_hear_of_service_objects_only() -> None:
    cache, heard = new_cache()
    upsert(cache, b.service())
    upsert(cache, b.pod("web-1"))
    upsert(cache, b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")]))
    await asyncio.sleep(0)
    assert heard == [{WEB}]  # one batch, and only because the Service itself arrived

    upsert(cache, b.endpoint_slice(endpoints=[b.endpoint("10.0.0.2", pod="web-2")]))
    upsert(cache, b.pod("web-1", ip="10.0.0.9"))
    await asyncio.sleep(0)
    assert heard == [{WEB}]  # endpoint and pod changes re-plan nothing

    cache.apply(Deleted(Kind.SERVICE, ObjectRef(b.NS, "web")), time.perf_counter())
    await asyncio.sleep(0)
    assert heard == [{WEB}, {WEB}]


async def test_a_failing_listener_is_logged_with_the_cluster_and_others_still_hear(
    monkeypatch: pytest.MonkeyPatch, loop_errors: list[dict[str, Any]]
) -> None:
    logs = LogRecorder()
    monkeypatch.setattr(cluster_module, "log", logs)
    cache, heard = new_cache()

    def broken(changed: set[ServiceRef]) -> None:
        raise RuntimeError("listener bug")

    cache._service_listeners.insert(0, broken)
    upsert(cache, b.service())
    await asyncio.sleep(0)
    assert heard == [{WEB}]
    [record] = logs.named("service_listener_failed")
    assert record["cluster"] == "east" and isinstance(record["exc_info"], RuntimeError)
    assert loop_errors == []


async def test_a_failing_refresh_is_logged_with_the_cluster(
    monkeypatch: pytest.MonkeyPatch, loop_errors: list[dict[str, Any]]
) -> None:
    logs = LogRecorder()
    monkeypatch.setattr(cluster_module, "log", logs)
    cache, heard = new_cache()

    def broken(services: object) -> bool:
        raise KeyError("topics bug")

    monkeypatch.setattr(cache.topics, "refresh", broken)
    upsert(cache, b.service())
    await asyncio.sleep(0)
    [record] = logs.named("flush_failed")
    assert record["cluster"] == "east" and isinstance(record["exc_info"], KeyError)
    assert heard == [{WEB}], "listeners still hear of the Service change"
    assert loop_errors == []
