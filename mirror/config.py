"""Settings of `destination mirror`, one frozen value built once at startup.

Like `destination.config.ServerConfig`: every field is a `--flag` and a
`DESTINATION_MIRROR_*` environment variable (the CLI derives both from the
fields), checked on construction so that a `MirrorConfig` that exists is
valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from destination.config import (
    LOG_LEVELS,
    ConfigError,
    HostPort,
    LogFormat,
    normalize_log_level,
    parse_host_port,
)

from .selectors import SelectorError, parse_selector_text

__all__ = ["MirrorConfig"]


def _positive(setting: str, value: object, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(setting, f"must be a number greater than 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorConfig:
    namespace: str = field(
        default="linkerd-multicluster",
        metadata={
            "help": "Namespace of the Links this controller serves, their credentials Secrets "
            "and its Leases."
        },
    )
    kubeconfig: str | None = field(
        default=None,
        metadata={
            "help": "Kubeconfig of the local (source) cluster; empty uses the in-cluster "
            "service account.",
            "default_text": "in-cluster config",
        },
    )
    admin_address: str = field(
        default="127.0.0.1:9997",
        metadata={
            "help": "Address of the admin HTTP server (/metrics, /live, /ready, /links), "
            "host:port. The Deployment sets 0.0.0.0:9997 for probes and Prometheus."
        },
    )
    identity: str = field(
        default="",
        metadata={
            "help": "Name of this replica in the Links' Leases.",
            "default_text": "$HOSTNAME (the pod name)",
        },
    )
    enable_headless_services: bool = field(
        default=False,
        metadata={
            "help": "Mirror headless exported Services with one mirror per ready pod "
            "(StatefulSets: <pod>.<svc>-<cluster> resolves locally)."
        },
    )
    enable_namespace_creation: bool = field(
        default=False,
        metadata={
            "help": "Create a missing local namespace for an exported Service; off: the "
            "Service is not mirrored, and the Link's status and an Event say why."
        },
    )
    delete_mirrors_with_link: bool = field(
        default=True,
        metadata={
            "help": "When a Link is deleted, delete its mirrors and federated memberships "
            "first (a finalizer on the Link); off: they stay, as with Linkerd."
        },
    )
    federated_service_selector: str = field(
        default="mirror.linkerd.io/federated=member",
        metadata={
            "help": "Label selector (k=v, k in (a,b), !k, ...) of this cluster's own Services "
            "that join <svc>-federated as its local member (local-discovery); empty: none "
            "join. Links have their own federatedServiceSelector for their targets."
        },
    )
    excluded_labels: str = field(
        default="",
        metadata={
            "help": "Comma-separated labels a local member does not give its federated "
            "Service (an entry ending in /* excludes a prefix), as a Link's excludedLabels."
        },
    )
    excluded_annotations: str = field(
        default="",
        metadata={
            "help": "Comma-separated annotations a local member does not give its federated "
            "Service (an entry ending in /* excludes a prefix)."
        },
    )
    repair_period_s: float = field(
        default=60.0,
        metadata={"help": "Seconds between full reconciles of each Link (repairs drift)."},
    )
    allow_insecure_remote_links: bool = field(
        default=False,
        metadata={
            "help": "For tests only: accept credentials with http:// servers or "
            "insecure-skip-tls-verify."
        },
    )
    remote_max_objects_per_kind: int = field(
        default=250_000,
        metadata={"help": "Most Services or EndpointSlices (each) kept from one target cluster."},
    )
    lease_duration_s: float = field(
        default=30.0,
        metadata={"help": "How long a replica's hold on a Link's Lease lasts unless renewed."},
    )
    lease_renew_deadline_s: float = field(
        default=10.0,
        metadata={"help": "A holder that could not renew for this long stops writing."},
    )
    lease_retry_s: float = field(
        default=2.0,
        metadata={"help": "Seconds between Lease renewals, and between attempts to take one."},
    )
    log_level: str = field(
        default="info",
        metadata={"help": f"Least severe log level written: {', '.join(LOG_LEVELS)}."},
    )
    log_format: LogFormat = field(
        default=LogFormat.JSON,
        metadata={"help": "json: one JSON object per line; console: readable lines."},
    )

    def __post_init__(self) -> None:
        parse_host_port(self.admin_address, setting="admin_address")
        if not self.namespace or len(self.namespace) > 63:
            raise ConfigError("namespace", f"must be a namespace name, got {self.namespace!r}")
        if self.kubeconfig is not None and not self.kubeconfig.strip():
            raise ConfigError("kubeconfig", "must be a path; leave it unset for in-cluster")
        for name in (
            "repair_period_s",
            "lease_duration_s",
            "lease_renew_deadline_s",
            "lease_retry_s",
        ):
            _positive(name, getattr(self, name))
        _positive("remote_max_objects_per_kind", self.remote_max_objects_per_kind, integer=True)
        if not self.lease_retry_s < self.lease_renew_deadline_s < self.lease_duration_s:
            raise ConfigError(
                "lease_renew_deadline_s",
                "must lie between the retry interval and the lease duration",
            )
        if self.federated_service_selector.strip():
            try:
                parse_selector_text(self.federated_service_selector)
            except SelectorError as err:
                raise ConfigError("federated_service_selector", str(err)) from None
        object.__setattr__(self, "log_level", normalize_log_level(self.log_level))
        try:
            object.__setattr__(self, "log_format", LogFormat(self.log_format))
        except ValueError:
            raise ConfigError(
                "log_format", f"must be json or console, got {self.log_format!r}"
            ) from None

    @property
    def admin(self) -> HostPort:
        return parse_host_port(self.admin_address, setting="admin_address")
