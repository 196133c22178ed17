"""Unit tests for discovery.reflector: retries, health and hostile API answers.

Scope, with the network replaced by a scripted transport (tests/unit/scripted_api.py)
and the backoff constants shrunk (0.01 s to 0.08 s) so that a second of real time
covers many retry cycles: every failure path backs off (a watch refused after a
list that worked, a 410 on every watch, a watch the server ends at once), the
backoff starts over only after a watch stayed open; health does not flip back
to OK on a list alone, and a kind that breaks right after each recovery stops
being reported healthy after FLAPS_FORGIVEN flaps until a watch stays open;
`interrupt` abandons a hung watch; remote error bodies reach statuses only as
a status code, a reason and a short printable message; the `type` label of
watch events comes from a fixed set.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from discovery import reflector as reflector_module
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind
from discovery.reflector import ApiError, Reflector, ReflectorEvent
from tests.unit import builders as b
from tests.unit.log_recorder import LogRecorder
from tests.unit.scripted_api import (
    Request,
    ScriptedApi,
    ScriptedResponse,
    hang,
    list_reply,
    reply,
    status_body,
    watch_reply,
)

SERVICES = "/api/v1/services"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reflector_module, "BACKOFF_INITIAL_S", 0.01)
    monkeypatch.setattr(reflector_module, "BACKOFF_MAX_S", 0.08)


@dataclass
class Run:
    api: ScriptedApi
    reflector: Reflector
    registry: CollectorRegistry
    health: list[str | None] = field(default_factory=list)
    events: list[ReflectorEvent] = field(default_factory=list)

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def run_reflector() -> AsyncIterator[Callable[..., Run]]:
    tasks: list[asyncio.Task[None]] = []

    def start(route: Callable[[Request], object]) -> Run:
        registry = CollectorRegistry()
        api = ScriptedApi(route)  # type: ignore[arg-type]
        run: Run

        def on_event(event: ReflectorEvent, received: float) -> None:
            run.events.append(event)

        def on_health(reflector: Reflector, error: str | None) -> None:
            run.health.append(error)

        reflector = Reflector(
            cluster=ClusterName("west"),
            kind=Kind.SERVICE,
            api=api,  # type: ignore[arg-type]
            on_event=on_event,
            metrics=DiscoveryMetrics(registry),
            on_health=on_health,
        )
        run = Run(api=api, reflector=reflector, registry=registry)
        tasks.append(asyncio.create_task(reflector.run()))
        return run

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def forbidden() -> ScriptedResponse:
    return reply(403, status_body(403, "Forbidden", "services is forbidden: watch refused"))


async def test_a_watch_refused_after_a_working_list_backs_off_and_stays_unhealthy(
    run_reflector: Callable[..., Run],
) -> None:
    async def route(request: Request) -> ScriptedResponse:
        return forbidden() if request.watch else list_reply([b.service()])

    run = run_reflector(route)
    await asyncio.sleep(1.0)
    # 0.01, 0.02, 0.04, then 0.08 s (±20 %): at most ~18 lists in a second. Resetting
    # the backoff after each list would relist every 0.01 s: ~100 lists.
    assert 5 <= len(run.api.lists()) <= 20
    assert run.health, "the refusal is reported"
    assert None not in run.health, "a list alone never reports the kind healthy"
    assert run.reflector.last_error is not None and "HTTP 403" in run.reflector.last_error


async def test_a_410_on_every_watch_backs_off(run_reflector: Callable[..., Run]) -> None:
    async def route(request: Request) -> ScriptedResponse:
        if request.watch:
            return reply(410, status_body(410, "Expired", "too old resource version"))
        return list_reply([b.service()])

    run = run_reflector(route)
    await asyncio.sleep(1.0)
    assert 5 <= len(run.api.lists()) <= 20
    expired = run.sample("watch_restarts_total", cluster="west", kind="Service", reason="expired")
    assert expired >= len(run.api.watches()) - 1


async def test_a_watch_that_ends_at_once_backs_off(run_reflector: Callable[..., Run]) -> None:
    async def route(request: Request) -> ScriptedResponse:
        return watch_reply(then="end") if request.watch else list_reply([b.service()])

    run = run_reflector(route)
    await asyncio.sleep(1.0)
    assert len(run.api.lists()) == 1, "a clean end resumes the watch, no relist"
    assert 5 <= len(run.api.watches()) <= 20


async def test_the_backoff_starts_over_only_after_a_watch_stayed_open(
    run_reflector: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reflector_module, "HEALTHY_AFTER_S", 0.2)
    monkeypatch.setattr(reflector_module, "BACKOFF_MAX_S", 0.5)
    phase = {"watch": "refuse"}
    error = {"type": "ERROR", "object": status_body(500, "InternalError", "etcd")}

    async def route(request: Request) -> ScriptedResponse:
        if not request.watch:
            return list_reply([b.service()])
        if phase["watch"] == "refuse":
            return forbidden()
        open_s = 0.05 if phase["watch"] == "short" else 0.3
        return watch_reply([error], delay_s=open_s)

    async def gap_after_next_watch() -> float:
        """From the end of the next watch (opened, then failed) to the following list."""
        open_s = 0.05 if phase["watch"] == "short" else 0.3
        watch = await run.api.next_request(lambda r: r.watch, after=len(run.api.requests))
        relist = await run.api.next_request(lambda r: not r.watch, after=watch + 1)
        return run.api.requests[relist].at - (run.api.requests[watch].at + open_s)

    run = run_reflector(route)
    await asyncio.sleep(0.4)  # refusals: 0.01 + 0.02 + 0.04 + 0.08 + 0.16 s (±20 %)
    phase["watch"] = "short"
    assert await gap_after_next_watch() > 0.2, "a watch open 0.05 s proves nothing"
    phase["watch"] = "long"
    await gap_after_next_watch()  # the backoff may still be long before this one
    assert await gap_after_next_watch() < 0.1, "a watch open 0.3 s resets the backoff"


async def test_a_kind_that_keeps_breaking_after_recovery_stops_flapping(
    run_reflector: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reflector_module, "HEALTHY_AFTER_S", 0.3)
    monkeypatch.setattr(reflector_module, "FLAPS_FORGIVEN", 2)
    phase = {"server": "flaky"}

    async def route(request: Request) -> ScriptedResponse:
        if not request.watch:
            return list_reply([b.service()])
        if phase["server"] == "flaky":  # opens, then fails 20 ms later
            error = {"type": "ERROR", "object": status_body(500, "InternalError", "etcd")}
            return watch_reply([error], delay_s=0.02)
        return watch_reply(then="hang")

    run = run_reflector(route)
    await asyncio.sleep(1.0)
    oks = run.health.count(None)
    # The first sync, then FLAPS_FORGIVEN - 1 quick recoveries; later ones are held back.
    assert oks == 2
    assert len(run.health) >= oks + 4, "it kept failing, and said so"
    assert run.health[-1] is not None

    phase["server"] = "fixed"
    await asyncio.sleep(0.2)
    assert run.health.count(None) == oks, "a recovery after flapping is not taken at once"
    await asyncio.sleep(0.4)
    assert run.health[-1] is None, "a watch open HEALTHY_AFTER_S is a recovery"


async def test_a_recovery_after_an_ordinary_outage_is_reported_at_once(
    run_reflector: Callable[..., Run],
) -> None:
    phase = {"server": "up"}

    async def route(request: Request) -> ScriptedResponse:
        if phase["server"] == "down":
            raise ConnectionRefusedError("connection refused")
        return watch_reply(then="hang") if request.watch else list_reply([b.service()])

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    assert run.health == [None]
    phase["server"] = "down"
    run.reflector.interrupt("the API server stopped answering")
    await asyncio.sleep(0.1)
    assert run.health[1] is not None and "stopped answering" in run.health[1]
    phase["server"] = "up"
    await asyncio.sleep(0.3)
    assert run.health[-1] is None


async def test_interrupt_abandons_a_hung_watch_and_relists(
    run_reflector: Callable[..., Run],
) -> None:
    async def route(request: Request) -> ScriptedResponse:
        if request.watch and len(request_log) > 2:
            return await hang()  # accepted, never answered: a stopped API server
        return watch_reply(then="hang") if request.watch else list_reply([b.service()])

    request_log: list[Request] = []

    async def logged(request: Request) -> ScriptedResponse:
        request_log.append(request)
        return await route(request)

    run = run_reflector(logged)
    await asyncio.sleep(0.05)
    run.reflector.interrupt("API server not responding")
    await asyncio.sleep(0.1)
    assert len(run.api.lists()) == 2
    assert (
        run.sample("watch_restarts_total", cluster="west", kind="Service", reason="interrupted")
        == 1.0
    )
    run.reflector.interrupt("API server not responding")  # the hung request this time
    await asyncio.sleep(0.1)
    assert len(run.api.lists()) == 3


HOSTILE_MESSAGE = "\x1b[31mred\x1b[0m line1\nline2\r\u202etxt.exe " + "A" * 5000


async def test_remote_error_bodies_reach_statuses_only_as_status_reason_and_short_message(
    run_reflector: Callable[..., Run],
) -> None:
    async def route(request: Request) -> ScriptedResponse:
        return reply(403, status_body(403, "Forbidden\n\x07", HOSTILE_MESSAGE))

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    error = run.reflector.last_error
    assert error is not None
    assert error.startswith("HTTP 403 (forbidden: the credentials lack list/watch permission)")
    assert ": Forbidden: [31mred [0m line1 line2 txt.exe AAA" in error
    assert len(error) <= 300
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in error)


async def test_a_body_that_is_not_a_status_is_dropped(run_reflector: Callable[..., Run]) -> None:
    secret = "<html>token=abc123 internal-host.corp</html>"

    async def route(request: Request) -> ScriptedResponse:
        return reply(502, secret.encode() * 1000)

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    assert run.reflector.last_error == "HTTP 502"


async def test_a_watch_error_event_is_reduced_the_same_way(
    run_reflector: Callable[..., Run],
) -> None:
    async def route(request: Request) -> ScriptedResponse:
        if not request.watch:
            return list_reply()
        event = {"type": "ERROR", "object": {"code": "x" * 10_000, "message": HOSTILE_MESSAGE}}
        return watch_reply([event])

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    error = run.reflector.last_error
    assert error is not None and error.startswith("HTTP 500: [31mred [0m line1 line2")
    assert "x" * 20 not in error and len(error) <= 300


@given(status=st.integers(100, 599), body=st.binary(max_size=3000))
def test_any_error_body_gives_a_short_printable_error(status: int, body: bytes) -> None:
    text = str(ApiError.from_body(status, body))
    assert text.startswith(f"HTTP {status}")
    assert len(text) <= 400
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


@given(reason=st.text(max_size=500), message=st.text(max_size=2000))
def test_any_status_gives_a_bounded_printable_reason_and_message(reason: str, message: str) -> None:
    error = ApiError.from_body(403, json.dumps({"reason": reason, "message": message}).encode())
    assert len(error.reason) <= 64 and len(error.message) <= 200
    for text in (error.reason, error.message, str(error)):
        assert "\n" not in text and "\x1b" not in text


async def test_watch_event_types_come_from_a_fixed_set(
    run_reflector: Callable[..., Run],
) -> None:
    hostile = [{"type": f"T{i}-{'x' * 50}", "object": b.service()} for i in range(20)]
    known = [
        {"type": "ADDED", "object": b.service()},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
    ]

    async def route(request: Request) -> ScriptedResponse:
        return watch_reply([*known, *hostile]) if request.watch else list_reply()

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    types = {
        sample.labels["type"]: sample.value
        for metric in run.registry.collect()
        if metric.name == "watch_events"
        for sample in metric.samples
        if sample.name == "watch_events_total"
    }
    assert types == {"ADDED": 1.0, "BOOKMARK": 1.0, "other": 20.0}


async def test_a_failing_health_callback_is_logged_and_the_watch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logs = LogRecorder()
    monkeypatch.setattr(reflector_module, "log", logs)

    async def route(request: Request) -> ScriptedResponse:
        return forbidden()

    def broken(reflector: Reflector, error: str | None) -> None:
        raise RuntimeError("owner bug")

    api = ScriptedApi(route)
    reflector = Reflector(
        cluster=ClusterName("west"),
        kind=Kind.SERVICE,
        api=api,  # type: ignore[arg-type]
        on_event=lambda event, received: None,
        metrics=DiscoveryMetrics(CollectorRegistry()),
        on_health=broken,
    )
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.sleep(0.3)
        assert not task.done(), "the reflector outlives its owner's bug"
        assert len(api.lists()) >= 3
        record = logs.named("health_callback_failed")[0]
        assert (record["cluster"], record["kind"]) == ("west", "Service")
        assert isinstance(record["exc_info"], RuntimeError)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_list_page_over_its_bound_is_refused_without_buffering_it(
    run_reflector: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reflector_module, "MAX_LIST_PAGE_BYTES", 10_000)
    chunks_read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        yield b'{"kind": "ServiceList", "items": ['
        while True:  # a hostile API server that never stops sending
            chunks_read += 1
            yield b'{"metadata": {"name": "x"}},' * 100

    async def route(request: Request) -> ScriptedResponse:
        return ScriptedResponse(200, endless())

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    assert run.reflector.last_error is not None
    assert "over 10000 bytes" in run.reflector.last_error
    assert chunks_read < 50  # read up to the bound, not on and on
    assert not run.events


async def test_a_declared_length_over_the_bound_is_refused_before_reading(
    run_reflector: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reflector_module, "MAX_LIST_PAGE_BYTES", 10_000)

    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("the body must not be read")
        yield b""  # pragma: no cover - makes this an async generator

    async def route(request: Request) -> ScriptedResponse:
        return ScriptedResponse(200, never(), content_length=10_001)

    run = run_reflector(route)
    await asyncio.sleep(0.05)
    assert run.reflector.last_error is not None
    assert "10001 bytes is over 10000" in run.reflector.last_error
