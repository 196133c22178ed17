"""Unit tests for discovery.topics: address sets, view filters, diffs and sinks.

Scope: `build_addresses` (target port by service port name or number, slices
merged, readiness, missing pods, non-pod targets, gateway annotations,
set-level labels, opacity, workload owners); the per-view filters of reference
§5.4 (hostname, internalTrafficPolicy Local, topology hints, address family);
`diff_snapshots`; and `Topics` end to end on an in-memory `ClusterIndex` fed
with raw objects: initial snapshots, Adds and Removes as objects come, change
and go, no call when nothing changed, one diff object shared by every sink of
a view, cleanup on unsubscribe, and the invariant that sinks are called
synchronously and never re-entered (checked over 1,000 random events).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from discovery.index import ClusterIndex
from discovery.models import Address, AddressKey, IpFamily, Kind, ObjectRef, OwnerRef, ServiceRef
from discovery.ports import PortSet
from discovery.topics import (
    EMPTY_SNAPSHOT,
    AddressDiff,
    AddressSnapshot,
    Subscription,
    Topics,
    ViewContext,
    ViewKey,
    build_addresses,
    diff_snapshots,
    filter_addresses,
)
from tests.unit import builders as b

WEB = ServiceRef(b.NS, "web")
OPAQUE_PORTS = "config.linkerd.io/opaque-ports"
DEFAULT_OPAQUE = PortSet.from_ports([3306, 5432])
EVERYONE = ViewKey()  # no hostname, no node, filtering on


class Recorder:
    """A sink that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[AddressDiff, AddressSnapshot]] = []

    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        self.calls.append((diff, snapshot))

    def last(self) -> AddressDiff:
        assert self.calls, "the sink was never called"
        return self.calls[-1][0]


class World:
    """An index and its topics, fed with raw objects the way ClusterCache feeds them."""

    def __init__(self, *, enable_ipv6: bool = True) -> None:
        self.index = ClusterIndex()
        self.topics = Topics(
            self.index, default_opaque_ports=DEFAULT_OPAQUE, enable_ipv6=enable_ipv6
        )

    def apply(self, *raws: dict[str, Any], kind: Kind | None = None) -> None:
        for raw in raws:
            self.topics.refresh(self.index.upsert(b.projected(raw, kind)))

    def delete(self, kind: Kind, name: str, namespace: str = b.NS) -> None:
        self.topics.refresh(self.index.delete(kind, ObjectRef(namespace, name)))

    def subscribe(
        self, port: int = 80, *, key: ViewKey = EVERYONE, service: ServiceRef = WEB
    ) -> tuple[Recorder, Subscription]:
        sink = Recorder()
        return sink, self.topics.subscribe(service=service, port=port, key=key, sink=sink)

    def build(self, port: int = 80) -> tuple[dict[AddressKey, Address], dict[str, str]]:
        return build_addresses(self.index, WEB, port, default_opaque_ports=DEFAULT_OPAQUE)


def endpoints(addresses: Iterable[Address] | Mapping[AddressKey, Address]) -> list[str]:
    """`ip:port` of each address, sorted: what a proxy can tell apart."""
    values = addresses.values() if isinstance(addresses, Mapping) else addresses
    return sorted(f"{a.ip}:{a.port}" for a in values)


def two_pod_world(**kwargs: Any) -> World:
    """Service web (http 80 -> 8080) with pods web-1 (10.0.0.1) and web-2 (10.0.0.2)."""
    world = World(**kwargs)
    world.apply(
        b.service(),
        b.pod("web-1", ip="10.0.0.1"),
        b.pod("web-2", ip="10.0.0.2"),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")]
        ),
    )
    return world


# --------------------------------------------------------------------------
# build_addresses: target port


@pytest.mark.parametrize(
    ("requested", "expected_port"),
    [
        pytest.param(80, 8080, id="by-name-http"),
        pytest.param(81, 9990, id="by-name-admin"),
        pytest.param(82, 7000, id="unnamed-service-port-matches-unnamed-slice-port"),
        pytest.param(9999, 9999, id="undeclared-port-is-the-requested-number"),
    ],
)
def test_the_target_port_is_the_slice_port_named_like_the_service_port(
    requested: int, expected_port: int
) -> None:
    world = World()
    world.apply(
        b.service(ports=[("http", 80), ("admin", 81), (None, 82)]),
        b.pod("web-1"),
        b.endpoint_slice(
            ports=[("http", 8080), ("admin", 9990), (None, 7000)],
            endpoints=[b.endpoint("10.0.0.1", pod="web-1")],
        ),
    )
    addresses, _ = world.build(requested)
    assert endpoints(addresses) == [f"10.0.0.1:{expected_port}"]


def test_a_service_port_name_missing_from_the_slice_gives_nothing() -> None:
    world = World()
    world.apply(
        b.service(ports=[("grpc", 80)]),
        b.pod("web-1"),
        b.endpoint_slice(ports=[("http", 8080)], endpoints=[b.endpoint("10.0.0.1", pod="web-1")]),
    )
    assert world.build(80) == ({}, {"service": "web", "namespace": b.NS})


