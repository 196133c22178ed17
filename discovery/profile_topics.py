"""What GetProfile streams are told, computed once per distinct answer.

Two kinds of topic, each existing only while it has subscribers:

* a *service-profile topic* per (service, port, fqn, client namespace): which
  ServiceProfile applies (the client namespace's, else the service's own,
  else none: the default profile; reference §6.3.2) and whether the port is
  opaque for the Service (§6.4);
* an *endpoint-profile topic* per (ip, port): what lives at that address (a
  running pod, a pod's host port, an ExternalWorkload, or nothing known) and
  whether the port is opaque there (§6.5).

A topic's state is an immutable record, recomputed from the index whenever
an event could change it and handed to its sinks only when it changed; the
sinks (the gRPC layer's profile broadcasts) encode once and fan out. The
cluster cache reports each event through `note` (before and after the index
is updated, so an address that a pod leaves and one it arrives at are both
seen) and calls `refresh` once per burst, like endpoint topics.

Where this does better than the reference (docs/compatibility.md): an
endpoint topic follows every change of the pod at its address, not only
phase changes of pods declaring the port, and Server opacity turns off as
well as on; a ServiceProfile update that does not validate leaves that
object's last good version in force (one that never validated counts as
absent) instead of silencing the stream.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

import structlog

from .by_address import normalize_ip
from .index import ClusterIndex
from .models import (
    ExternalWorkloadInfo,
    Kind,
    ObjectRef,
    OwnerRef,
    PodInfo,
    ServiceInfo,
    ServiceRef,
)
from .ports import PortSet, resolve_named_ports
from .reflector import Deleted, Listed, ReflectorEvent, Upserted
from .service_profiles import ServiceProfileInfo

__all__ = [
    "EndpointProfileKey",
    "EndpointProfileState",
    "ProfileSubscription",
    "ProfileTopics",
    "ServiceProfileKey",
    "ServiceProfileState",
    "service_opaque_ports",
]

log = structlog.get_logger("discovery.profile_topics")
_versions = itertools.count(1)


class ServiceProfileKey(NamedTuple):
    service: ServiceRef
    port: int
    fqn: str  # the ServiceProfile name looked up: <svc>.<ns>.svc.<cluster domain>
    client_ns: str  # "" when the client gave none, or gave the service's own namespace


class EndpointProfileKey(NamedTuple):
    ip: str  # normalized (by_address.normalize_ip)
    port: int


@dataclass(frozen=True, slots=True)
class ServiceProfileState:
    """The profile a service-profile topic serves; None is the default profile."""

    profile: ServiceProfileInfo | None
    opaque: bool
    version: int = field(default_factory=lambda: next(_versions), compare=False)


@dataclass(frozen=True, slots=True)
class EndpointProfileState:
    """What lives at an endpoint-profile topic's address."""

    ip: str
    port: int
    pod: PodInfo | None  # set only while the pod is Running (reference §6.5)
    owner: OwnerRef | None
    workload: ExternalWorkloadInfo | None
    opaque: bool
    version: int = field(default_factory=lambda: next(_versions), compare=False)


S = TypeVar("S", ServiceProfileState, EndpointProfileState)
K = TypeVar("K", ServiceProfileKey, EndpointProfileKey)
S_contra = TypeVar("S_contra", contravariant=True)
T = TypeVar("T")


class ProfileSink(Protocol[S_contra]):
    def on_change(self, state: S_contra) -> None:
        """Called synchronously on the event loop; must not await or block."""


@dataclass(eq=False)
class _Topic(Generic[K, S]):
    key: K
    state: S
    sinks: dict[int, ProfileSink[S]] = field(default_factory=dict)


class ProfileSubscription(Generic[T]):
    """A sink's registration on one topic; `close()` is idempotent."""

    def __init__(self, close: Callable[[], None], initial: T) -> None:
        self._close: Callable[[], None] | None = close
        self.initial: T = initial

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()


def service_opaque_ports(info: ServiceInfo | None, defaults: PortSet) -> PortSet:
    """§6.4: the annotation (service port names resolve), else the defaults."""
    if info is None or info.opaque_ports_annotation is None:
        return defaults
    names = {port.name: port.port for port in info.ports if port.name}
    ports, _invalid = resolve_named_ports(info.opaque_ports_annotation, names)
    return ports


class _Pending:
    """What a burst of events may have changed, by the keys topics are found under."""

    __slots__ = ("everything", "ips", "namespaces", "profile_names", "services")

    def __init__(self) -> None:
        self.everything = False
        self.services: set[ServiceRef] = set()
        self.profile_names: set[str] = set()
        self.ips: set[str] = set()
        self.namespaces: set[str] = set()  # Servers changed there

    def __bool__(self) -> bool:
        return bool(
            self.everything or self.services or self.profile_names or self.ips or self.namespaces
        )


