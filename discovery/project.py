"""Raw Kubernetes JSON (as decoded from a list or watch) into slim records.

Every function here is total: it returns a record or an `Invalid` carrying
the reason, and never raises on a malformed object. The reflector logs and
counts an `Invalid` and carries on, so one broken object never stops a watch.

This is the edge where hostile input (a remote cluster's API server, any
object a user could write) becomes typed records, so it is also where values
are checked, not only shapes. Every IP address is in the canonical text of its
family, as Go's parser accepts it (no leading zeros, no zone) and of the
slice's address type; every port is in 1..65535; names and the annotation
values we read are bounded. A bad address, port or label is skipped and
reported through `on_warning` (the reflector logs and counts it), and the rest
of the object is kept: one odd endpoint never hides its neighbours, and nothing
downstream (filtering, encoding, fan-out) needs to guard against it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .models import (
    ClusterCredentials,
    ClusterName,
    ContainerPort,
    ExternalWorkloadInfo,
    ForeignRecord,
    Kind,
    LabelSelector,
    NodeInfo,
    ObjectRef,
    OwnerRef,
    PodInfo,
    ProxyPorts,
    SelectorRequirement,
    ServerInfo,
    ServiceInfo,
    ServicePort,
    ServiceRef,
    SliceEndpoint,
    SliceInfo,
    SlicePort,
    TargetRef,
    WorkloadOwner,
)
from .ports import PortSet, resolve_named_ports
from .service_profiles import ServiceProfileInfo, project_service_profile

Raw = Mapping[str, Any]

OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports"
SKIP_INBOUND_PORTS_ANNOTATION = "config.linkerd.io/skip-inbound-ports"
CONTROL_PLANE_NS_LABEL = "linkerd.io/control-plane-ns"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
REMOTE_GATEWAY_IDENTITY = "mirror.linkerd.io/remote-gateway-identity"
REMOTE_SVC_FQ_NAME = "mirror.linkerd.io/remote-svc-fq-name"
MIRROR_CLUSTER_LABEL = "mirror.linkerd.io/cluster-name"
REMOTE_DISCOVERY = "multicluster.linkerd.io/remote-discovery"
REMOTE_SERVICE_LABEL = "multicluster.linkerd.io/remote-service"
LOCAL_DISCOVERY = "multicluster.linkerd.io/local-discovery"
CREDENTIALS_SECRET_TYPE = "mirror.linkerd.io/remote-kubeconfig"
CLUSTER_NAME_LABEL = "multicluster.linkerd.io/cluster-name"
TRUST_DOMAIN_ANNOTATION = "multicluster.linkerd.io/trust-domain"
CLUSTER_DOMAIN_ANNOTATION = "multicluster.linkerd.io/cluster-domain"
KUBECONFIG_KEY = "kubeconfig"
PROXY_CONTAINER = "linkerd-proxy"
PROXY_INBOUND_ENV = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR"
PROXY_ADMIN_ENV = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR"
PROXY_CONTROL_ENV = "LINKERD2_PROXY_CONTROL_LISTEN_ADDR"

MAX_NAME_LENGTH = 253  # a DNS subdomain: object names, node names
MAX_LABEL_KEY_LENGTH = 317  # a 253-character prefix, "/", a 63-character name
MAX_LABEL_VALUE_LENGTH = 63
MAX_TEXT_LENGTH = 4096  # annotation values and other free text we keep
MAX_REASON_LENGTH = 400  # of an Invalid's reason and of each warning
_MAX_EXAMPLES = 3
_IP_FAMILIES = {"IPv4": 4, "IPv6": 6}

Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Invalid:
    """An object that could not be projected, and why."""

    kind: Kind
    ref: str
    reason: str


Record = (
    ServiceInfo
    | SliceInfo
    | PodInfo
    | NodeInfo
    | WorkloadOwner
    | ClusterCredentials
    | ServerInfo
    | ExternalWorkloadInfo
    | ServiceProfileInfo
    | ForeignRecord
)
PROXY_PORT_NAME = "linkerd-proxy"
DEFAULT_PROXY_INBOUND_PORT = 4143


def shorten(value: object, limit: int = 80) -> str:
    """`repr` of a hostile value, cut so that it cannot flood a log line."""
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else f"{text[:limit]}...({_size(value)})"


def _size(value: object) -> str:
    return f"{len(value)} characters" if isinstance(value, str) else type(value).__name__


def _bounded(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def canonical_ip(value: object, *, version: int | None = None) -> str | None:
    """The canonical text of an IP address, or None when Go would not parse it.

    Python's parser already refuses IPv4 octets with leading zeros; it accepts
    an IPv6 zone (`fe80::1%eth0`), which Go's `net.ParseIP` does not, and
    IPv6 in any case and abbreviation, which is why the canonical form is
    returned: snapshots key endpoints by this text.
    """
    if not isinstance(value, str) or not value or len(value) > 45 or "%" in value:
        return None
    return _canonical_ip(value, version)


# Every EndpointSlice event lists all of the slice's addresses again, and most
# were parsed before: parsing was 3.5 % of the server's samples with 100
# services churning, a cache hit costs a tenth of a parse. Bounded: keys are
# at most 45 characters, and hostile input only evicts older entries.
@functools.lru_cache(maxsize=65_536)
def _canonical_ip(value: str, version: int | None) -> str | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if version is not None and ip.version != version:
        return None
    return str(ip)


def valid_port(value: object, *, allow_zero: bool = False) -> int | None:
    """A TCP port from JSON: an integer (never a bool or a float) in range, else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if (0 if allow_zero else 1) <= value <= 65535 else None


