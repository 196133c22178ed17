"""One cluster's discovery state: index and topics, fed by a connection's events.

The local cluster and each remote cluster are a `ClusterCache`, so local,
remote and federated lookups share one code path: `topics.subscribe`. The
cache does not own its API client: a `Connection` (connection.py) feeds it,
and credential rotation swaps connections under a cache that stays, so
subscriptions survive rotation untouched.

Events go through `apply`, which updates the index at once and marks the
affected services. The refresh of their topics runs as soon as the event loop
is free (`call_soon`): the events a watch has already buffered (a rollout
delivers them in bursts) are all applied first, and each affected service is
rebuilt once for the burst instead of once per event. No stream can observe a
batch half-applied. The latency histogram measures from the first event of a
batch to the last enqueue of its fan-out. Service listeners (membership of
federated and remote-discovery streams) hear right after of the Service
objects the batch changed; endpoint-only changes never reach them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from .index import ClusterIndex, record_key
from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind, ServiceRef
from .ports import PortSet
from .profile_topics import ProfileTopics
from .reflector import Deleted, Listed, ReflectorEvent, Upserted
from .service_profiles import ServiceProfileInfo
from .topics import Topics

log = structlog.get_logger("discovery.cluster")

ServiceListener = Callable[[set[ServiceRef]], None]


class ClusterCache:
    def __init__(
        self,
        *,
        name: ClusterName,
        metrics: DiscoveryMetrics,
        default_opaque_ports: PortSet,
        enable_ipv6: bool,
        max_objects_per_kind: int | None = None,
    ) -> None:
        self.name = name
        # A linked cluster's API server is not ours: bound what it can make us hold.
        self._max_objects = max_objects_per_kind
        self._over_limit: set[Kind] = set()
        self.index = ClusterIndex()
        self.topics = Topics(
            self.index, default_opaque_ports=default_opaque_ports, enable_ipv6=enable_ipv6
        )
        self.profiles = ProfileTopics(self.index, default_opaque_ports=default_opaque_ports)
        self._metrics = metrics
        # endpoint_views, read at scrape time: always current, nothing to update.
        metrics.topics.labels(name).set_function(self.topics.views)
        metrics.profile_topics.labels(name).set_function(lambda: len(self.profiles))
        self._synced = asyncio.Event()
        self._pending: set[ServiceRef] = set()
        self._pending_objects: set[ServiceRef] = set()  # Service objects themselves changed
        self._pending_since: float | None = None
        self._service_listeners: list[ServiceListener] = []
        self._closed = False

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def mark_synced(self, *, took_s: float | None = None) -> None:
        """Called once the feeding connection has listed every kind."""
        if self._synced.is_set():
            return
        self._synced.set()
        self._metrics.cluster_synced.labels(self.name).set(1)
        log.info(
            "cluster_synced",
            cluster=self.name,
            took_s=None if took_s is None else round(took_s, 3),
            objects={k.value: n for k, n in self.index.sizes().items() if n},
        )

    def add_service_listener(self, listener: ServiceListener) -> None:
        self._service_listeners.append(listener)

    def apply(self, event: ReflectorEvent, received: float) -> None:
        """Apply one event from a reflector (or from a test feeding events itself)."""
        if self._closed:
            return  # a late event of an unlinked cluster's connection
        if self._max_objects is not None:
            bounded = self._bounded(event)
            if bounded is None:
                return
            event = bounded
        if event.kind is Kind.SERVICE_PROFILE:
            self._report_profiles(event)
        self.profiles.note(event)  # what the index held: an address a pod is leaving
        affected: set[ServiceRef]
        if isinstance(event, Listed):
            affected = self.index.replace(event.kind, event.records)
        elif isinstance(event, Deleted):
            affected = self.index.delete(event.kind, event.ref)
        else:
            affected = self.index.upsert(event.record)
        self.profiles.note(event)  # what it holds now: the address a pod arrives at
        if affected or self.profiles.pending:
            if self._pending_since is None:
                self._pending_since = received
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending |= affected
            if event.kind is Kind.SERVICE:
                self._pending_objects |= affected
        self._metrics.cache_size.labels(self.name, event.kind.value).set(
            self.index.sizes()[event.kind]
        )

    def _bounded(self, event: ReflectorEvent) -> ReflectorEvent | None:
        """The event within `max_objects_per_kind`: a list cut, a new object refused."""
        limit = self._max_objects
        assert limit is not None
        kind = event.kind
        refused = 0
        if isinstance(event, Listed) and len(event.records) > limit:
            refused = len(event.records) - limit
            event = Listed(kind, event.records[:limit])
        elif (
            isinstance(event, Upserted)
            and self.index.sizes()[kind] >= limit
            and not self.index.holds(kind, record_key(event.record))
        ):
            refused = 1
        if refused:
            self._metrics.remote_objects_refused.labels(self.name, kind.value).inc(refused)
            if kind not in self._over_limit:
                self._over_limit.add(kind)
                log.error(
                    "remote_object_limit_reached",
                    cluster=self.name,
                    kind=kind.value,
                    limit=limit,
                    consequence="objects beyond the limit are ignored; raise "
                    "--remote-max-objects-per-kind if the cluster is really that large",
                )
            return event if isinstance(event, Listed) else None
        if kind in self._over_limit and self.index.sizes()[kind] < limit * 0.9:
            self._over_limit.discard(kind)  # log again if it fills up again
        return event

    def _report_profiles(self, event: ReflectorEvent) -> None:
        """Log and count each ServiceProfile version that cannot be served, once."""
        if isinstance(event, Listed):
            records = event.records
        elif isinstance(event, Upserted):
            records = (event.record,)
        else:
            return
        for record in records:
            if not isinstance(record, ServiceProfileInfo):
                continue
            if self.index.service_profiles.get(record.ref) == record:
                continue  # a relist of a version already reported
            if record.problem is not None:
                self._metrics.invalid_service_profiles.labels(self.name, record.ref.namespace).inc()
                log.warning(
                    "service_profile_rejected",
                    cluster=self.name,
                    profile=str(record.ref),
                    reason=record.problem,
                    consequence="its last good version, if any, stays in force",
                )
            for note in record.notes:
                log.warning(
                    "service_profile_field_ignored",
                    cluster=self.name,
                    profile=str(record.ref),
                    reason=note,
                )

    def close(self) -> None:
        """The cluster is unlinked: later events and flushes are ignored, its series go.

        Every discovery metric series labelled with this cluster is removed, and
        none comes back: nothing of this cache writes to a metric any more.
        """
        self._closed = True
        self._metrics.forget_cluster(self.name)

    def _flush(self) -> None:
        """Refresh the topics of a batch (runs from the event loop, via call_soon).

        An exception here would otherwise reach asyncio's default handler as
        plain stderr: it is logged with the cluster's name instead, and one
        failing listener does not keep the others from hearing of the batch.
        """
        if self._closed:
            return
        pending, self._pending = self._pending, set()
        since, self._pending_since = self._pending_since, None
        changed_objects, self._pending_objects = self._pending_objects, set()
        try:
            changed = self.topics.refresh(pending)
        except Exception:
            changed = 0
            log.exception("flush_failed", cluster=self.name, services=len(pending))
        try:
            profiles_changed = self.profiles.refresh()
        except Exception:
            profiles_changed = 0
            log.exception("profile_flush_failed", cluster=self.name)
        if since is not None:
            # Only batches that reached subscribers: the fan-out share that is ours.
            elapsed = time.perf_counter() - since
            if changed:
                self._metrics.event_to_enqueue.labels(self.name).observe(elapsed)
            if profiles_changed:
                self._metrics.profile_event_to_enqueue.labels(self.name).observe(elapsed)
        if changed_objects:
            for listener in self._service_listeners:
                try:
                    listener(changed_objects)
                except Exception:
                    log.exception(
                        "service_listener_failed", cluster=self.name, listener=repr(listener)
                    )
