"""Slim, frozen records of the Kubernetes objects the destination service reads.

A watch event is projected into one of these at the edge (`project.py`) and
the raw object is dropped at once: a Pod here is a few hundred bytes of the
fields translation needs, not the tens of kilobytes of the API object. Records
are immutable so that indexes, snapshots and every stream can share them
without copies or locks.

Equality matters: an address is re-sent to proxies when its record compares
unequal to the one they hold, so fields that never reach a proxy (such as a
pod's resourceVersion) are excluded from comparison.

This module imports nothing from the project but `ports`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, NewType

from .ports import PortSet

ClusterName = NewType("ClusterName", str)


class ObjectRef(NamedTuple):
    """Namespace and name of a namespaced object."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ServiceRef(ObjectRef):
    """A Service, by namespace and name."""


class Kind(enum.Enum):
    """The resource kinds discovery watches."""

    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    POD = "Pod"
    NODE = "Node"
    REPLICA_SET = "ReplicaSet"
    JOB = "Job"
    SECRET = "Secret"  # link credentials, in the controller namespace only
    SERVER = "Server"  # policy.linkerd.io; `proxyProtocol: opaque` marks ports opaque
    EXTERNAL_WORKLOAD = "ExternalWorkload"  # workload.linkerd.io: meshed workloads off-cluster
    SERVICE_PROFILE = "ServiceProfile"  # linkerd.io: routes and retries, read by GetProfile
    # Read by the service mirror only (never held by a discovery index):
    ENDPOINTS = "Endpoints"  # the mirror's own gateway-mode Endpoints
    NAMESPACE = "Namespace"
    LINK = "Link"  # multicluster.linkerd.io


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    ref: ServiceRef
    ports: tuple[ServicePort, ...]
    is_external_name: bool
    internal_traffic_local: bool
    cluster_ips: tuple[str, ...]
    # Raw `config.linkerd.io/opaque-ports`; None when absent (defaults apply).
    opaque_ports_annotation: str | None
    # multicluster markers, read by later routing stages
    remote_discovery_cluster: str | None = None
    remote_service: str | None = None
    federated_remote: str | None = None
    federated_local: str | None = None

    def port_name(self, port: int) -> str | None:
        """Name of the service port numbered `port`, or None if it has none."""
        for service_port in self.ports:
            if service_port.port == port:
                return service_port.name
        return None


@dataclass(frozen=True, slots=True)
class TargetRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool
    hostname: str | None
    node_name: str | None
    zone: str | None
    zone_hints: frozenset[str] | None  # None: no hints at all
    target: TargetRef | None


@dataclass(frozen=True, slots=True)
class SlicePort:
    name: str  # "" when unnamed
    port: int


@dataclass(frozen=True, slots=True)
class SliceInfo:
    ref: ObjectRef
    service: ServiceRef
    address_type: str  # IPv4, IPv6 or FQDN
    ports: tuple[SlicePort, ...] | None  # None: `ports: null` (contributes nothing)
    endpoints: tuple[SliceEndpoint, ...]
    # Gateway-mode mirrors (written by the service mirror on the Endpoints,
    # copied onto slices by the EndpointSlice mirroring controller).
    gateway_identity: str | None = None
    remote_fq_name: str | None = None
    mirror_cluster: str | None = None


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class ProxyPorts:
    """Ports of the pod's `linkerd-proxy` container; None where unset or unparsable."""

    inbound: int | None
    admin: int | None
    control: int | None


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    container_port: int
    host_port: int


@dataclass(frozen=True, slots=True)
class PodInfo:
    ref: ObjectRef
    # Read by indexes and filters, never sent to a proxy: excluded from equality
    # so that a pod's status churn does not re-send its addresses.
    ips: tuple[str, ...] = field(compare=False)
    node_name: str
    phase: str = field(compare=False)
    terminating: bool = field(compare=False)
    service_account: str
    owner: OwnerRef | None  # the single ownerReference; None with zero or several
    control_plane_ns: str  # "" when not meshed
    pod_template_hash: str | None
    opaque_ports: PortSet | None  # resolved annotation; None when absent (defaults apply)
    skip_inbound_ports: PortSet
    proxy: ProxyPorts | None  # None: no linkerd-proxy container
    # Inputs of opacity (Servers), whose result is compared as Address.opaque.
    container_ports: tuple[ContainerPort, ...] = field(compare=False)
    labels: tuple[tuple[str, str], ...] = field(compare=False)
    resource_version: str = field(default="", compare=False)
    # Where GetProfile finds the pod by address (reference §2.1): its node's
    # IPs (for host ports) and whether it shares the node's network.
    host_ips: tuple[str, ...] = field(default=(), compare=False)
    host_network: bool = field(default=False, compare=False)

    @property
    def live(self) -> bool:
        """Found by address lookups: not terminating, not terminated (reference §2.1)."""
        return not self.terminating and self.phase not in ("Succeeded", "Failed")

    @property
    def meshed(self) -> bool:
        return bool(self.control_plane_ns)

    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    zone: str


