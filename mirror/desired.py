"""The local objects one Link should own: a pure function of what is known now.

Everything a Link's worker writes comes from `desired_state`: given the
Link, the target cluster's Services and EndpointSlices, the gateway's
resolved addresses and liveness, and which local namespaces exist, it
returns the mirror Services and Endpoints the Link should own (complete
manifests, ready for server-side apply), the federated memberships it
contributes, and one status condition per remote Service it handles. The
worker then only diffs that against what the local cluster holds: a missing
or drifted mirror is rewritten, a mirror whose remote Service is gone (even
while the controller was down) is deleted, and an object that already
matches is not written at all.

Deriving every object from one function removes, by construction, the
reference's path-dependent quirks (§8.1): Endpoints always reflect remote
emptiness and gateway liveness (Q6), mirror Services and Endpoints carry the
same labels (Q22), headless mirrors are never overwritten with gateway
addresses (Q20), a missing namespace never leaves orphan Endpoints (Q3), a
headless Service exported only for remote discovery is mirrored as a
remote-discovery Service (Q2), and the status of a headless mirror says
Mirrored (Q1); its root Endpoints are always ready, as created (Q4).

Other deliberate differences, each where the reference writes an object the
API server then refuses (and retries until it gives up): a mirror or
federated name longer than 63 characters, and a Service without ports
(which cannot be a ClusterIP Service), give an `InvalidService` condition
and no object; a Service that loses its ports keeps its existing mirror
objects and federated membership as they are (`keep`, `keep_members`), so
that an edit on the target never takes a service away. A per-pod mirror's
`remote-resource-version` is the remote Service's (the reference uses the
remote Endpoints', which slices do not have). Gateway IPs are written
sorted, as strings (as the reference resolves them); when they are unknown,
or resolved to nothing, gateway Endpoints are kept as they are (the
reference fails the write and retries).

Names never collide. A per-pod mirror is named after its hostname alone
(`<hostname>-<cluster>`, §3.6), so it can take the name of a root mirror
(a Service `db-0` next to pod `db-0` of Service `db`, or a headless Service
whose own pods share its name) or of another root's per-pod mirror (two
Services with pods of the same hostname). The reference writes both and
the last write wins, so the objects flip and a Service can end up with
another's Endpoints. Here one rule decides: the mirror of a Service this
Link handles always keeps its name, and otherwise the per-pod mirror of
the root that sorts first does; a per-pod mirror that loses is not written
(nor pointed at by its root's Endpoints), and its root's condition says
which name went to whom (`InvalidService`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from discovery.models import ServiceRef

from .links import LinkSpec
from .metadata import endpoint_ports, mirror_annotations, mirror_labels, mirror_ports
from .naming import (
    CLUSTER_NAME,
    HEADLESS_MIRROR_OF,
    MAX_NAME,
    REMOTE_DISCOVERY,
    REMOTE_GATEWAY_IDENTITY,
    REMOTE_RESOURCE_VERSION,
    REMOTE_SERVICE,
    REMOTE_SVC_FQ_NAME,
    endpoint_mirror_name,
    federated_name,
    fq_name,
    mirror_name,
)
from .remote import RemoteService, RemoteView

__all__ = [
    "Condition",
    "Desired",
    "FederatedMember",
    "ObjectKey",
    "Situation",
    "desired_state",
]

MIRRORED = "Mirrored"
INVALID_SERVICE = "InvalidService"
MISSING_NAMESPACE = "MissingNamespace"
ERROR = "Error"
NO_PORTS = "object spec has no exposed ports"
MAX_LISTED_COLLISIONS = 3  # a condition message names a few; a hostile target may make many


class ObjectKey(NamedTuple):
    kind: str  # "Service" or "Endpoints"
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Condition:
    """The one `Mirrored` condition of a remote Service in the Link's status (§1.2)."""

    remote: ServiceRef
    mirrored: bool
    reason: str
    message: str = ""
    local: ServiceRef | None = None  # only when mirrored: never an empty localRef


