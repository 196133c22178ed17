"""Prometheus metrics of the discovery side, registered on an injected registry.

Labels are bounded: cluster and kind (a handful each), event type (a fixed
set, whatever the remote sends) and restart reason (a few). Nothing is
labelled by object, pod or IP. Linked clusters come and go: `forget_cluster`
removes every series of an unlinked cluster from every metric here.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_M = TypeVar("_M", bound=MetricWrapperBase)

# From a watch event's arrival to the last subscriber's enqueue: the share of
# the fan-out that is ours. Buckets span 50 µs to 2.5 s.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class DiscoveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # (metric, its label names) of every metric labelled by cluster.
        self._per_cluster: list[tuple[MetricWrapperBase, tuple[str, ...]]] = []

        def per_cluster(metric: _M, labels: tuple[str, ...]) -> _M:
            self._per_cluster.append((metric, labels))
            return metric

        labels: tuple[str, ...] = ("cluster", "kind", "type")
        self.watch_events = per_cluster(
            Counter(
                "watch_events_total",
                "Watch events received, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR, "
                "other).",
                labels,
                registry=registry,
            ),
            labels,
        )
        labels = ("cluster", "kind")
        self.watch_lists = per_cluster(
            Counter(
                "watch_lists_total",
                "Full lists (initial sync and relists).",
                labels,
                registry=registry,
            ),
            labels,
        )
        labels = ("cluster", "kind", "reason")
        self.watch_restarts = per_cluster(
            Counter(
                "watch_restarts_total",
                "Watches restarted, by reason (expired, errors).",
                labels,
                registry=registry,
            ),
            labels,
        )
        labels = ("cluster", "kind")
        self.invalid_objects = per_cluster(
            Counter(
                "invalid_objects_total",
                "Objects that could not be read and were skipped.",
                labels,
                registry=registry,
            ),
            labels,
        )
        self.invalid_parts = per_cluster(
            Counter(
                "invalid_object_parts_total",
                "Parts of objects (addresses, ports, labels) that could not be read and were "
                "skipped; the rest of the object was kept.",
                labels,
                registry=registry,
            ),
            labels,
        )
        self.cache_size = per_cluster(
            Gauge(
                "cache_objects",
                "Objects held in the slim cache.",
                labels,
                registry=registry,
            ),
            labels,
        )
        labels = ("cluster",)
        self.event_to_enqueue = per_cluster(
            Histogram(
                "event_to_enqueue_seconds",
                "Time from reading a watch event to the last subscriber's enqueue.",
                labels,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            labels,
        )
        self.profile_event_to_enqueue = per_cluster(
            Histogram(
                "profile_event_to_enqueue_seconds",
                "Time from reading a watch event to the last GetProfile subscriber's enqueue.",
                labels,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            labels,
        )
        self.profile_topics = per_cluster(
            Gauge(
                "profile_topics",
                "GetProfile topics with subscribers: (service, port, client namespace) and "
                "(ip, port) combinations.",
                labels,
                registry=registry,
            ),
            labels,
        )
        self.cluster_synced = per_cluster(
            Gauge(
                "cluster_synced",
                "1 once every watch of the cluster has listed.",
                labels,
                registry=registry,
            ),
            labels,
        )
        self.topics = per_cluster(
            Gauge(
                "endpoint_views",
                "(service, port, view) combinations with subscribers.",
                labels,
                registry=registry,
            ),
            labels,
        )
        self.cluster_store_size = Gauge(
            "cluster_store_size",
            "Remote clusters linked by a credentials Secret (valid or not).",
            registry=registry,
        )
        self.links_rejected = Counter(
            "cluster_links_rejected_total",
            "Link Secrets ignored: naming the local cluster, or a cluster already linked.",
            ["reason"],
            registry=registry,
        )
        labels = ("cluster", "kind")
        self.remote_objects_refused = per_cluster(
            Counter(
                "remote_objects_refused_total",
                "Objects of a linked cluster ignored because it holds more than "
                "--remote-max-objects-per-kind of that kind.",
                labels,
                registry=registry,
            ),
            labels,
        )
        labels = ("cluster", "namespace")
        self.invalid_service_profiles = per_cluster(
            Counter(
                "service_profiles_rejected_total",
                "ServiceProfile versions that do not validate (logged with the reason); "
                "the object's last good version, if any, stays in force.",
                labels,
                registry=registry,
            ),
            labels,
        )
        labels = ("cluster", "result")
        self.credential_rotations = per_cluster(
            Counter(
                "remote_cluster_credential_rotations_total",
                "Credential updates of linked clusters: applied, rejected (each distinct "
                "Secret once) or abandoned (did not sync in time).",
                labels,
                registry=registry,
            ),
            labels,
        )

    def forget_cluster(self, cluster: str) -> None:
        """Remove every series labelled with `cluster`, whatever its other labels."""
        for metric, labels in self._per_cluster:
            series = {
                tuple(sample.labels[name] for name in labels)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("cluster") == cluster
            }
            for values in series:
                metric.remove(*values)