class ProfileTopics:
    """Every subscribed profile topic of one cluster."""

    def __init__(self, index: ClusterIndex, *, default_opaque_ports: PortSet) -> None:
        self._index = index
        self._defaults = default_opaque_ports
        self._services: dict[ServiceProfileKey, _Topic[ServiceProfileKey, ServiceProfileState]] = {}
        self._endpoints: dict[
            EndpointProfileKey, _Topic[EndpointProfileKey, EndpointProfileState]
        ] = {}
        self._by_service: defaultdict[ServiceRef, set[ServiceProfileKey]] = defaultdict(set)
        self._by_fqn: defaultdict[str, set[ServiceProfileKey]] = defaultdict(set)
        self._by_ip: defaultdict[str, set[EndpointProfileKey]] = defaultdict(set)
        self._tokens = itertools.count(1)
        self._pending = _Pending()

    def __len__(self) -> int:
        return len(self._services) + len(self._endpoints)

    # -- subscribing -------------------------------------------------------------

    def subscribe_service(
        self, key: ServiceProfileKey, sink: ProfileSink[ServiceProfileState]
    ) -> ProfileSubscription[ServiceProfileState]:
        topic = self._services.get(key)
        if topic is None:
            topic = _Topic(key, self._service_state(key, None))
            self._services[key] = topic
            self._by_service[key.service].add(key)
            self._by_fqn[key.fqn].add(key)
        token = next(self._tokens)
        topic.sinks[token] = sink
        return ProfileSubscription(lambda: self._drop_service(key, token), topic.state)

    def subscribe_endpoint(
        self, key: EndpointProfileKey, sink: ProfileSink[EndpointProfileState]
    ) -> ProfileSubscription[EndpointProfileState]:
        topic = self._endpoints.get(key)
        if topic is None:
            topic = _Topic(key, self._endpoint_state(key, None))
            self._endpoints[key] = topic
            self._by_ip[key.ip].add(key)
        token = next(self._tokens)
        topic.sinks[token] = sink
        return ProfileSubscription(lambda: self._drop_endpoint(key, token), topic.state)

    def _drop_service(self, key: ServiceProfileKey, token: int) -> None:
        topic = self._services.get(key)
        if topic is None:
            return
        topic.sinks.pop(token, None)
        if not topic.sinks:
            del self._services[key]
            _forget(self._by_service, key.service, key)
            _forget(self._by_fqn, key.fqn, key)

    def _drop_endpoint(self, key: EndpointProfileKey, token: int) -> None:
        topic = self._endpoints.get(key)
        if topic is None:
            return
        topic.sinks.pop(token, None)
        if not topic.sinks:
            del self._endpoints[key]
            _forget(self._by_ip, key.ip, key)

    # -- events --------------------------------------------------------------------

    def note(self, event: ReflectorEvent) -> None:
        """Record what an event may change; call it before and after the index applies it."""
        if not self._services and not self._endpoints:
            return
        pending = self._pending
        kind = event.kind
        if isinstance(event, Listed):
            if kind in _PROFILE_INPUTS:
                pending.everything = True
            return
        ref = event.ref if isinstance(event, Deleted) else _ref_of(event)
        if ref is None:
            return
        if kind is Kind.SERVICE:
            pending.services.add(ServiceRef(*ref))
        elif kind is Kind.SERVICE_PROFILE:
            pending.profile_names.add(ref.name)
        elif kind is Kind.POD:
            pod = self._index.pods.get(ref)
            if pod is not None:
                pending.ips.update(pod.ips)
                pending.ips.update(pod.host_ips)
        elif kind is Kind.EXTERNAL_WORKLOAD:
            workload = self._index.external_workloads.get(ref)
            if workload is not None:
                pending.ips.update(workload.ips)
        elif kind is Kind.SERVER:
            pending.namespaces.add(ref.namespace)
        elif kind in (Kind.REPLICA_SET, Kind.JOB):
            for pod_ref in self._index.pods_owned_by(ref, kind):
                pod = self._index.pods.get(pod_ref)
                if pod is not None:
                    pending.ips.update(pod.ips)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def refresh(self) -> int:
        """Recompute the topics the noted events touched; returns how many changed."""
        pending, self._pending = self._pending, _Pending()
        if not pending:
            return 0
        service_keys: set[ServiceProfileKey]
        endpoint_keys: set[EndpointProfileKey]
        if pending.everything:
            service_keys, endpoint_keys = set(self._services), set(self._endpoints)
        else:
            service_keys = set()
            for service in pending.services:
                service_keys |= self._by_service.get(service, set())
            for name in pending.profile_names:
                service_keys |= self._by_fqn.get(name, set())
            endpoint_keys = set()
            for ip in pending.ips:
                normalized = normalize_ip(ip)
                if normalized is not None:
                    endpoint_keys |= self._by_ip.get(normalized, set())
            if pending.namespaces:
                endpoint_keys |= {
                    key
                    for key, topic in self._endpoints.items()
                    if _namespace_of(topic.state) in pending.namespaces
                }
        changed = 0
        for key in service_keys:
            service_topic = self._services.get(key)
            if service_topic is not None:
                changed += _guarded(self._refresh_service, service_topic)
        for endpoint_key in endpoint_keys:
            endpoint_topic = self._endpoints.get(endpoint_key)
            if endpoint_topic is not None:
                changed += _guarded(self._refresh_endpoint, endpoint_topic)
        return changed

    def _refresh_service(self, topic: _Topic[ServiceProfileKey, ServiceProfileState]) -> int:
        return _publish(topic, self._service_state(topic.key, topic.state))

    def _refresh_endpoint(self, topic: _Topic[EndpointProfileKey, EndpointProfileState]) -> int:
        return _publish(topic, self._endpoint_state(topic.key, topic.state))

    # -- state -------------------------------------------------------------------

    def _service_state(
        self, key: ServiceProfileKey, previous: ServiceProfileState | None
    ) -> ServiceProfileState:
        profiles = self._index.service_profiles
        # A broken version stands for its object's last good one; one that never
        # validated, for nothing (service_profiles). A function of the index
        # alone: every stream of the key gets the same, whenever it started.
        primary = profiles.get(ObjectRef(key.client_ns, key.fqn)) if key.client_ns else None
        chosen = primary.usable if primary is not None else None
        if chosen is None:
            backup = profiles.get(ObjectRef(key.service.namespace, key.fqn))
            chosen = backup.usable if backup is not None else None
        info = self._index.services.get(key.service)
        opaque = key.port in service_opaque_ports(info, self._defaults)
        if previous is not None and previous.profile is chosen and previous.opaque == opaque:
            return previous
        return ServiceProfileState(profile=chosen, opaque=opaque)

    def _endpoint_state(
        self, key: EndpointProfileKey, previous: EndpointProfileState | None
    ) -> EndpointProfileState:
        index, ip, port = self._index, key.ip, key.port
        pods = (
            index.live_pods_at(ip)
            or index.live_pods_at_host_port(ip, port)
            or self._draining(key, previous)
        )
        if pods:
            pod = pods[0]
            if pod.phase != "Running":
                return self._bare(key)
            opaque_ports = pod.opaque_ports if pod.opaque_ports is not None else self._defaults
            return EndpointProfileState(
                ip=ip,
                port=port,
                pod=pod,
                owner=index.workload_owner(pod),
                workload=None,
                opaque=port in opaque_ports or index.server_opaque(pod, port),
            )
        workloads = index.workloads_at(ip, port)
        if workloads:
            workload = workloads[0]
            opaque_ports = (
                workload.opaque_ports if workload.opaque_ports is not None else self._defaults
            )
            return EndpointProfileState(
                ip=ip,
                port=port,
                pod=None,
                owner=workload.owner,
                workload=workload,
                opaque=port in opaque_ports or index.server_opaque_workload(workload, port),
            )
        return self._bare(key)

    def _draining(
        self, key: EndpointProfileKey, previous: EndpointProfileState | None
    ) -> list[PodInfo]:
        """The pod a topic already serves, while it shuts down at the same address.

        New lookups skip terminating pods (reference §2.1), but a stream that
        already has the pod keeps it until the pod stops running or is gone:
        clients still talking to a draining StatefulSet member must keep its
        identity, or an mTLS-only server would refuse them.
        """
        if previous is None or previous.pod is None:
            return []
        pod = self._index.pods.get(previous.pod.ref)
        if pod is None or not pod.terminating or pod.phase != "Running":
            return []
        addresses = ({*pod.ips} if not pod.host_network else set()) | {
            ip for ip in pod.host_ips if any(p.host_port == key.port for p in pod.container_ports)
        }
        normalized = {normalize_ip(ip) for ip in addresses}
        return [pod] if key.ip in normalized else []

    def _bare(self, key: EndpointProfileKey) -> EndpointProfileState:
        return EndpointProfileState(
            ip=key.ip,
            port=key.port,
            pod=None,
            owner=None,
            workload=None,
            opaque=key.port in self._defaults,
        )