@pytest.mark.parametrize(
    ("slice_ports", "requested", "expected"),
    [
        pytest.param(None, 9999, [], id="null-ports-by-number-contribute-nothing"),
        pytest.param((), 9999, ["10.0.0.1:9999"], id="empty-ports-by-number-contribute"),
        pytest.param((), 80, [], id="empty-ports-by-name-contribute-nothing"),
        pytest.param(None, 80, [], id="null-ports-by-name-contribute-nothing"),
    ],
)
def test_slice_ports_null_and_empty_follow_the_reference(
    slice_ports: tuple[b.PortSpec, ...] | None, requested: int, expected: list[str]
) -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1"),
        b.endpoint_slice(ports=slice_ports, endpoints=[b.endpoint("10.0.0.1", pod="web-1")]),
    )
    assert endpoints(world.build(requested)[0]) == expected


def test_a_missing_service_has_no_addresses_and_no_labels() -> None:
    world = World()
    world.apply(b.pod("web-1"), b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")]))
    assert world.build(80) == ({}, {})


# --------------------------------------------------------------------------
# build_addresses: which endpoints


def test_every_slice_of_the_service_is_merged() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1", ip="10.0.0.1"),
        b.pod("web-2", ip="10.0.0.2"),
        b.pod("other", ip="10.0.9.9"),
        b.endpoint_slice("web-a", endpoints=[b.endpoint("10.0.0.1", pod="web-1")]),
        b.endpoint_slice("web-b", endpoints=[b.endpoint("10.0.0.2", pod="web-2")]),
        b.endpoint_slice(
            "other-a", service="other", endpoints=[b.endpoint("10.0.9.9", pod="other")]
        ),
    )
    assert endpoints(world.build()[0]) == ["10.0.0.1:8080", "10.0.0.2:8080"]


@pytest.mark.parametrize(
    ("ready", "kept"),
    [
        pytest.param(True, True, id="ready"),
        pytest.param(None, True, id="unset-counts-as-ready"),
        pytest.param(False, False, id="not-ready-skipped"),
    ],
)
def test_only_ready_endpoints_are_addresses(ready: bool | None, kept: bool) -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1"),
        b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1", ready=ready)]),
    )
    assert endpoints(world.build()[0]) == (["10.0.0.1:8080"] if kept else [])


def test_an_endpoint_whose_pod_is_not_cached_is_skipped() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1"),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")]
        ),
    )
    assert endpoints(world.build()[0]) == ["10.0.0.1:8080"]


@pytest.mark.parametrize(
    "target_kind",
    [
        pytest.param("ExternalWorkload", id="external-workload-not-cached"),
        pytest.param("Node", id="other-kind-ignored"),
    ],
)
def test_endpoints_whose_target_is_unknown_are_skipped(target_kind: str) -> None:
    world = World()
    world.apply(
        b.service(),
        b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1", target_kind=target_kind)]),
    )
    assert world.build()[0] == {}


def test_an_external_workload_endpoint_carries_the_workload() -> None:
    world = World()
    world.apply(
        b.service(),
        b.external_workload(
            "vm-1", owner=("VirtualMachine", "vm"), annotations={OPAQUE_PORTS: "http"}
        ),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.9.1", pod="vm-1", target_kind="ExternalWorkload")]
        ),
    )
    (address,) = world.build()[0].values()
    assert address.pod is None
    assert address.external_workload is not None
    assert address.external_workload.ref == ObjectRef(b.NS, "vm-1")
    assert address.owner is not None and address.owner.name == "vm"
    assert address.opaque is True  # the annotation names the EW port "http" (8080)
    assert (address.gateway_identity, address.remote_fq_name) == (None, None)


def test_fqdn_slices_are_skipped() -> None:
    world = World()
    world.apply(
        b.service(),
        b.endpoint_slice(address_type="FQDN", endpoints=[b.endpoint("db.example.com")]),
    )
    assert world.build()[0] == {}


def test_a_pod_address_carries_the_endpoint_and_pod_fields() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-0", owner=("StatefulSet", "web")),
        b.endpoint_slice(
            endpoints=[
                b.endpoint(
                    "10.0.0.1",
                    pod="web-0",
                    hostname="web-0",
                    node="node-b",
                    zone="zone-b",
                    hints=["zone-b"],
                )
            ]
        ),
    )
    (address,) = world.build()[0].values()
    assert address.key == ("10.0.0.1", 8080)
    assert address.family is IpFamily.V4
    assert (address.hostname, address.zone, address.node_name) == ("web-0", "zone-b", "node-b")
    assert address.zone_hints == frozenset({"zone-b"})
    assert address.pod is world.index.pods[ObjectRef(b.NS, "web-0")]
    assert address.owner == OwnerRef("StatefulSet", "web")
    assert (address.gateway_identity, address.remote_fq_name) == (None, None)


