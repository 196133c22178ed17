"""Addresses and diffs into serialized `Update` messages (reference §5.7).

Encoding happens once per view change, in the view's broadcast, and the bytes
are shared by every stream of the view. Everything a message depends on is
either in the `Address` (pod metadata, zone, gateway annotations) or in the
`EncodeContext` of the view (requested port, subscriber zone, mesh settings),
so the same inputs always give the same bytes.

Rules that differ from Linkerd's controller, deliberately (docs/compatibility.md):
an address is re-sent when anything a proxy sees changes (Linkerd re-sends on
identity, hints, opacity and pod resourceVersion only), and snapshots are
keyed by ip:port, so a pod whose IP changes is removed at its old address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from destination._proto import destination_pb2 as pb
from destination._proto import net_pb2
from discovery.models import Address, ExternalWorkloadInfo, PodInfo
from discovery.topics import AddressDiff, AddressSnapshot

log = structlog.get_logger("destination.translate.endpoints")

DEFAULT_WEIGHT = 10_000


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """Process-wide settings that shape every translated address."""

    controller_namespace: str
    trust_domain: str
    enable_h2_upgrade: bool
    force_opaque_transport: bool
    ext_endpoint_zone_weights: bool = False
    http2_params: pb.Http2ClientParams | None = None


@dataclass(frozen=True, slots=True)
class EncodeContext:
    """What varies between views of one (service, port)."""

    mesh: MeshSettings
    requested_port: int
    subscriber_zone: str  # "" when unknown
    trust_domain: str  # of the cluster the endpoints live in


def http2_params_from_json(params: Mapping[str, Any] | None) -> pb.Http2ClientParams | None:
    """The `--meshed-http2-client-params` JSON (snake_case proto fields) as a message."""
    if params is None:
        return None
    from google.protobuf import json_format

    message = pb.Http2ClientParams()
    json_format.ParseDict(_durations_to_strings(params), message)
    return message


def _durations_to_strings(value: Any) -> Any:
    """Accept Go's `{"seconds": S, "nanos": N}` durations as protobuf JSON does not."""
    if isinstance(value, Mapping):
        if set(value) <= {"seconds", "nanos"} and value:
            seconds = float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
            return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
        return {k: _durations_to_strings(v) for k, v in value.items()}
    return value


def tcp_address(ip: str, port: int) -> net_pb2.TcpAddress:
    parsed = ipaddress.ip_address(ip)
    if parsed.version == 4:
        addr = net_pb2.IPAddress(ipv4=int(parsed))
    else:
        packed = int(parsed)
        addr = net_pb2.IPAddress(
            ipv6=net_pb2.IPv6(first=packed >> 64, last=packed & 0xFFFF_FFFF_FFFF_FFFF)
        )
    if not 0 < port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return net_pb2.TcpAddress(ip=addr, port=port)


def owner_label(kind: str) -> str:
    label = kind.lower()
    return "k8s_job" if label == "job" else label


def _zone_locality(subscriber_zone: str, zone: str | None) -> str:
    if not subscriber_zone or zone is None:
        return "unknown"
    return "local" if zone == subscriber_zone else "remote"


def pod_identity(pod: PodInfo, *, controller_namespace: str, trust_domain: str) -> str:
    return (
        f"{pod.service_account}.{pod.ref.namespace}.serviceaccount.identity."
        f"{controller_namespace}.{trust_domain}"
    )


