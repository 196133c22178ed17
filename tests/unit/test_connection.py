"""Unit tests for discovery.connection: sync, health, and atomic recovery.

Scope: a connection is synced once every kind has listed; errors are kept
per kind and summarized once per distinct error; after an outage the events
of failed kinds are held until every failed kind has listed again, then
delivered in order in one go, while kinds that never failed keep flowing; a
kind that stays down releases the hold after `HOLD_MAX_S`; `retarget` sends
later events elsewhere. Reflectors do not run: the test plays their part
through the two callbacks a reflector calls (events, then health).
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from discovery import connection as connection_module
from discovery.connection import Connection
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef
from discovery.reflector import Deleted, Listed, Reflector, ReflectorEvent


class Recorder:
    def __init__(self) -> None:
        self.events: list[ReflectorEvent] = []

    def __call__(self, event: ReflectorEvent, received: float) -> None:
        self.events.append(event)


def new_connection(sink: Recorder) -> Connection:
    return Connection(
        cluster=ClusterName("west"),
        api=None,  # type: ignore[arg-type]  # reflectors never run here
        kinds=(Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD),
        sink=sink,
        metrics=DiscoveryMetrics(CollectorRegistry()),
    )


def reflector(connection: Connection, kind: Kind) -> Reflector:
    return next(r for r in connection.reflectors if r.kind is kind)


def lists(connection: Connection, kind: Kind) -> Listed:
    """What a reflector does on a successful list: the event, then health OK."""
    event = Listed(kind, ())
    one = reflector(connection, kind)
    one._on_event(event, 0.0)
    one.synced.set()
    assert one._on_health is not None
    one._on_health(one, None)
    return event


def fails(connection: Connection, kind: Kind, error: str = "connection refused") -> None:
    one = reflector(connection, kind)
    assert one._on_health is not None
    one._on_health(one, error)


def watch_event(connection: Connection, kind: Kind, name: str) -> Deleted:
    event = Deleted(kind, ObjectRef("ns", name))
    reflector(connection, kind)._on_event(event, 0.0)
    return event


async def test_synced_once_every_kind_has_listed() -> None:
    connection = new_connection(Recorder())
    lists(connection, Kind.SERVICE)
    lists(connection, Kind.POD)
    assert not connection.synced.is_set()
    lists(connection, Kind.ENDPOINT_SLICE)
    assert connection.synced.is_set()


async def test_errors_are_summarized_once_per_distinct_error() -> None:
    connection = new_connection(Recorder())
    fails(connection, Kind.POD, "HTTP 403")
    fails(connection, Kind.SERVICE, "HTTP 403")
    fails(connection, Kind.ENDPOINT_SLICE, "timeout")
    assert connection.error_summary() == "EndpointSlice: timeout; Pod/Service: HTTP 403"


async def test_a_recovery_is_delivered_in_one_batch_after_every_failed_kind_relisted() -> None:
    sink = Recorder()
    connection = new_connection(sink)
    for kind in (Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD):
        lists(connection, kind)
    sink.events.clear()

    fails(connection, Kind.ENDPOINT_SLICE)
    fails(connection, Kind.POD)
    service_event = watch_event(connection, Kind.SERVICE, "still-flowing")
    assert sink.events == [service_event]  # a kind that never failed is not held

    slices = lists(connection, Kind.ENDPOINT_SLICE)
    assert connection.holding and sink.events == [service_event]
    pods = lists(connection, Kind.POD)
    assert not connection.holding
    assert sink.events == [service_event, slices, pods]


async def test_a_kind_down_for_good_releases_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "HOLD_MAX_S", 0.05)
    sink = Recorder()
    connection = new_connection(sink)
    for kind in (Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD):
        lists(connection, kind)
    sink.events.clear()
    fails(connection, Kind.ENDPOINT_SLICE)
    fails(connection, Kind.POD)
    slices = lists(connection, Kind.ENDPOINT_SLICE)
    assert sink.events == []
    await asyncio.sleep(0.1)
    assert sink.events == [slices]
    assert connection.errors.keys() == {Kind.POD}


async def test_retarget_sends_later_events_elsewhere() -> None:
    first, second = Recorder(), Recorder()
    connection = new_connection(first)
    early = watch_event(connection, Kind.POD, "a")
    connection.retarget(second)
    late = watch_event(connection, Kind.POD, "b")
    assert (first.events, second.events) == ([early], [late])
