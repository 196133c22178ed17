"""What every streaming RPC handler guards against, shared by Get and GetProfile.

* `ConnectionLimit`: a client connection (one gRPC peer: one TCP connection)
  may hold at most so many streams of either RPC together; a proxy opens a
  GetProfile and a Get per destination, so both count against one limit.
  More are refused with RESOURCE_EXHAUSTED before any work is done for them.
* `StuckStreams`: a stream whose client stopped reading is ended with
  UNAVAILABLE, aborting from beside the handler (which is blocked in a write
  the client does not read), so that gRPC sends a status and the proxy
  reconnects. The abort futures are kept until done, and their outcome read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import grpc
import structlog

from destination.ops.metrics import DestinationMetrics

log = structlog.get_logger("destination.api")

__all__ = ["ConnectionLimit", "LimitExceeded", "StuckStreams"]


class LimitExceeded(Exception):
    """A connection already holds as many streams as it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"too many streams on this connection: the limit is {limit}; "
            "close some or open another connection"
        )


class ConnectionLimit:
    """Counts open streams per gRPC peer, from admission to the end of the stream."""

    def __init__(self, max_per_connection: int) -> None:
        if max_per_connection <= 0:
            raise ValueError("max_per_connection must be positive")
        self.max_per_connection = max_per_connection
        self._by_peer: dict[str, int] = {}

    def streams_of(self, peer: str) -> int:
        return self._by_peer.get(peer, 0)

    @property
    def admitted(self) -> int:
        """Streams admitted and not yet ended, over every connection."""
        return sum(self._by_peer.values())

    def full(self, peer: str) -> bool:
        """Whether `peer` may open no more streams now."""
        return self._by_peer.get(peer, 0) >= self.max_per_connection

    @property
    def refusal(self) -> str:
        return str(LimitExceeded(self.max_per_connection))

    def acquire(self, peer: str) -> None:
        """Count a stream of `peer`; LimitExceeded if it holds too many already.

        Plain calls, not a context manager: ten thousand streams each keep their
        handler frame alive, and a context manager object per frame adds up.
        Callers pair it with `release` in `finally`.
        """
        held = self._by_peer.get(peer, 0)
        if held >= self.max_per_connection:
            raise LimitExceeded(self.max_per_connection)
        self._by_peer[peer] = held + 1

    def release(self, peer: str) -> None:
        remaining = self._by_peer[peer] - 1
        if remaining:
            self._by_peer[peer] = remaining
        else:
            del self._by_peer[peer]


class StuckStreams:
    """Ends streams whose clients stopped reading (see the module docstring)."""

    def __init__(self, metrics: DestinationMetrics) -> None:
        self._metrics = metrics
        self._aborts: set[asyncio.Future[None]] = set()

    def ender(
        self, context: grpc.aio.ServicerContext, stream: int, path: str
    ) -> Callable[[], None]:
        """What a stream's queue calls when the stream is stuck (a partial: small per stream)."""
        return functools.partial(self.end, context, stream, path)

    def end(self, context: grpc.aio.ServicerContext, stream: int, path: str) -> None:
        self._metrics.stuck_streams.inc()
        log.warning("stream_stuck_ended", stream=stream, path=path, peer=context.peer())
        abort = asyncio.ensure_future(
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "stream stalled: the client did not read updates; reconnect",
            )
        )
        self._aborts.add(abort)
        abort.add_done_callback(self._forget)

    def _forget(self, abort: asyncio.Future[None]) -> None:
        self._aborts.discard(abort)
        if not abort.cancelled():
            abort.exception()  # AbortError is how abort() ends; nothing to report