def weighted_addr(address: Address, ctx: EncodeContext) -> pb.WeightedAddr | None:
    """The proxy's view of one address; None when the pod cannot be addressed safely.

    A meshed pod whose proxy ports cannot be read is left out, as in the
    reference: sending it without them would make the proxy speak the wrong
    protocol to it.
    """
    mesh = ctx.mesh
    locality = _zone_locality(ctx.subscriber_zone, address.zone)
    weight = DEFAULT_WEIGHT
    if mesh.ext_endpoint_zone_weights and locality == "local":
        weight *= 10
    message = pb.WeightedAddr(addr=tcp_address(address.ip, address.port), weight=weight)
    labels = message.metric_labels
    workload = address.external_workload
    if workload is not None:
        return _workload_addr(message, address, workload, ctx, locality)
    pod = address.pod
    if pod is None:
        labels["zone_locality"] = locality
        if address.remote_fq_name:
            message.authority_override.authority_override = (
                f"{address.remote_fq_name}:{ctx.requested_port}"
            )
        if address.gateway_identity:
            message.tls_identity.dns_like_identity.name = address.gateway_identity
            if mesh.enable_h2_upgrade:
                message.protocol_hint.h2.SetInParent()
            if mesh.http2_params is not None:
                message.http2.CopyFrom(mesh.http2_params)
        return message

    labels["pod"] = pod.ref.name
    if address.owner is not None:
        labels[owner_label(address.owner.kind)] = address.owner.name
    labels["serviceaccount"] = pod.service_account
    if pod.control_plane_ns:
        labels["control_plane_ns"] = pod.control_plane_ns
    if pod.pod_template_hash is not None:
        labels["pod_template_hash"] = pod.pod_template_hash
    labels["zone"] = address.zone or ""
    labels["zone_locality"] = locality

    skipped = address.port in pod.skip_inbound_ports
    if pod.meshed and not skipped:
        proxy = pod.proxy
        if proxy is None or proxy.admin is None or proxy.control is None:
            return None
        if mesh.http2_params is not None:
            message.http2.CopyFrom(mesh.http2_params)
        hint = message.protocol_hint
        hint.SetInParent()
        meta_port = address.port in (proxy.admin, proxy.control)
        if not meta_port and (mesh.force_opaque_transport or address.opaque):
            if proxy.inbound is None:
                return None
            hint.opaque_transport.inbound_port = proxy.inbound
        if address.opaque:
            hint.opaque.SetInParent()
        elif mesh.enable_h2_upgrade:
            hint.h2.SetInParent()
    if ctx.trust_domain and pod.control_plane_ns == mesh.controller_namespace and not skipped:
        identity = pod_identity(
            pod, controller_namespace=mesh.controller_namespace, trust_domain=ctx.trust_domain
        )
        message.tls_identity.dns_like_identity.name = identity
        message.tls_identity.server_name.name = identity
    return message


def _workload_addr(
    message: pb.WeightedAddr,
    address: Address,
    workload: ExternalWorkloadInfo,
    ctx: EncodeContext,
    locality: str,
) -> pb.WeightedAddr:
    """An ExternalWorkload's address (reference §5.7 b): always meshed, h2 unless opaque."""
    mesh = ctx.mesh
    labels = message.metric_labels
    labels["external_workload"] = workload.ref.name
    if address.owner is not None and address.owner.kind and address.owner.name:
        labels[owner_label(address.owner.kind)] = address.owner.name
    labels["zone"] = address.zone or ""
    labels["zone_locality"] = locality
    if mesh.http2_params is not None:
        message.http2.CopyFrom(mesh.http2_params)
    hint = message.protocol_hint
    if mesh.force_opaque_transport or address.opaque:
        hint.opaque_transport.inbound_port = workload.proxy_inbound_port
    if address.opaque:
        hint.opaque.SetInParent()
    else:
        hint.h2.SetInParent()  # H2 upgrade is not consulted for ExternalWorkloads
    message.tls_identity.uri_like_identity.uri = workload.identity
    message.tls_identity.server_name.name = workload.server_name
    return message


def _unencodable(address: Address, err: ValueError) -> None:
    """Defence in depth: projection (discovery/project.py) already drops bad addresses.

    An address that still cannot be encoded is left out of the message rather
    than failing the whole update for every stream of the view.
    """
    log.error("address_not_encodable", ip=address.ip[:64], port=address.port, error=str(err))


def add_update(
    addresses: Iterable[Address], labels: Mapping[str, str], ctx: EncodeContext
) -> bytes | None:
    addrs = []
    for address in addresses:
        try:
            message = weighted_addr(address, ctx)
        except ValueError as err:
            _unencodable(address, err)
            continue
        if message is not None:
            addrs.append(message)
    if not addrs:
        return None
    update = pb.Update(add=pb.WeightedAddrSet(addrs=addrs, metric_labels=dict(labels)))
    return update.SerializeToString(deterministic=True)


def remove_update(addresses: Iterable[Address]) -> bytes | None:
    addrs = []
    for address in addresses:
        try:
            addrs.append(tcp_address(address.ip, address.port))
        except ValueError as err:
            _unencodable(address, err)
    if not addrs:
        return None
    return pb.Update(remove=pb.AddrSet(addrs=addrs)).SerializeToString(deterministic=True)


def encode_diff(diff: AddressDiff, ctx: EncodeContext) -> tuple[bytes, ...]:
    """Add first, then Remove (reference §5.5); empty parts are not sent."""
    parts = (add_update(diff.added, diff.labels, ctx), remove_update(diff.removed))
    return tuple(p for p in parts if p is not None)


def encode_initial(snapshot: AddressSnapshot, ctx: EncodeContext) -> tuple[bytes, ...]:
    """A new stream's first message: the whole set as one Add, or nothing when empty."""
    payload = add_update(snapshot.addresses.values(), snapshot.labels, ctx)
    return (payload,) if payload is not None else ()
