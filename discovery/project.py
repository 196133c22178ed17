"""Raw Kubernetes JSON (as decoded from a list or watch) into slim records.

Every function here is total: it returns a record or an `Invalid` carrying
the reason, and never raises on a malformed object. The reflector logs and
counts an `Invalid` and carries on, so one broken object never stops a watch.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .models import (
    ClusterCredentials,
    ClusterName,
    ContainerPort,
    ExternalWorkloadInfo,
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
)
PROXY_PORT_NAME = "linkerd-proxy"
DEFAULT_PROXY_INBOUND_PORT = 4143


def _meta(raw: Raw) -> Mapping[str, Any]:
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise ValueError("metadata.name missing")
    return meta


def _ref(raw: Raw) -> ObjectRef:
    meta = _meta(raw)
    return ObjectRef(str(meta.get("namespace") or ""), str(meta["name"]))


def _strings(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _single_owner(meta: Mapping[str, Any]) -> OwnerRef | None:
    owners = meta.get("ownerReferences") or []
    if len(owners) != 1:
        return None
    return OwnerRef(kind=str(owners[0].get("kind", "")), name=str(owners[0].get("name", "")))


def object_key(raw: Raw) -> ObjectRef | None:
    """The key of an object for delete events, even if the rest is malformed."""
    try:
        return _ref(raw)
    except (ValueError, AttributeError, TypeError):
        return None


def project_service(raw: Raw) -> ServiceInfo | Invalid:
    try:
        meta = _meta(raw)
        spec = raw.get("spec") or {}
        labels = _strings(meta.get("labels"))
        annotations = _strings(meta.get("annotations"))
        ports = tuple(
            ServicePort(name=str(p.get("name") or ""), port=int(p["port"]))
            for p in spec.get("ports") or []
        )
        cluster_ips = tuple(
            spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        )
        return ServiceInfo(
            ref=ServiceRef(str(meta.get("namespace") or ""), str(meta["name"])),
            ports=ports,
            is_external_name=spec.get("type") == "ExternalName",
            internal_traffic_local=spec.get("internalTrafficPolicy") == "Local",
            cluster_ips=tuple(ip for ip in cluster_ips if ip and ip != "None"),
            opaque_ports_annotation=annotations.get(OPAQUE_PORTS_ANNOTATION),
            remote_discovery_cluster=labels.get(REMOTE_DISCOVERY),
            remote_service=labels.get(REMOTE_SERVICE_LABEL),
            federated_remote=annotations.get(REMOTE_DISCOVERY),
            federated_local=annotations.get(LOCAL_DISCOVERY),
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return Invalid(Kind.SERVICE, str(object_key(raw)), f"malformed Service: {err!r}")


def _slice_service(meta: Mapping[str, Any]) -> str | None:
    name = _strings(meta.get("labels")).get(SERVICE_NAME_LABEL)
    if name:
        return name
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "Service" and owner.get("name"):
            return str(owner["name"])
    return None


def _endpoint(raw: Raw) -> SliceEndpoint:
    conditions = raw.get("conditions") or {}
    hints = raw.get("hints")
    zone_hints = (
        frozenset(str(z["name"]) for z in hints.get("forZones") or [])
        if isinstance(hints, Mapping) and hints.get("forZones")
        else None
    )
    target_raw = raw.get("targetRef")
    target = (
        TargetRef(
            kind=str(target_raw.get("kind", "")),
            namespace=str(target_raw.get("namespace") or ""),
            name=str(target_raw.get("name", "")),
        )
        if isinstance(target_raw, Mapping)
        else None
    )
    return SliceEndpoint(
        addresses=tuple(str(a) for a in raw.get("addresses") or []),
        # An unset `ready` means ready (EndpointSlice API contract).
        ready=conditions.get("ready") is not False,
        hostname=raw.get("hostname") or None,
        node_name=raw.get("nodeName") or None,
        zone=raw.get("zone"),
        zone_hints=zone_hints,
        target=target,
    )


def project_slice(raw: Raw) -> SliceInfo | Invalid:
    try:
        meta = _meta(raw)
        namespace = str(meta.get("namespace") or "")
        service = _slice_service(meta)
        if service is None:
            return Invalid(
                Kind.ENDPOINT_SLICE,
                f"{namespace}/{meta['name']}",
                "EndpointSlice names no Service (label or owner)",
            )
        annotations = _strings(meta.get("annotations"))
        labels = _strings(meta.get("labels"))
        raw_ports = raw.get("ports")
        ports = (
            None
            if raw_ports is None
            else tuple(
                SlicePort(name=str(p.get("name") or ""), port=int(p["port"]))
                for p in raw_ports
                if p.get("port") is not None
            )
        )
        return SliceInfo(
            ref=ObjectRef(namespace, str(meta["name"])),
            service=ServiceRef(namespace, service),
            address_type=str(raw.get("addressType", "IPv4")),
            ports=ports,
            endpoints=tuple(_endpoint(e) for e in raw.get("endpoints") or []),
            gateway_identity=annotations.get(REMOTE_GATEWAY_IDENTITY) or None,
            remote_fq_name=annotations.get(REMOTE_SVC_FQ_NAME) or None,
            mirror_cluster=labels.get(MIRROR_CLUSTER_LABEL) or None,
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return Invalid(Kind.ENDPOINT_SLICE, str(object_key(raw)), f"malformed slice: {err!r}")


def parse_listen_port(value: str | None) -> int | None:
    """Port of an `ip:port` or `[ipv6]:port` listen address; None if unparsable.

    As Go's `netip.ParseAddrPort`: brackets exactly around an IPv6 host, and
    an ASCII decimal port.
    """
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
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
    env = {str(e.get("name")): e.get("value") for e in proxy.get("env") or []}
    return ProxyPorts(
        inbound=parse_listen_port(env.get(PROXY_INBOUND_ENV)),
        admin=parse_listen_port(env.get(PROXY_ADMIN_ENV)),
        control=parse_listen_port(env.get(PROXY_CONTROL_ENV)),
    )


def project_pod(raw: Raw, *, on_warning: Callable[[str], None] | None = None) -> PodInfo | Invalid:
    try:
        meta = _meta(raw)
        spec = raw.get("spec") or {}
        status = raw.get("status") or {}
        labels = _strings(meta.get("labels"))
        annotations = _strings(meta.get("annotations"))
        # Native sidecars (init containers) come first, as in the reference.
        containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
        container_ports = tuple(
            ContainerPort(
                name=str(p.get("name") or ""),
                container_port=int(p.get("containerPort") or 0),
                host_port=int(p.get("hostPort") or 0),
            )
            for c in containers
            for p in c.get("ports") or []
        )
        named = {p.name: p.container_port for p in container_ports if p.name}
        opaque: PortSet | None = None
        if OPAQUE_PORTS_ANNOTATION in annotations:
            opaque, bad = resolve_named_ports(annotations[OPAQUE_PORTS_ANNOTATION], named)
            if bad and on_warning:
                on_warning(f"invalid opaque-ports items {bad}")
        skip, bad = PortSet.parse(annotations.get(SKIP_INBOUND_PORTS_ANNOTATION, ""))
        if bad and on_warning:
            on_warning(f"invalid skip-inbound-ports items {bad}")
        ips = tuple(str(p["ip"]) for p in status.get("podIPs") or [] if p.get("ip"))
        if not ips and status.get("podIP"):
            ips = (str(status["podIP"]),)
        return PodInfo(
            ref=ObjectRef(str(meta.get("namespace") or ""), str(meta["name"])),
            ips=ips,
            node_name=str(spec.get("nodeName") or ""),
            phase=str(status.get("phase") or ""),
            terminating=meta.get("deletionTimestamp") is not None,
            service_account=str(spec.get("serviceAccountName") or "default"),
            owner=_single_owner(meta),
            control_plane_ns=labels.get(CONTROL_PLANE_NS_LABEL, ""),
            pod_template_hash=labels.get(POD_TEMPLATE_HASH_LABEL),
            opaque_ports=opaque,
            skip_inbound_ports=skip,
            proxy=_proxy_ports(containers),
            container_ports=container_ports,
            labels=tuple(sorted(labels.items())),
            resource_version=str(meta.get("resourceVersion") or ""),
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return Invalid(Kind.POD, str(object_key(raw)), f"malformed Pod: {err!r}")


def project_node(raw: Raw) -> NodeInfo | Invalid:
    try:
        meta = _meta(raw)
        return NodeInfo(
            name=str(meta["name"]), zone=_strings(meta.get("labels")).get(ZONE_LABEL, "")
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return Invalid(Kind.NODE, str(object_key(raw)), f"malformed Node: {err!r}")


def project_workload_owner(raw: Raw, kind: Kind) -> WorkloadOwner | Invalid:
    try:
        meta = _meta(raw)
        return WorkloadOwner(kind=kind, ref=_ref(raw), owner=_single_owner(meta))
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return Invalid(kind, str(object_key(raw)), f"malformed {kind.value}: {err!r}")


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
            return Invalid(Kind.SECRET, str(_ref(raw)), f"no {CLUSTER_NAME_LABEL} label")
        problems = []
        if raw.get("type") != CREDENTIALS_SECRET_TYPE:
            problems.append(f"type is {raw.get('type')!r}, not {CREDENTIALS_SECRET_TYPE!r}")
        kubeconfig = b""
        encoded = (raw.get("data") or {}).get(KUBECONFIG_KEY)
        if not encoded:
            problems.append(f"data key {KUBECONFIG_KEY!r} is missing or empty")
        else:
            try:
                kubeconfig = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError):
                problems.append(f"data key {KUBECONFIG_KEY!r} is not valid base64")
        for annotation in (TRUST_DOMAIN_ANNOTATION, CLUSTER_DOMAIN_ANNOTATION):
            if not annotations.get(annotation):
                problems.append(f"annotation {annotation} is missing")
        return ClusterCredentials(
            ref=_ref(raw),
            cluster=ClusterName(cluster),
            trust_domain=annotations.get(TRUST_DOMAIN_ANNOTATION, ""),
            cluster_domain=annotations.get(CLUSTER_DOMAIN_ANNOTATION, ""),
            kubeconfig=kubeconfig,
            problem="; ".join(problems) or None,
            resource_version=str(meta.get("resourceVersion") or ""),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        return Invalid(Kind.SECRET, str(object_key(raw)), f"malformed Secret: {err!r}")


_SET_OPERATORS = frozenset({"In", "NotIn"})
_EXISTENCE_OPERATORS = frozenset({"Exists", "DoesNotExist"})


def label_selector(raw: Any) -> LabelSelector:
    """A label selector; ValueError when it is not one Kubernetes would accept."""
    if not isinstance(raw, Mapping):
        raise ValueError("selector is not an object")
    match_labels = tuple(sorted(_strings(raw.get("matchLabels")).items()))
    expressions = []
    for item in raw.get("matchExpressions") or []:
        operator = str(item.get("operator", ""))
        values = frozenset(str(v) for v in item.get("values") or [])
        if operator in _SET_OPERATORS and not values:
            raise ValueError(f"operator {operator} needs values")
        if operator in _EXISTENCE_OPERATORS and values:
            raise ValueError(f"operator {operator} takes no values")
        if operator not in _SET_OPERATORS | _EXISTENCE_OPERATORS:
            raise ValueError(f"unknown operator {operator!r}")
        expressions.append(SelectorRequirement(str(item["key"]), operator, values))
    return LabelSelector(match_labels=match_labels, expressions=tuple(expressions))


def project_server(raw: Raw) -> ServerInfo | Invalid:
    """A Server; an invalid selector makes it Invalid (skipped, as in the reference)."""
    try:
        spec = raw.get("spec") or {}
        port = spec.get("port")
        if isinstance(port, bool) or not isinstance(port, int | str) or port in ("", 0):
            raise ValueError(f"port {port!r} is not a number or a name")
        selector = spec.get("podSelector")
        workload_selector = spec.get("externalWorkloadSelector")
        return ServerInfo(
            ref=_ref(raw),
            pod_selector=None if selector is None else label_selector(selector),
            port=port,
            opaque=spec.get("proxyProtocol") == "opaque",
            external_workload_selector=(
                None if workload_selector is None else label_selector(workload_selector)
            ),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        return Invalid(Kind.SERVER, str(object_key(raw)), f"malformed Server: {err}")


def project_external_workload(raw: Raw) -> ExternalWorkloadInfo | Invalid:
    try:
        meta = _meta(raw)
        spec = raw.get("spec") or {}
        tls = spec.get("meshTLS") or {}
        identity, server_name = str(tls.get("identity") or ""), str(tls.get("serverName") or "")
        if not identity or not server_name:
            raise ValueError("meshTLS.identity and meshTLS.serverName are required")
        ports = tuple(
            SlicePort(name=str(p.get("name") or ""), port=int(p["port"]))
            for p in spec.get("ports") or []
        )
        annotations = _strings(meta.get("annotations"))
        opaque: PortSet | None = None
        if OPAQUE_PORTS_ANNOTATION in annotations:
            named = {p.name: p.port for p in ports if p.name}
            opaque, _ = resolve_named_ports(annotations[OPAQUE_PORTS_ANNOTATION], named)
        inbound = next(
            (p.port for p in ports if p.name == PROXY_PORT_NAME), DEFAULT_PROXY_INBOUND_PORT
        )
        return ExternalWorkloadInfo(
            ref=_ref(raw),
            identity=identity,
            server_name=server_name,
            owner=_single_owner(meta),
            ports=ports,
            opaque_ports=opaque,
            labels=tuple(sorted(_strings(meta.get("labels")).items())),
            proxy_inbound_port=inbound,
        )
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        return Invalid(
            Kind.EXTERNAL_WORKLOAD, str(object_key(raw)), f"malformed ExternalWorkload: {err}"
        )


def project(kind: Kind, raw: Raw) -> Record | Invalid:
    """Dispatch on kind; the reflector's single entry point."""
    if kind is Kind.SERVICE:
        return project_service(raw)
    if kind is Kind.ENDPOINT_SLICE:
        return project_slice(raw)
    if kind is Kind.POD:
        return project_pod(raw)
    if kind is Kind.NODE:
        return project_node(raw)
    if kind is Kind.SECRET:
        return project_credentials(raw)
    if kind is Kind.SERVER:
        return project_server(raw)
    if kind is Kind.EXTERNAL_WORKLOAD:
        return project_external_workload(raw)
    return project_workload_owner(raw, kind)
