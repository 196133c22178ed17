"""Settings of ``destination serve``, held in one frozen value built once at startup.

Every setting of the server is a field of :class:`ServerConfig`. The CLI
(:mod:`destination.cli.command`) builds one from flags and environment variables and
passes it down; nothing else reads flags, environment variables or module
globals. Tests build a ``ServerConfig(...)`` directly with the few fields they
care about.

Design choices
--------------
* **One source of truth for the operator surface.** Each field carries its
  ``--help`` text in ``field(metadata={"help": ...})``. The CLI derives one
  ``--kebab-case`` flag and one ``DESTINATION_<UPPER_SNAKE>`` environment
  variable per field from :func:`dataclasses.fields`, so a new field cannot be
  forgotten on the command line.
* **Parsed values, not strings.** Fields hold what the server uses: a
  :class:`~discovery.ports.PortSet`, enums, numbers. The string forms are parsed
  by the ``parse_*`` functions here (shared by flags and environment variables)
  and checked again by ``__post_init__``, so a ``ServerConfig`` that exists is
  valid, whoever built it.
* **Fail at startup, precisely.** Where upstream Linkerd logs and carries on
  (invalid opaque-port items are skipped, an unknown outbound transport mode
  means ``transparent``, an empty cluster domain means ``cluster.local``), we
  refuse to start: a typo in a Deployment should fail the rollout, not change
  routing silently. :class:`ConfigError` names the setting and says what is
  wrong; the CLI rewrites the setting into the flag or variable that gave it.
* **Defaults are resolved here, once.** An empty ``identity_trust_domain``
  means "the cluster domain" and is replaced in ``__post_init__``; consumers
  never see the empty string. Outbound transport mode defaults to
  ``transport-header`` as the Helm chart does (the Linkerd binary's own default
  is ``transparent``).

Differences from Linkerd's flags (reference §1.1) worth knowing: addresses need
a host (``0.0.0.0:8086``, not ``:8086``), ``-enable-endpoint-slices``,
``-enable-pprof``, ``-export-queue-metrics`` and ``-trace-collector`` do not
exist (we always use EndpointSlices), and ``log_format`` is ``json`` or
``console`` rather than ``json`` or ``plain``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from discovery.ports import PortSet

__all__ = [
    "DEFAULT_OPAQUE_PORTS",
    "LOG_LEVELS",
    "ConfigError",
    "HostPort",
    "LogFormat",
    "OutboundTransportMode",
    "ServerConfig",
    "normalize_log_level",
    "parse_host_port",
    "parse_http2_client_params",
    "parse_opaque_ports",
]

DEFAULT_OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211"
"""The Helm chart's default opaque ports: SMTP, MySQL, Galera, Postgres, Redis,
Elasticsearch, Memcached: server-speaks-first protocols that protocol detection
cannot handle."""

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""Accepted log levels, least to most severe. ``warn`` is accepted as ``warning``."""

_LOG_LEVEL_ALIASES = {"warn": "warning"}
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_LABEL_RE = re.compile(rf"{_DNS_LABEL}\Z")
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z")
_MAX_DNS_NAME = 253
_MAX_PORT = 65535
_E = TypeVar("_E", bound=enum.StrEnum)


class ConfigError(ValueError):
    """An invalid setting.

    ``setting`` is the :class:`ServerConfig` field name, ``problem`` what is
    wrong with its value, and ``source`` (optional) where the value came from,
    such as ``--stream-queue-capacity`` or ``DESTINATION_STREAM_QUEUE_CAPACITY``.
    ``str()`` is ``"<source or setting>: <problem>"``.
    """

    def __init__(self, setting: str, problem: str, *, source: str | None = None) -> None:
        super().__init__(f"{source or setting}: {problem}")
        self.setting = setting
        self.problem = problem
        self.source = source


class OutboundTransportMode(enum.StrEnum):
    """How meshed proxies carry outbound traffic to meshed endpoints (reference §1.1, §5.7).

    ``transport-header`` sets ``ProtocolHint.opaque_transport`` so the client
    proxy sends a transport header to the server proxy's inbound port;
    ``transparent`` does not.
    """

    TRANSPARENT = "transparent"
    TRANSPORT_HEADER = "transport-header"


class LogFormat(enum.StrEnum):
    """Log output: one JSON object per line, or coloured key=value lines for people."""

    JSON = "json"
    CONSOLE = "console"