def test_the_owner_of_a_replica_set_pod_is_its_deployment() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1", owner=("ReplicaSet", "web-5d8f")),
        b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")]),
    )
    world.apply(b.replica_set("web-5d8f", owner=("Deployment", "web")), kind=Kind.REPLICA_SET)
    (address,) = world.build()[0].values()
    assert address.owner == OwnerRef("Deployment", "web")


GATEWAY_ANNOTATIONS = {
    "mirror.linkerd.io/remote-gateway-identity": "gw.mc.serviceaccount.identity.linkerd.west",
    "mirror.linkerd.io/remote-svc-fq-name": "web.ns.svc.west.local",
}


def test_an_endpoint_without_target_carries_the_gateway_annotations_of_its_slice() -> None:
    world = World()
    world.apply(
        b.service("web"),
        b.pod("web-1"),
        b.endpoint_slice(
            labels={"mirror.linkerd.io/cluster-name": "west"},
            annotations=GATEWAY_ANNOTATIONS,
            endpoints=[b.endpoint("172.18.0.5", node=None), b.endpoint("10.0.0.1", pod="web-1")],
        ),
    )
    addresses, labels = world.build()
    gateway = addresses[("172.18.0.5", 8080)]
    assert gateway.pod is None
    assert gateway.owner is None
    assert gateway.opaque is False
    assert (
        gateway.gateway_identity == GATEWAY_ANNOTATIONS["mirror.linkerd.io/remote-gateway-identity"]
    )
    assert gateway.remote_fq_name == "web.ns.svc.west.local"
    pod_address = addresses[("10.0.0.1", 8080)]
    assert (pod_address.gateway_identity, pod_address.remote_fq_name) == (None, None)
    assert labels == {
        "service": "web",
        "namespace": b.NS,
        "target_cluster": "west",
        "target_service": "web",
        "target_service_namespace": "ns",
    }


def test_set_labels_name_the_service_and_namespace() -> None:
    world = two_pod_world()
    assert world.build()[1] == {"service": "web", "namespace": b.NS}


def test_set_labels_of_a_service_without_slices_still_name_it() -> None:
    world = World()
    world.apply(b.service())
    assert world.build() == ({}, {"service": "web", "namespace": b.NS})


@pytest.mark.parametrize(
    ("annotation", "slice_port", "opaque"),
    [
        pytest.param(None, 3306, True, id="absent-annotation-uses-defaults"),
        pytest.param(None, 8080, False, id="absent-annotation-port-not-default"),
        pytest.param("", 3306, False, id="empty-annotation-means-no-opaque-ports"),
        pytest.param("8080", 8080, True, id="annotated-port"),
        pytest.param("http", 8080, True, id="annotated-named-port"),
        pytest.param("9000-9100", 8080, False, id="annotated-other-ports"),
    ],
)
def test_a_pod_address_is_opaque_by_the_pod_annotation_or_the_defaults(
    annotation: str | None, slice_port: int, opaque: bool
) -> None:
    annotations = None if annotation is None else {"config.linkerd.io/opaque-ports": annotation}
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1", annotations=annotations, app_ports=[("http", 8080)]),
        b.endpoint_slice(
            ports=[("http", slice_port)], endpoints=[b.endpoint("10.0.0.1", pod="web-1")]
        ),
    )
    (address,) = world.build()[0].values()
    assert address.opaque is opaque


# --------------------------------------------------------------------------
# filters (reference §5.4), through views of Topics


def test_a_hostname_view_keeps_only_that_hostname() -> None:
    world = World()
    world.apply(
        b.service(),
        *(b.pod(f"db-{i}", ip=f"10.0.0.{i + 1}") for i in range(3)),
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="db-0", hostname="db-0"),
                b.endpoint("10.0.0.2", pod="db-1", hostname="db-1"),
                b.endpoint("10.0.0.3", pod="db-2"),  # no hostname: never selected by one
            ]
        ),
    )
    _, one = world.subscribe(key=ViewKey(hostname="db-1"))
    _, none = world.subscribe(key=ViewKey(hostname="db-9"))
    _, everyone = world.subscribe()
    assert endpoints(one.initial.addresses) == ["10.0.0.2:8080"]
    assert none.initial.addresses == {}
    assert len(everyone.initial.addresses) == 3


def itp_world(policy: str | None) -> World:
    world = World()
    world.apply(
        b.node("node-a", zone="zone-a"),
        b.node("node-b", zone="zone-b"),
        b.service(internal_traffic_policy=policy),
        b.pod("web-1", ip="10.0.0.1", node="node-a"),
        b.pod("web-2", ip="10.0.0.2", node="node-b"),
        b.endpoint_slice(
            annotations=GATEWAY_ANNOTATIONS,
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-1", node="node-a"),
                b.endpoint("10.0.0.2", pod="web-2", node="node-b"),
                b.endpoint("10.0.0.3", node="node-a"),  # no targetRef
            ],
        ),
    )
    return world


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(ViewKey(node_name="node-a"), ["10.0.0.1:8080"], id="node-a"),
        pytest.param(ViewKey(node_name="node-b"), ["10.0.0.2:8080"], id="node-b"),
        pytest.param(ViewKey(node_name=""), [], id="empty-node-keeps-none"),
        pytest.param(ViewKey(node_name="node-z"), [], id="unknown-node-keeps-none"),
        pytest.param(
            ViewKey(node_name="node-a", filtering=False),
            ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"],
            id="no-filtering-keeps-all",
        ),
    ],
)
def test_internal_traffic_policy_local_keeps_pods_on_the_subscriber_node(
    key: ViewKey, expected: list[str]
) -> None:
    _, subscription = itp_world("Local").subscribe(key=key)
    assert endpoints(subscription.initial.addresses) == expected


