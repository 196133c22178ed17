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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from kubernetes_asyncio.client import ApiClient

from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind
from .reflector import Reflector, ReflectorEvent

EventSink = Callable[[ReflectorEvent, float], None]

LOCAL_KINDS = (
    Kind.SERVICE,
    Kind.ENDPOINT_SLICE,
    Kind.POD,
    Kind.NODE,
    Kind.REPLICA_SET,
    Kind.JOB,
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
        api: ApiClient,
        kinds: Iterable[Kind],
        sink: EventSink,
        metrics: DiscoveryMetrics,
        on_change: Callable[[], None] | None = None,
        paths: dict[Kind, str] | None = None,
        selectors: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.cluster = cluster
        self.api = api
        self._on_change = on_change
        self.errors: dict[Kind, str] = {}
        self.synced = asyncio.Event()
        self.synced_at: float | None = None  # wall-clock time of the first full sync
        self.started_at = time.time()
        self.reflectors = [
            Reflector(
                cluster=cluster,
                kind=kind,
                api=api,
                on_event=sink,
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
        for reflector in self.reflectors:
            reflector.retarget(sink)

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
        else:
            self.errors[reflector.kind] = error
        if not self.synced.is_set() and all(r.synced.is_set() for r in self.reflectors):
            self.synced_at = time.time()
            self.synced.set()
        if self._on_change is not None:
            self._on_change()
