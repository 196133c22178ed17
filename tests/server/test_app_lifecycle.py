"""`destination.app.run` around its edges: shutdown order, exit status, lost exceptions.

Scope: the real composition root with a real gRPC server and admin server on
loopback; only the Kubernetes side is replaced (the API client by an object
that closes, the watches by a coroutine the test controls), since what is
tested is what `run` does when they end or when it is told to stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import structlog

from destination import app
from destination.config import ServerConfig
from destination.ops.admin import AdminServer
from destination.streams.broadcast import Broadcasts
from discovery.cluster import ClusterCache

CONFIG = ServerConfig(
    listen_address="127.0.0.1:0",
    admin_address="127.0.0.1:0",
    enable_remote_discovery=False,
    shutdown_grace_s=0.5,
)
Watches = Callable[[ClusterCache, Any, Any], Coroutine[Any, Any, None]]


class ClosingApi:
    async def close(self) -> None:
        return None


@pytest.fixture
def no_kubernetes(monkeypatch: pytest.MonkeyPatch) -> Callable[[Watches], None]:
    async def local_api(kubeconfig: str | None) -> ClosingApi:
        return ClosingApi()

    monkeypatch.setattr(app, "local_api", local_api)

    def use(watches: Watches) -> None:
        monkeypatch.setattr(app, "_watch_all", watches)

    return use


async def test_run_returns_1_when_the_watches_end_by_themselves(
    no_kubernetes: Callable[[Watches], None],
) -> None:
    """Hardening #14: run() returned 0 after watches_ended_unexpectedly."""

    async def broken_watches(local: ClusterCache, connection: Any, store: Any) -> None:
        raise RuntimeError("a bug in the watch loop")

    no_kubernetes(broken_watches)
    status = await asyncio.wait_for(app.run(CONFIG, stop=asyncio.Event()), timeout=20)
    assert status == app.EXIT_WATCHES_ENDED == 1


async def test_ready_is_503_once_draining_starts_and_the_loop_handler_is_ours(
    no_kubernetes: Callable[[Watches], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hardening #14 (/ready stayed 200 while draining) and #13 (exception handler)."""
    readiness: list[Callable[[], bool]] = []
    real_init = AdminServer.__init__

    def capture_readiness(self: AdminServer, **kwargs: Any) -> None:
        readiness.append(kwargs["ready"])
        real_init(self, **kwargs)

    monkeypatch.setattr(AdminServer, "__init__", capture_readiness)
    ready_when_draining: list[bool] = []
    real_close_all = Broadcasts.close_all

    def close_all(self: Broadcasts) -> None:
        ready_when_draining.append(readiness[0]())
        real_close_all(self)

    monkeypatch.setattr(Broadcasts, "close_all", close_all)
    handlers: list[object] = []
    synced = asyncio.Event()

    async def synced_watches(local: ClusterCache, connection: Any, store: Any) -> None:
        handlers.append(asyncio.get_running_loop().get_exception_handler())
        local.mark_synced()
        synced.set()
        await asyncio.Event().wait()

    no_kubernetes(synced_watches)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    task = asyncio.create_task(app.run(CONFIG, stop=stop))
    await asyncio.wait_for(synced.wait(), timeout=20)
    assert readiness[0]()  # ready before the stop
    stop.set()
    assert await asyncio.wait_for(task, timeout=20) == app.EXIT_OK
    assert ready_when_draining == [False]
    assert handlers == [app.log_loop_exception]
    assert loop.get_exception_handler() is before  # restored


def test_lost_exceptions_are_logged_as_structured_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh (uncached) logger, so that capture_logs sees its events.
    monkeypatch.setattr(app, "log", structlog.get_logger("destination.app"))
    loop = asyncio.new_event_loop()
    try:
        with structlog.testing.capture_logs() as logs:
            app.log_loop_exception(
                loop,
                {"message": "Task exception was never retrieved", "exception": KeyError("x")},
            )
    finally:
        loop.close()
    (entry,) = logs
    assert entry["event"] == "unhandled_exception"
    assert entry["log_level"] == "error"
    assert entry["message"] == "Task exception was never retrieved"
    assert isinstance(entry["exc_info"], KeyError)
