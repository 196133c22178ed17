"""Unit tests for discovery.connection: sync, health, and atomic recovery.

Scope: a connection is synced once every kind has listed; errors are kept
per kind and summarized once per distinct error; after an outage the events
of failed kinds are held until every failed kind has listed again, then
delivered in order in one go, while kinds that never failed keep flowing; a
kind that stays down releases the hold after `HOLD_MAX_S`; `retarget` sends
later events elsewhere. In most tests reflectors do not run: the test plays
their part through the two callbacks a reflector calls (events, then
health). Held events are kept per object and bounded (StagedEvents). The
liveness tests run the reflectors and the probe over a scripted transport: a
server that goes silent fails the connection within an interval and two
probe timeouts, and interrupts its watches; any HTTP answer counts as alive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from discovery import connection as connection_module
from discovery import reflector as reflector_module
from discovery.connection import Connection, StagedEvents
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef
from discovery.reflector import Deleted, Listed, Reflector, ReflectorEvent, Upserted
from tests.kube.workloads import eventually
from tests.unit import builders as b
from tests.unit.log_recorder import LogRecorder
from tests.unit.scripted_api import (
    REMOTE_PATHS,
    Request,
    ScriptedApi,
    ScriptedCluster,
    ScriptedResponse,
    list_reply,
    reply,
    watch_reply,
)


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


# -- held events: the latest state per object, bounded ---------------------------

NAMES = [f"s{i}" for i in range(6)]


def service_record(name: str, version: int) -> Upserted:
    return Upserted(Kind.SERVICE, b.projected(b.service(name, resource_version=str(version))))


async def test_staged_events_keep_one_state_per_object_however_many_events() -> None:
    staged = StagedEvents()
    staged(Listed(Kind.SERVICE, ()), 0.0)
    for version in range(50_000):  # a remote churning ten objects
        staged(service_record(f"s{version % 10}", version), 0.0)
    assert len(staged) == 10
    sink = Recorder()
    assert staged.replay(sink) == 10
    [listed] = sink.events
    assert isinstance(listed, Listed) and len(listed.records) == 10
    assert {r.ref.name: r for r in listed.records}["s3"] == service_record("s3", 49_993).record


async def test_staged_events_past_their_limit_call_on_overflow_once() -> None:
    overflows: list[int] = []
    staged = StagedEvents(limit=100, on_overflow=lambda: overflows.append(len(staged)))
    for i in range(300):
        staged(service_record(f"s{i}", 1), 0.0)
    assert overflows == [101]
    staged.clear()
    staged(service_record("again", 1), 0.0)
    assert len(staged) == 1 and not staged.overflowed


def _event() -> st.SearchStrategy[ReflectorEvent]:
    kinds = st.sampled_from([Kind.SERVICE, Kind.POD])

    def record(kind: Kind, name: str, version: int) -> Any:
        raw = (
            b.service(name, resource_version=str(version))
            if kind is Kind.SERVICE
            else (b.pod(name, ip=f"10.0.0.{version % 250 + 1}"))
        )
        return b.projected(raw)

    upsert = st.builds(
        lambda k, n, v: Upserted(k, record(k, n, v)),
        kinds,
        st.sampled_from(NAMES),
        st.integers(0, 9),
    )
    delete = st.builds(lambda k, n: Deleted(k, ObjectRef(b.NS, n)), kinds, st.sampled_from(NAMES))
    listed = st.builds(
        lambda k, names, v: Listed(k, tuple(record(k, n, v) for n in sorted(set(names)))),
        kinds,
        st.lists(st.sampled_from(NAMES), max_size=4),
        st.integers(0, 9),
    )
    return st.one_of(upsert, delete, listed)


def _apply(state: dict[Kind, dict[ObjectRef, Any]], event: ReflectorEvent) -> None:
    objects = state.setdefault(event.kind, {})
    if isinstance(event, Listed):
        state[event.kind] = {ObjectRef(*r.ref): r for r in event.records}
    elif isinstance(event, Deleted):
        objects.pop(ObjectRef(*event.ref), None)
    else:
        objects[ObjectRef(*event.record.ref)] = event.record


@given(initial=st.lists(_event(), max_size=6), held=st.lists(_event(), max_size=40))
def test_replaying_held_events_ends_where_the_events_themselves_end(
    initial: list[ReflectorEvent], held: list[ReflectorEvent]
) -> None:
    direct: dict[Kind, dict[ObjectRef, Any]] = {}
    for event in initial:
        _apply(direct, event)
    coalesced = {kind: dict(objects) for kind, objects in direct.items()}
    staged = StagedEvents()
    for event in held:
        _apply(direct, event)
        staged(event, 0.0)
    replayed: list[ReflectorEvent] = []
    staged.replay(lambda event, received: replayed.append(event))
    for event in replayed:
        _apply(coalesced, event)
    assert {k: v for k, v in coalesced.items() if v} == {k: v for k, v in direct.items() if v}
    assert len(replayed) <= len(held)


async def test_a_recovery_hold_that_grows_too_large_is_released_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection_module, "STAGED_MAX_OBJECTS", 20)
    sink = Recorder()
    connection = new_connection(sink)
    for kind in (Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD):
        lists(connection, kind)
    sink.events.clear()
    fails(connection, Kind.ENDPOINT_SLICE)
    fails(connection, Kind.SERVICE)
    lists(connection, Kind.SERVICE)  # one failed kind back: its events are held
    service = reflector(connection, Kind.SERVICE)
    for i in range(15):
        service._on_event(service_record(f"s{i}", 1), 0.0)
    assert connection.holding and sink.events == []
    for i in range(15, 40):
        service._on_event(service_record(f"s{i}", 1), 0.0)
    assert not connection.holding, "held no more than the limit"
    delivered = {e.record.ref.name for e in sink.events if isinstance(e, Upserted)}
    delivered |= {r.ref.name for e in sink.events if isinstance(e, Listed) for r in e.records}
    assert delivered == {f"s{i}" for i in range(40)}, "released, never dropped"


async def test_a_failure_when_the_hold_timer_releases_is_logged_with_the_cluster(
    monkeypatch: pytest.MonkeyPatch, loop_errors: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(connection_module, "HOLD_MAX_S", 0.05)
    logs = LogRecorder()
    monkeypatch.setattr(connection_module, "log", logs)

    def broken(event: ReflectorEvent, received: float) -> None:
        if connection.synced.is_set() and not connection.holding:
            raise RuntimeError("sink bug")

    connection = new_connection(broken)  # type: ignore[arg-type]
    for kind in (Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD):
        lists(connection, kind)
    fails(connection, Kind.ENDPOINT_SLICE)
    fails(connection, Kind.POD)
    lists(connection, Kind.ENDPOINT_SLICE)
    await asyncio.sleep(0.1)
    [record] = logs.named("recovery_hold_release_failed")
    assert record["cluster"] == "west" and isinstance(record["exc_info"], RuntimeError)
    assert loop_errors == []


# -- liveness ---------------------------------------------------------------------


@pytest.fixture
def fast_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "LIVENESS_INTERVAL_S", 0.05)
    monkeypatch.setattr(connection_module, "LIVENESS_TIMEOUT_S", 0.05)
    monkeypatch.setattr(reflector_module, "BACKOFF_INITIAL_S", 0.01)
    monkeypatch.setattr(reflector_module, "BACKOFF_MAX_S", 0.05)


async def test_a_silent_api_server_fails_the_connection_and_interrupts_its_watches(
    fast_liveness: None,
) -> None:
    remote = ScriptedCluster()
    remote.items[REMOTE_PATHS["services"]] = [b.service()]
    sink = Recorder()
    registry = CollectorRegistry()
    connection = Connection(
        cluster=ClusterName("west"),
        api=remote.api(),  # type: ignore[arg-type]
        kinds=(Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD),
        sink=sink,
        metrics=DiscoveryMetrics(registry),
    )
    task = asyncio.create_task(connection.run())
    try:
        await eventually(
            lambda: _async(connection.watching), bool, what="every watch open", timeout_s=2
        )
        loop = asyncio.get_running_loop()
        silent_at = loop.time()
        remote.go_silent()  # open watches stay open, and nothing answers any more
        await eventually(lambda: _async(connection.failing), bool, what="failing", timeout_s=2)
        # One interval, then two probes of 0.05 s each (and the loop's own latency).
        assert loop.time() - silent_at < 0.5
        assert (connection.error_summary() or "").startswith("API server not answering")
        for kind in ("Service", "EndpointSlice", "Pod"):
            labels = {"cluster": "west", "kind": kind, "reason": "interrupted"}
            assert registry.get_sample_value("watch_restarts_total", labels) == 1.0
        sink.events.clear()

        remote.resume()
        await eventually(
            lambda: _async(not connection.failing and connection.watching),
            bool,
            what="recovered",
            timeout_s=2,
        )
        listed = {e.kind for e in sink.events if isinstance(e, Listed)}
        assert listed == {Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD}, "relisted on return"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_any_http_answer_counts_as_alive(fast_liveness: None) -> None:
    async def route(request: Request) -> ScriptedResponse:
        if request.path == "/livez":
            return reply(401, b"Unauthorized")  # alive, whatever it thinks of us
        return watch_reply() if request.watch else list_reply()

    api = ScriptedApi(route)
    connection = Connection(
        cluster=ClusterName("west"),
        api=api,  # type: ignore[arg-type]
        kinds=(Kind.SERVICE,),
        sink=Recorder(),
        metrics=DiscoveryMetrics(CollectorRegistry()),
    )
    task = asyncio.create_task(connection.run())
    try:
        await asyncio.sleep(0.4)
        assert len([r for r in api.requests if r.path == "/livez"]) >= 4
        assert not connection.failing and connection.watching
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _async(value: object) -> object:
    return value
