"""One cluster's discovery: API client, reflectors, index and topics together.

The local cluster and (later) each remote cluster are a `ClusterCache`, so
local, remote and federated lookups share one code path: `topics.subscribe`.
Events from every reflector go through `apply`, which updates the index at
once and marks the affected services. The refresh of their topics runs as soon
as the event loop is free (`call_soon`): the events a watch has already
buffered (a rollout delivers them in bursts) are all applied first, and each
affected service is rebuilt once for the burst instead of once per event.
No stream can observe a batch half-applied. The latency histogram measures
from the first event of a batch to the last enqueue of its fan-out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from kubernetes_asyncio.client import ApiClient

from .index import ClusterIndex
from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind, ServiceRef
from .ports import PortSet
from .reflector import Deleted, Listed, Reflector, ReflectorEvent
from .topics import Topics

log = structlog.get_logger("discovery.cluster")

LOCAL_KINDS = (
    Kind.SERVICE,
    Kind.ENDPOINT_SLICE,
    Kind.POD,
    Kind.NODE,
    Kind.REPLICA_SET,
    Kind.JOB,
)


class ClusterCache:
    def __init__(
        self,
        *,
        name: ClusterName,
        api: ApiClient,
        metrics: DiscoveryMetrics,
        default_opaque_ports: PortSet,
        enable_ipv6: bool,
        kinds: Iterable[Kind] = LOCAL_KINDS,
    ) -> None:
        self.name = name
        self.index = ClusterIndex()
        self.topics = Topics(
            self.index, default_opaque_ports=default_opaque_ports, enable_ipv6=enable_ipv6
        )
        self._metrics = metrics
        self.reflectors = [
            Reflector(cluster=name, kind=kind, api=api, on_event=self.apply, metrics=metrics)
            for kind in kinds
        ]
        self._synced = asyncio.Event()
        self._pending: set[ServiceRef] = set()
        self._pending_since: float | None = None

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """Run every reflector until cancelled."""
        async with asyncio.TaskGroup() as group:
            for reflector in self.reflectors:
                group.create_task(reflector.run(), name=f"reflector {self.name}/{reflector.kind}")
            group.create_task(self.track_sync(), name=f"sync {self.name}")

    async def track_sync(self) -> None:
        """Mark the cluster synced once every reflector has listed (run() runs it)."""
        started = time.perf_counter()
        await asyncio.gather(*(r.synced.wait() for r in self.reflectors))
        self._synced.set()
        self._metrics.cluster_synced.labels(self.name).set(1)
        log.info(
            "cluster_synced",
            cluster=self.name,
            took_s=round(time.perf_counter() - started, 3),
            objects={k.value: n for k, n in self.index.sizes().items()},
        )

    def apply(self, event: ReflectorEvent, received: float) -> None:
        """Apply one event from a reflector (or from a test feeding events itself)."""
        affected: set[ServiceRef]
        if isinstance(event, Listed):
            affected = self.index.replace(event.kind, event.records)
        elif isinstance(event, Deleted):
            affected = self.index.delete(event.kind, event.ref)
        else:
            affected = self.index.upsert(event.record)
        if affected:
            if self._pending_since is None:
                self._pending_since = received
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending |= affected
        self._metrics.cache_size.labels(self.name, event.kind.value).set(
            self.index.sizes()[event.kind]
        )

    def _flush(self) -> None:
        pending, self._pending = self._pending, set()
        since, self._pending_since = self._pending_since, None
        if self.topics.refresh(pending) and since is not None:
            # Only batches that reached subscribers: the fan-out share that is ours.
            self._metrics.event_to_enqueue.labels(self.name).observe(time.perf_counter() - since)
