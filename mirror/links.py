"""A Link (`links.multicluster.linkerd.io/v1alpha3`) as a validated, typed record.

A Link is written by an operator (or piped from `link-gen`) and drives what
the controller writes into the local cluster, so it is checked as hostile
input: every field is read with its type and bounds, and a Link that cannot
be used is still recorded, with `problem` saying why, so that its status and
the operator's `check` can show the reason instead of the Link silently doing
nothing. Mirrors a broken Link created earlier are kept, not deleted: a typo
in an edit must not take exported services away.

Field semantics follow reference §1.1, with defaults made explicit here
(probe timeout 30 s, failure threshold 3, target cluster domain
`cluster.local`); a bare integer probe period `N` means `Ns`, as link-gen
writes it from the gateway's annotation.

Deliberate differences from the reference, each a field it takes unchecked:
an unusable `probeSpec` (period or threshold that do not parse) makes the
Link a problem, where the reference's probe worker exits and the gateway
stays "alive" forever; probe periods are bounded (100 ms to 24 h) so that a
Link cannot make the controller probe in a tight loop; gateway addresses are
IP literals or DNS names, never the legacy numeric forms (`0x7f.1`,
`01.2.3.4`, `127.1`) a resolver would turn into an IPv4 address, nor IPv6
literals with a zone (`fe80::1%eth0`) that an Endpoints object cannot hold.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from discovery.models import ObjectRef
from discovery.units import UnitError, go_duration_ns

from .selectors import LinkSelector, SelectorError

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_PROBE_TIMEOUT_S",
    "LINK_API",
    "Link",
    "LinkProblem",
    "LinkSpec",
    "ProbeSpec",
    "project_link",
]

LINK_API = "/apis/multicluster.linkerd.io/v1alpha3"
DEFAULT_PROBE_TIMEOUT_S = 30.0
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
MAX_GATEWAY_ADDRESSES = 16
MAX_EXCLUSIONS = 256
MAX_EXCLUSION_LENGTH = 319  # a label or annotation key (317), then "/*"
MIN_PROBE_PERIOD_S = 0.1
MIN_PROBE_TIMEOUT_S = 0.001
MAX_PROBE_DURATION_S = 24 * 3600.0

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_NAME_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\Z"
)
_HTTP_PATH_RE = re.compile(r"/[\x21-\x7e]{0,1023}\Z")  # printable ASCII, no spaces


class LinkProblem(ValueError):
    """Why a Link cannot be served; the message names the field."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """How the target's gateway is probed: GET http://<gateway>:<port><path>."""

    path: str
    port: int
    period_s: float
    timeout_s: float
    failure_threshold: int


@dataclass(frozen=True, slots=True)
class LinkSpec:
    target_cluster_name: str
    target_cluster_domain: str
    target_linkerd_namespace: str
    credentials_secret: str
    gateway_addresses: tuple[str, ...]  # IP literals or DNS names, resolved at each use
    gateway_port: int | None
    gateway_identity: str
    probe: ProbeSpec | None  # None: no probe path, so the gateway is not probed
    selector: LinkSelector  # gateway-mode exports
    remote_discovery_selector: LinkSelector
    federated_selector: LinkSelector
    excluded_labels: tuple[str, ...] = ()
    excluded_annotations: tuple[str, ...] = ()

    @property
    def gateway_enabled(self) -> bool:
        """Gateway-mode mirrors need somewhere to send traffic."""
        return bool(self.gateway_addresses) and self.gateway_port is not None


@dataclass(frozen=True, slots=True)
class Link:
    ref: ObjectRef
    uid: str
    created: str  # metadata.creationTimestamp (RFC 3339, so text order is time order)
    spec: LinkSpec | None
    problem: str | None = None
    generation: int = 0
    resource_version: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.ref.name


