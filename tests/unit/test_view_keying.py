"""Broadcasts and views are keyed by what changes the answer, and follow policy edits.

Scope: `Broadcasts` with a real `Planner` and `ClusterCache` fed in memory
(hardening issue #7). A caller's node only picks its zone and, for a Service
with `internalTrafficPolicy: Local`, the node its endpoints must be on; a node
the cache does not know is no node. So callers naming thousands of made-up
nodes share one broadcast and one view. When the policy is edited under open
streams, each stream moves to the broadcast of its new key and receives
exactly the Adds and Removes between what it held and what it should hold.
"""

from __future__ import annotations

from typing import Any

from destination.streams.members import StreamRequest
from tests.unit import builders as b
from tests.unit.test_broadcast import WEB, Env, decode, take


def two_node_env(policy: str | None = None) -> Env:
    """web: pods web-1 (node-a, zone-a), web-2 (node-b, zone-b), web-3 (node-a)."""
    env = Env()
    env.apply(
        b.node("node-a", zone="zone-a"),
        b.node("node-b", zone="zone-b"),
        b.node("node-c", zone="zone-a"),
        service(policy),
        b.pod("web-1", ip="10.0.0.1", node="node-a"),
        b.pod("web-2", ip="10.0.0.2", node="node-b"),
        b.pod("web-3", ip="10.0.0.3", node="node-a"),
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-1", node="node-a"),
                b.endpoint("10.0.0.2", pod="web-2", node="node-b"),
                b.endpoint("10.0.0.3", pod="web-3", node="node-a"),
            ]
        ),
    )
    return env


def service(policy: str | None) -> dict[str, Any]:
    return b.service(internal_traffic_policy=policy)


def open_on(env: Env, node: str, hostname: str | None = None) -> Any:
    request = StreamRequest(service=WEB, port=80, hostname=hostname, node_name=node)
    return env.broadcasts.open_stream(request=request, on_stuck=lambda: None)


def held(initial: tuple[bytes, ...]) -> list[str]:
    return sorted(address for _, addresses in decode(initial) for address in addresses)


async def test_thousands_of_made_up_node_names_share_one_broadcast_and_one_view() -> None:
    env = two_node_env()
    first = open_on(env, "")[0]
    for i in range(5000):
        assert open_on(env, f"made-up-{i}")[0] is first
    assert len(env.broadcasts) == 1
    assert env.cache.topics.views() == 1


async def test_made_up_node_names_collapse_even_for_a_local_policy_service() -> None:
    env = two_node_env("Local")
    first, _, initial = open_on(env, "made-up-1")
    assert open_on(env, "made-up-2")[0] is first
    assert open_on(env, "")[0] is first
    assert initial == ()  # no endpoint is on "no node"
    assert env.cache.topics.views() == 1


async def test_known_nodes_share_by_zone_unless_the_policy_is_local() -> None:
    env = two_node_env()
    on_a, on_c, on_b = (open_on(env, node)[0] for node in ("node-a", "node-c", "node-b"))
    assert on_a is on_c  # same zone: same bytes (zone_locality labels included)
    assert on_b is not on_a  # another zone: other zone_locality labels
    local = two_node_env("Local")
    on_a, on_c = (open_on(local, node)[0] for node in ("node-a", "node-c"))
    assert on_a is not on_c  # Local: the node is the answer


async def test_the_zone_of_the_callers_node_labels_locality() -> None:
    env = two_node_env()
    _, _, initial = open_on(env, "node-b")
    from destination._proto import destination_pb2 as pb

    update = pb.Update.FromString(initial[0])
    locality = {a.metric_labels["pod"]: a.metric_labels["zone_locality"] for a in update.add.addrs}
    assert locality == {"web-1": "unknown", "web-2": "unknown", "web-3": "unknown"}
    # The endpoints carry no zone in this slice; with zones they are local or remote:
    env.apply(
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-1", node="node-a", zone="zone-a"),
                b.endpoint("10.0.0.2", pod="web-2", node="node-b", zone="zone-b"),
            ]
        )
    )
    _, _, initial = open_on(env, "node-b")
    update = pb.Update.FromString(initial[0])
    locality = {a.metric_labels["pod"]: a.metric_labels["zone_locality"] for a in update.add.addrs}
    assert locality == {"web-1": "remote", "web-2": "local"}