def test_internal_traffic_policy_cluster_keeps_every_address() -> None:
    _, subscription = itp_world("Cluster").subscribe(key=ViewKey(node_name="node-a"))
    assert len(subscription.initial.addresses) == 3


def test_switching_the_policy_to_local_refilters_and_removes_off_node_addresses() -> None:
    world = itp_world(None)
    sink, _ = world.subscribe(key=ViewKey(node_name="node-a"))
    world.apply(b.service(internal_traffic_policy="Local"))
    diff = sink.last()
    assert diff.added == ()
    assert endpoints(diff.removed) == ["10.0.0.2:8080", "10.0.0.3:8080"]
    world.apply(b.service(internal_traffic_policy="Cluster"))
    assert endpoints(sink.last().added) == ["10.0.0.2:8080", "10.0.0.3:8080"]
    assert sink.last().removed == ()


def hints_world(hints: list[list[str] | None]) -> World:
    world = World()
    world.apply(
        b.node("node-a", zone="zone-a"),
        b.node("node-n", zone=None),
        b.service(),
        *(b.pod(f"web-{i}", ip=f"10.0.0.{i + 1}") for i in range(len(hints))),
        b.endpoint_slice(
            endpoints=[
                b.endpoint(f"10.0.0.{i + 1}", pod=f"web-{i}", hints=h) for i, h in enumerate(hints)
            ]
        ),
    )
    return world


@pytest.mark.parametrize(
    ("hints", "node", "filtering", "expected"),
    [
        pytest.param(
            [["zone-a"], ["zone-b"], ["zone-a", "zone-b"]],
            "node-a",
            True,
            ["10.0.0.1:8080", "10.0.0.3:8080"],
            id="all-hinted-keep-the-node-zone",
        ),
        pytest.param(
            [["zone-a"], None, ["zone-b"]],
            "node-a",
            True,
            ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"],
            id="any-unhinted-keeps-all",
        ),
        pytest.param(
            [["zone-b"], ["zone-c"]],
            "node-a",
            True,
            ["10.0.0.1:8080", "10.0.0.2:8080"],
            id="no-match-keeps-all",
        ),
        pytest.param(
            [["zone-a"], ["zone-b"]],
            "node-n",
            True,
            ["10.0.0.1:8080", "10.0.0.2:8080"],
            id="node-without-zone-keeps-all",
        ),
        pytest.param(
            [["zone-a"], ["zone-b"]],
            "",
            True,
            ["10.0.0.1:8080", "10.0.0.2:8080"],
            id="no-node-keeps-all",
        ),
        pytest.param(
            [["zone-a"], ["zone-b"]],
            "node-a",
            False,
            ["10.0.0.1:8080", "10.0.0.2:8080"],
            id="no-filtering-ignores-hints",
        ),
    ],
)
def test_topology_hints_keep_the_subscriber_zone_only_when_every_address_is_hinted(
    hints: list[list[str] | None], node: str, filtering: bool, expected: list[str]
) -> None:
    world = hints_world(hints)
    key = ViewKey(filtering=filtering, zone=world.index.node_zone(node))
    _, subscription = world.subscribe(key=key)
    assert endpoints(subscription.initial.addresses) == expected


def test_hints_are_judged_after_the_hostname_filter() -> None:
    world = World()
    world.apply(
        b.node("node-a", zone="zone-a"),
        b.service(),
        b.pod("web-0"),
        b.pod("web-1", ip="10.0.0.2"),
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-0", hostname="web-0", hints=["zone-b"]),
                b.endpoint("10.0.0.2", pod="web-1", hostname="web-1"),
            ]
        ),
    )
    _, subscription = world.subscribe(key=ViewKey(hostname="web-0", node_name="node-a"))
    assert endpoints(subscription.initial.addresses) == ["10.0.0.1:8080"]


