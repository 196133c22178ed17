"""A bounded queue per stream that never blocks the publisher.

`offer()` is O(1) and synchronous: the broadcast calls it for every stream of
a view from inside the event's fan-out. A stream that falls `capacity` items
behind is not dropped (Linkerd ends it): its queue is cleared and marked
*lagging*. When the stream's writer is next free it asks for one catch-up
diff from the snapshot it last delivered to the view's latest snapshot, so a
slow proxy converges to the current state without a backlog. Snapshots are
immutable and shared, so remembering "what this stream last saw" costs one
reference.

A backlog is coalesced the same way: when the writer comes back for more and
finds several items queued (a burst went out faster than this client reads),
it writes one diff from its last snapshot to the newest instead of each item
in turn. Writes are what a slow stream is short of, and during a rollout a
burst is dozens of small updates. The broadcast memoizes that diff by (old,
new) version, so streams that fell behind together share one encoding.

A stream that stays lagging past a deadline (its client is not reading, so
gRPC's write is blocked on flow control) is ended by `on_stuck`; the proxy
reconnects and starts from a fresh snapshot.

Writers are woken a batch at a time (`WAKE_BATCH` per event-loop iteration),
not all at once. One change offered to 10,000 streams would otherwise put
10,000 writer steps in the loop's ready queue ahead of everything else, and
the next watch event's refresh would wait behind every one of those writes:
measured, 400 ms at p99 in the profile benchmark. In batches, refreshes and
reads interleave with the writes, and no write is slower for it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

# What a stream has been sent: immutable and shared, compared by identity only.
S = TypeVar("S")


WAKE_BATCH = 256


class _Waker:
    """Sets waiters' results WAKE_BATCH per loop iteration (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    def wake(self, waiter: asyncio.Future[None]) -> None:
        self._pending.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        pending = self._pending
        for _ in range(min(WAKE_BATCH, len(pending))):
            waiter = pending.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if pending:
            self._loop.call_soon(self._run)  # after the writers just woken: others get a turn
        else:
            self._scheduled = False


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()


def _waker() -> _Waker:
    loop = asyncio.get_running_loop()
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _Waker(loop)
    return waker


@dataclass(frozen=True, slots=True)
class QueueItem(Generic[S]):
    payloads: tuple[bytes, ...]
    snapshot: S  # the broadcast's state once these payloads are applied


class StreamClosed(Exception):
    """The stream was closed by the server (shutdown, or its source went away)."""


class StreamQueue(Generic[S]):
    # Ten thousand streams hold one each: slots, a plain list (the writer takes
    # one item or all of them, never from the front of many) and a future made
    # only while the writer waits keep an idle queue to a few hundred bytes.
    __slots__ = (
        "_capacity",
        "_catch_up",
        "_closed",
        "_delivered",
        "_items",
        "_latest",
        "_on_overflow",
        "_on_stuck",
        "_stuck_deadline_s",
        "_stuck_timer",
        "_waiter",
        "overflows",
    )

    def __init__(
        self,
        *,
        capacity: int,
        delivered: S,
        catch_up: Callable[[S, S], tuple[bytes, ...]],
        stuck_deadline_s: float,
        on_overflow: Callable[[], None],
        on_stuck: Callable[[], None],
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._items: list[QueueItem[S]] = []
        self._delivered = delivered
        self._latest: S | None = None  # set while lagging
        self._catch_up = catch_up
        self._stuck_deadline_s = stuck_deadline_s
        self._on_overflow = on_overflow
        self._on_stuck = on_stuck
        self._stuck_timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.overflows = 0

    @property
    def lagging(self) -> bool:
        return self._latest is not None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: QueueItem[S]) -> None:
        """Enqueue without blocking; on overflow switch to catch-up mode."""
        if self._closed:
            return
        if self._latest is not None:
            self._latest = item.snapshot
        elif len(self._items) >= self._capacity:
            self._items.clear()
            self._latest = item.snapshot
            self.overflows += 1
            self._on_overflow()
            self._stuck_timer = asyncio.get_running_loop().call_later(
                self._stuck_deadline_s, self._check_stuck
            )
        else:
            self._items.append(item)
        self._wake()

    def close(self) -> None:
        """End the stream after what is already queued has been written.

        Also what a finished stream's owner calls: the stuck-stream timer must
        not outlive the stream it watches.
        """
        self._closed = True
        self._cancel_stuck_timer()
        self._wake()

    def resync(
        self, latest: S, catch_up: Callable[[S, S], tuple[bytes, ...]] | None = None
    ) -> None:
        """Drop what is queued; the writer next sends one diff to `latest`.

        For a stream whose source changed under it: moved to another
        broadcast (then `catch_up` is the new source's), or a source that
        could not encode an update. Not the client's fault, so no stuck timer.
        """
        if self._closed:
            return
        if catch_up is not None:
            self._catch_up = catch_up
        self._items.clear()
        self._latest = latest
        self._wake()

    async def next(self) -> tuple[bytes, ...]:
        """Payloads to write next; raises StreamClosed once closed and drained."""
        while True:
            if len(self._items) == 1:
                item = self._items.pop()
                self._delivered = item.snapshot
                return item.payloads
            if self._items:
                newest = self._items[-1].snapshot
                self._items.clear()
                payloads = self._catch_up(self._delivered, newest)
                self._delivered = newest
                if payloads:
                    return payloads
                continue
            if self._latest is not None:
                latest, self._latest = self._latest, None
                self._cancel_stuck_timer()
                payloads = self._catch_up(self._delivered, latest)
                self._delivered = latest
                if payloads:
                    return payloads
                continue
            if self._closed:
                raise StreamClosed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            _waker().wake(waiter)

    def _check_stuck(self) -> None:
        self._stuck_timer = None
        if self._latest is not None and not self._closed:
            self._on_stuck()

    def _cancel_stuck_timer(self) -> None:
        if self._stuck_timer is not None:
            self._stuck_timer.cancel()
            self._stuck_timer = None
