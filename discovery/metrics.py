"""Prometheus metrics of the discovery side, registered on an injected registry.

Labels are bounded: cluster and kind (a handful each), event type and restart
reason (a few). Nothing is labelled by object, pod or IP.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.watch_events = Counter(
            "watch_events_total",
            "Watch events received, by type.",
            ["cluster", "kind", "type"],
            registry=registry,
        )
        self.watch_lists = Counter(
            "watch_lists_total",
            "Full lists (initial sync and relists).",
            ["cluster", "kind"],
            registry=registry,
        )
        self.watch_restarts = Counter(
            "watch_restarts_total",
            "Watches restarted, by reason (expired, errors).",
            ["cluster", "kind", "reason"],
            registry=registry,
        )
        self.invalid_objects = Counter(
            "invalid_objects_total",
            "Objects that could not be read and were skipped.",
            ["cluster", "kind"],
            registry=registry,
        )
        self.invalid_parts = Counter(
            "invalid_object_parts_total",
            "Parts of objects (addresses, ports, labels) that could not be read and were "
            "skipped; the rest of the object was kept.",
            ["cluster", "kind"],
            registry=registry,
        )
        self.cache_size = Gauge(
            "cache_objects",
            "Objects held in the slim cache.",
            ["cluster", "kind"],
            registry=registry,
        )
        self.event_to_enqueue = Histogram(
            "event_to_enqueue_seconds",
            "Time from reading a watch event to the last subscriber's enqueue.",
            ["cluster"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cluster_synced = Gauge(
            "cluster_synced",
            "1 once every watch of the cluster has listed.",
            ["cluster"],
            registry=registry,
        )
        self.topics = Gauge(
            "endpoint_views",
            "(service, port, view) combinations with subscribers.",
            ["cluster"],
            registry=registry,
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
        self.credential_rotations = Counter(
            "remote_cluster_credential_rotations_total",
            "Credential updates of linked clusters, applied or rejected.",
            ["cluster", "result"],
            registry=registry,
        )
