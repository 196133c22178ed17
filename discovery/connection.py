"""One API client of one cluster and the reflectors that read through it.

A `Connection` is what credential rotation swaps: the index and topics of a
cluster (`ClusterCache`) stay, the connection feeding them is replaced. A new
connection can be *staged*: its events are held back (`StagedEvents`) until
every reflector has listed, and only then does it go live, replaying what it
holds into the cache. Because a relist replaces the index's contents kind by
kind, going live sends subscribers exactly the differences between what the
old credentials saw and what the new ones see, which is normally nothing.

Health is tracked per reflector: the connection is *synced* once every kind
has listed, and *failing* while any reflector's last attempt failed. Owners
are told of every change through `on_change`, so a cluster's status is
derived from the connection rather than polled.

Recovery is atomic too. After an outage every failed kind relists on its own
schedule, and applying those lists one by one would show subscribers states
that never existed (a new slice whose pods are not listed yet: a Remove, then
an Add when the pods arrive). So once a synced connection has a failing kind,
the events of the failed kinds are held back until every failed kind has
listed again, then applied in one batch: subscribers get exactly the
differences between before and after the outage. Kinds that never failed keep
flowing; a hold lasts at most `HOLD_MAX_S` after the first kind recovers, so
one kind failing for good cannot freeze the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind
from .reflector import Reflector, ReflectorEvent
from .transport import ApiTransport

EventSink = Callable[[ReflectorEvent, float], None]

HOLD_MAX_S = 10.0

LOCAL_KINDS = (
    Kind.SERVICE,
    Kind.ENDPOINT_SLICE,
    Kind.POD,
    Kind.NODE,
    Kind.REPLICA_SET,
    Kind.JOB,
    Kind.SERVER,
    Kind.EXTERNAL_WORKLOAD,
)
# What remote discovery reads in a linked cluster, and nothing more: these
# three kinds are all that the remote RBAC (deploy/remote-access.yaml) grants.
REMOTE_KINDS = (Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD)


class StagedEvents:
    """Holds a staged connection's events until it goes live."""

    def __init__(self) -> None:
        self.events: list[tuple[ReflectorEvent, float]] = []

    def __call__(self, event: ReflectorEvent, received: float) -> None:
        self.events.append((event, received))

    def replay(self, sink: EventSink) -> int:
        events, self.events = self.events, []
        for event, received in events:
            sink(event, received)
        return len(events)


class Connection:
    def __init__(
        self,
        *,
        cluster: ClusterName,
        api: ApiTransport,
        kinds: Iterable[Kind],
        sink: EventSink,
        metrics: DiscoveryMetrics,
        on_change: Callable[[], None] | None = None,
        paths: dict[Kind, str] | None = None,
        selectors: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.cluster = cluster
        self.api = api
        self._sink = sink
        self._on_change = on_change
        self._held_kinds: set[Kind] = set()
        self._held = StagedEvents()
        self._hold_timer: asyncio.TimerHandle | None = None
        self.errors: dict[Kind, str] = {}
        self.synced = asyncio.Event()
        self.synced_at: float | None = None  # wall-clock time of the first full sync
        self.started_at = time.time()
        self.reflectors = [
            Reflector(
                cluster=cluster,
                kind=kind,
                api=api,
                on_event=self._deliverer(kind),
                metrics=metrics,
                path=(paths or {}).get(kind),
                selectors=selectors,
                on_health=self._health,
            )
            for kind in kinds
        ]

    @property
    def failing(self) -> bool:
        return bool(self.errors)

    def error_summary(self) -> str | None:
        """The errors of failing kinds in one line; identical errors are told once."""
        if not self.errors:
            return None
        by_error: dict[str, list[str]] = {}
        for kind, error in sorted(self.errors.items(), key=lambda item: item[0].value):
            by_error.setdefault(error, []).append(kind.value)
        return "; ".join(f"{'/'.join(kinds)}: {error}" for error, kinds in by_error.items())

    def retarget(self, sink: EventSink) -> None:
        """Send every later event to `sink` (a staged connection going live)."""
        self._sink = sink

    @property
    def holding(self) -> bool:
        return bool(self._held_kinds)

    def _deliverer(self, kind: Kind) -> EventSink:
        def deliver(event: ReflectorEvent, received: float) -> None:
            if kind in self._held_kinds:
                self._held(event, received)
            else:
                self._sink(event, received)

        return deliver

    def _release(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._held_kinds.clear()
        self._held.replay(self._sink)

    async def run(self) -> None:
        """Run every reflector until cancelled; they retry on their own."""
        async with asyncio.TaskGroup() as group:
            for reflector in self.reflectors:
                group.create_task(
                    reflector.run(), name=f"reflector {self.cluster}/{reflector.kind.value}"
                )

    async def close(self) -> None:
        await self.api.close()

    def _health(self, reflector: Reflector, error: str | None) -> None:
        if error is None:
            self.errors.pop(reflector.kind, None)
            if self._held_kinds:
                if not self.errors:
                    self._release()
                elif self._hold_timer is None:
                    self._hold_timer = asyncio.get_running_loop().call_later(
                        HOLD_MAX_S, self._release
                    )
        else:
            self.errors[reflector.kind] = error
            if self.synced.is_set():
                self._held_kinds.add(reflector.kind)
        if not self.synced.is_set() and all(r.synced.is_set() for r in self.reflectors):
            self.synced_at = time.time()
            self.synced.set()
        if self._on_change is not None:
            self._on_change()
