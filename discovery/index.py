"""The in-memory state of one cluster, and which services each event touches.

`ClusterIndex` holds slim records keyed by object, plus the reverse maps that
turn an event into the set of services it affects: a Pod change affects the
services whose slices point at the pod, a ReplicaSet change affects the
services of its pods (their owner label), a slice change affects its service.
Applying an event is synchronous and does no I/O; the caller refreshes the
affected services' topics right after, so an event is atomic with respect to
every stream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Iterable

from .by_address import AddressIndex
from .models import (
    ClusterCredentials,
    ExternalWorkloadInfo,
    ForeignRecord,
    Kind,
    NodeInfo,
    ObjectRef,
    OwnerRef,
    PodInfo,
    ServerInfo,
    ServiceInfo,
    ServiceRef,
    SliceInfo,
    WorkloadOwner,
)
from .project import Record
from .service_profiles import ServiceProfileInfo

IndexRecord = Record

# Owners of a ReplicaSet that name the workload in metric labels.
_RS_WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


class ClusterIndex:
    """Records of one cluster. Not thread-safe: used from the event loop only."""

    def __init__(self) -> None:
        self.services: dict[ServiceRef, ServiceInfo] = {}
        self.slices: dict[ObjectRef, SliceInfo] = {}
        self.pods: dict[ObjectRef, PodInfo] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.replica_sets: dict[ObjectRef, WorkloadOwner] = {}
        self.jobs: dict[ObjectRef, WorkloadOwner] = {}
        self.servers: dict[ObjectRef, ServerInfo] = {}
        self.external_workloads: dict[ObjectRef, ExternalWorkloadInfo] = {}
        self.service_profiles: dict[ObjectRef, ServiceProfileInfo] = {}
        self.by_address = AddressIndex()
        # Remote clusters grant no access to ReplicaSets (least privilege): a
        # pod's Deployment is then read from its ReplicaSet's name instead.
        self.owners_from_template_hash = False
        self._servers_by_namespace: defaultdict[str, set[ObjectRef]] = defaultdict(set)
        self.slices_by_service: defaultdict[ServiceRef, set[ObjectRef]] = defaultdict(set)
        self._services_by_pod: defaultdict[ObjectRef, set[ServiceRef]] = defaultdict(set)
        # (namespace, owner kind, owner name) -> pods, for owner-label updates
        self._pods_by_owner: defaultdict[tuple[str, str, str], set[ObjectRef]] = defaultdict(set)

    # -- reads ---------------------------------------------------------------

    def slices_of(self, service: ServiceRef) -> list[SliceInfo]:
        return [self.slices[ref] for ref in self.slices_by_service.get(service, ())]

    def node_zone(self, node_name: str) -> str:
        node = self.nodes.get(node_name)
        return node.zone if node else ""

    def workload_owner(self, pod: PodInfo) -> OwnerRef | None:
        """The workload a pod belongs to: its ReplicaSet's Deployment, its Job's CronJob..."""
        owner = pod.owner
        if owner is None:
            return None
        if owner.kind == "ReplicaSet":
            rs = self.replica_sets.get(ObjectRef(pod.ref.namespace, owner.name))
            if rs is not None and rs.owner is not None and rs.owner.kind in _RS_WORKLOAD_KINDS:
                return rs.owner
            if self.owners_from_template_hash:
                return _deployment_by_name(owner, pod.pod_template_hash)
        elif owner.kind == "Job":
            job = self.jobs.get(ObjectRef(pod.ref.namespace, owner.name))
            if job is not None and job.owner is not None:
                return job.owner
        return owner

    def live_pods_at(self, ip: str) -> list[PodInfo]:
        """Pods whose pod IP is `ip` (normalized), as GetProfile looks them up (§6.2)."""
        pods = (self.pods.get(ref) for ref in self.by_address.pods_at(ip))
        return [pod for pod in pods if pod is not None and pod.live and not pod.host_network]

    def live_pods_at_host_port(self, ip: str, port: int) -> list[PodInfo]:
        """Pods exposing `port` as a host port on a node address `ip`."""
        pods = (self.pods.get(ref) for ref in self.by_address.pods_at_host_port(ip, port))
        return [pod for pod in pods if pod is not None and pod.live]

    def workloads_at(self, ip: str, port: int) -> list[ExternalWorkloadInfo]:
        refs = self.by_address.workloads_at(ip, port)
        return [self.external_workloads[ref] for ref in refs if ref in self.external_workloads]

    def pods_owned_by(self, owner: ObjectRef, kind: Kind) -> list[ObjectRef]:
        """Pods whose single owner is this ReplicaSet or Job."""
        return list(self._pods_by_owner.get((owner.namespace, kind.value, owner.name), ()))

    def services_at(self, ip: str) -> list[ServiceRef]:
        """Services with `ip` among their cluster IPs."""
        return self.by_address.services_at(ip)

    def server_opaque(self, pod: PodInfo, port: int) -> bool:
        """Whether a Server in the pod's namespace makes this port of it opaque (§5.8)."""
        return any(
            self.servers[ref].makes_opaque(pod, port)
            for ref in self._servers_by_namespace.get(pod.ref.namespace, ())
        )

    def server_opaque_workload(self, workload: ExternalWorkloadInfo, port: int) -> bool:
        return any(
            self.servers[ref].makes_workload_opaque(workload, port)
            for ref in self._servers_by_namespace.get(workload.ref.namespace, ())
        )

    def holds(self, kind: Kind, ref: ObjectRef) -> bool:
        """Whether an object of `kind` is held under `ref`."""
        tables: dict[Kind, Container[object]] = {
            Kind.SERVICE: self.services,
            Kind.ENDPOINT_SLICE: self.slices,
            Kind.POD: self.pods,
            Kind.REPLICA_SET: self.replica_sets,
            Kind.JOB: self.jobs,
            Kind.SERVER: self.servers,
            Kind.EXTERNAL_WORKLOAD: self.external_workloads,
            Kind.SERVICE_PROFILE: self.service_profiles,
        }
        if kind is Kind.NODE:
            return ref.name in self.nodes
        return ref in tables.get(kind, ())

    def sizes(self) -> dict[Kind, int]:
        return {
            Kind.SERVICE: len(self.services),
            Kind.ENDPOINT_SLICE: len(self.slices),
            Kind.POD: len(self.pods),
            Kind.NODE: len(self.nodes),
            Kind.REPLICA_SET: len(self.replica_sets),
            Kind.JOB: len(self.jobs),
            Kind.SERVER: len(self.servers),
            Kind.EXTERNAL_WORKLOAD: len(self.external_workloads),
            Kind.SERVICE_PROFILE: len(self.service_profiles),
        }

    # -- writes: each returns the services whose endpoints may have changed ----

    def upsert(self, record: IndexRecord) -> set[ServiceRef]:
        if isinstance(record, ServiceInfo):
            old_service = self.services.get(record.ref)
            if old_service is not None:
                self.by_address.drop_service(old_service)
            self.services[record.ref] = record
            self.by_address.add_service(record)
            return {record.ref}
        if isinstance(record, ServiceProfileInfo):
            # Profiles feed GetProfile only: no endpoint set depends on them. A
            # broken version keeps the last good one in force (`replacing`).
            self.service_profiles[record.ref] = record.replacing(
                self.service_profiles.get(record.ref)
            )
            return set()
        if isinstance(record, SliceInfo):
            affected = self._drop_slice(record.ref)
            self._add_slice(record)
            return affected | {record.service}
        if isinstance(record, PodInfo):
            old = self.pods.get(record.ref)
            self._forget_pod_owner(record.ref)
            if old is not None:
                self.by_address.drop_pod(old)
            self.pods[record.ref] = record
            self.by_address.add_pod(record)
            if record.owner is not None:
                key = (record.ref.namespace, record.owner.kind, record.owner.name)
                self._pods_by_owner[key].add(record.ref)
            if old == record and not self._server_inputs_changed(old, record):
                # Status churn (phase, conditions, IPs): nothing translation reads
                # changed. During a rollout this is most pod events, and skipping
                # them keeps a burst from rebuilding every address set per event.
                return set()
            return set(self._services_by_pod.get(record.ref, ()))
        if isinstance(record, NodeInfo):
            self.nodes[record.name] = record
            return set()
        if isinstance(record, ClusterCredentials | ForeignRecord):
            raise TypeError(f"{type(record).__name__} records do not belong to a cluster index")
        if isinstance(record, ExternalWorkloadInfo):
            old_workload = self.external_workloads.get(record.ref)
            if old_workload == record:
                return set()
            if old_workload is not None:
                self.by_address.drop_workload(old_workload)
            self.external_workloads[record.ref] = record
            self.by_address.add_workload(record)
            return set(self._services_by_pod.get(record.ref, ()))
        if isinstance(record, ServerInfo):
            old_server = self.servers.get(record.ref)
            self.servers[record.ref] = record
            self._servers_by_namespace[record.ref.namespace].add(record.ref)
            if old_server == record:
                return set()
            return self._services_in(record.ref.namespace)
        return self._upsert_workload_owner(record)

    def delete(self, kind: Kind, ref: ObjectRef) -> set[ServiceRef]:
        if kind is Kind.SERVICE:
            service = ServiceRef(*ref)
            old_service = self.services.pop(service, None)
            if old_service is None:
                return set()
            self.by_address.drop_service(old_service)
            return {service}
        if kind is Kind.SERVICE_PROFILE:
            self.service_profiles.pop(ref, None)
            return set()
        if kind is Kind.ENDPOINT_SLICE:
            return self._drop_slice(ref)
        if kind is Kind.POD:
            self._forget_pod_owner(ref)
            old_pod = self.pods.pop(ref, None)
            if old_pod is None:
                return set()
            self.by_address.drop_pod(old_pod)
            return set(self._services_by_pod.get(ref, ()))
        if kind is Kind.NODE:
            self.nodes.pop(ref.name, None)
            return set()
        if kind is Kind.SECRET:
            return set()
        if kind is Kind.EXTERNAL_WORKLOAD:
            old_workload = self.external_workloads.pop(ref, None)
            if old_workload is None:
                return set()
            self.by_address.drop_workload(old_workload)
            return set(self._services_by_pod.get(ref, ()))
        if kind is Kind.SERVER:
            if self.servers.pop(ref, None) is None:
                return set()
            refs = self._servers_by_namespace.get(ref.namespace)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._servers_by_namespace[ref.namespace]
            return self._services_in(ref.namespace)
        if kind not in (Kind.REPLICA_SET, Kind.JOB):
            raise TypeError(f"{kind.value} objects do not belong to a cluster index")
        table = self.replica_sets if kind is Kind.REPLICA_SET else self.jobs
        if table.pop(ref, None) is None:
            return set()
        return self._services_of_owned_pods(ref, kind)

    def replace(self, kind: Kind, records: Iterable[IndexRecord]) -> set[ServiceRef]:
        """A relist: upsert what is listed, delete what is no longer there."""
        affected: set[ServiceRef] = set()
        listed: set[ObjectRef] = set()
        for record in records:
            listed.add(record_key(record))
            affected |= self.upsert(record)
        for ref in [ref for ref in self._keys(kind) if ref not in listed]:
            affected |= self.delete(kind, ref)
        return affected

    # -- internals -------------------------------------------------------------

    def _keys(self, kind: Kind) -> list[ObjectRef]:
        if kind is Kind.SERVICE:
            return list(self.services)
        if kind is Kind.ENDPOINT_SLICE:
            return list(self.slices)
        if kind is Kind.POD:
            return list(self.pods)
        if kind is Kind.NODE:
            return [ObjectRef("", name) for name in self.nodes]
        if kind is Kind.SECRET:
            return []
        if kind is Kind.SERVER:
            return list(self.servers)
        if kind is Kind.EXTERNAL_WORKLOAD:
            return list(self.external_workloads)
        if kind is Kind.SERVICE_PROFILE:
            return list(self.service_profiles)
        return list(self.replica_sets if kind is Kind.REPLICA_SET else self.jobs)

    def _add_slice(self, info: SliceInfo) -> None:
        self.slices[info.ref] = info
        self.slices_by_service[info.service].add(info.ref)
        for pod in _slice_pods(info):
            self._services_by_pod[pod].add(info.service)

    def _drop_slice(self, ref: ObjectRef) -> set[ServiceRef]:
        old = self.slices.pop(ref, None)
        if old is None:
            return set()
        refs = self.slices_by_service.get(old.service)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self.slices_by_service[old.service]
        remaining_pods = {
            pod for other in self.slices_of(old.service) for pod in _slice_pods(other)
        }
        for pod in _slice_pods(old):
            if pod in remaining_pods:
                continue
            services = self._services_by_pod.get(pod)
            if services is not None:
                services.discard(old.service)
                if not services:
                    del self._services_by_pod[pod]
        return {old.service}

    def _server_inputs_changed(self, old: PodInfo | None, new: PodInfo) -> bool:
        """Labels and container ports only matter where Servers could select the pod."""
        if old is None or new.ref.namespace not in self._servers_by_namespace:
            return False
        return old.labels != new.labels or old.container_ports != new.container_ports

    def _services_in(self, namespace: str) -> set[ServiceRef]:
        """Services with endpoints in `namespace`: what a Server there can change."""
        return {service for service in self.slices_by_service if service.namespace == namespace}

    def _forget_pod_owner(self, ref: ObjectRef) -> None:
        old = self.pods.get(ref)
        if old is None or old.owner is None:
            return
        key = (ref.namespace, old.owner.kind, old.owner.name)
        pods = self._pods_by_owner.get(key)
        if pods is not None:
            pods.discard(ref)
            if not pods:
                del self._pods_by_owner[key]

    def _upsert_workload_owner(self, record: WorkloadOwner) -> set[ServiceRef]:
        table = self.replica_sets if record.kind is Kind.REPLICA_SET else self.jobs
        old = table.get(record.ref)
        table[record.ref] = record
        if old is not None and old.owner == record.owner:
            return set()
        return self._services_of_owned_pods(record.ref, record.kind)

    def _services_of_owned_pods(self, ref: ObjectRef, kind: Kind) -> set[ServiceRef]:
        pods = self._pods_by_owner.get((ref.namespace, kind.value, ref.name), ())
        return {svc for pod in pods for svc in self._services_by_pod.get(pod, ())}


def _slice_pods(info: SliceInfo) -> set[ObjectRef]:
    """The pods and ExternalWorkloads a slice points at (one map serves both:
    a pod and an EW of the same name only make each other's services refresh)."""
    targets = set()
    for endpoint in info.endpoints:
        target = endpoint.target
        if target is None:
            continue
        if target.kind == "Pod":
            targets.add(ObjectRef(target.namespace or info.ref.namespace, target.name))
        elif target.kind == "ExternalWorkload":
            # Looked up in the slice's namespace, whatever the targetRef says (§5.3).
            targets.add(ObjectRef(info.ref.namespace, target.name))
    return targets


def _deployment_by_name(owner: OwnerRef, template_hash: str | None) -> OwnerRef:
    """A Deployment's ReplicaSet is named `<deployment>-<pod-template-hash>`."""
    suffix = f"-{template_hash}" if template_hash else ""
    if suffix and owner.name.endswith(suffix) and len(owner.name) > len(suffix):
        return OwnerRef(kind="Deployment", name=owner.name[: -len(suffix)])
    return owner


def record_key(record: IndexRecord) -> ObjectRef:
    """The key a record is stored under, and deleted by."""
    if isinstance(record, NodeInfo):
        return ObjectRef("", record.name)
    return record.ref