def dual_stack_world(*, enable_ipv6: bool) -> World:
    """web-1 is dual-stack (one slice per family), web-2 IPv4 only, a v6 gateway address."""
    world = World(enable_ipv6=enable_ipv6)
    world.apply(
        b.service(),
        b.pod("web-1", ips=["10.0.0.1", "fd00::1"]),
        b.pod("web-2", ips=["10.0.0.2"]),
        b.endpoint_slice(
            "web-v4",
            endpoints=[b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")],
        ),
        b.endpoint_slice(
            "web-v6",
            address_type="IPv6",
            endpoints=[b.endpoint("fd00::1", pod="web-1"), b.endpoint("fd00::99")],
        ),
    )
    return world


@pytest.mark.parametrize(
    ("enable_ipv6", "expected"),
    [
        pytest.param(
            True,
            ["10.0.0.2:8080", "fd00::1:8080", "fd00::99:8080"],
            id="ipv6-enabled-prefers-v6-per-pod",
        ),
        pytest.param(
            False,
            ["10.0.0.1:8080", "10.0.0.2:8080", "fd00::99:8080"],
            id="ipv6-disabled-drops-pod-v6-only",
        ),
    ],
)
def test_address_family_selection_is_per_pod(enable_ipv6: bool, expected: list[str]) -> None:
    world = dual_stack_world(enable_ipv6=enable_ipv6)
    _, subscription = world.subscribe()
    assert endpoints(subscription.initial.addresses) == expected
    v6 = [a for a in subscription.initial.addresses.values() if ":" in a.ip]
    assert all(a.family is IpFamily.V6 for a in v6)


def test_filter_addresses_is_pure_and_keys_by_ip_and_port() -> None:
    world = two_pod_world()
    full, _ = world.build()
    snapshot = dict(full)
    selected = filter_addresses(
        full,
        context=ViewContext(key=ViewKey(hostname="nobody"), zone=""),
        service=world.index.services[WEB],
        enable_ipv6=True,
    )
    assert selected == {}
    assert full == snapshot
    everything = filter_addresses(
        full, context=ViewContext(key=ViewKey(), zone=""), service=None, enable_ipv6=True
    )
    assert everything == full


# --------------------------------------------------------------------------
# diff_snapshots


def _snapshot(*addresses: Address, labels: Mapping[str, str] | None = None) -> AddressSnapshot:
    return AddressSnapshot(
        addresses=MappingProxyType({a.key: a for a in addresses}),
        labels=MappingProxyType(dict(labels or {"service": "web"})),
    )


def _address(ip: str, *, zone: str | None = None) -> Address:
    return Address(
        ip=ip,
        port=8080,
        family=IpFamily.V4,
        hostname=None,
        zone=zone,
        zone_hints=None,
        node_name=None,
        pod=None,
        owner=None,
        opaque=False,
    )


A, B, C = _address("10.0.0.1"), _address("10.0.0.2"), _address("10.0.0.3")
A_MOVED = _address("10.0.0.1", zone="zone-b")


@pytest.mark.parametrize(
    ("old", "new", "added", "removed"),
    [
        pytest.param((), (), (), (), id="nothing"),
        pytest.param((), (A, B), (A, B), (), id="all-new"),
        pytest.param((A, B), (), (), (A, B), id="all-gone"),
        pytest.param((A, B), (B, C), (C,), (A,), id="one-in-one-out"),
        pytest.param((A, B), (A_MOVED, B), (A_MOVED,), (), id="changed-is-an-add"),
        pytest.param((A, B), (B, A), (), (), id="same-set-other-order"),
    ],
)
def test_diff_snapshots_adds_new_and_changed_and_removes_gone_as_they_were(
    old: tuple[Address, ...],
    new: tuple[Address, ...],
    added: tuple[Address, ...],
    removed: tuple[Address, ...],
) -> None:
    diff = diff_snapshots(_snapshot(*old), _snapshot(*new, labels={"service": "new"}))
    assert diff.added == added
    assert diff.removed == removed
    assert diff.labels == {"service": "new"}
    assert bool(diff) is bool(added or removed)


def test_removed_addresses_are_the_ones_last_sent() -> None:
    diff = diff_snapshots(_snapshot(A_MOVED), _snapshot())
    assert diff.removed[0] is A_MOVED


def test_snapshots_are_read_only_and_versioned() -> None:
    first, second = _snapshot(A), _snapshot(A)
    assert second.version > first.version > EMPTY_SNAPSHOT.version == 0
    with pytest.raises(TypeError):
        first.addresses[B.key] = B  # type: ignore[index]


# --------------------------------------------------------------------------
# Topics: subscriptions and diffs


def test_a_subscription_starts_with_the_whole_filtered_set_and_no_call() -> None:
    world = two_pod_world()
    sink, subscription = world.subscribe()
    assert endpoints(subscription.initial.addresses) == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert subscription.initial.labels == {"service": "web", "namespace": b.NS}
    assert sink.calls == []


def test_a_subscription_to_nothing_starts_empty() -> None:
    world = World()
    _, subscription = world.subscribe(service=ServiceRef(b.NS, "ghost"))
    assert subscription.initial.addresses == {}


def test_a_pod_arriving_after_its_slice_is_then_added() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1", ip="10.0.0.1"),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")]
        ),
    )
    sink, subscription = world.subscribe()
    assert endpoints(subscription.initial.addresses) == ["10.0.0.1:8080"]
    world.apply(b.pod("web-2", ip="10.0.0.2"))
    assert len(sink.calls) == 1
    diff, snapshot = sink.calls[0]
    assert endpoints(diff.added) == ["10.0.0.2:8080"]
    assert diff.removed == ()
    assert endpoints(snapshot.addresses) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def test_a_deleted_pod_is_removed_and_its_return_added() -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    world.delete(Kind.POD, "web-2")
    assert endpoints(sink.last().removed) == ["10.0.0.2:8080"]
    world.apply(b.pod("web-2", ip="10.0.0.2"))
    assert endpoints(sink.last().added) == ["10.0.0.2:8080"]


