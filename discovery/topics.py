"""From index state to one diff per (service, port, view), computed once.

A *topic* exists only for a (service, port) that has subscribers. When an
event touches a service, `Topics.refresh` rebuilds the full address set of each
of its subscribed ports from the index, then every *view* of that port (a
distinct filter, `ViewKey`: pod hostname, subscriber zone, subscriber node
only for `internalTrafficPolicy: Local`, filtering on or off) filters the set,
diffs it against its own immutable snapshot and, when anything changed, hands
the diff and the new snapshot to its sinks. However many
streams share a view, filtering and diffing happen once; sinks (the gRPC
layer's broadcasts) encode once more and fan out.

A sink that raises is logged and skipped: every other sink and view still
hears of the change (the gRPC layer resynchronises its own streams).

Invariant: from `refresh` to the last `on_change` there is no `await`. On one
event loop that makes each event atomic with respect to every stream, keeps
events of one service in order, and needs no locks.

Filtering follows the reference (destination-behaviour §5.4): hostname, then
(local discovery only) internalTrafficPolicy Local or topology hints, then the
address family. Snapshots are keyed by (ip, port), which is how proxies tell
endpoints apart; a changed record for the same key is re-sent as an Add.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, Protocol

import structlog

from .index import ClusterIndex
from .models import (
    Address,
    AddressKey,
    IpFamily,
    ObjectRef,
    ServiceInfo,
    ServiceRef,
    SliceInfo,
)
from .ports import PortSet

log = structlog.get_logger("discovery.topics")

_EMPTY: Mapping[AddressKey, Address] = MappingProxyType({})
_versions = itertools.count(1)


class ViewKey(NamedTuple):
    """What distinguishes the subscribers of one (service, port) from each other.

    Only what changes the filtered set: the pod hostname asked for; the
    caller's node, set only by a subscriber that filters by node (the
    Service has `internalTrafficPolicy: Local`; None otherwise, so callers on
    different nodes share the view); the caller's zone, for topology hints;
    and whether filtering applies at all (local discovery only).
    """

    hostname: str | None = None
    node_name: str | None = None
    filtering: bool = True  # endpoint filtering: True for local discovery
    zone: str = ""  # the caller's zone; "" when unknown


@dataclass(frozen=True, slots=True)
class AddressSnapshot:
    """What a view last published. Immutable and shared by every stream of the view."""

    addresses: Mapping[AddressKey, Address]
    labels: Mapping[str, str]
    version: int = field(default_factory=lambda: next(_versions))


EMPTY_SNAPSHOT = AddressSnapshot(addresses=_EMPTY, labels=MappingProxyType({}), version=0)


@dataclass(frozen=True, slots=True)
class AddressDiff:
    """Adds (new or changed addresses) and removes (as they were last sent)."""

    added: tuple[Address, ...]
    removed: tuple[Address, ...]
    labels: Mapping[str, str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def diff_snapshots(old: AddressSnapshot, new: AddressSnapshot) -> AddressDiff:
    old_map, new_map = old.addresses, new.addresses
    added = tuple(a for key, a in new_map.items() if old_map.get(key) != a)
    removed = tuple(a for key, a in old_map.items() if key not in new_map)
    return AddressDiff(added=added, removed=removed, labels=new.labels)


class ViewSink(Protocol):
    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        """Called synchronously on the event loop; must not await or block."""


@dataclass(frozen=True, slots=True)
class ViewContext:
    """Per-view facts, fixed when the view is created."""

    key: ViewKey
    zone: str  # zone of the subscriber's node; "" when unknown


# -- building and filtering address sets ------------------------------------


def _family(ip: str) -> IpFamily:
    return IpFamily.V6 if ":" in ip else IpFamily.V4


def _labels_of(slice_info: SliceInfo) -> dict[str, str]:
    labels = {"service": slice_info.service.name, "namespace": slice_info.ref.namespace}
    if slice_info.mirror_cluster:
        labels["target_cluster"] = slice_info.mirror_cluster
    if slice_info.remote_fq_name:
        parts = slice_info.remote_fq_name.split(".")
        if len(parts) >= 2:
            labels["target_service"] = parts[0]
            labels["target_service_namespace"] = parts[1]
    return labels


def _slice_port(slice_info: SliceInfo, target: str | int) -> int | None:
    if slice_info.ports is None:
        return None
    if isinstance(target, int):
        return target
    for port in slice_info.ports:
        if port.name == target:
            return port.port
    return None


def build_addresses(
    index: ClusterIndex,
    service: ServiceRef,
    port: int,
    *,
    default_opaque_ports: PortSet,
) -> tuple[dict[AddressKey, Address], dict[str, str]]:
    """The full, unfiltered address set of (service, port) and its set-level labels.

    The target is the name of the service port numbered `port` when the
    Service declares one, else the number itself (reference §5.3).
    """
    info = index.services.get(service)
    if info is None:
        return {}, {}  # deleted: every subscriber gets a Remove of what it holds
    port_name = info.port_name(port)
    target: str | int = port_name if port_name is not None else port
    addresses: dict[AddressKey, Address] = {}
    labels: dict[str, str] = {}
    for slice_info in sorted(index.slices_of(service), key=lambda s: s.ref.name):
        labels = labels or _labels_of(slice_info)
        endpoint_port = _slice_port(slice_info, target)
        if endpoint_port is None or slice_info.address_type == "FQDN":
            continue
        for endpoint in slice_info.endpoints:
            if not endpoint.ready:
                continue
            target_ref = endpoint.target
            pod = None
            workload = None
            if target_ref is not None:
                if target_ref.kind == "Pod":
                    pod_ref = ObjectRef(
                        target_ref.namespace or slice_info.ref.namespace, target_ref.name
                    )
                    pod = index.pods.get(pod_ref)
                    if pod is None:
                        continue  # pod not cached yet; its event will refresh us
                elif target_ref.kind == "ExternalWorkload":
                    workload_ref = ObjectRef(slice_info.ref.namespace, target_ref.name)
                    workload = index.external_workloads.get(workload_ref)
                    if workload is None:
                        continue  # not cached yet, or gone: skipped, as in the reference
                else:
                    continue  # any other target kind is ignored (reference §5.3)
            for ip in endpoint.addresses:
                opaque = False
                if pod is not None:
                    opaque_ports = (
                        pod.opaque_ports if pod.opaque_ports is not None else default_opaque_ports
                    )
                    opaque = endpoint_port in opaque_ports or index.server_opaque(
                        pod, endpoint_port
                    )
                elif workload is not None:
                    opaque_ports = (
                        workload.opaque_ports
                        if workload.opaque_ports is not None
                        else default_opaque_ports
                    )
                    opaque = endpoint_port in opaque_ports or index.server_opaque_workload(
                        workload, endpoint_port
                    )
                targeted = pod is not None or workload is not None
                address = Address(
                    ip=ip,
                    port=endpoint_port,
                    family=_family(ip),
                    hostname=endpoint.hostname,
                    zone=endpoint.zone,
                    zone_hints=endpoint.zone_hints,
                    node_name=endpoint.node_name,
                    pod=pod,
                    owner=index.workload_owner(pod)
                    if pod is not None
                    else (workload.owner if workload is not None else None),
                    opaque=opaque,
                    gateway_identity=None if targeted else slice_info.gateway_identity,
                    remote_fq_name=None if targeted else slice_info.remote_fq_name,
                    external_workload=workload,
                )
                addresses[address.key] = address
    if not labels:
        labels = {"service": service.name, "namespace": service.namespace}
    return addresses, labels


def filter_addresses(
    addresses: Mapping[AddressKey, Address],
    *,
    context: ViewContext,
    service: ServiceInfo | None,
    enable_ipv6: bool,
) -> dict[AddressKey, Address]:
    """Apply a view's filters (reference §5.4) to a full address set."""
    key = context.key
    selected = list(addresses.values())
    if key.hostname is not None:
        selected = [a for a in selected if a.hostname == key.hostname]
    if key.filtering:
        # Node filtering needs both: the Service says Local and the subscriber
        # planned for it (its key names a node). While a policy edit is being
        # re-planned, the old views keep their filter, so no stream sees a
        # transient Remove of everything.
        if service is not None and service.internal_traffic_local and key.node_name is not None:
            selected = [
                a for a in selected if a.pod is not None and a.pod.node_name == key.node_name
            ]
        elif selected and all(a.zone_hints for a in selected):
            in_zone = [a for a in selected if a.zone_hints and context.zone in a.zone_hints]
            selected = in_zone or selected
    if not enable_ipv6:
        selected = [a for a in selected if a.family is IpFamily.V4 or a.pod is None]
    else:
        pods_with_v6 = {a.pod.ref for a in selected if a.pod and a.family is IpFamily.V6}
        selected = [
            a
            for a in selected
            if not (a.pod and a.family is IpFamily.V4 and a.pod.ref in pods_with_v6)
        ]
    return {a.key: a for a in selected}


