"""Unit tests for destination.streams.members and the membership side of the broadcasts.

Scope: parsing `svc@cluster` lists; which members a target has in each mode
(local, remote-discovery, federated); and on live broadcasts, that plan
changes become exactly the Adds and Removes needed: annotation edits, a
member cluster unlinked and linked again, a withdrawn cluster, a trust domain
change (identities re-sent), a mirror label removed, and a lagging stream
catching up across a membership change. Clusters are `ClusterCache`s fed in
memory; the store is a dict of `RemoteCluster` records behind `serving()`.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from destination._proto import destination_pb2 as pb
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcast, Broadcasts, StreamSnapshot
from destination.streams.members import Mode, Planner, StreamRequest, mode_of, parse_remote_members
from destination.streams.stream_queue import StreamQueue
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.cluster_store import ClusterState, RemoteCluster
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterCredentials, ClusterName, ObjectRef, ServiceInfo, ServiceRef
from discovery.ports import PortSet
from tests.unit import builders as b

MESH = MeshSettings(
    controller_namespace=b.CNS,
    trust_domain="east.local",
    enable_h2_upgrade=True,
    force_opaque_transport=False,
)
FEDERATED = "web-federated"
REMOTE_DISCOVERY = "multicluster.linkerd.io/remote-discovery"
LOCAL_DISCOVERY = "multicluster.linkerd.io/local-discovery"
REMOTE_SERVICE = "multicluster.linkerd.io/remote-service"


def new_cache(name: str) -> ClusterCache:
    return ClusterCache(
        name=ClusterName(name),
        metrics=DiscoveryMetrics(CollectorRegistry()),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=False,
    )


class Links:
    """The linked clusters, as the store would report them."""

    def __init__(self) -> None:
        self.clusters: dict[str, RemoteCluster] = {}

    def link(self, name: str, *, trust_domain: str) -> RemoteCluster:
        credentials = ClusterCredentials(
            ref=ObjectRef(b.CNS, f"cluster-credentials-{name}"),
            cluster=ClusterName(name),
            trust_domain=trust_domain,
            cluster_domain="cluster.local",
            kubeconfig=b"",
        )
        cluster = RemoteCluster(
            name=ClusterName(name),
            credentials=credentials,
            cache=new_cache(name),
            state=ClusterState.SYNCED,
        )
        self.clusters[name] = cluster
        return cluster

    def serving(self, name: str) -> RemoteCluster | None:
        cluster = self.clusters.get(name)
        return cluster if cluster is not None and cluster.serving else None


class World:
    """A local cluster and linked remote ones, with the broadcasts of one server."""

    def __init__(self, *, capacity: int = 16) -> None:
        self.local = new_cache("east")
        self.links = Links()
        self.broadcasts = Broadcasts(
            queue_capacity=capacity,
            stuck_deadline_s=60.0,
            metrics=DestinationMetrics(CollectorRegistry()),
            planner=Planner(local=self.local, store=self.links, mesh=MESH),
        )

    def apply(self, cache: ClusterCache, *raws: dict[str, Any]) -> None:
        for raw in raws:
            affected = cache.index.upsert(b.projected(raw))
            cache.topics.refresh(affected)
            if cache is self.local:
                self.broadcasts.services_changed(affected)

    def delete_service(self, cache: ClusterCache, name: str) -> None:
        from discovery.models import Kind

        affected = cache.index.delete(Kind.SERVICE, ObjectRef(b.NS, name))
        cache.topics.refresh(affected)
        if cache is self.local:
            self.broadcasts.services_changed(affected)

    def deploy(self, cache: ClusterCache, service: str, ips: list[str]) -> None:
        """A meshed service whose pods are named after their IPs."""
        pods = [b.pod(f"{service}-{ip.rsplit('.', 1)[1]}", ip=ip, meshed=True) for ip in ips]
        self.apply(cache, b.service(service), *pods)
        self.apply(
            cache,
            b.endpoint_slice(
                f"{service}-slice",
                service=service,
                endpoints=[b.endpoint(ip, pod=f"{service}-{ip.rsplit('.', 1)[1]}") for ip in ips],
            ),
        )

    def open(
        self, service: str
    ) -> tuple[Broadcast, StreamQueue[StreamSnapshot], tuple[bytes, ...]]:
        request = StreamRequest(service=ServiceRef(b.NS, service), port=80, hostname=None)
        return self.broadcasts.open_stream(request=request, on_stuck=lambda: None)

    def clusters_changed(self) -> None:
        self.broadcasts.clusters_changed()


def federated(local: str | None, remote: str | None) -> dict[str, Any]:
    annotations = {}
    if local is not None:
        annotations[LOCAL_DISCOVERY] = local
    if remote is not None:
        annotations[REMOTE_DISCOVERY] = remote
    return b.service(FEDERATED, annotations=annotations)


def ip_text(addr: Any) -> str:
    ip = addr.ip.ipv4
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"


def updates(payloads: tuple[bytes, ...]) -> list[tuple[str, list[str]]]:
    result = []
    for payload in payloads:
        update = pb.Update.FromString(payload)
        kind = update.WhichOneof("update") or ""
        if kind == "add":
            result.append((kind, sorted(ip_text(a.addr) for a in update.add.addrs)))
        else:
            result.append((kind, sorted(ip_text(a) for a in update.remove.addrs)))
    return sorted(result)


def identities(payloads: tuple[bytes, ...]) -> dict[str, str]:
    found = {}
    for payload in payloads:
        update = pb.Update.FromString(payload)
        for addr in update.add.addrs:
            found[ip_text(addr.addr)] = addr.tls_identity.dns_like_identity.name
    return found


def drain(queue: StreamQueue[StreamSnapshot]) -> tuple[bytes, ...]:
    """Everything queued, synchronously (the tests never let the queue block)."""
    payloads: list[bytes] = []
    while len(queue):
        item = queue._items.pop(0)
        queue._delivered = item.snapshot
        payloads += item.payloads
    return tuple(payloads)


# --------------------------------------------------------------------------
# parsing and modes


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param("web@west", [("web", "west")], id="one"),
        pytest.param("web@west,api@north", [("web", "west"), ("api", "north")], id="two"),
        pytest.param("web@west, api@north ", [("web", "west"), ("api", "north")], id="spaces"),
        pytest.param("web,@west,web@,a@b@c,,web@north", [("web", "north")], id="malformed"),
        pytest.param("", [], id="empty"),
        pytest.param(None, [], id="absent"),
    ],
)
def test_remote_members_are_parsed_leniently(
    annotation: str | None, expected: list[tuple[str, str]]
) -> None:
    assert parse_remote_members(annotation) == expected


def info(**fields: Any) -> ServiceInfo:
    return ServiceInfo(
        ref=ServiceRef(b.NS, "x"),
        ports=(),
        is_external_name=False,
        internal_traffic_local=False,
        cluster_ips=(),
        opaque_ports_annotation=None,
        **fields,
    )


def test_federated_annotations_take_precedence_over_the_mirror_label() -> None:
    assert mode_of(info()) is Mode.LOCAL
    assert mode_of(info(remote_discovery_cluster="west")) is Mode.REMOTE
    assert mode_of(info(remote_discovery_cluster="west", federated_local="")) is Mode.FEDERATED
    assert mode_of(info(federated_remote="web@west")) is Mode.FEDERATED


# --------------------------------------------------------------------------
# remote discovery


async def test_a_remote_discovery_mirror_streams_the_remote_pods_with_the_remote_identity() -> None:
    world = World()
    west = world.links.link("west", trust_domain="west.local")
    world.deploy(west.cache, "web", ["10.12.0.1", "10.12.0.2"])
    world.apply(
        world.local,
        b.service("web-west", labels={REMOTE_DISCOVERY: "west", REMOTE_SERVICE: "web"}),
    )
    broadcast, queue, initial = world.open("web-west")
    assert updates(initial) == [("add", ["10.12.0.1", "10.12.0.2"])]
    assert set(identities(initial).values()) == {
        "web.ns.serviceaccount.identity.linkerd.west.local"
    }
    [member] = broadcast.members
    assert (member.cluster, member.service.name, member.view.filtering) == ("west", "web", False)

    world.deploy(west.cache, "web", ["10.12.0.2", "10.12.0.3"])
    assert updates(drain(queue)) == [("add", ["10.12.0.3"]), ("remove", ["10.12.0.1"])]


async def test_removing_the_mirror_label_turns_the_stream_into_a_local_one() -> None:
    world = World()
    west = world.links.link("west", trust_domain="west.local")
    world.deploy(west.cache, "web", ["10.12.0.1"])
    world.apply(
        world.local,
        b.service("web-west", labels={REMOTE_DISCOVERY: "west", REMOTE_SERVICE: "web"}),
    )
    _, queue, _ = world.open("web-west")
    world.apply(world.local, b.service("web-west"))  # the label is gone: an ordinary service
    assert updates(drain(queue)) == [("remove", ["10.12.0.1"])]


# --------------------------------------------------------------------------
# federated services


def federated_world() -> tuple[World, RemoteCluster, RemoteCluster]:
    world = World()
    west = world.links.link("west", trust_domain="west.local")
    north = world.links.link("north", trust_domain="north.local")
    world.deploy(world.local, "web", ["10.11.0.1"])
    world.deploy(west.cache, "web", ["10.12.0.1"])
    world.deploy(north.cache, "web", ["10.13.0.1"])
    world.apply(world.local, federated("web", "web@west,web@north"))
    return world, west, north


async def test_a_federated_service_is_the_union_of_its_members_each_with_its_identity() -> None:
    world, _, _ = federated_world()
    broadcast, _, initial = world.open(FEDERATED)
    assert sorted(m.cluster for m in broadcast.members) == ["east", "north", "west"]
    assert identities(initial) == {
        "10.11.0.1": "web.ns.serviceaccount.identity.linkerd.east.local",
        "10.12.0.1": "web.ns.serviceaccount.identity.linkerd.west.local",
        "10.13.0.1": "web.ns.serviceaccount.identity.linkerd.north.local",
    }


async def test_members_leaving_and_joining_by_annotation_edits() -> None:
    world, _, _ = federated_world()
    _, queue, _ = world.open(FEDERATED)
    world.apply(world.local, federated("web", "web@west"))
    assert updates(drain(queue)) == [("remove", ["10.13.0.1"])]
    world.apply(world.local, federated(None, "web@west,web@north"))
    assert updates(drain(queue)) == [("add", ["10.13.0.1"]), ("remove", ["10.11.0.1"])]
    world.apply(world.local, federated(None, "web@west,web@north"))  # no change
    assert drain(queue) == ()


async def test_a_member_cluster_unlinked_and_linked_again() -> None:
    world, _, north = federated_world()
    _, queue, _ = world.open(FEDERATED)
    del world.links.clusters["north"]
    world.clusters_changed()
    assert updates(drain(queue)) == [("remove", ["10.13.0.1"])]
    again = world.links.link("north", trust_domain="north.local")
    world.deploy(again.cache, "web", ["10.13.0.7"])
    world.clusters_changed()
    assert updates(drain(queue)) == [("add", ["10.13.0.7"])]
    # The old cluster's cache no longer reaches the stream.
    world.deploy(north.cache, "web", ["10.13.0.9"])
    assert drain(queue) == ()


async def test_a_withdrawn_cluster_is_removed_and_restored() -> None:
    world, west, _ = federated_world()
    _, queue, _ = world.open(FEDERATED)
    west.state = ClusterState.WITHDRAWN
    world.clusters_changed()
    assert updates(drain(queue)) == [("remove", ["10.12.0.1"])]
    west.state = ClusterState.SYNCED
    world.clusters_changed()
    assert updates(drain(queue)) == [("add", ["10.12.0.1"])]


async def test_a_stale_cluster_keeps_its_endpoints() -> None:
    world, west, _ = federated_world()
    _, queue, _ = world.open(FEDERATED)
    west.state = ClusterState.STALE
    world.clusters_changed()
    assert drain(queue) == ()


async def test_a_trust_domain_change_re_sends_identities_without_removes() -> None:
    world, west, _ = federated_world()
    _, queue, _ = world.open(FEDERATED)
    west.credentials = ClusterCredentials(
        ref=west.credentials.ref,
        cluster=west.name,
        trust_domain="west.example",
        cluster_domain="cluster.local",
        kubeconfig=b"",
    )
    world.clusters_changed()
    payloads = drain(queue)
    assert updates(payloads) == [("add", ["10.12.0.1"])]
    assert identities(payloads) == {
        "10.12.0.1": "web.ns.serviceaccount.identity.linkerd.west.example"
    }


async def test_deleting_the_federated_service_removes_every_member() -> None:
    world, _, _ = federated_world()
    _, queue, _ = world.open(FEDERATED)
    world.delete_service(world.local, FEDERATED)
    # One Remove for the three members' endpoints; the stream stays open (Linkerd ends it).
    assert updates(drain(queue)) == [("remove", ["10.11.0.1", "10.12.0.1", "10.13.0.1"])]


async def test_a_member_service_created_later_is_added() -> None:
    world = World()
    west = world.links.link("west", trust_domain="west.local")
    world.apply(world.local, federated(None, "api@west"))
    _, queue, initial = world.open(FEDERATED)
    assert initial == ()
    world.deploy(west.cache, "api", ["10.12.0.5"])
    assert updates(drain(queue)) == [("add", ["10.12.0.5"])]


async def test_a_lagging_stream_catches_up_across_a_membership_change() -> None:
    world, _, _ = federated_world()
    world.broadcasts = Broadcasts(
        queue_capacity=1,
        stuck_deadline_s=60.0,
        metrics=DestinationMetrics(CollectorRegistry()),
        planner=Planner(local=world.local, store=world.links, mesh=MESH),
    )
    broadcast, queue, _ = world.open(FEDERATED)
    opened = broadcast.snapshot
    world.apply(world.local, federated("web", "web@west"))  # north leaves
    world.apply(world.local, federated(None, "web@west"))  # local leaves: overflow
    assert queue.lagging
    payloads = await queue.next()
    assert updates(payloads) == [("remove", ["10.11.0.1", "10.13.0.1"])]
    # Every stream making the same jump shares one encoding.
    assert broadcast.catch_up(opened, broadcast.snapshot) is payloads