def test_an_endpoint_turning_not_ready_is_removed() -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    world.apply(
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-1"),
                b.endpoint("10.0.0.2", pod="web-2", ready=False),
            ]
        )
    )
    assert sink.last().added == ()
    assert endpoints(sink.last().removed) == ["10.0.0.2:8080"]


def test_deleting_the_service_removes_everything_and_recreating_adds_it_back() -> None:
    world = two_pod_world()
    sink, subscription = world.subscribe()
    held = dict(subscription.initial.addresses)

    world.delete(Kind.SERVICE, "web")
    diff, snapshot = sink.calls[-1]
    assert diff.added == ()
    assert {a.key: a for a in diff.removed} == held
    assert snapshot.addresses == {}
    assert diff.labels == {"service": "web", "namespace": b.NS}

    world.apply(b.service())
    diff, snapshot = sink.calls[-1]
    assert {a.key: a for a in diff.added} == held
    assert diff.removed == ()
    assert len(sink.calls) == 2


def test_a_pod_whose_ip_changes_is_removed_at_its_old_address() -> None:
    """Linkerd keys by pod and leaves the old IP behind (quirk §5.5); we do not."""
    world = two_pod_world()
    sink, _ = world.subscribe()
    world.apply(
        b.pod("web-2", ip="10.0.0.9"),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.9", pod="web-2")]
        ),
    )
    added = [a for diff, _ in sink.calls for a in diff.added]
    removed = [a for diff, _ in sink.calls for a in diff.removed]
    assert endpoints(added) == ["10.0.0.9:8080"]
    assert endpoints(removed) == ["10.0.0.2:8080"]


def test_a_slice_deleted_after_its_pods_still_removes_every_address() -> None:
    """Removal never depends on looking up pods that are already gone (quirk 18)."""
    world = two_pod_world()
    world.apply(
        b.endpoint_slice("web-other", endpoints=[b.endpoint("10.0.0.3", pod="web-3")]),
        b.pod("web-3", ip="10.0.0.3"),
    )
    sink, subscription = world.subscribe()
    assert endpoints(subscription.initial.addresses) == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
        "10.0.0.3:8080",
    ]
    world.delete(Kind.POD, "web-1")
    world.delete(Kind.POD, "web-2")
    world.delete(Kind.ENDPOINT_SLICE, "web-abc")
    assert endpoints(sink.calls[-1][1].addresses) == ["10.0.0.3:8080"]


def test_deleting_every_slice_removes_everything() -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    world.delete(Kind.ENDPOINT_SLICE, "web-abc")
    assert endpoints(sink.last().removed) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def test_a_pod_label_change_resends_the_address_as_an_add() -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    world.apply(b.pod("web-1", ip="10.0.0.1", meshed=True, labels={"version": "2"}))
    diff = sink.last()
    assert endpoints(diff.added) == ["10.0.0.1:8080"]
    assert diff.removed == ()
    (address,) = diff.added
    assert address.pod is not None
    assert address.pod.meshed
    assert address.pod.label_map()["version"] == "2"


def test_a_replica_set_adopted_by_a_deployment_resends_its_pods_with_the_owner() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1", owner=("ReplicaSet", "web-5d8f")),
        b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")]),
    )
    sink, subscription = world.subscribe()
    (before,) = subscription.initial.addresses.values()
    assert before.owner == OwnerRef("ReplicaSet", "web-5d8f")
    world.apply(b.replica_set("web-5d8f", owner=("Deployment", "web")), kind=Kind.REPLICA_SET)
    (after,) = sink.last().added
    assert after.owner == OwnerRef("Deployment", "web")


def test_a_pod_changing_ip_is_a_remove_of_the_old_and_an_add_of_the_new() -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    world.apply(
        b.pod("web-1", ip="10.0.0.7"),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.0.7", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")]
        ),
    )
    diff = sink.last()
    assert endpoints(diff.added) == ["10.0.0.7:8080"]
    assert endpoints(diff.removed) == ["10.0.0.1:8080"]


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(lambda w: w.apply(b.service()), id="same-service-again"),
        pytest.param(lambda w: w.apply(b.pod("web-1", resource_version="99")), id="pod-rv-only"),
        pytest.param(lambda w: w.apply(b.node("node-a", zone="zone-z")), id="node"),
        pytest.param(lambda w: w.apply(b.pod("unrelated", ip="10.9.9.9")), id="unrelated-pod"),
        pytest.param(
            lambda w: w.apply(b.service(ports=[("http", 80), ("admin", 9990)])),
            id="other-service-port",
        ),
        pytest.param(lambda w: w.topics.refresh([WEB, WEB]), id="bare-refresh"),
        pytest.param(
            lambda w: w.apply(
                b.endpoint_slice(
                    endpoints=[
                        b.endpoint("10.0.0.1", pod="web-1"),
                        b.endpoint("10.0.0.2", pod="web-2"),
                    ],
                    resource_version="7",
                )
            ),
            id="same-slice-new-version",
        ),
    ],
)
def test_an_event_that_changes_nothing_calls_no_sink(event: Any) -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    event(world)
    assert sink.calls == []


