"""Per-view fan-out: encode once, offer the same bytes to every stream.

A `Broadcast` is the single sink a view of a (cluster, service, port) has in
discovery, however many Get streams watch it. On each change it encodes the
diff once and offers one shared `QueueItem` to every stream's queue. A new
stream's first message (the whole current set) is encoded once per snapshot
version and reused by every stream that joins while that snapshot holds, so
ten thousand proxies connecting to one service cost one encode.

Steps from `on_change` to the last `offer` contain no `await`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from discovery.cluster import ClusterCache
from discovery.models import ServiceRef
from discovery.topics import (
    EMPTY_SNAPSHOT,
    AddressDiff,
    AddressSnapshot,
    Subscription,
    ViewKey,
    diff_snapshots,
)

from .encode import EncodeContext, encode_diff, encode_initial
from .metrics import DestinationMetrics
from .stream_queue import QueueItem, StreamQueue

BroadcastKey = tuple[str, ServiceRef, int, ViewKey]


@dataclass(eq=False)
class Broadcast:
    key: BroadcastKey
    context: EncodeContext
    metrics: DestinationMetrics
    snapshot: AddressSnapshot
    queues: set[StreamQueue] = field(default_factory=set)
    subscription: Subscription | None = None
    _initial: tuple[int, tuple[bytes, ...]] | None = None

    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        payloads = encode_diff(diff, self.context)
        self.snapshot = snapshot
        if not payloads:
            # Everything changed was unaddressable (e.g. a meshed pod without
            # proxy ports). Streams catch up from their own snapshot later, so
            # skipping costs nothing and saves queue capacity.
            return
        item = QueueItem(payloads=payloads, snapshot=snapshot)
        for queue in self.queues:
            queue.offer(item)
        self.metrics.updates.inc(len(payloads) * len(self.queues))

    def initial_payloads(self) -> tuple[bytes, ...]:
        snapshot = self.snapshot
        if self._initial is None or self._initial[0] != snapshot.version:
            self._initial = (snapshot.version, encode_initial(snapshot, self.context))
        return self._initial[1]

    def catch_up(self, old: AddressSnapshot, new: AddressSnapshot) -> tuple[bytes, ...]:
        """The rare slow path: one diff for one lagging stream."""
        return encode_diff(diff_snapshots(old, new), self.context)


class Broadcasts:
    """Every live broadcast, created on a view's first stream, dropped on its last."""

    def __init__(
        self, *, queue_capacity: int, stuck_deadline_s: float, metrics: DestinationMetrics
    ) -> None:
        self._queue_capacity = queue_capacity
        self._stuck_deadline_s = stuck_deadline_s
        self._metrics = metrics
        self._broadcasts: dict[BroadcastKey, Broadcast] = {}

    def __len__(self) -> int:
        return len(self._broadcasts)

    def open_stream(
        self,
        *,
        cache: ClusterCache,
        service: ServiceRef,
        port: int,
        view: ViewKey,
        context: Callable[[], EncodeContext],
        on_stuck: Callable[[], None],
    ) -> tuple[Broadcast, StreamQueue, tuple[bytes, ...]]:
        """Attach a new stream; returns its queue and the payloads to send first."""
        key: BroadcastKey = (cache.name, service, port, view)
        broadcast = self._broadcasts.get(key)
        if broadcast is None:
            broadcast = Broadcast(
                key=key, context=context(), metrics=self._metrics, snapshot=EMPTY_SNAPSHOT
            )
            broadcast.subscription = cache.topics.subscribe(
                service=service, port=port, key=view, sink=broadcast
            )
            broadcast.snapshot = broadcast.subscription.initial
            self._broadcasts[key] = broadcast
        queue = StreamQueue(
            capacity=self._queue_capacity,
            delivered=broadcast.snapshot,
            catch_up=broadcast.catch_up,
            stuck_deadline_s=self._stuck_deadline_s,
            on_overflow=self._metrics.queue_overflows.inc,
            on_stuck=on_stuck,
        )
        broadcast.queues.add(queue)
        return broadcast, queue, broadcast.initial_payloads()

    def close_stream(self, broadcast: Broadcast, queue: StreamQueue) -> None:
        broadcast.queues.discard(queue)
        if not broadcast.queues and self._broadcasts.get(broadcast.key) is broadcast:
            del self._broadcasts[broadcast.key]
            if broadcast.subscription is not None:
                broadcast.subscription.close()

    def close_all(self) -> None:
        """Server shutdown: every stream finishes what it holds, then ends with OK."""
        for broadcast in self._broadcasts.values():
            for queue in broadcast.queues:
                queue.close()