@dataclass(frozen=True, slots=True)
class FederatedMember:
    """A remote Service joining `<name>-federated` in its namespace, and its metadata."""

    service: ServiceRef
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ports: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything the desired state depends on."""

    link: LinkSpec
    remote: RemoteView
    gateway_ips: tuple[str, ...] | None  # None (or empty): the gateway's addresses did not resolve
    gateway_alive: bool
    namespaces: frozenset[str]  # local namespaces that exist
    create_namespaces: bool = False
    headless: bool = False  # per-pod mirrors of headless Services (opt-in)
    # ClusterIPs the local cluster gave per-pod mirrors: a headless root's
    # Endpoints point at them, so they exist only once those Services do.
    cluster_ips: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # Headless root mirrors that exist now: they stay headless while their remote
    # Service is headless, even when it has no endpoints for a while (a StatefulSet
    # scaled to zero), since changing the form means deleting and re-creating.
    headless_mirrors: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Desired:
    objects: Mapping[ObjectKey, dict[str, Any]]
    # Objects to leave as they are this round (their inputs are unknown, e.g. the
    # gateway did not resolve): neither rewritten nor deleted.
    keep: frozenset[ObjectKey]
    namespaces_to_create: frozenset[str]
    members: tuple[FederatedMember, ...]
    mirror_conditions: tuple[Condition, ...]
    federated_conditions: tuple[Condition, ...]
    # Federated Services whose membership of this Link is left as it is: the
    # member's Service became unusable (no ports), which must not take it away.
    keep_members: frozenset[ServiceRef] = frozenset()


def _service_manifest(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    ports: list[dict[str, Any]],
    *,
    headless: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
        },
        "spec": spec,
    }


def _endpoints_manifest(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    subsets: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
        },
        "subsets": subsets,
    }


def _gateway_subsets(
    ips: tuple[str, ...], ports: list[dict[str, Any]], *, alive: bool, has_endpoints: bool
) -> list[dict[str, Any]]:
    """One subset of gateway addresses; not-ready while the gateway is down; none if empty."""
    if not has_endpoints or not ips or not ports:
        return []
    addresses = [{"ip": ip} for ip in sorted(set(ips))]
    key = "addresses" if alive else "notReadyAddresses"
    return [{key: addresses, "ports": ports}]


class _Builder:
    def __init__(
        self, situation: Situation, root_names: Mapping[tuple[str, str], ServiceRef]
    ) -> None:
        self.s = situation
        self.link = situation.link
        # (namespace, name) of the root mirror of every Service this Link handles:
        # those names are never a per-pod mirror's, whatever the order of Services.
        self.root_names = root_names
        # (namespace, name) of each per-pod mirror so far: its root and hostname.
        self.pod_names: dict[tuple[str, str], tuple[ServiceRef, str]] = {}
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.keep: set[ObjectKey] = set()
        self.keep_members: set[ServiceRef] = set()
        self.create: set[str] = set()
        self.members: list[FederatedMember] = []
        self.mirror_conditions: list[Condition] = []
        self.federated_conditions: list[Condition] = []

    def namespace_ready(self, namespace: str) -> bool:
        if namespace in self.s.namespaces:
            return True
        if self.s.create_namespaces:
            self.create.add(namespace)
            return True
        return False

    def mirror_metadata(self, service: RemoteService) -> tuple[dict[str, str], dict[str, str]]:
        link = self.link
        labels = mirror_labels(service.label_map(), link.excluded_labels)
        labels[CLUSTER_NAME] = link.target_cluster_name
        annotations = mirror_annotations(service.annotation_map(), link.excluded_annotations)
        annotations[REMOTE_SVC_FQ_NAME] = fq_name(
            service.ref.name, service.ref.namespace, link.target_cluster_domain
        )
        annotations[REMOTE_RESOURCE_VERSION] = service.resource_version
        return labels, annotations

    def endpoint_annotations(self, fq: str) -> dict[str, str]:
        annotations = {REMOTE_SVC_FQ_NAME: fq}
        if self.link.gateway_identity:
            annotations[REMOTE_GATEWAY_IDENTITY] = self.link.gateway_identity
        return annotations

    def mirror(self, service: RemoteService, *, remote_discovery: bool) -> None:
        ref, link = service.service, self.link
        name = mirror_name(ref.name, link.target_cluster_name)
        if len(name) > MAX_NAME:
            self.mirror_conditions.append(
                Condition(
                    ref,
                    False,
                    INVALID_SERVICE,
                    f"mirror name {name} is longer than {MAX_NAME} characters",
                )
            )
            return
        if not service.ports:
            # The remote Service lost its ports (an ExternalName, a headless Service
            # without ports): say so, and leave an existing mirror as it is.
            self.mirror_conditions.append(Condition(ref, False, INVALID_SERVICE, NO_PORTS))
            self.keep.add(ObjectKey("Service", ref.namespace, name))
            self.keep.add(ObjectKey("Endpoints", ref.namespace, name))
            return
        if not self.namespace_ready(ref.namespace):
            self.mirror_conditions.append(
                Condition(ref, False, MISSING_NAMESPACE, "Namespace does not exist")
            )
            return
        if not remote_discovery and not link.gateway_enabled:
            self.mirror_conditions.append(
                Condition(ref, False, ERROR, "the Link has no gateway address and port")
            )
            return
        labels, annotations = self.mirror_metadata(service)
        ports = mirror_ports(service.ports)
        collisions: list[str] = []  # per-pod mirrors not written: their names are taken
        if remote_discovery:
            labels[REMOTE_DISCOVERY] = link.target_cluster_name
            labels[REMOTE_SERVICE] = ref.name
            self.objects[ObjectKey("Service", ref.namespace, name)] = _service_manifest(
                ref.namespace, name, labels, annotations, ports
            )
        elif (
            self.s.headless
            and service.headless
            and (
                self.s.remote.has_hostnames(ref) or (ref.namespace, name) in self.s.headless_mirrors
            )
        ):
            collisions = self.headless(service, name, labels, annotations, ports)
        else:
            self.objects[ObjectKey("Service", ref.namespace, name)] = _service_manifest(
                ref.namespace, name, labels, annotations, ports
            )
            self.gateway_endpoints(
                ref.namespace,
                name,
                endpoint_labels(labels),
                self.endpoint_annotations(annotations[REMOTE_SVC_FQ_NAME]),
                service,
                check_empty=True,
            )
        if not remote_discovery and not self.s.gateway_ips:
            # The objects are kept as they are (see gateway_endpoints); say why nothing moves.
            self.mirror_conditions.append(
                Condition(
                    ref,
                    False,
                    ERROR,
                    "Failed to get gateway address: "
                    f"{', '.join(link.gateway_addresses)} did not resolve",
                )
            )
            return
        if collisions:
            self.mirror_conditions.append(
                Condition(ref, False, INVALID_SERVICE, _collisions_message(collisions))
            )
            return
        self.mirror_conditions.append(
            Condition(ref, True, MIRRORED, local=ServiceRef(ref.namespace, name))
        )

    def gateway_endpoints(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        service: RemoteService,
        *,
        check_empty: bool,
    ) -> None:
        key = ObjectKey("Endpoints", namespace, name)
        ips = self.s.gateway_ips
        port = self.link.gateway_port
        if not ips or port is None:
            self.keep.add(key)  # cannot say where the gateway is now: leave it as it is
            return
        subsets = _gateway_subsets(
            ips,
            endpoint_ports(service.ports, port),
            alive=self.s.gateway_alive,
            has_endpoints=not check_empty or self.s.remote.has_ready_endpoints(service.service),
        )
        self.objects[key] = _endpoints_manifest(namespace, name, labels, annotations, subsets)

    def headless(
        self,
        service: RemoteService,
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        ports: list[dict[str, Any]],
    ) -> list[str]:
        """A headless root mirror, and one gateway-mode mirror per ready hostname (§3.8).

        Returns why some per-pod mirrors are not written: their names are taken
        (see the module docstring), one phrase each, in hostname order.
        """
        ref, link = service.service, self.link
        collisions: list[str] = []
        self.objects[ObjectKey("Service", ref.namespace, name)] = _service_manifest(
            ref.namespace, name, labels, annotations, ports, headless=True
        )
        # Root addresses grouped by their slice's ports, one subset each, as
        # the remote Endpoints group them.
        root_subsets: dict[tuple[tuple[str, int, str], ...], list[dict[str, Any]]] = {}
        for endpoint in self.s.remote.headless_endpoints(ref):
            pod_mirror = endpoint_mirror_name(endpoint.hostname, link.target_cluster_name)
            if len(pod_mirror) > MAX_NAME:
                continue
            taken = self.name_taken(ref, endpoint.hostname, pod_mirror)
            if taken is not None:
                collisions.append(taken)
                continue
            self.pod_names[(ref.namespace, pod_mirror)] = (ref, endpoint.hostname)
            pod_labels = dict(labels)
            pod_labels[HEADLESS_MIRROR_OF] = name
            pod_fq = f"{endpoint.hostname}.{annotations[REMOTE_SVC_FQ_NAME]}"
            pod_annotations = {
                REMOTE_SVC_FQ_NAME: pod_fq,
                REMOTE_RESOURCE_VERSION: annotations[REMOTE_RESOURCE_VERSION],
            }
            self.objects[ObjectKey("Service", ref.namespace, pod_mirror)] = _service_manifest(
                ref.namespace, pod_mirror, pod_labels, pod_annotations, ports
            )
            self.gateway_endpoints(
                ref.namespace,
                pod_mirror,
                endpoint_labels(pod_labels),
                self.endpoint_annotations(pod_fq),
                service,
                check_empty=False,
            )
            cluster_ip = self.s.cluster_ips.get((ref.namespace, pod_mirror))
            if cluster_ip:
                root_subsets.setdefault(endpoint.ports, []).append(
                    {"hostname": endpoint.hostname, "ip": cluster_ip}
                )
        subsets = [
            {
                "addresses": addresses,
                "ports": [
                    {"name": port_name, "port": number, "protocol": protocol}
                    if port_name
                    else {"port": number, "protocol": protocol}
                    for port_name, number, protocol in ports
                ],
            }
            for ports, addresses in root_subsets.items()
        ]
        self.objects[ObjectKey("Endpoints", ref.namespace, name)] = _endpoints_manifest(
            ref.namespace,
            name,
            endpoint_labels(labels),
            self.endpoint_annotations(annotations[REMOTE_SVC_FQ_NAME]),
            subsets,
        )
        return collisions

    def name_taken(self, root: ServiceRef, hostname: str, pod_mirror: str) -> str | None:
        """Why `pod_mirror` cannot be the per-pod mirror of `hostname` of `root`, if it cannot.

        The mirror of a handled Service keeps its name (it may be handled later in
        the loop); otherwise the first per-pod mirror to claim a name keeps it.
        """
        key = (root.namespace, pod_mirror)
        owner = self.root_names.get(key)
        if owner is not None:
            whose = "this Service's own" if owner == root else f"Service {owner.name}'s"
            return f"{pod_mirror} (hostname {hostname}) is the name of {whose} mirror"
        claim = self.pod_names.get(key)
        if claim is not None:
            other, other_hostname = claim
            return (
                f"{pod_mirror} (hostname {hostname}) is the per-pod mirror of hostname "
                f"{other_hostname} of Service {other.name}"
            )
        return None

    def federate(self, service: RemoteService) -> None:
        ref, link = service.service, self.link
        local = ServiceRef(ref.namespace, federated_name(ref.name))
        if service.headless:
            self.federated_conditions.append(
                Condition(
                    ref, False, INVALID_SERVICE, "Headless service cannot join federated service"
                )
            )
            return
        if len(local.name) > MAX_NAME:
            self.federated_conditions.append(
                Condition(
                    ref,
                    False,
                    INVALID_SERVICE,
                    f"federated name {local.name} is longer than {MAX_NAME} characters",
                )
            )
            return
        if not service.ports:
            self.federated_conditions.append(Condition(ref, False, INVALID_SERVICE, NO_PORTS))
            self.keep_members.add(local)
            return
        if not self.namespace_ready(ref.namespace):
            self.federated_conditions.append(
                Condition(ref, False, MISSING_NAMESPACE, "Namespace does not exist")
            )
            return
        self.members.append(
            FederatedMember(
                service=ref,
                labels=mirror_labels(service.label_map(), link.excluded_labels),
                annotations=mirror_annotations(service.annotation_map(), link.excluded_annotations),
                ports=service.ports,
            )
        )
        self.federated_conditions.append(Condition(ref, True, MIRRORED, local=local))


def _collisions_message(collisions: list[str]) -> str:
    """The condition message: a few per-pod mirrors that are not written, and why."""
    listed = "; ".join(collisions[:MAX_LISTED_COLLISIONS])
    more = len(collisions) - MAX_LISTED_COLLISIONS
    suffix = f"; and {more} more" if more > 0 else ""
    return f"per-pod mirrors not written, their names are taken: {listed}{suffix}"


def endpoint_labels(service_labels: Mapping[str, str]) -> dict[str, str]:
    """Mirror Endpoints carry their Service's labels, minus remote-discovery markers."""
    return {k: v for k, v in service_labels.items() if k not in (REMOTE_DISCOVERY, REMOTE_SERVICE)}


def desired_state(situation: Situation) -> Desired:
    link = situation.link
    services = [situation.remote.services[ref] for ref in sorted(situation.remote.services)]
    # The Services this Link mirrors, and whether for remote discovery (which wins).
    modes: dict[ServiceRef, bool] = {}
    for service in services:
        labels = service.label_map()
        if link.remote_discovery_selector.matches(labels):
            modes[service.service] = True
        elif link.selector.matches(labels):
            modes[service.service] = False
    # Their mirrors' names are reserved before any per-pod mirror is named.
    root_names = {
        (ref.namespace, mirror_name(ref.name, link.target_cluster_name)): ref for ref in modes
    }
    builder = _Builder(situation, root_names)
    for service in services:
        if service.service in modes:
            builder.mirror(service, remote_discovery=modes[service.service])
        if link.federated_selector.matches(service.label_map()):
            builder.federate(service)
    return Desired(
        objects=builder.objects,
        keep=frozenset(builder.keep),
        keep_members=frozenset(builder.keep_members),
        namespaces_to_create=frozenset(builder.create),
        members=tuple(builder.members),
        mirror_conditions=tuple(builder.mirror_conditions),
        federated_conditions=tuple(builder.federated_conditions),
    )