def test_a_change_of_set_labels_alone_re_sends_the_whole_set_with_the_new_labels() -> None:
    world = two_pod_world()
    sink, _ = world.subscribe()
    both = [b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")]
    mirrored = {"mirror.linkerd.io/cluster-name": "west"}
    world.apply(b.endpoint_slice(labels=mirrored, endpoints=both))
    diff, snapshot = sink.calls[-1]
    assert sorted(a.ip for a in diff.added) == ["10.0.0.1", "10.0.0.2"]
    assert diff.removed == ()
    assert diff.labels == snapshot.labels
    assert diff.labels["target_cluster"] == "west"


def test_every_sink_of_a_view_gets_the_same_diff_and_snapshot_objects() -> None:
    world = two_pod_world()
    first, _ = world.subscribe()
    second, _ = world.subscribe()
    assert world.topics.views() == 1
    world.delete(Kind.POD, "web-2")
    assert len(first.calls) == len(second.calls) == 1
    assert first.calls[0][0] is second.calls[0][0]
    assert first.calls[0][1] is second.calls[0][1]


def test_a_late_subscriber_starts_from_the_view_snapshot() -> None:
    world = two_pod_world()
    early, first = world.subscribe()
    world.delete(Kind.POD, "web-2")
    _, late = world.subscribe()
    assert late.initial is early.calls[-1][1]
    assert late.initial is not first.initial


def test_different_views_of_one_port_get_their_own_filtered_diffs() -> None:
    world = World()
    world.apply(
        b.service(),
        b.pod("db-0", ip="10.0.0.1"),
        b.pod("db-1", ip="10.0.0.2"),
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="db-0", hostname="db-0"),
                b.endpoint("10.0.0.2", pod="db-1", hostname="db-1"),
            ]
        ),
    )
    everyone, _ = world.subscribe()
    db0, _ = world.subscribe(key=ViewKey(hostname="db-0"))
    assert world.topics.views() == 2
    world.delete(Kind.POD, "db-1")
    assert endpoints(everyone.last().removed) == ["10.0.0.2:8080"]
    assert db0.calls == []


def test_ports_of_one_service_are_separate_topics() -> None:
    world = World()
    world.apply(
        b.service(ports=[("http", 80), ("admin", 81)]),
        b.pod("web-1"),
        b.endpoint_slice(
            ports=[("http", 8080), ("admin", 9990)],
            endpoints=[b.endpoint("10.0.0.1", pod="web-1")],
        ),
    )
    http, _ = world.subscribe(80)
    admin, _ = world.subscribe(81)
    assert world.topics.subscribed_services() == 1
    assert world.topics.views() == 2
    world.apply(
        b.endpoint_slice(
            ports=[("http", 8080)],
            endpoints=[b.endpoint("10.0.0.1", pod="web-1")],
        )
    )
    assert http.calls == []
    assert endpoints(admin.last().removed) == ["10.0.0.1:9990"]


def test_unsubscribing_the_last_sink_removes_view_topic_and_service() -> None:
    world = two_pod_world()
    first, one = world.subscribe()
    _, two = world.subscribe()
    _, three = world.subscribe(key=ViewKey(hostname="web-1"))
    _, four = world.subscribe(81)
    for subscription in (one, two, three):
        subscription.close()
    assert world.topics.views() == 1
    four.close()
    four.close()  # idempotent
    assert world.topics.views() == 0
    assert world.topics.subscribed_services() == 0
    world.delete(Kind.POD, "web-1")
    assert first.calls == []


def test_closing_one_of_two_sinks_keeps_the_other_fed() -> None:
    world = two_pod_world()
    gone, first = world.subscribe()
    kept, second = world.subscribe()
    first.close()
    world.delete(Kind.POD, "web-1")
    assert gone.calls == []
    assert len(kept.calls) == 1
    assert world.topics.views() == 1
    del second


def test_resubscribing_after_cleanup_rebuilds_from_the_index() -> None:
    world = two_pod_world()
    _, subscription = world.subscribe()
    subscription.close()
    world.delete(Kind.POD, "web-2")
    _, again = world.subscribe()
    assert endpoints(again.initial.addresses) == ["10.0.0.1:8080"]


# --------------------------------------------------------------------------
# the synchronous, non-reentrant sink invariant


