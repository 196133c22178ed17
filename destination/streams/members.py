"""Which (cluster, service) views make up the endpoints of a Get, now.

Every Get stream is served as a set of *members*, each a view of one service
in one cluster: a local service is one local member, a remote-discovery
mirror one member in its remote cluster, a federated service its local member
plus one per remote entry. The plan is a pure function of the current state
(the local Service object and the linked clusters), so it is recomputed
whenever either changes and open streams follow: members joining, leaving or
changing clusters turn into exactly the Adds and Removes needed.

Linkerd fixes the mode when the stream starts and ends federated streams with
OK when the Service changes; here a Service that becomes federated, stops
being a mirror or is deleted keeps its streams, which converge to the new
plan (docs/compatibility.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import structlog

from destination.translate.endpoints import EncodeContext, MeshSettings
from discovery.cluster import ClusterCache
from discovery.cluster_store import RemoteCluster
from discovery.models import ClusterName, ServiceInfo, ServiceRef
from discovery.topics import ViewKey

log = structlog.get_logger("destination.streams.members")


class Mode(enum.StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    FEDERATED = "federated"


def mode_of(info: ServiceInfo) -> Mode:
    """The reference's precedence (§5.1): federated annotations, then the mirror label."""
    if info.federated_local is not None or info.federated_remote is not None:
        return Mode.FEDERATED
    if info.remote_discovery_cluster is not None:
        return Mode.REMOTE
    return Mode.LOCAL


def parse_remote_members(annotation: str | None) -> list[tuple[str, ClusterName]]:
    """`svc@cluster,svc@cluster` as (service, cluster) pairs; malformed items are skipped.

    Whitespace around items and names is ignored (Linkerd does not trim, so a
    space after a comma silently drops that member there).
    """
    members: list[tuple[str, ClusterName]] = []
    for item in (annotation or "").split(","):
        if not item.strip():
            continue
        parts = [part.strip() for part in item.split("@")]
        if len(parts) != 2 or not all(parts):
            log.warning("federated_member_malformed", item=item, expected="service@cluster")
            continue
        members.append((parts[0], ClusterName(parts[1])))
    return members


@dataclass(frozen=True, slots=True)
class Member:
    cluster: ClusterName
    service: ServiceRef
    view: ViewKey


@dataclass(frozen=True, slots=True)
class MemberPlan:
    member: Member
    cache: ClusterCache
    context: EncodeContext


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What a Get asked for, after parsing: the service, port, pod hostname and caller's node.

    `node_name` is whatever the caller's context token said (bounded, maybe
    unknown or made up); `Planner.target` decides what of it matters.
    """

    service: ServiceRef
    port: int
    hostname: str | None
    node_name: str = ""


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """The key streams share a broadcast by: only what changes the bytes they are sent.

    `zone` is the caller's node's zone ("" when the node is unknown or has
    none): it picks topology-hinted endpoints and labels each endpoint's zone
    locality. `node_name` is None unless the endpoints are filtered by node
    (the local member's Service has `internalTrafficPolicy: Local`); then it is
    the caller's node, or "" for a node not in the cache. So ten thousand
    streams naming ten thousand made-up nodes share one broadcast and one view.
    """

    service: ServiceRef
    port: int
    hostname: str | None
    zone: str = ""
    node_name: str | None = None


class LinkedClusters(Protocol):
    """What planning needs of the cluster store."""

    def serving(self, name: str) -> RemoteCluster | None: ...


class Planner:
    """Turns a stream target into its members, from the caches' current state."""

    def __init__(
        self, *, local: ClusterCache, store: LinkedClusters | None, mesh: MeshSettings
    ) -> None:
        self.local = local
        self.store = store
        self.mesh = mesh

    def target(self, request: StreamRequest) -> StreamTarget:
        """The broadcast key of a stream, from the current Service and nodes.

        Recomputed when the Service changes, so a stream whose key changes
        (internalTrafficPolicy edited) moves to the broadcast of its new key.
        """
        node = self.local.index.nodes.get(request.node_name) if request.node_name else None
        local_node: str | None = None
        if self._filtered_by_node(request.service):
            local_node = node.name if node is not None else ""
        return StreamTarget(
            service=request.service,
            port=request.port,
            hostname=request.hostname,
            zone=node.zone if node is not None else "",
            node_name=local_node,
        )

    def _filtered_by_node(self, service: ServiceRef) -> bool:
        """Whether the local member of `service` keeps only endpoints on the caller's node."""
        info = self.local.index.services.get(service)
        if info is None:
            return False
        mode = mode_of(info)
        if mode is Mode.FEDERATED and info.federated_local:
            local_ref = ServiceRef(service.namespace, info.federated_local.strip())
            info = self.local.index.services.get(local_ref)
            return info is not None and info.internal_traffic_local
        return mode is Mode.LOCAL and info.internal_traffic_local

    def plan(self, target: StreamTarget) -> list[MemberPlan]:
        info = self.local.index.services.get(target.service)
        zone = target.zone
        mode = Mode.LOCAL if info is None else mode_of(info)
        plans: list[MemberPlan] = []
        if mode is Mode.LOCAL:
            plans.append(self._local(target, target.service, zone))
        elif mode is Mode.REMOTE:
            assert info is not None and info.remote_discovery_cluster is not None
            if info.remote_service:
                plan = self._remote(
                    target, info.remote_service, ClusterName(info.remote_discovery_cluster), zone
                )
                if plan is not None:
                    plans.append(plan)
        else:
            assert info is not None
            if info.federated_local:
                local_ref = ServiceRef(target.service.namespace, info.federated_local.strip())
                plans.append(self._local(target, local_ref, zone))
            for name, cluster in parse_remote_members(info.federated_remote):
                plan = self._remote(target, name, cluster, zone)
                if plan is not None:
                    plans.append(plan)
        return plans

    def _local(self, target: StreamTarget, service: ServiceRef, zone: str) -> MemberPlan:
        return MemberPlan(
            member=Member(
                cluster=self.local.name,
                service=service,
                view=ViewKey(
                    hostname=target.hostname,
                    node_name=target.node_name,
                    filtering=True,
                    zone=target.zone,
                ),
            ),
            cache=self.local,
            context=EncodeContext(
                mesh=self.mesh,
                requested_port=target.port,
                subscriber_zone=zone,
                trust_domain=self.mesh.trust_domain,
            ),
        )

    def _remote(
        self, target: StreamTarget, service: str, cluster: ClusterName, zone: str
    ) -> MemberPlan | None:
        remote = self.store.serving(cluster) if self.store is not None else None
        if remote is None:
            return None  # not linked, invalid or withdrawn: contributes nothing for now
        return MemberPlan(
            # Remote members are never filtered by node or zone (reference §5.6).
            member=Member(
                cluster=cluster,
                service=ServiceRef(target.service.namespace, service),
                view=ViewKey(hostname=target.hostname, node_name=None, filtering=False),
            ),
            cache=remote.cache,
            context=EncodeContext(
                mesh=self.mesh,
                requested_port=target.port,
                subscriber_zone=zone,
                trust_domain=remote.credentials.trust_domain,
            ),
        )
