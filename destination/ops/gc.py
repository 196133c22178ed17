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

What it does: once a second (`collect_period_s`) the pacer runs a full
collection itself and moves its survivors to the permanent generation
(`gc.freeze`), which no collection walks. Each of its collections therefore
walks only what was created in the last second and is still alive: a few
milliseconds. Left to itself, CPython runs a full collection only once a
quarter of the old generation's size has accumulated (hundreds of thousands
of objects with 20,000 streams, 25-100 ms each, measured) or, without
freezing at all, walks everything (0.3 to 3 s). Frozen objects are still
freed by reference counting as soon as nothing uses them: a closed stream's
objects are (measured: closing 10,000 streams of a frozen heap left 0 objects
for the collector). Only reference cycles formed among frozen objects wait
longer: every `thaw_period_s` the permanent generation is handed back to the
collector (`gc.unfreeze`) and that tick's collection walks everything once,
the one long pause of the period, a price paid so that a leak of cycles is
bounded by one period.

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
    """Collects and freezes every second; thaws periodically; measures pauses."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        freeze: bool = True,
        thaw_period_s: float = 600.0,
        collect_period_s: float = 1.0,
        tick_s: float = 1.0,
    ) -> None:
        self.freeze = freeze
        self.thaw_period_s = thaw_period_s
        self.collect_period_s = collect_period_s
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
        self._last_thaw: float | None = None  # the first tick starts the period
        self._last_collect: float | None = None

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

    def tick(self, now: float | None = None) -> None:
        """Record pauses; collect and freeze once a period; thaw once a long one.

        The pauses of this tick's own collection are recorded at the next tick.
        """
        while self._pending:
            generation, seconds = self._pending.popleft()
            self.pauses.labels(str(min(generation, 2))).observe(seconds)
        if not self.freeze:
            return
        now = time.monotonic() if now is None else now
        if self._last_thaw is None:
            self._last_thaw = now
        if now - self._last_thaw >= self.thaw_period_s:
            gc.unfreeze()  # this collection walks everything, once a period
            self.thaws.inc()
            self._last_thaw = now
        elif self._last_collect is not None and now - self._last_collect < self.collect_period_s:
            return
        gc.collect()
        gc.freeze()
        self.freezes.inc()
        self._last_collect = now

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