class GuardedSink:
    """Replays every diff onto its own copy and asserts it is never re-entered."""

    def __init__(self, topics: Topics, key: ViewKey, churn: bool = False) -> None:
        self.topics = topics
        self.key = key
        self.churn = churn
        self.inside = False
        self.state: dict[AddressKey, Address] = {}
        self.calls = 0

    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        assert not self.inside, "sink re-entered"
        self.inside = True
        try:
            self.calls += 1
            assert diff, "an empty diff was delivered"
            for address in diff.removed:
                assert self.state.pop(address.key) == address
            for address in diff.added:
                assert self.state.get(address.key) != address
                self.state[address.key] = address
            assert self.state == snapshot.addresses
            if self.churn:
                # A stream opening and closing during the fan-out, on this view and another.
                for key in (self.key, self.key._replace(hostname="churn")):
                    self.topics.subscribe(service=WEB, port=80, key=key, sink=Recorder()).close()
        finally:
            self.inside = False


def _random_event(world: World, rng: random.Random) -> None:
    pods = [f"web-{i}" for i in range(6)]
    choice = rng.random()
    if choice < 0.35:
        name = rng.choice(pods)
        world.apply(
            b.pod(
                name,
                ip=f"10.0.{rng.randrange(2)}.{pods.index(name) + 1}",
                node=rng.choice(["node-a", "node-b"]),
                meshed=rng.random() < 0.5,
                labels={"version": str(rng.randrange(3))},
            )
        )
    elif choice < 0.45:
        world.delete(Kind.POD, rng.choice(pods))
    elif choice < 0.8:
        chosen = rng.sample(pods, rng.randrange(len(pods) + 1))
        slice_eps = [
            b.endpoint(
                f"10.0.{rng.randrange(2)}.{pods.index(p) + 1}",
                pod=p,
                hostname=p,
                ready=rng.choice([True, False, None]),
                hints=rng.choice([None, ["zone-a"], ["zone-b"]]),
            )
            for p in chosen
        ]
        world.apply(b.endpoint_slice(rng.choice(["web-a", "web-b"]), endpoints=slice_eps))
    elif choice < 0.88:
        world.delete(Kind.ENDPOINT_SLICE, rng.choice(["web-a", "web-b"]))
    elif choice < 0.94:
        world.apply(b.service(internal_traffic_policy=rng.choice([None, "Local"])))
    else:
        world.delete(Kind.SERVICE, "web")


def test_sinks_are_called_synchronously_and_never_reentered_over_random_events() -> None:
    rng = random.Random(20261123)
    world = World()
    world.apply(b.node("node-a", zone="zone-a"), b.node("node-b", zone="zone-b"), b.service())
    keys = [
        ViewKey(),
        ViewKey(node_name="node-a", zone="zone-a"),
        ViewKey(node_name="node-b", filtering=False),
        ViewKey(hostname="web-3", node_name="node-a", zone="zone-a"),
        ViewKey(zone="zone-b"),
    ]
    sinks = [GuardedSink(world.topics, key, churn=i % 2 == 0) for i, key in enumerate(keys * 2)]
    for sink in sinks:
        subscription = world.topics.subscribe(service=WEB, port=80, key=sink.key, sink=sink)
        sink.state = dict(subscription.initial.addresses)

    for _ in range(1000):
        _random_event(world, rng)
        # Synchronous: once the event is applied, every sink already holds what a
        # fresh computation from the index gives for its view.
        full, _ = world.build()
        for sink in sinks:
            expected = filter_addresses(
                full,
                context=ViewContext(key=sink.key, zone=sink.key.zone),
                service=world.index.services.get(WEB),
                enable_ipv6=True,
            )
            assert sink.state == expected

    assert all(sink.calls > 50 for sink in sinks), [sink.calls for sink in sinks]
    # Sinks of one view saw exactly the same sequence of diffs.
    for first, second in zip(sinks[: len(keys)], sinks[len(keys) :], strict=True):
        assert first.calls == second.calls
    assert world.topics.views() == len(keys)


def test_a_headless_mirror_serves_one_remote_pod_by_its_hostname() -> None:
    """Headless exports (reference §7.1): hostname-named endpoints without targetRef."""
    world = World()
    world.apply(
        b.service("web", cluster_ip="None"),
        b.endpoint_slice(
            labels={"mirror.linkerd.io/cluster-name": "west"},
            annotations=GATEWAY_ANNOTATIONS,
            endpoints=[
                b.endpoint("10.96.7.1", node=None, hostname="web-0"),
                b.endpoint("10.96.7.2", node=None, hostname="web-1"),
            ],
        ),
    )
    sink, subscription = world.subscribe(key=ViewKey(hostname="web-1"))
    assert endpoints(subscription.initial.addresses) == ["10.96.7.2:8080"]
    (address,) = subscription.initial.addresses.values()
    assert (
        address.gateway_identity == GATEWAY_ANNOTATIONS["mirror.linkerd.io/remote-gateway-identity"]
    )
    assert sink.calls == []