# Kinds whose relist can change a profile topic.
_PROFILE_INPUTS = frozenset(
    {
        Kind.SERVICE,
        Kind.SERVICE_PROFILE,
        Kind.POD,
        Kind.EXTERNAL_WORKLOAD,
        Kind.SERVER,
        Kind.REPLICA_SET,
        Kind.JOB,
    }
)


def _ref_of(event: Upserted) -> ObjectRef | None:
    record = event.record
    ref = getattr(record, "ref", None)
    return ref if isinstance(ref, ObjectRef) else None


def _namespace_of(state: EndpointProfileState) -> str | None:
    if state.pod is not None:
        return state.pod.ref.namespace
    if state.workload is not None:
        return state.workload.ref.namespace
    return None


def _guarded(refresh: Callable[[_Topic[K, S]], int], topic: _Topic[K, S]) -> int:
    """One topic's refresh; a failure (a bug) is logged and leaves the others to run."""
    try:
        return refresh(topic)
    except Exception:
        log.exception("profile_topic_refresh_failed", key=repr(topic.key)[:300])
        return 0


def _publish(topic: _Topic[K, S], state: S) -> int:
    if state == topic.state:
        return 0
    topic.state = state
    for sink in list(topic.sinks.values()):
        sink.on_change(state)
    return 1


W = TypeVar("W")


def _forget(table: defaultdict[W, set[K]], where: W, key: K) -> None:
    keys = table.get(where)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del table[where]
