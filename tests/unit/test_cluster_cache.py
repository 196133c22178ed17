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
from discovery.reflector import Deleted, Listed, Upserted
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


async def test_a_linked_cluster_cannot_make_us_hold_more_than_the_limit_per_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logs = LogRecorder()
    monkeypatch.setattr(cluster_module, "log", logs)
    registry = CollectorRegistry()
    cache = ClusterCache(
        name=ClusterName("west"),
        metrics=DiscoveryMetrics(registry),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=False,
        max_objects_per_kind=3,
    )
    pods = [b.projected(b.pod(f"p-{i}", ip=f"10.0.0.{i + 1}")) for i in range(5)]
    cache.apply(Listed(Kind.POD, tuple(pods)), time.perf_counter())  # type: ignore[arg-type]
    assert cache.index.sizes()[Kind.POD] == 3  # the list is cut at the limit
    cache.apply(Upserted(Kind.POD, b.projected(b.pod("p-9", ip="10.0.0.9"))), 0.0)
    assert ObjectRef(b.NS, "p-9") not in cache.index.pods  # a new one is refused
    changed = b.projected(b.pod("p-0", ip="10.0.0.99"))
    cache.apply(Upserted(Kind.POD, changed), 0.0)
    assert cache.index.pods[ObjectRef(b.NS, "p-0")] is changed  # held ones still change
    cache.apply(Deleted(Kind.POD, ObjectRef(b.NS, "p-1")), 0.0)
    cache.apply(Upserted(Kind.POD, b.projected(b.pod("p-9", ip="10.0.0.9"))), 0.0)
    assert ObjectRef(b.NS, "p-9") in cache.index.pods  # room again after a delete
    refused = registry.get_sample_value(
        "remote_objects_refused_total", {"cluster": "west", "kind": "Pod"}
    )
    assert refused == 3
    assert [r["event"] for r in logs.records].count("remote_object_limit_reached") == 1
