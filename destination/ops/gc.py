"""Short garbage-collection pauses while thousands of streams are open.

Why this exists: CPython's cyclic collector walks every tracked object on a
full (generation 2) collection, and the event loop serves nothing meanwhile.
An open stream holds about 55 tracked objects, most of them grpc.aio's own
(coroutines, tasks, futures, contexts), so with 20,000 streams a full
collection walks 1.1 million objects: 0.3 to 1.5 s on two cores, measured.
Full collections are not rare under load either: every update written leaves
short-lived objects that survive two young collections while the write waits,
and once enough have reached the old generation, CPython collects all of it.
Those pauses were the tail of our event-to-enqueue latency.

What it does: once a full collection has run, the objects that survived it
are moved to the permanent generation (`gc.freeze`), so that the next full
collection walks only what was created since. Frozen objects are still freed
by reference counting as soon as nothing uses them: a closed stream's objects
are (measured: closing 10,000 streams of a frozen heap left 0 objects for the
collector). Only reference cycles formed among frozen objects wait longer:
every `thaw_period_s` the permanent generation is handed back to the collector
(`gc.unfreeze`), whose next full collection walks everything once, and the
pacer freezes again after it. A leak of cycles is thus bounded by one period.

It also measures every collection's pause, by generation
(`destination_gc_pause_seconds`), and counts freezes and thaws
(`destination_gc_freezes_total`, `destination_gc_thaws_total`). It does not
report how many objects are frozen: `gc.get_freeze_count()` walks the whole
permanent generation, a million objects scattered over hundreds of MB, and
called once a second it took 18 % of the server's samples (py-spy, profile
scenario). The collector's callbacks run in whatever
thread allocated, possibly inside a metrics lock, so they only append to a
deque; the pacer's task moves the pauses into the histogram.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GcPacer"]

# Pauses are recorded up to this many between two ticks; older ones are dropped.
MAX_PENDING_PAUSES = 10_000
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GcPacer:
    """Freezes survivors of full collections; thaws periodically; measures pauses."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        freeze: bool = True,
        thaw_period_s: float = 600.0,
        tick_s: float = 1.0,
    ) -> None:
        self.freeze = freeze
        self.thaw_period_s = thaw_period_s
        self.tick_s = tick_s
        self.pauses = Histogram(
            "destination_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation (2: full).",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self.freezes = Counter(
            "destination_gc_freezes",
            "Survivors of a full collection moved to the permanent generation, "
            "skipped by the collector until the next thaw.",
            registry=registry,
        )
        self.thaws = Counter(
            "destination_gc_thaws",
            "Permanent generation handed back to the collector (--gc-thaw-period-s).",
            registry=registry,
        )
        for generation in ("0", "1", "2"):
            self.pauses.labels(generation)
        self._started: float | None = None
        self._pending: deque[tuple[int, float]] = deque(maxlen=MAX_PENDING_PAUSES)
        self._full_collections = 0
        self._frozen_after = 0
        self._last_thaw: float | None = None  # the first tick starts the period

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        """gc.callbacks hook: no locks, no allocation beyond one tuple."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is None:
            return
        generation = int(info.get("generation", 0))
        self._pending.append((generation, time.perf_counter() - started))
        if generation == 2:
            self._full_collections += 1

    def tick(self, now: float | None = None) -> None:
        """Record pauses; freeze after a full collection; thaw once a period."""
        while self._pending:
            generation, seconds = self._pending.popleft()
            self.pauses.labels(str(min(generation, 2))).observe(seconds)
        if self.freeze:
            now = time.monotonic() if now is None else now
            if self._last_thaw is None:
                self._last_thaw = now
            if now - self._last_thaw >= self.thaw_period_s:
                gc.unfreeze()
                self.thaws.inc()
                self._last_thaw = now
                self._frozen_after = self._full_collections  # freeze after the next one
            elif self._full_collections > self._frozen_after:
                gc.freeze()
                self.freezes.inc()
                self._frozen_after = self._full_collections

    async def run(self) -> None:
        """Until cancelled; the collector's hook is removed on the way out."""
        gc.callbacks.append(self._on_collection)
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                self.tick()
        finally:
            gc.callbacks.remove(self._on_collection)
            if self.freeze:
                gc.unfreeze()