async def test_a_policy_flip_on_live_streams_sends_exactly_the_right_adds_and_removes() -> None:
    env = two_node_env()
    _, on_a, initial_a = open_on(env, "node-a")
    _, on_b, initial_b = open_on(env, "node-b")
    _, nowhere, initial_x = open_on(env, "made-up")
    everything = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    assert held(initial_a) == held(initial_b) == held(initial_x) == everything

    env.apply(service("Local"))
    assert decode(await take(on_a)) == [("remove", ["10.0.0.2:8080"])]
    assert decode(await take(on_b)) == [("remove", ["10.0.0.1:8080", "10.0.0.3:8080"])]
    assert decode(await take(nowhere)) == [("remove", everything)]
    assert len(env.broadcasts) == 3  # node-a, node-b, no node
    assert env.cache.topics.views() == 3

    env.apply(service("Cluster"))
    assert decode(await take(on_a)) == [("add", ["10.0.0.2:8080"])]
    assert decode(await take(on_b)) == [("add", ["10.0.0.1:8080", "10.0.0.3:8080"])]
    assert decode(await take(nowhere)) == [("add", everything)]
    # Back to sharing by zone: zone-a, zone-b and no zone.
    assert len(env.broadcasts) == 3
    for queue in (on_a, on_b, nowhere):
        assert len(queue) == 0 and not queue.lagging
    for queue in (on_a, on_b, nowhere):
        env.broadcasts.close_stream(queue)
    assert len(env.broadcasts) == 0
    assert env.cache.topics.views() == 0


async def test_a_stream_that_moved_follows_its_new_broadcast() -> None:
    env = two_node_env()
    _, on_a, _ = open_on(env, "node-a")
    env.apply(service("Local"))
    await take(on_a)
    env.apply(
        b.pod("web-4", ip="10.0.0.4", node="node-a"),
        b.pod("web-5", ip="10.0.0.5", node="node-b"),
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-1", node="node-a"),
                b.endpoint("10.0.0.4", pod="web-4", node="node-a"),
                b.endpoint("10.0.0.5", pod="web-5", node="node-b"),
            ]
        ),
    )
    assert decode(await take(on_a)) == [("add", ["10.0.0.4:8080"]), ("remove", ["10.0.0.3:8080"])]


async def test_a_federated_services_local_member_policy_is_followed() -> None:
    env = two_node_env()
    env.apply(
        b.service(
            "fed",
            annotations={"multicluster.linkerd.io/local-discovery": "web"},
        )
    )
    from discovery.models import ServiceRef

    request = StreamRequest(
        service=ServiceRef(b.NS, "fed"), port=80, hostname=None, node_name="node-b"
    )
    _, queue, initial = env.broadcasts.open_stream(request=request, on_stuck=lambda: None)
    assert held(initial) == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    env.apply(service("Local"))  # the local member's Service, not the federated one
    assert decode(await take(queue)) == [("remove", ["10.0.0.1:8080", "10.0.0.3:8080"])]


async def test_endpoint_views_is_exported_per_cluster() -> None:
    """Hardening #11: the endpoint_views gauge was never set."""
    from prometheus_client import CollectorRegistry

    from discovery.cluster import ClusterCache
    from discovery.metrics import DiscoveryMetrics
    from discovery.models import ClusterName
    from discovery.ports import PortSet
    from discovery.topics import ViewKey

    registry = CollectorRegistry()
    cache = ClusterCache(
        name=ClusterName("east"),
        metrics=DiscoveryMetrics(registry),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=True,
    )

    class Sink:
        def on_change(self, *args: object) -> None:
            pass

    def views() -> float | None:
        return registry.get_sample_value("endpoint_views", {"cluster": "east"})

    assert views() == 0
    first = cache.topics.subscribe(service=WEB, port=80, key=ViewKey(), sink=Sink())
    cache.topics.subscribe(service=WEB, port=80, key=ViewKey(zone="zone-a"), sink=Sink())
    assert views() == 2
    first.close()
    assert views() == 1