@dataclass(frozen=True, slots=True)
class WorkloadOwner:
    """Metadata of a ReplicaSet or Job: only whom it belongs to."""

    kind: Kind  # REPLICA_SET or JOB
    ref: ObjectRef
    owner: OwnerRef | None


@dataclass(frozen=True, slots=True)
class ExternalWorkloadInfo:
    """A meshed workload outside Kubernetes (a VM), as Get translates it (§5.7 b)."""

    ref: ObjectRef
    identity: str  # spec.meshTLS.identity, sent as a URI-like identity
    server_name: str  # spec.meshTLS.serverName
    owner: OwnerRef | None
    ports: tuple[SlicePort, ...]  # spec.ports (name "" when unnamed)
    opaque_ports: PortSet | None  # resolved annotation; None when absent (defaults apply)
    labels: tuple[tuple[str, str], ...]
    proxy_inbound_port: int  # the port named `linkerd-proxy`, else 4143
    ips: tuple[str, ...] = ()  # spec.workloadIPs: where GetProfile finds it by address

    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist (validated when projected)
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels):
            return False
        for requirement in self.expressions:
            value = labels.get(requirement.key)
            if requirement.operator == "In":
                if value is None or value not in requirement.values:
                    return False
            elif requirement.operator == "NotIn":
                if value is not None and value in requirement.values:
                    return False
            elif requirement.operator == "Exists":
                if value is None:
                    return False
            elif value is not None:  # DoesNotExist
                return False
        return True


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A policy Server, as far as Get reads it: which pod ports it makes opaque."""

    ref: ObjectRef
    pod_selector: LabelSelector | None  # None: selects no pod
    port: int | str  # a number, or the name of a container (or EW) port
    opaque: bool
    external_workload_selector: LabelSelector | None = None  # None: selects no EW

    def makes_workload_opaque(self, workload: ExternalWorkloadInfo, port: int) -> bool:
        """§5.8 for ExternalWorkloads: names resolve against `spec.ports`."""
        selector = self.external_workload_selector
        if not self.opaque or selector is None or workload.ref.namespace != self.ref.namespace:
            return False
        if isinstance(self.port, int):
            if self.port != port:
                return False
        elif not any(p.name == self.port and p.port == port for p in workload.ports):
            return False
        return selector.matches(workload.label_map())

    def makes_opaque(self, pod: PodInfo, port: int) -> bool:
        """Reference §5.8: same namespace, opaque, selector and port match."""
        if not self.opaque or self.pod_selector is None or pod.ref.namespace != self.ref.namespace:
            return False
        if isinstance(self.port, int):
            if self.port != port:
                return False
        elif not any(
            p.name == self.port and port in (p.container_port, p.host_port)
            for p in pod.container_ports
        ):
            return False
        return self.pod_selector.matches(pod.label_map())


@dataclass(frozen=True, slots=True)
class ClusterCredentials:
    """A link Secret: how to reach one remote cluster, and how to name its pods.

    `problem` says why the Secret cannot be used (a missing key or annotation);
    such a Secret is still recorded, so that the cluster's status shows the
    reason instead of the cluster silently not existing.
    """

    ref: ObjectRef  # the Secret
    cluster: ClusterName
    trust_domain: str
    cluster_domain: str
    kubeconfig: bytes = field(repr=False)
    problem: str | None = None
    resource_version: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ForeignRecord:
    """A record of another package's own projection (the service mirror's).

    Reflectors and connections carry it like any record, so that other
    packages reuse discovery's watches with a projector of their own;
    discovery's indexes never hold one.
    """

    ref: ObjectRef


class IpFamily(enum.Enum):
    V4 = 4
    V6 = 6


AddressKey = tuple[str, int]
"""(ip, port): how a proxy tells endpoints apart, so how we key snapshots."""


@dataclass(frozen=True, slots=True)
class Address:
    """One endpoint of a (service, port), with everything translation reads.

    Keyed by (ip, port) in snapshots: a pod whose IP changes is a Remove of the
    old address and an Add of the new one (Linkerd keys by pod and leaves the
    old IP behind).
    """

    ip: str
    port: int
    family: IpFamily
    hostname: str | None
    zone: str | None
    zone_hints: frozenset[str] | None
    node_name: str | None
    pod: PodInfo | None
    owner: OwnerRef | None  # resolved workload (Deployment, StatefulSet, ...) of the pod
    opaque: bool
    gateway_identity: str | None = None
    remote_fq_name: str | None = None
    external_workload: ExternalWorkloadInfo | None = None

    @property
    def key(self) -> AddressKey:
        return (self.ip, self.port)