class HostPort(NamedTuple):
    """A listen address; ``str()`` is ``host:port``, with brackets around IPv6 hosts."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_host_port(address: str, *, setting: str = "address") -> HostPort:
    """Split ``host:port`` or ``[ipv6]:port``; port 0 (any free port) is allowed.

    The host is required: use ``0.0.0.0`` (all IPv4 interfaces) or ``[::]``
    (all interfaces) where Linkerd would write ``:8086``.
    """
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(setting, f"expected [ipv6]:port, got {address!r}")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ConfigError(setting, f"expected host:port, got {address!r}")
        if ":" in host:
            raise ConfigError(
                setting, f"an IPv6 host needs brackets, as in [::1]:8086; got {address!r}"
            )
    if not host or host != host.strip() or " " in host:
        raise ConfigError(
            setting,
            f"the host is missing or blank in {address!r}; use 0.0.0.0:PORT or [::]:PORT "
            "to listen on all interfaces",
        )
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > _MAX_PORT:
        raise ConfigError(setting, f"the port must be a number in 0..65535; got {address!r}")
    return HostPort(host, int(port_text))


def normalize_log_level(level: object) -> str:
    """The canonical name in :data:`LOG_LEVELS`; case-insensitive, ``warn`` is ``warning``."""
    name = str(level).strip().lower()
    name = _LOG_LEVEL_ALIASES.get(name, name)
    if name not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}; got {level!r}")
    return name


def parse_opaque_ports(value: str, *, setting: str = "default_opaque_ports") -> PortSet:
    """Parse a comma list of ports and ``lo-hi`` ranges; any invalid item is an error.

    The empty string is the empty set (no port is opaque by default). Every
    invalid item is listed in the error, not only the first.
    """
    ports, invalid = PortSet.parse(value)
    if invalid:
        items = ", ".join(repr(item) for item in invalid)
        raise ConfigError(
            setting,
            f"invalid port or range {items} in {value!r} "
            "(expected a comma list of ports 0..65535 and lo-hi ranges)",
        )
    return ports


def parse_http2_client_params(
    value: str, *, setting: str = "meshed_http2_client_params"
) -> dict[str, Any] | None:
    """Decode the ``Http2ClientParams`` JSON (snake_case proto field names); ``""`` is ``None``.

    Only the outer shape is checked here (a JSON object); the keys and value
    types are those of reference §1.1, for example
    ``{"keep_alive": {"interval": {"seconds": 10}, "timeout": {"seconds": 3},
    "while_idle": true}}``, and are turned into the message where it is
    encoded.
    """
    if value.strip() == "":
        return None
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as err:
        raise ConfigError(setting, f"not valid JSON: {err}") from None
    if not isinstance(decoded, dict):
        raise ConfigError(setting, f"must be a JSON object, got {_json_kind(decoded)}")
    return decoded


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``destination serve`` needs to know, validated on construction.

    Each field's ``metadata["help"]`` is its ``--help`` text;
    ``metadata["default_text"]``, where present, describes a default that is
    not shown well by ``str(default)``.
    """

    listen_address: str = field(
        default="0.0.0.0:8086",
        metadata={"help": "Address of the gRPC destination API (plaintext HTTP/2), host:port."},
    )
    admin_address: str = field(
        default="127.0.0.1:9996",
        metadata={
            "help": "Address of the admin HTTP server (/metrics, /live, /ping, /ready, "
            "/clusters), host:port. Loopback by default: /clusters describes the links; "
            "deploy/destination.yaml sets 0.0.0.0:9996 so that the kubelet's probes and "
            "Prometheus reach it."
        },
    )
    kubeconfig: str | None = field(
        default=None,
        metadata={
            "help": "Path to a kubeconfig for the local cluster; empty uses the in-cluster "
            "service account.",
            "default_text": "in-cluster config",
        },
    )
    cluster_name: str = field(
        default="local",
        metadata={
            "help": "Name of the local cluster in metrics and logs (a DNS label). Remote "
            "clusters are named by their Link."
        },
    )
    controller_namespace: str = field(
        default="linkerd",
        metadata={
            "help": "Namespace of the control plane: identity names use it, and "
            "remote-cluster credentials (Secrets) are watched there."
        },
    )
    cluster_domain: str = field(
        default="cluster.local",
        metadata={"help": "DNS suffix of the local cluster's services (svc.<domain>)."},
    )
    identity_trust_domain: str = field(
        default="",
        metadata={
            "help": "Trust domain of workload identities (TLS server names of endpoints).",
            "default_text": "the cluster domain",
        },
    )
    default_opaque_ports: PortSet = field(
        default=PortSet.parse(DEFAULT_OPAQUE_PORTS)[0],
        metadata={
            "help": "Ports treated as opaque (no protocol detection) when a workload has no "
            "opaque-ports annotation: comma list of ports and lo-hi ranges; empty for none."
        },
    )
    enable_h2_upgrade: bool = field(
        default=True,
        metadata={"help": "Hint meshed, non-opaque endpoints to upgrade HTTP/1 to HTTP/2."},
    )
    outbound_transport_mode: OutboundTransportMode = field(
        default=OutboundTransportMode.TRANSPORT_HEADER,
        metadata={
            "help": "transport-header: meshed proxies send a transport header to the "
            "endpoint's inbound proxy; transparent: they do not. The default follows the "
            "Linkerd Helm chart; the Linkerd binary's own default is transparent."
        },
    )
    enable_ipv6: bool = field(
        default=True,
        metadata={
            "help": "Serve IPv6 endpoints, and prefer IPv6 when a pod has both address families."
        },
    )
    stream_queue_capacity: int = field(
        default=100,
        metadata={
            "help": "Updates buffered per stream before they are coalesced into one catch-up "
            "update; must be greater than 0."
        },
    )
    max_streams_per_connection: int = field(
        default=10_000,
        metadata={
            "help": "Get streams one client connection may hold at once; more are refused "
            "with RESOURCE_EXHAUSTED. A busy gateway proxy holds thousands on one "
            "connection; must be greater than 0."
        },
    )
    stream_stuck_deadline_s: float = field(
        default=30.0,
        metadata={
            "help": "Seconds a client may go without reading its stream before the server "
            "ends that stream; must be greater than 0."
        },
    )
    meshed_http2_client_params: dict[str, Any] | None = field(
        default=None,
        hash=False,
        metadata={
            "help": "HTTP/2 client settings sent with meshed endpoints, as a JSON object with "
            'snake_case proto names, e.g. {"keep_alive": {"interval": {"seconds": 10}, '
            '"timeout": {"seconds": 3}, "while_idle": true}}; empty for none.',
            "default_text": "none",
        },
    )
    ext_endpoint_zone_weights: bool = field(
        default=False,
        metadata={
            "help": "Experimental: multiply the weight of endpoints in the client's zone by 10."
        },
    )
    enable_remote_discovery: bool = field(
        default=True,
        metadata={
            "help": "Link remote clusters from the credentials Secrets (type "
            "mirror.linkerd.io/remote-kubeconfig) in the controller namespace, for "
            "remote-discovery mirrors and federated services. Needs list/watch on Secrets "
            "there."
        },
    )
    remote_withdraw_after_s: float = field(
        default=0.0,
        metadata={
            "help": "Staleness policy for a linked cluster whose API server cannot be reached: "
            "0 keeps its last known endpoints until it returns; N > 0 withdraws them (streams "
            "get Removes) once it has been unreachable for N seconds, and sends them again "
            "when it is back.",
            "default_text": "0 (keep)",
        },
    )
    remote_max_objects_per_kind: int = field(
        default=250_000,
        metadata={
            "help": "Most Services, EndpointSlices or Pods (each) kept from one linked cluster; "
            "more are refused and logged (remote_objects_refused_total), so that a broken or "
            "hostile remote API server cannot exhaust this server's memory. Raise it for "
            "larger remote clusters."
        },
    )
    allow_insecure_remote_links: bool = field(
        default=False,
        metadata={
            "help": "For tests only: accept link kubeconfigs with plaintext http:// servers or "
            "insecure-skip-tls-verify: true, which expose the link's credentials and data to "
            "anyone on the network path. Off: such links are refused (state invalid, with the "
            "reason)."
        },
    )
    log_level: str = field(
        default="info",
        metadata={"help": f"Least severe log level written: {', '.join(LOG_LEVELS)}."},
    )
    log_format: LogFormat = field(
        default=LogFormat.JSON,
        metadata={
            "help": "json: one JSON object per line; console: readable lines for people "
            "(coloured on a terminal)."
        },
    )
    shutdown_grace_s: float = field(
        default=5.0,
        metadata={
            "help": "Seconds open streams get to finish on SIGTERM or SIGINT before the "
            "server stops; 0 or more."
        },
    )

    gc_freeze: bool = field(
        default=True,
        metadata={
            "help": "Run a full garbage collection every second and exempt its survivors "
            "(open streams) from the next ones, so that each walks only the last second's "
            "objects: pauses of milliseconds instead of up to seconds with 10,000s of streams."
        },
    )
    gc_thaw_period_s: float = field(
        default=600.0,
        metadata={
            "help": "With --gc-freeze: seconds between two full collections that walk every "
            "object (frees reference cycles among old objects); greater than 0."
        },
    )

    def __post_init__(self) -> None:
        parse_host_port(self.listen_address, setting="listen_address")
        parse_host_port(self.admin_address, setting="admin_address")
        if self.kubeconfig is not None and self.kubeconfig.strip() == "":
            raise ConfigError(
                "kubeconfig", "must be a path; leave it unset for the in-cluster config"
            )
        _check_dns_label("cluster_name", self.cluster_name)
        _check_dns_label("controller_namespace", self.controller_namespace)
        _check_dns_name("cluster_domain", self.cluster_domain)
        if self.identity_trust_domain == "":
            object.__setattr__(self, "identity_trust_domain", self.cluster_domain)
        _check_dns_name("identity_trust_domain", self.identity_trust_domain)
        if not isinstance(self.default_opaque_ports, PortSet):
            raise ConfigError("default_opaque_ports", "must be a PortSet")
        for name in (
            "enable_h2_upgrade",
            "enable_ipv6",
            "ext_endpoint_zone_weights",
            "allow_insecure_remote_links",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(
            self,
            "outbound_transport_mode",
            _enum_member(
                OutboundTransportMode, "outbound_transport_mode", self.outbound_transport_mode
            ),
        )
        capacity = self.stream_queue_capacity
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ConfigError(
                "stream_queue_capacity", f"must be an integer greater than 0, got {capacity!r}"
            )
        remote_limit = self.remote_max_objects_per_kind
        if isinstance(remote_limit, bool) or not isinstance(remote_limit, int) or remote_limit <= 0:
            raise ConfigError(
                "remote_max_objects_per_kind",
                f"must be an integer greater than 0, got {remote_limit!r}",
            )
        limit = self.max_streams_per_connection
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ConfigError(
                "max_streams_per_connection", f"must be an integer greater than 0, got {limit!r}"
            )
        _check_seconds("stream_stuck_deadline_s", self.stream_stuck_deadline_s, allow_zero=False)
        params = self.meshed_http2_client_params
        if params is not None and not isinstance(params, dict):
            raise ConfigError(
                "meshed_http2_client_params", f"must be a JSON object, got {_json_kind(params)}"
            )
        object.__setattr__(self, "log_level", normalize_log_level(self.log_level))
        object.__setattr__(
            self, "log_format", _enum_member(LogFormat, "log_format", self.log_format)
        )
        _check_seconds("shutdown_grace_s", self.shutdown_grace_s, allow_zero=True)
        _check_seconds("gc_thaw_period_s", self.gc_thaw_period_s, allow_zero=False)
        _check_seconds("remote_withdraw_after_s", self.remote_withdraw_after_s, allow_zero=True)

    @property
    def listen(self) -> HostPort:
        """``listen_address`` split into host and port."""
        return parse_host_port(self.listen_address, setting="listen_address")

    @property
    def admin(self) -> HostPort:
        """``admin_address`` split into host and port."""
        return parse_host_port(self.admin_address, setting="admin_address")

    @property
    def force_opaque_transport(self) -> bool:
        """Whether meshed endpoints get ``ProtocolHint.opaque_transport`` (reference §5.7)."""
        return self.outbound_transport_mode is OutboundTransportMode.TRANSPORT_HEADER


def _check_dns_label(setting: str, value: object) -> None:
    if not isinstance(value, str) or not _DNS_LABEL_RE.match(value):
        raise ConfigError(
            setting,
            "must be a DNS label: 1-63 lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit; got {value!r}",
        )


def _check_dns_name(setting: str, value: object) -> None:
    if not isinstance(value, str) or len(value) > _MAX_DNS_NAME or not _DNS_NAME_RE.match(value):
        raise ConfigError(
            setting,
            "must be a DNS name such as cluster.local: dot-separated DNS labels, "
            f"lowercase, no trailing dot; got {value!r}",
        )


def _check_seconds(setting: str, value: object, *, allow_zero: bool) -> None:
    valid = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not valid:
        bound = "0 or more" if allow_zero else "greater than 0"
        raise ConfigError(setting, f"must be a number of seconds {bound}, got {value!r}")


def _enum_member(kind: type[_E], setting: str, value: object) -> _E:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return kind(value)
    choices = ", ".join(member.value for member in kind)
    raise ConfigError(setting, f"must be one of {choices}; got {str(value)!r}")
