"""Prometheus metrics of the gRPC side, registered on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DestinationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.active_streams = Gauge(
            "destination_active_streams",
            "Open streams, by RPC and discovery kind.",
            ["rpc", "kind"],
            registry=registry,
        )
        self.streams_total = Counter(
            "destination_streams_total",
            "Streams opened, by RPC and final gRPC code.",
            ["rpc", "code"],
            registry=registry,
        )
        self.updates = Counter(
            "destination_updates_sent_total",
            "Messages enqueued to streams (one per stream per message), by RPC.",
            ["rpc"],
            registry=registry,
        )
        self.queue_overflows = Counter(
            "destination_stream_queue_overflows_total",
            "Times a stream's queue filled up and was coalesced into one catch-up diff.",
            registry=registry,
        )
        self.fanout_errors = Counter(
            "destination_fanout_errors_total",
            "Failures while encoding an update (stage=encode) or re-planning a target "
            "(stage=replan); the streams concerned catch up from their own snapshots.",
            ["stage"],
            registry=registry,
        )
        self.stuck_streams = Counter(
            "destination_stuck_streams_ended_total",
            "Streams ended because their client did not read past the deadline.",
            registry=registry,
        )