def _name(value: object) -> str:
    """An object name as a bounded string; ValueError when it cannot be one."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"name {shorten(value)} is not a string of 1..{MAX_NAME_LENGTH}")
    return value


def _optional_text(value: object, limit: int = MAX_NAME_LENGTH) -> str | None:
    """A string field that may be absent; anything else, or too long, is absent."""
    if isinstance(value, str) and value and len(value) <= limit:
        return value
    return None


class _Problems:
    """Parts of one object that were skipped, reported once per kind of problem."""

    __slots__ = ("_found",)

    def __init__(self) -> None:
        self._found: dict[str, list[object]] = {}

    def add(self, what: str, value: object) -> None:
        self._found.setdefault(what, []).append(value)

    def report(self, on_warning: Warn | None) -> None:
        if on_warning is None:
            return
        for what, values in self._found.items():
            examples = ", ".join(shorten(v, 60) for v in values[:_MAX_EXAMPLES])
            more = f" and {len(values) - _MAX_EXAMPLES} more" if len(values) > _MAX_EXAMPLES else ""
            on_warning(_bounded(f"skipped {len(values)} {what}: {examples}{more}"))


def _meta(raw: Raw) -> Mapping[str, Any]:
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping):
        raise ValueError("metadata missing")
    _name(meta.get("name"))
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or len(namespace) > 63):
        raise ValueError(f"metadata.namespace {shorten(namespace)} is not a namespace name")
    return meta


def _ref(raw: Raw) -> ObjectRef:
    meta = _meta(raw)
    return ObjectRef(str(meta.get("namespace") or ""), str(meta["name"]))


def _strings(value: Any, problems: _Problems | None = None) -> Mapping[str, str]:
    """Labels or annotations as strings; oversized keys and values are dropped."""
    if not isinstance(value, Mapping):
        return {}
    kept: dict[str, str] = {}
    for key, item in value.items():
        text = item if isinstance(item, str) else str(item) if _scalar(item) else None
        if (
            not isinstance(key, str)
            or len(key) > MAX_LABEL_KEY_LENGTH
            or text is None
            or len(text) > MAX_TEXT_LENGTH
        ):
            if problems is not None:
                problems.add("labels or annotations", key)
            continue
        kept[key] = text
    return kept


def _labels(value: Any, problems: _Problems) -> dict[str, str]:
    """Labels, whose values Kubernetes bounds to 63 characters; longer ones are dropped."""
    labels = dict(_strings(value, problems))
    for key in [k for k, v in labels.items() if len(v) > MAX_LABEL_VALUE_LENGTH]:
        problems.add("label values over 63 characters", key)
        del labels[key]
    return labels


def _scalar(value: object) -> bool:
    return isinstance(value, int | float | bool) or value is None


def _list(value: Any) -> list[Any]:
    """A JSON array, or empty for null; anything else is malformed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _object(value: Any) -> Mapping[str, Any]:
    """A JSON object, or empty for null; anything else is malformed."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _single_owner(meta: Mapping[str, Any]) -> OwnerRef | None:
    owners = meta.get("ownerReferences") or []
    if not isinstance(owners, list) or len(owners) != 1 or not isinstance(owners[0], Mapping):
        return None
    kind, name = owners[0].get("kind"), owners[0].get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return None
    if len(kind) > MAX_NAME_LENGTH or len(name) > MAX_NAME_LENGTH:
        return None
    return OwnerRef(kind=kind, name=name)


def object_key(raw: Raw) -> ObjectRef | None:
    """The key of an object for delete events, even if the rest is malformed."""
    try:
        return _ref(raw)
    except (ValueError, AttributeError, TypeError):
        return None


def _invalid(kind: Kind, raw: Raw, what: str, err: BaseException | str) -> Invalid:
    detail = err if isinstance(err, str) else repr(err)
    return Invalid(kind, _bounded(str(object_key(raw)), 300), _bounded(f"{what}: {detail}"))


def _service_ports(value: Any, problems: _Problems) -> tuple[ServicePort, ...]:
    ports = []
    for item in _list(value):
        item = _object(item)
        port = valid_port(item.get("port"))
        if port is None:
            problems.add("service ports out of range", item.get("port"))
            continue
        ports.append(ServicePort(name=_optional_text(item.get("name"), 63) or "", port=port))
    return tuple(ports)


def _ips(values: list[Any], problems: _Problems, *, version: int | None = None) -> tuple[str, ...]:
    kept: list[str] = []
    for value in values:
        ip = canonical_ip(value, version=version)
        if ip is None:
            problems.add("invalid IP addresses", value)
        elif ip not in kept:
            kept.append(ip)
    return tuple(kept)


def project_service(raw: Raw, *, on_warning: Warn | None = None) -> ServiceInfo | Invalid:
    problems = _Problems()
    try:
        meta = _meta(raw)
        spec = _object(raw.get("spec"))
        labels = _labels(meta.get("labels"), problems)
        annotations = _strings(meta.get("annotations"), problems)
        cluster_ips = [
            ip
            for ip in _list(
                spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
            )
            if ip and ip != "None"
        ]
        info = ServiceInfo(
            ref=ServiceRef(str(meta.get("namespace") or ""), str(meta["name"])),
            ports=_service_ports(spec.get("ports"), problems),
            is_external_name=spec.get("type") == "ExternalName",
            internal_traffic_local=spec.get("internalTrafficPolicy") == "Local",
            cluster_ips=_ips(cluster_ips, problems),
            opaque_ports_annotation=annotations.get(OPAQUE_PORTS_ANNOTATION),
            remote_discovery_cluster=labels.get(REMOTE_DISCOVERY),
            remote_service=labels.get(REMOTE_SERVICE_LABEL),
            federated_remote=annotations.get(REMOTE_DISCOVERY),
            federated_local=annotations.get(LOCAL_DISCOVERY),
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.SERVICE, raw, "malformed Service", err)
    problems.report(on_warning)
    return info


def _slice_service(meta: Mapping[str, Any], labels: Mapping[str, str]) -> str | None:
    name = _optional_text(labels.get(SERVICE_NAME_LABEL))
    if name:
        return name
    for owner in _list(meta.get("ownerReferences")):
        if isinstance(owner, Mapping) and owner.get("kind") == "Service":
            name = _optional_text(owner.get("name"))
            if name:
                return name
    return None


def _zone_hints(hints: Any) -> frozenset[str] | None:
    if not isinstance(hints, Mapping) or not hints.get("forZones"):
        return None
    zones = frozenset(
        str(z["name"])
        for z in _list(hints.get("forZones"))
        if isinstance(z, Mapping) and _optional_text(z.get("name"), MAX_LABEL_VALUE_LENGTH)
    )
    return zones or None


def _endpoint(raw: Any, version: int | None, problems: _Problems) -> SliceEndpoint:
    raw = _object(raw)
    conditions = _object(raw.get("conditions"))
    target_raw = raw.get("targetRef")
    target = (
        TargetRef(
            kind=_optional_text(target_raw.get("kind"), 63) or "",
            namespace=_optional_text(target_raw.get("namespace"), 63) or "",
            name=_optional_text(target_raw.get("name")) or "",
        )
        if isinstance(target_raw, Mapping)
        else None
    )
    addresses = _ips(_list(raw.get("addresses")), problems, version=version)
    return SliceEndpoint(
        addresses=addresses,
        # An unset `ready` means ready (EndpointSlice API contract).
        ready=conditions.get("ready") is not False,
        hostname=_optional_text(raw.get("hostname"), 63),
        node_name=_optional_text(raw.get("nodeName")),
        zone=_optional_text(raw.get("zone"), MAX_LABEL_VALUE_LENGTH),
        zone_hints=_zone_hints(raw.get("hints")),
        target=target,
    )


def project_slice(raw: Raw, *, on_warning: Warn | None = None) -> SliceInfo | Invalid:
    problems = _Problems()
    try:
        meta = _meta(raw)
        namespace = str(meta.get("namespace") or "")
        labels = _labels(meta.get("labels"), problems)
        service = _slice_service(meta, labels)
        if service is None:
            return Invalid(
                Kind.ENDPOINT_SLICE,
                _bounded(f"{namespace}/{meta['name']}", 300),
                "EndpointSlice names no Service (label or owner)",
            )
        annotations = _strings(meta.get("annotations"), problems)
        raw_ports = raw.get("ports")
        ports: tuple[SlicePort, ...] | None = None
        if raw_ports is not None:
            kept = []
            for item in _list(raw_ports):
                item = _object(item)
                if item.get("port") is None:
                    continue
                port = valid_port(item.get("port"))
                if port is None:
                    problems.add("slice ports out of range", item.get("port"))
                    continue
                kept.append(SlicePort(name=_optional_text(item.get("name"), 63) or "", port=port))
            ports = tuple(kept)
        address_type = raw.get("addressType", "IPv4")
        endpoints: tuple[SliceEndpoint, ...]
        if not isinstance(address_type, str) or address_type not in (*_IP_FAMILIES, "FQDN"):
            # Nothing in it can be read as an address: kept, with no endpoints.
            problems.add("endpoints of an unknown addressType", address_type)
            address_type, endpoints = "FQDN", ()
        elif address_type == "FQDN":
            endpoints = ()  # never served (reference §5.3); not worth validating
        else:
            version = _IP_FAMILIES[address_type]
            endpoints = tuple(_endpoint(e, version, problems) for e in _list(raw.get("endpoints")))
        info = SliceInfo(
            ref=ObjectRef(namespace, str(meta["name"])),
            service=ServiceRef(namespace, service),
            address_type=address_type,
            ports=ports,
            endpoints=endpoints,
            gateway_identity=_optional_text(annotations.get(REMOTE_GATEWAY_IDENTITY), 1024),
            remote_fq_name=_optional_text(annotations.get(REMOTE_SVC_FQ_NAME)),
            mirror_cluster=_optional_text(labels.get(MIRROR_CLUSTER_LABEL), 63),
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.ENDPOINT_SLICE, raw, "malformed slice", err)
    problems.report(on_warning)
    return info


def parse_listen_port(value: str | None) -> int | None:
    """Port of an `ip:port` or `[ipv6]:port` listen address; None if unparsable.

    As Go's `netip.ParseAddrPort`: brackets exactly around an IPv6 host, and
    an ASCII decimal port.
    """
    if not value or not isinstance(value, str) or len(value) > 64:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (ip.version == 6) != bracketed:
        return None
    number = int(port)
    return number if 0 < number <= 65535 else None


def _proxy_ports(containers: list[Mapping[str, Any]]) -> ProxyPorts | None:
    proxy = next((c for c in containers if c.get("name") == PROXY_CONTAINER), None)
    if proxy is None:
        return None
    env: dict[str, str | None] = {}
    for item in _list(proxy.get("env")):
        item = _object(item)
        value = item.get("value")
        env[str(item.get("name"))] = value if isinstance(value, str) else None
    return ProxyPorts(
        inbound=parse_listen_port(env.get(PROXY_INBOUND_ENV)),
        admin=parse_listen_port(env.get(PROXY_ADMIN_ENV)),
        control=parse_listen_port(env.get(PROXY_CONTROL_ENV)),
    )


def _container_ports(
    containers: list[Mapping[str, Any]], problems: _Problems
) -> tuple[ContainerPort, ...]:
    ports = []
    for container in containers:
        for item in _list(container.get("ports")):
            item = _object(item)
            number = valid_port(item.get("containerPort"))
            host = valid_port(item.get("hostPort") or 0, allow_zero=True)
            if number is None or host is None:
                problems.add("container ports out of range", item.get("containerPort"))
                continue
            name = _optional_text(item.get("name"), 63) or ""
            ports.append(ContainerPort(name=name, container_port=number, host_port=host))
    return tuple(ports)


def project_pod(raw: Raw, *, on_warning: Warn | None = None) -> PodInfo | Invalid:
    problems = _Problems()
    warnings: list[str] = []
    try:
        meta = _meta(raw)
        spec = _object(raw.get("spec"))
        status = _object(raw.get("status"))
        labels = _labels(meta.get("labels"), problems)
        annotations = _strings(meta.get("annotations"), problems)
        # Native sidecars (init containers) come first, as in the reference.
        containers = [
            _object(c) for c in _list(spec.get("initContainers")) + _list(spec.get("containers"))
        ]
        container_ports = _container_ports(containers, problems)
        named = {p.name: p.container_port for p in container_ports if p.name}
        opaque: PortSet | None = None
        if OPAQUE_PORTS_ANNOTATION in annotations:
            opaque, bad = resolve_named_ports(annotations[OPAQUE_PORTS_ANNOTATION], named)
            if bad:
                warnings.append(_bounded(f"invalid opaque-ports items {bad}"))
        skip, bad = PortSet.parse(annotations.get(SKIP_INBOUND_PORTS_ANNOTATION, ""))
        if bad:
            warnings.append(_bounded(f"invalid skip-inbound-ports items {bad}"))
        raw_ips = [_object(p).get("ip") for p in _list(status.get("podIPs"))]
        raw_ips = [ip for ip in raw_ips if ip]
        if not raw_ips and status.get("podIP"):
            raw_ips = [status["podIP"]]
        raw_host_ips = [_object(p).get("ip") for p in _list(status.get("hostIPs"))]
        raw_host_ips = [ip for ip in raw_host_ips if ip]
        if not raw_host_ips and status.get("hostIP"):
            raw_host_ips = [status["hostIP"]]
        info = PodInfo(
            ref=ObjectRef(str(meta.get("namespace") or ""), str(meta["name"])),
            ips=_ips(raw_ips, problems),
            node_name=_optional_text(spec.get("nodeName")) or "",
            phase=_optional_text(status.get("phase"), 63) or "",
            terminating=meta.get("deletionTimestamp") is not None,
            service_account=_optional_text(spec.get("serviceAccountName")) or "default",
            owner=_single_owner(meta),
            control_plane_ns=_optional_text(labels.get(CONTROL_PLANE_NS_LABEL), 63) or "",
            pod_template_hash=labels.get(POD_TEMPLATE_HASH_LABEL),
            opaque_ports=opaque,
            skip_inbound_ports=skip,
            proxy=_proxy_ports(containers),
            container_ports=container_ports,
            labels=tuple(sorted(labels.items())),
            resource_version=_optional_text(meta.get("resourceVersion"), 63) or "",
            host_ips=_ips(raw_host_ips, problems),
            host_network=spec.get("hostNetwork") is True,
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.POD, raw, "malformed Pod", err)
    if on_warning is not None:
        for warning in warnings:
            on_warning(warning)
    problems.report(on_warning)
    return info


def project_node(raw: Raw, *, on_warning: Warn | None = None) -> NodeInfo | Invalid:
    problems = _Problems()
    try:
        meta = _meta(raw)
        info = NodeInfo(
            name=str(meta["name"]), zone=_labels(meta.get("labels"), problems).get(ZONE_LABEL, "")
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.NODE, raw, "malformed Node", err)
    problems.report(on_warning)
    return info


def project_workload_owner(raw: Raw, kind: Kind) -> WorkloadOwner | Invalid:
    try:
        meta = _meta(raw)
        return WorkloadOwner(kind=kind, ref=_ref(raw), owner=_single_owner(meta))
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(kind, raw, f"malformed {kind.value}", err)


def project_credentials(raw: Raw) -> ClusterCredentials | Invalid:
    """A link Secret. Unusable content becomes `problem`, reported per cluster.

    Only a Secret without the cluster-name label (which the list's label
    selector already excludes) or without metadata is Invalid: there is no
    cluster to report it under.
    """
    try:
        meta = _meta(raw)
        labels = _strings(meta.get("labels"))
        annotations = _strings(meta.get("annotations"))
        cluster = labels.get(CLUSTER_NAME_LABEL, "")
        if not cluster:
            return _invalid(Kind.SECRET, raw, "unusable Secret", f"no {CLUSTER_NAME_LABEL} label")
        if len(cluster) > MAX_LABEL_VALUE_LENGTH:
            return _invalid(Kind.SECRET, raw, "unusable Secret", f"{CLUSTER_NAME_LABEL} too long")
        problems = []
        if raw.get("type") != CREDENTIALS_SECRET_TYPE:
            problems.append(f"type is {shorten(raw.get('type'))}, not {CREDENTIALS_SECRET_TYPE!r}")
        kubeconfig = b""
        encoded = _object(raw.get("data")).get(KUBECONFIG_KEY)
        if not encoded:
            problems.append(f"data key {KUBECONFIG_KEY!r} is missing or empty")
        elif not isinstance(encoded, str):
            problems.append(f"data key {KUBECONFIG_KEY!r} is not a string")
        else:
            try:
                kubeconfig = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                problems.append(f"data key {KUBECONFIG_KEY!r} is not valid base64")
        for annotation in (TRUST_DOMAIN_ANNOTATION, CLUSTER_DOMAIN_ANNOTATION):
            value = annotations.get(annotation)
            if not value:
                problems.append(f"annotation {annotation} is missing")
            elif len(value) > MAX_NAME_LENGTH:
                problems.append(f"annotation {annotation} is longer than {MAX_NAME_LENGTH}")
        return ClusterCredentials(
            ref=_ref(raw),
            cluster=ClusterName(cluster),
            trust_domain=_optional_text(annotations.get(TRUST_DOMAIN_ANNOTATION)) or "",
            cluster_domain=_optional_text(annotations.get(CLUSTER_DOMAIN_ANNOTATION)) or "",
            kubeconfig=kubeconfig,
            problem="; ".join(problems) or None,
            resource_version=_optional_text(meta.get("resourceVersion"), 63) or "",
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.SECRET, raw, "malformed Secret", err)


_SET_OPERATORS = frozenset({"In", "NotIn"})
_EXISTENCE_OPERATORS = frozenset({"Exists", "DoesNotExist"})


def label_selector(raw: Any) -> LabelSelector:
    """A label selector; ValueError when it is not one Kubernetes would accept."""
    if not isinstance(raw, Mapping):
        raise ValueError("selector is not an object")
    match_labels = tuple(sorted(_strings(raw.get("matchLabels")).items()))
    expressions = []
    for item in _list(raw.get("matchExpressions")):
        item = _object(item)
        operator = _optional_text(item.get("operator"), 16) or ""
        values = frozenset(
            v for v in _list(item.get("values")) if isinstance(v, str) and len(v) <= 63
        )
        if operator in _SET_OPERATORS and not values:
            raise ValueError(f"operator {operator} needs values")
        if operator in _EXISTENCE_OPERATORS and values:
            raise ValueError(f"operator {operator} takes no values")
        if operator not in _SET_OPERATORS | _EXISTENCE_OPERATORS:
            raise ValueError(f"unknown operator {shorten(item.get('operator'))}")
        key = _optional_text(item.get("key"), MAX_LABEL_KEY_LENGTH)
        if key is None:
            raise ValueError(f"key {shorten(item.get('key'))} is not a label key")
        expressions.append(SelectorRequirement(key, operator, values))
    return LabelSelector(match_labels=match_labels, expressions=tuple(expressions))


def project_server(raw: Raw) -> ServerInfo | Invalid:
    """A Server; an invalid selector makes it Invalid (skipped, as in the reference)."""
    try:
        spec = _object(raw.get("spec"))
        port = spec.get("port")
        number = valid_port(port)
        if number is None and (not isinstance(port, str) or not port or len(port) > 63):
            raise ValueError(f"port {shorten(port)} is not a number or a name")
        selector = spec.get("podSelector")
        workload_selector = spec.get("externalWorkloadSelector")
        return ServerInfo(
            ref=_ref(raw),
            pod_selector=None if selector is None else label_selector(selector),
            port=number if number is not None else str(port),
            opaque=spec.get("proxyProtocol") == "opaque",
            external_workload_selector=(
                None if workload_selector is None else label_selector(workload_selector)
            ),
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.SERVER, raw, "malformed Server", str(err))


def project_external_workload(
    raw: Raw, *, on_warning: Warn | None = None
) -> ExternalWorkloadInfo | Invalid:
    problems = _Problems()
    try:
        meta = _meta(raw)
        spec = _object(raw.get("spec"))
        tls = _object(spec.get("meshTLS"))
        identity = _optional_text(tls.get("identity"), 1024) or ""
        server_name = _optional_text(tls.get("serverName")) or ""
        if not identity or not server_name:
            raise ValueError("meshTLS.identity and meshTLS.serverName are required")
        ports = []
        for item in _list(spec.get("ports")):
            item = _object(item)
            number = valid_port(item.get("port"))
            if number is None:
                problems.add("workload ports out of range", item.get("port"))
                continue
            ports.append(SlicePort(name=_optional_text(item.get("name"), 63) or "", port=number))
        annotations = _strings(meta.get("annotations"), problems)
        opaque: PortSet | None = None
        if OPAQUE_PORTS_ANNOTATION in annotations:
            named = {p.name: p.port for p in ports if p.name}
            opaque, _ = resolve_named_ports(annotations[OPAQUE_PORTS_ANNOTATION], named)
        inbound = next(
            (p.port for p in ports if p.name == PROXY_PORT_NAME), DEFAULT_PROXY_INBOUND_PORT
        )
        workload_ips = [_object(item).get("ip") for item in _list(spec.get("workloadIPs"))]
        info = ExternalWorkloadInfo(
            ref=_ref(raw),
            identity=identity,
            server_name=server_name,
            owner=_single_owner(meta),
            ports=tuple(ports),
            opaque_ports=opaque,
            labels=tuple(sorted(_labels(meta.get("labels"), problems).items())),
            proxy_inbound_port=inbound,
            ips=_ips([ip for ip in workload_ips if ip], problems),
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return _invalid(Kind.EXTERNAL_WORKLOAD, raw, "malformed ExternalWorkload", str(err))
    problems.report(on_warning)
    return info


def _project(kind: Kind, raw: Raw, on_warning: Warn | None) -> Record | Invalid:
    if kind is Kind.SERVICE:
        return project_service(raw, on_warning=on_warning)
    if kind is Kind.ENDPOINT_SLICE:
        return project_slice(raw, on_warning=on_warning)
    if kind is Kind.POD:
        return project_pod(raw, on_warning=on_warning)
    if kind is Kind.NODE:
        return project_node(raw, on_warning=on_warning)
    if kind is Kind.SECRET:
        return project_credentials(raw)
    if kind is Kind.SERVER:
        return project_server(raw)
    if kind is Kind.EXTERNAL_WORKLOAD:
        return project_external_workload(raw, on_warning=on_warning)
    if kind is Kind.SERVICE_PROFILE:
        profile = project_service_profile(raw)
        if profile is None:
            return Invalid(kind, _bounded(str(object_key(raw)), 300), "ServiceProfile has no name")
        return profile
    return project_workload_owner(raw, kind)


UNEXPECTED = "unexpected error while reading the object"


def project(kind: Kind, raw: Raw, *, on_warning: Warn | None = None) -> Record | Invalid:
    """Dispatch on kind; the reflector's single entry point. Never raises.

    `on_warning` hears of each kind of part skipped (bad addresses, ports,
    labels), once per object. The catch-all below is defence in depth: the
    projections above are written to return `Invalid` themselves, and the
    property tests check that this branch is never taken.
    """
    if not isinstance(raw, Mapping):
        return Invalid(kind, "None", f"not a JSON object: {type(raw).__name__}")
    try:
        return _project(kind, raw, on_warning)
    except Exception as err:  # one object must never stop a watch
        return Invalid(kind, _bounded(str(object_key(raw)), 300), f"{UNEXPECTED}: {err!r}"[:400])