def _text(spec: Mapping[str, Any], key: str, *, limit: int = 253, within: str = "spec") -> str:
    """The string at `<within>.<key>` ("" when absent or null), stripped."""
    value = spec.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LinkProblem(f"{within}.{key} must be a string")
    if len(value) > limit:
        raise LinkProblem(f"{within}.{key} is longer than {limit} characters")
    return value.strip()


def _port(value: str, where: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise LinkProblem(f"{where} {value!r} is not a port number (1..65535)")
    return int(value)


def _duration_s(
    value: Any, where: str, default: float | None, *, minimum: float = MIN_PROBE_TIMEOUT_S
) -> float:
    if value in (None, ""):
        if default is None:
            raise LinkProblem(f"{where} is required")
        return default
    if not isinstance(value, str):
        raise LinkProblem(f"{where} must be a string")
    text = value.strip()
    if text.isascii() and text.isdigit():
        text += "s"  # link-gen's convention for a bare number of seconds
    try:
        nanos = go_duration_ns(text)
    except UnitError as err:
        raise LinkProblem(f"{where}: {err}") from None
    if nanos <= 0:
        raise LinkProblem(f"{where} {value!r} must be positive")
    seconds = nanos / 1e9
    if not minimum <= seconds <= MAX_PROBE_DURATION_S:
        raise LinkProblem(f"{where} {value!r} is not between {minimum:g}s and 24h")
    return seconds


def _gateway_addresses(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    addresses = []
    for item in text.split(","):
        address = item.strip()
        if not address:
            raise LinkProblem(f"spec.gatewayAddress {text!r} has an empty entry")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            pass
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
                raise LinkProblem(
                    f"spec.gatewayAddress entry {address[:80]!r} has a zone: not an Endpoints IP"
                )
            addresses.append(str(ip))
            continue
        name = address.lower().rstrip(".")
        if len(name) > 253 or not _DNS_NAME_RE.match(name) or _numeric_host(name):
            raise LinkProblem(
                f"spec.gatewayAddress entry {address[:80]!r} is not an IP or DNS name"
            )
        addresses.append(name)
    if len(addresses) > MAX_GATEWAY_ADDRESSES:
        raise LinkProblem(f"spec.gatewayAddress has more than {MAX_GATEWAY_ADDRESSES} entries")
    return tuple(addresses)


def _numeric_host(name: str) -> bool:
    """Whether a resolver would read `name` as an IPv4 address (`127.1`, `0x7f.0.0.1`)."""
    try:
        socket.inet_aton(name)  # pure parsing, no lookup
    except OSError:
        return False
    return True


def _probe(raw: Any) -> ProbeSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise LinkProblem("spec.probeSpec must be an object")
    path = _text(raw, "path", limit=1024, within="spec.probeSpec")
    if not path:
        return None  # no path: the gateway is not probed (reference §4.2)
    if not _HTTP_PATH_RE.match(path):
        raise LinkProblem(f"spec.probeSpec.path {path[:80]!r} is not an absolute HTTP path")
    port_text = _text(raw, "port", limit=5, within="spec.probeSpec")
    if not port_text:
        raise LinkProblem("spec.probeSpec.port is required with a probe path")
    threshold_text = _text(raw, "failureThreshold", limit=10, within="spec.probeSpec")
    threshold_text = threshold_text or str(DEFAULT_FAILURE_THRESHOLD)
    # ASCII first: str.isdigit() also accepts "³", which int() then refuses.
    if not (threshold_text.isascii() and threshold_text.isdigit()) or not (
        1 <= int(threshold_text) <= 1000
    ):
        raise LinkProblem(f"spec.probeSpec.failureThreshold {threshold_text!r} is not 1..1000")
    return ProbeSpec(
        path=path,
        port=_port(port_text, "spec.probeSpec.port"),
        period_s=_duration_s(
            raw.get("period"), "spec.probeSpec.period", None, minimum=MIN_PROBE_PERIOD_S
        ),
        timeout_s=_duration_s(
            raw.get("timeout"), "spec.probeSpec.timeout", DEFAULT_PROBE_TIMEOUT_S
        ),
        failure_threshold=int(threshold_text),
    )


def _exclusions(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise LinkProblem(f"{where} must be a list of strings")
    if len(raw) > MAX_EXCLUSIONS:
        raise LinkProblem(f"{where} has more than {MAX_EXCLUSIONS} entries")
    if any(len(item) > MAX_EXCLUSION_LENGTH for item in raw):
        raise LinkProblem(f"{where} has an entry longer than {MAX_EXCLUSION_LENGTH} characters")
    return tuple(item.strip() for item in raw if item.strip())


def _spec(raw: Mapping[str, Any]) -> LinkSpec:
    cluster = _text(raw, "targetClusterName", limit=63)
    if not _DNS_LABEL_RE.match(cluster):
        raise LinkProblem(
            f"spec.targetClusterName {cluster!r} must be a DNS label (it ends every mirror name)"
        )
    domain = _text(raw, "targetClusterDomain") or DEFAULT_CLUSTER_DOMAIN
    if not _DNS_NAME_RE.match(domain):
        raise LinkProblem(f"spec.targetClusterDomain {domain!r} is not a DNS name")
    linkerd_ns = _text(raw, "targetClusterLinkerdNamespace", limit=63) or "linkerd"
    if not _DNS_LABEL_RE.match(linkerd_ns):
        raise LinkProblem(
            f"spec.targetClusterLinkerdNamespace {linkerd_ns!r} is not a namespace name"
        )
    secret = _text(raw, "clusterCredentialsSecret")
    if not _DNS_NAME_RE.match(secret):
        raise LinkProblem(f"spec.clusterCredentialsSecret {secret!r} is not a Secret name")
    port_text = _text(raw, "gatewayPort", limit=5)
    try:
        return LinkSpec(
            target_cluster_name=cluster,
            target_cluster_domain=domain,
            target_linkerd_namespace=linkerd_ns,
            credentials_secret=secret,
            gateway_addresses=_gateway_addresses(_text(raw, "gatewayAddress", limit=4096)),
            gateway_port=_port(port_text, "spec.gatewayPort") if port_text else None,
            gateway_identity=_text(raw, "gatewayIdentity"),
            probe=_probe(raw.get("probeSpec")),
            selector=LinkSelector.from_spec(raw.get("selector"), "selector"),
            remote_discovery_selector=LinkSelector.from_spec(
                raw.get("remoteDiscoverySelector"), "remoteDiscoverySelector"
            ),
            federated_selector=LinkSelector.from_spec(
                raw.get("federatedServiceSelector"), "federatedServiceSelector"
            ),
            excluded_labels=_exclusions(raw.get("excludedLabels"), "spec.excludedLabels"),
            excluded_annotations=_exclusions(
                raw.get("excludedAnnotations"), "spec.excludedAnnotations"
            ),
        )
    except SelectorError as err:
        raise LinkProblem(str(err)) from None


def project_link(raw: Any) -> Link | None:
    """The Link, with `problem` set when its spec is unusable; None without metadata.

    Never raises: a Link the API server accepted but we cannot use is recorded
    with the reason, so that its status says it.
    """
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    ref = ObjectRef(namespace if isinstance(namespace, str) else "", meta["name"])
    created = meta.get("creationTimestamp")
    generation = meta.get("generation")
    version = meta.get("resourceVersion")

    def link(spec: LinkSpec | None, problem: str | None) -> Link:
        return Link(
            ref=ref,
            uid=str(meta.get("uid") or "")[:64],
            created=created if isinstance(created, str) else "",
            spec=spec,
            problem=problem,
            generation=generation if isinstance(generation, int) else 0,
            resource_version=version if isinstance(version, str) else "",
        )

    spec = raw.get("spec")
    if not isinstance(spec, Mapping):
        return link(None, "spec is missing or not an object")
    try:
        return link(_spec(spec), None)
    except LinkProblem as err:
        return link(None, str(err))