# -- topics ----------------------------------------------------------------


@dataclass(eq=False)
class View:
    context: ViewContext
    snapshot: AddressSnapshot = EMPTY_SNAPSHOT
    sinks: dict[int, ViewSink] = field(default_factory=dict)


@dataclass(eq=False)
class PortTopic:
    port: int
    views: dict[ViewKey, View] = field(default_factory=dict)
    full: Mapping[AddressKey, Address] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


class Subscription:
    """A sink's registration on one view; `close()` is idempotent."""

    def __init__(
        self,
        topics: Topics,
        service: ServiceRef,
        port: int,
        key: ViewKey,
        token: int,
        snapshot: AddressSnapshot,
    ) -> None:
        self._topics = topics
        self._where = (service, port, key, token)
        self.initial = snapshot
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._topics._unsubscribe(*self._where)


class Topics:
    """Every subscribed (service, port, view) of one cluster."""

    def __init__(
        self, index: ClusterIndex, *, default_opaque_ports: PortSet, enable_ipv6: bool
    ) -> None:
        self._index = index
        self._default_opaque_ports = default_opaque_ports
        self._enable_ipv6 = enable_ipv6
        self._topics: dict[ServiceRef, dict[int, PortTopic]] = {}
        self._tokens = itertools.count(1)

    def subscribed_services(self) -> int:
        return len(self._topics)

    def views(self) -> int:
        return sum(len(p.views) for ports in self._topics.values() for p in ports.values())

    def subscribe(
        self, *, service: ServiceRef, port: int, key: ViewKey, sink: ViewSink
    ) -> Subscription:
        """Register `sink`; `.initial` of the result is the view's current snapshot.

        Reading the snapshot and registering happen in one synchronous step, so
        no change can fall between the initial state and the first diff.
        """
        ports = self._topics.setdefault(service, {})
        topic = ports.get(port)
        if topic is None:
            topic = ports[port] = PortTopic(port=port)
            self._rebuild(service, topic)
        view = topic.views.get(key)
        if view is None:
            context = ViewContext(key=key, zone=key.zone)
            view = topic.views[key] = View(context=context)
            self._refresh_view(service, topic, view)
        token = next(self._tokens)
        view.sinks[token] = sink
        return Subscription(self, service, port, key, token, view.snapshot)

    def _unsubscribe(self, service: ServiceRef, port: int, key: ViewKey, token: int) -> None:
        ports = self._topics.get(service)
        topic = ports.get(port) if ports else None
        view = topic.views.get(key) if topic else None
        if view is None or ports is None or topic is None:
            return
        view.sinks.pop(token, None)
        if not view.sinks:
            del topic.views[key]
            if not topic.views:
                del ports[port]
                if not ports:
                    del self._topics[service]

    def refresh(self, services: Iterable[ServiceRef]) -> int:
        """Recompute the subscribed ports of `services`; returns how many views changed."""
        changed = 0
        for service in services:
            ports = self._topics.get(service)
            if not ports:
                continue
            for topic in list(ports.values()):
                try:
                    self._rebuild(service, topic)
                except Exception:
                    # One service's bad state must not stop the others' updates.
                    log.exception("topic_rebuild_failed", service=str(service), port=topic.port)
                    continue
                for view in list(topic.views.values()):
                    changed += self._refresh_view(service, topic, view)
        return changed

    def _rebuild(self, service: ServiceRef, topic: PortTopic) -> None:
        full, labels = build_addresses(
            self._index, service, topic.port, default_opaque_ports=self._default_opaque_ports
        )
        topic.full, topic.labels = full, labels

    def _refresh_view(self, service: ServiceRef, topic: PortTopic, view: View) -> bool:
        selected = filter_addresses(
            topic.full,
            context=view.context,
            service=self._index.services.get(service),
            enable_ipv6=self._enable_ipv6,
        )
        labels = topic.labels or view.snapshot.labels
        old = view.snapshot
        if selected == old.addresses and labels == old.labels:
            return False
        new = AddressSnapshot(
            addresses=MappingProxyType(selected), labels=MappingProxyType(dict(labels))
        )
        diff = diff_snapshots(old, new)
        if labels != old.labels and old.addresses:
            # Set-level labels travel with each Add: re-send the whole set so
            # proxies (and streams joining later) see the new ones.
            diff = AddressDiff(
                added=tuple(selected.values()), removed=diff.removed, labels=new.labels
            )
        view.snapshot = new
        if not diff:
            return False
        for sink in list(view.sinks.values()):
            try:
                sink.on_change(diff, new)
            except Exception:
                # Isolated: every other sink of this view, and every other view,
                # still hears of the change. The failing sink resynchronises
                # its streams itself (see destination/streams/broadcast.py).
                log.exception("view_sink_failed", service=str(service), port=topic.port)
        return True
