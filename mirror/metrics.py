"""Prometheus metrics of the service mirror, on an injected registry.

The gateway metrics keep the reference's names and labels (§4.3:
`gateway_enabled`, `gateway_alive`, `gateway_latency`,
`gateway_probe_latency_ms`, `gateway_probes`,
`service_mirror_endpoint_repairs`, all by `target_cluster_name`), so existing
dashboards and `linkerd multicluster gateways`-style tools keep working.
Unlike the reference, every series of a Link is removed when the Link goes
(`forget_link`), including `gateway_latency` and `gateway_probes` (Q16).
Our own metrics are per Link and bounded by the number of Links.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["PROBE_LATENCY_BUCKETS", "MirrorMetrics"]

PROBE_LATENCY_BUCKETS = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)  # fmt: skip
RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Increment:
    def __init__(self, counter: ReferenceCounter, values: tuple[str, ...]) -> None:
        self._counter = counter
        self._values = values

    def inc(self, amount: float = 1.0) -> None:
        self._counter.add(self._values, amount)


class ReferenceCounter(Collector):
    """A counter exposed under exactly its name, as the reference's Go client exposes it.

    prometheus_client names every counter's samples `<name>_total`; the
    reference's counters are `gateway_probes` and
    `service_mirror_endpoint_repairs`, which dashboards and tools query by
    that name. So these are exposed as they are, untyped (the Prometheus text
    format has no counter without `_total` in this client); the value only
    ever grows, as a counter's.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _Increment:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        return _Increment(self, tuple(str(v) for v in values))

    def add(self, values: tuple[str, ...], amount: float) -> None:
        if amount < 0:
            raise ValueError("a counter only grows")
        with self._lock:
            self._values[values] = self._values.get(values, 0.0) + amount

    def remove(self, *values: str) -> None:
        with self._lock:
            del self._values[tuple(values)]

    def collect(self) -> Iterator[Metric]:
        family = Metric(self._name, self._documentation, "unknown")
        with self._lock:
            items = sorted(self._values.items())
        for values, value in items:
            family.add_sample(self._name, dict(zip(self._labelnames, values, strict=True)), value)
        yield family


_Series = Counter | Gauge | Histogram | ReferenceCounter


class MirrorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        cluster = ["target_cluster_name"]
        self.gateway_enabled = Gauge(
            "gateway_enabled",
            "1 when the Link's gateway is probed.",
            cluster,
            registry=registry,
        )
        self.gateway_alive = Gauge(
            "gateway_alive",
            "1 while the gateway answers its probe, 0 after failureThreshold failures.",
            cluster,
            registry=registry,
        )
        self.gateway_latency = Gauge(
            "gateway_latency",
            "Latency of the last successful probe, in milliseconds.",
            cluster,
            registry=registry,
        )
        self.gateway_probe_latency = Histogram(
            "gateway_probe_latency_ms",
            "Latency of successful probes, in milliseconds.",
            cluster,
            buckets=PROBE_LATENCY_BUCKETS,
            registry=registry,
        )
        self.gateway_probes = ReferenceCounter(
            "gateway_probes",
            "Probes: successes, and failures once the failure threshold is reached.",
            [*cluster, "probe_successful"],
            registry,
        )
        self.endpoint_repairs = ReferenceCounter(
            "service_mirror_endpoint_repairs",
            "Full reconciles of a Link's mirrors (periodic, and on gateway liveness changes).",
            cluster,
            registry,
        )
        link = ["link"]
        self.reconciles = Histogram(
            "mirror_reconcile_seconds",
            "Time to compute and apply a Link's desired mirrors.",
            link,
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.change_to_write = Histogram(
            "mirror_change_to_write_seconds",
            "From reading a remote change to the last write it caused.",
            link,
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.writes = Counter(
            "mirror_writes_total",
            "Requests that change local objects, by Link, kind and verb.",
            ["link", "kind", "verb"],
            registry=registry,
        )
        self.write_failures = Counter(
            "mirror_write_failures_total",
            "Writes that failed (other than not-found on delete and conflicts, which retry).",
            ["link", "kind", "verb"],
            registry=registry,
        )
        self.mirrored = Gauge(
            "mirror_services",
            "Remote Services a Link mirrors, by mode (gateway, remote-discovery, federated).",
            ["link", "mode"],
            registry=registry,
        )
        self.link_state = Gauge(
            "mirror_link_state",
            "1 for the state each Link's worker is in, 0 for the others.",
            ["link", "state"],
            registry=registry,
        )
        self.leader = Gauge(
            "mirror_link_leader",
            "1 while this replica holds the Link's Lease (writes its mirrors).",
            link,
            registry=registry,
        )
        self._by_cluster: tuple[tuple[_Series, tuple[str, ...]], ...] = (
            (self.gateway_enabled, ("target_cluster_name",)),
            (self.gateway_alive, ("target_cluster_name",)),
            (self.gateway_latency, ("target_cluster_name",)),
            (self.gateway_probe_latency, ("target_cluster_name",)),
            (self.gateway_probes, ("target_cluster_name", "probe_successful")),
            (self.endpoint_repairs, ("target_cluster_name",)),
        )
        self._by_link: tuple[tuple[_Series, tuple[str, ...]], ...] = (
            (self.reconciles, ("link",)),
            (self.change_to_write, ("link",)),
            (self.writes, ("link", "kind", "verb")),
            (self.write_failures, ("link", "kind", "verb")),
            (self.mirrored, ("link", "mode")),
            (self.link_state, ("link", "state")),
            (self.leader, ("link",)),
        )

    def forget_cluster(self, cluster: str) -> None:
        """Remove every series of a target cluster (a Link gone, or retargeted)."""
        for metric, labels in self._by_cluster:
            _remove_matching(metric, labels, cluster)

    def forget_link(self, link: str, cluster: str) -> None:
        """Remove every series of a Link and of its target cluster (public API only)."""
        self.forget_cluster(cluster)
        for metric, labels in self._by_link:
            _remove_matching(metric, labels, link)


def _remove_matching(metric: _Series, labels: tuple[str, ...], value: str) -> None:
    """Remove the children whose first label is `value`, read from what collect() reports."""
    series = {
        tuple(sample.labels[name] for name in labels)
        for family in metric.collect()
        for sample in family.samples
        if sample.labels.get(labels[0]) == value
    }
    for values in series:
        with contextlib.suppress(KeyError):
            metric.remove(*values)
