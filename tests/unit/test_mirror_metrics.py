"""The mirror's metrics as Prometheus scrapes them (reference §4.3, Q16).

Scope: `mirror.metrics.MirrorMetrics` on its own registry, read through the
text exposition a scrape gets. The reference's gateway metrics keep their
exact names (its counters have no `_total` suffix: dashboards query
`gateway_probes` and `service_mirror_endpoint_repairs`), and `forget_link`
removes every series of a Link and of its target cluster, and nothing else.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from mirror.metrics import MirrorMetrics


def samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def populated() -> tuple[CollectorRegistry, MirrorMetrics]:
    registry = CollectorRegistry()
    metrics = MirrorMetrics(registry)
    for link, cluster in (("west", "west"), ("north", "north")):
        metrics.gateway_enabled.labels(cluster).set(1)
        metrics.gateway_alive.labels(cluster).set(1)
        metrics.gateway_latency.labels(cluster).set(2.5)
        metrics.gateway_probe_latency.labels(cluster).observe(2.5)
        metrics.gateway_probes.labels(cluster, "true").inc()
        metrics.gateway_probes.labels(cluster, "false").inc(2)
        metrics.endpoint_repairs.labels(cluster).inc()
        metrics.writes.labels(link, "Service", "create").inc()
        metrics.mirrored.labels(link, "mirror").set(3)
        metrics.leader.labels(link).set(1)
    return registry, metrics


def test_the_reference_counters_keep_their_exact_names() -> None:
    """Regression: prometheus_client exposed them as `gateway_probes_total` and
    `service_mirror_endpoint_repairs_total`, names no Linkerd dashboard queries."""
    registry, _ = populated()
    lines = samples(registry)
    assert 'gateway_probes{probe_successful="true",target_cluster_name="west"} 1.0' in lines
    assert 'gateway_probes{probe_successful="false",target_cluster_name="west"} 2.0' in lines
    assert 'service_mirror_endpoint_repairs{target_cluster_name="west"} 1.0' in lines
    assert not any(
        line.startswith(("gateway_probes_total", "service_mirror_endpoint_repairs_total"))
        for line in lines
    )
    for name in ("gateway_enabled", "gateway_alive", "gateway_latency"):
        assert f'{name}{{target_cluster_name="west"}}' in " ".join(lines)
    assert any(line.startswith("gateway_probe_latency_ms_bucket{") for line in lines)


def test_forgetting_a_link_removes_its_series_and_only_them() -> None:
    registry, metrics = populated()
    metrics.forget_link("west", "west")
    lines = samples(registry)
    assert not [line for line in lines if '"west"' in line]
    north = [line for line in lines if '"north"' in line]
    assert len(north) > 10
    assert 'gateway_probes{probe_successful="true",target_cluster_name="north"} 1.0' in lines
