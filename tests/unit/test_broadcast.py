"""Unit tests for destination.streams.broadcast: one encode per view change, fanned out.

Scope: `Broadcasts` on a real `ClusterCache` (its reflectors never run; the
index and topics are fed raw objects in memory). A change is encoded once
whatever the number of streams and every queue gets the same bytes; a new
stream's initial payload is encoded once per snapshot version and shared;
streams of one view share a broadcast, other views and ports do not; the
last stream closing unsubscribes from topics; one slow stream overflowing
catches up alone without touching the others; metrics; `close_all`; and the
stuck-stream callback.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import MappingProxyType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import destination.streams.broadcast as broadcast_module
from destination._proto import destination_pb2 as pb
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcast, Broadcasts, MemberState, StreamSnapshot
from destination.streams.members import Planner, StreamRequest
from destination.streams.stream_queue import StreamClosed, StreamQueue
from destination.translate import endpoints as encode
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef, ServiceRef
from discovery.ports import PortSet
from discovery.topics import ViewKey
from tests.unit import builders as b

WEB = ServiceRef(b.NS, "web")
EVERYONE = ViewKey()
MESH = MeshSettings(
    controller_namespace=b.CNS,
    trust_domain="cluster.local",
    enable_h2_upgrade=True,
    force_opaque_transport=False,
)
DEADLINE_S = 0.05


class Env:
    """A cluster cache fed in memory, and the broadcasts of one server."""

    def __init__(self, *, capacity: int = 8) -> None:
        self.registry = CollectorRegistry()
        self.metrics = DestinationMetrics(self.registry)
        self.cache = ClusterCache(
            name=ClusterName("east"),
            metrics=DiscoveryMetrics(CollectorRegistry()),
            default_opaque_ports=PortSet.EMPTY,
            enable_ipv6=True,
        )
        self.planner = Planner(local=self.cache, store=None, mesh=MESH)
        self.broadcasts = Broadcasts(
            queue_capacity=capacity,
            stuck_deadline_s=DEADLINE_S,
            metrics=self.metrics,
            planner=self.planner,
        )
        self.stuck: list[str] = []

    def _refresh(self, affected: set[ServiceRef]) -> None:
        self.cache.topics.refresh(affected)
        self.broadcasts.services_changed(affected)

    def apply(self, *raws: dict[str, Any], kind: Kind | None = None) -> None:
        for raw in raws:
            self._refresh(self.cache.index.upsert(b.projected(raw, kind)))

    def delete(self, kind: Kind, name: str) -> None:
        self._refresh(self.cache.index.delete(kind, ObjectRef(b.NS, name)))

    def open(
        self, port: int = 80, view: ViewKey = EVERYONE, name: str = "stream"
    ) -> tuple[Broadcast, StreamQueue[StreamSnapshot], tuple[bytes, ...]]:
        request = StreamRequest(
            service=WEB, port=port, hostname=view.hostname, node_name=view.node_name or ""
        )
        return self.broadcasts.open_stream(
            request=request, on_stuck=lambda: self.stuck.append(name)
        )

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def addresses(broadcast: Broadcast) -> dict[tuple[str, int], object]:
    """Every address the broadcast's members hold."""
    held: dict[tuple[str, int], object] = {}
    for state in broadcast.snapshot.members.values():
        held.update(state.snapshot.addresses)
    return held


def web_pods(count: int) -> list[dict[str, Any]]:
    return [b.pod(f"web-{i}", ip=f"10.0.0.{i}", meshed=True) for i in range(1, count + 1)]


def web_slice(*numbers: int) -> dict[str, Any]:
    return b.endpoint_slice(endpoints=[b.endpoint(f"10.0.0.{n}", pod=f"web-{n}") for n in numbers])


def populated(**kwargs: Any) -> Env:
    """web (http 80 -> 8080) with pods web-1..web-9, web-1 and web-2 in the slice."""
    env = Env(**kwargs)
    env.apply(b.service(), *web_pods(9), web_slice(1, 2))
    return env


def decode(payloads: tuple[bytes, ...]) -> list[tuple[str, list[str]]]:
    """Each Update as (kind, sorted ip:port)."""
    result = []
    for payload in payloads:
        update = pb.Update.FromString(payload)
        kind = update.WhichOneof("update")
        addrs = [a.addr for a in update.add.addrs] if kind == "add" else list(update.remove.addrs)
        result.append((kind or "", sorted(_text(a) for a in addrs)))
    return result


def _text(address: Any) -> str:
    ip = address.ip.ipv4
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}:{address.port}"


async def take(queue: StreamQueue) -> tuple[bytes, ...]:
    return await asyncio.wait_for(queue.next(), timeout=1.0)


# --------------------------------------------------------------------------
# encode once, share the bytes


async def test_a_change_is_encoded_once_and_every_queue_gets_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    real = encode.encode_diff

    def counting(*args: Any) -> tuple[bytes, ...]:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(broadcast_module, "encode_diff", counting)
    env = populated()
    queues = [env.open()[1] for _ in range(5)]
    env.apply(web_slice(1, 2, 3))
    assert len(calls) == 1
    received = [await take(q) for q in queues]
    assert all(r is received[0] for r in received)
    assert decode(received[0]) == [("add", ["10.0.0.3:8080"])]


async def test_initial_payloads_are_encoded_once_per_snapshot_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    real = encode.encode_initial

    def counting(*args: Any) -> tuple[bytes, ...]:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(broadcast_module, "encode_initial", counting)
    env = populated()
    first = env.open()[2]
    second = env.open()[2]
    assert len(calls) == 1
    assert first is second
    assert first[0] is second[0]
    assert decode(first) == [("add", ["10.0.0.1:8080", "10.0.0.2:8080"])]

    env.apply(web_slice(1, 2, 3))
    third = env.open()[2]
    fourth = env.open()[2]
    assert len(calls) == 2
    assert third is fourth
    assert decode(third) == [("add", ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])]


async def test_an_empty_view_has_no_initial_payload() -> None:
    env = Env()
    env.apply(b.service())
    assert env.open()[2] == ()


async def test_the_broadcast_follows_the_view_snapshot() -> None:
    env = populated()
    broadcast, queue, _ = env.open()
    env.apply(web_slice(2))
    (item_payloads,) = decode(await take(queue))
    assert item_payloads == ("remove", ["10.0.0.1:8080"])
    assert list(addresses(broadcast)) == [("10.0.0.2", 8080)]


async def test_an_unchanged_event_offers_nothing() -> None:
    env = populated()
    _, queue, _ = env.open()
    env.apply(b.service(), web_slice(1, 2))
    assert len(queue) == 0


# --------------------------------------------------------------------------
# sharing and lifecycle


async def test_streams_of_one_view_share_a_broadcast_and_build_its_context_once() -> None:
    env = populated()
    first = env.open()[0]
    second = env.open()[0]
    assert first is second
    assert len(first.queues) == 2
    assert len(env.broadcasts) == 1
    assert env.cache.topics.views() == 1


@pytest.mark.parametrize(
    ("port", "view"),
    [
        pytest.param(81, EVERYONE, id="other-port"),
        pytest.param(80, ViewKey(hostname="web-1"), id="other-hostname"),
    ],
)
async def test_other_views_get_their_own_broadcast(port: int, view: ViewKey) -> None:
    env = populated()
    first = env.open()[0]
    other = env.open(port, view)[0]
    assert other is not first
    assert len(env.broadcasts) == 2
    assert env.cache.topics.views() == 2


async def test_the_last_stream_closing_unsubscribes_from_topics() -> None:
    env = populated()
    _, first, _ = env.open()
    _, second, _ = env.open()
    env.broadcasts.close_stream(first)
    assert env.cache.topics.views() == 1
    assert len(env.broadcasts) == 1
    env.broadcasts.close_stream(second)
    assert env.cache.topics.views() == 0
    assert env.cache.topics.subscribed_services() == 0
    assert len(env.broadcasts) == 0
    env.broadcasts.close_stream(second)  # twice is harmless
    env.apply(web_slice(1))
    assert len(first) == len(second) == 0


async def test_a_stream_opened_after_the_last_closed_starts_from_the_current_state() -> None:
    env = populated()
    old, queue, _ = env.open()
    env.broadcasts.close_stream(queue)
    env.apply(web_slice(3))
    new, _, initial = env.open()
    assert new is not old
    assert decode(initial) == [("add", ["10.0.0.3:8080"])]


async def test_closing_a_stale_broadcast_does_not_drop_its_replacement() -> None:
    env = populated()
    _, old_queue, _ = env.open()
    env.broadcasts.close_stream(old_queue)
    new, new_queue, _ = env.open()
    env.broadcasts.close_stream(old_queue)
    assert len(env.broadcasts) == 1
    env.apply(web_slice(1))
    assert len(new_queue) == 1
    assert len(new.members) == 1
    assert env.cache.topics.views() == 1


# --------------------------------------------------------------------------
# slow streams, metrics, shutdown


async def test_one_slow_queue_overflowing_does_not_affect_the_others() -> None:
    env = populated(capacity=2)
    broadcast, fast, _ = env.open(name="fast")
    _, slow, _ = env.open(name="slow")
    steps = [(1, 2, 3), (1, 2, 3, 4), (2, 3, 4), (2, 3, 4, 5), (3, 4, 5)]
    seen = []
    for numbers in steps:
        env.apply(web_slice(*numbers))
        seen.append(decode(await take(fast)))
    assert seen == [
        [("add", ["10.0.0.3:8080"])],
        [("add", ["10.0.0.4:8080"])],
        [("remove", ["10.0.0.1:8080"])],
        [("add", ["10.0.0.5:8080"])],
        [("remove", ["10.0.0.2:8080"])],
    ]
    assert not fast.lagging
    assert slow.lagging
    assert (fast.overflows, slow.overflows) == (0, 1)
    assert env.sample("destination_stream_queue_overflows_total") == 1
    # The slow stream gets one diff from what it was given first to the latest state.
    assert decode(await take(slow)) == [
        ("add", ["10.0.0.3:8080", "10.0.0.4:8080", "10.0.0.5:8080"]),
        ("remove", ["10.0.0.1:8080", "10.0.0.2:8080"]),
    ]
    assert addresses(broadcast).keys() == {
        ("10.0.0.3", 8080),
        ("10.0.0.4", 8080),
        ("10.0.0.5", 8080),
    }


async def test_a_stream_joining_later_catches_up_from_its_own_initial_state() -> None:
    env = populated(capacity=1)
    env.open(name="early")
    env.apply(web_slice(1, 2, 3))
    _, late, initial = env.open(name="late")
    assert decode(initial) == [("add", ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])]
    env.apply(web_slice(1, 2, 3, 4))
    env.apply(web_slice(2, 3, 4))
    assert late.lagging
    assert decode(await take(late)) == [
        ("add", ["10.0.0.4:8080"]),
        ("remove", ["10.0.0.1:8080"]),
    ]


async def test_a_stuck_stream_alone_is_reported() -> None:
    env = populated(capacity=1)
    _, fast, _ = env.open(name="fast")
    _, slow, _ = env.open(name="slow")
    for numbers in [(1, 2, 3), (1, 2, 3, 4), (1, 2, 3, 4, 5)]:
        env.apply(web_slice(*numbers))
        await take(fast)
    await asyncio.sleep(DEADLINE_S * 2)
    assert env.stuck == ["slow"]
    assert slow.lagging


async def test_updates_sent_counts_payloads_times_queues() -> None:
    env = populated()
    for _ in range(3):
        env.open()
    env.apply(web_slice(2, 3))  # one add and one remove
    assert env.sample("destination_updates_sent_total", rpc="Get") == 2 * 3


async def test_close_all_lets_every_stream_drain_then_end() -> None:
    env = populated()
    _, first, _ = env.open()
    _, second, _ = env.open(view=ViewKey(hostname="web-1"))
    env.apply(web_slice(1, 2, 3))
    env.broadcasts.close_all()
    assert decode(await take(first)) == [("add", ["10.0.0.3:8080"])]
    for queue in (first, second):
        with pytest.raises(StreamClosed):
            await take(queue)


# --------------------------------------------------------------------------
# hardening: failures stay where they happen, timers and queues are released


async def test_a_stream_whose_initial_payload_cannot_be_encoded_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hardening #2: the queue was attached before the initial payload was encoded."""
    env = populated()

    def broken(*args: object) -> tuple[bytes, ...]:
        raise ValueError("cannot encode")

    monkeypatch.setattr(broadcast_module, "encode_initial", broken)
    for _ in range(3):
        with pytest.raises(ValueError, match="cannot encode"):
            env.open()
    assert len(env.broadcasts) == 0
    assert env.broadcasts.streams == 0
    assert env.cache.topics.views() == 0


async def test_a_failing_view_sink_does_not_stop_the_other_sinks() -> None:
    """Hardening #2: one sink raising in the fan-out dropped the rest of the batch."""
    env = populated()
    _, queue, _ = env.open()

    class Exploding:
        def on_change(self, *args: object) -> None:
            raise RuntimeError("sink failed")

    # A second view of the same port, subscribed before the stream's view is fed.
    env.cache.topics.subscribe(service=WEB, port=80, key=ViewKey(hostname="x"), sink=Exploding())
    env.cache.topics.subscribe(service=WEB, port=80, key=EVERYONE, sink=Exploding())
    env.apply(web_slice(1, 2, 3))
    assert decode(await take(queue)) == [("add", ["10.0.0.3:8080"])]


async def test_an_update_that_cannot_be_encoded_resyncs_the_streams_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = populated()
    broadcast, queue, _ = env.open()
    real = broadcast_module.encode_diff
    monkeypatch.setattr(broadcast_module, "encode_diff", lambda *a: 1 / 0)
    env.apply(web_slice(1, 2, 3))
    assert env.sample('destination_fanout_errors_total{stage="encode"}') == 0  # no labels yet
    assert (
        env.registry.get_sample_value("destination_fanout_errors_total", {"stage": "encode"}) == 1
    )
    monkeypatch.setattr(broadcast_module, "encode_diff", real)
    # The stream catches up from what it last delivered to the broadcast's state.
    assert queue.lagging
    assert decode(await take(queue)) == [("add", ["10.0.0.3:8080"])]
    env.apply(web_slice(1, 3))
    assert decode(await take(queue)) == [("remove", ["10.0.0.2:8080"])]
    assert len(broadcast.queues) == 1


async def test_one_failing_broadcast_does_not_stop_the_others_replanning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hardening #13: in clusters_changed one failing broadcast stopped the rest."""
    env = populated()
    first, _, _ = env.open(view=ViewKey(hostname="web-1"))
    second, _, _ = env.open()
    calls: list[Broadcast] = []
    original = Broadcast.reconcile

    def reconcile(self: Broadcast) -> None:
        calls.append(self)
        if self is first:
            raise RuntimeError("plan failed")
        original(self)

    monkeypatch.setattr(Broadcast, "reconcile", reconcile)
    env.broadcasts.clusters_changed()
    assert set(calls) == {first, second}
    assert (
        env.registry.get_sample_value("destination_fanout_errors_total", {"stage": "replan"}) == 1
    )


async def test_a_closed_stream_has_no_stuck_timer_left() -> None:
    """Hardening #12: a lagging client that disconnected was reported stuck later."""
    env = populated(capacity=1)
    _, slow, _ = env.open(name="slow")
    for numbers in [(1, 2, 3), (1, 2, 3, 4)]:
        env.apply(web_slice(*numbers))
    assert slow.lagging  # overflowed: the stuck timer is running
    env.broadcasts.close_stream(slow)
    await asyncio.sleep(DEADLINE_S * 3)
    assert env.stuck == []
    assert env.broadcasts.streams == 0 and len(env.broadcasts) == 0


async def test_a_stream_opened_after_close_all_gets_the_state_and_ends() -> None:
    """Hardening #14: it waited until the grace deadline and ended by cancellation."""
    env = populated()
    env.broadcasts.close_all()
    _, queue, initial = env.open()
    assert decode(initial) == [("add", ["10.0.0.1:8080", "10.0.0.2:8080"])]
    with pytest.raises(StreamClosed):
        await take(queue)


async def test_an_address_moving_between_members_is_never_removed_after_its_add() -> None:
    """A transition computes Removes across members: present before, absent after."""
    env = populated()
    broadcast = env.open()[0]
    ((member, state),) = broadcast.snapshot.members.items()
    moved_member = dataclasses.replace(member, view=ViewKey(hostname=None, node_name="node-a"))
    env.apply(web_slice(2, 3))
    fresh = env.open()[0].snapshot.members[member].snapshot  # 10.0.0.2 and 10.0.0.3
    moved = MemberState(fresh, state.context, state.cache)
    old = StreamSnapshot(members=MappingProxyType({member: state}))  # 10.0.0.1 and 10.0.0.2
    new = StreamSnapshot(members=MappingProxyType({moved_member: moved}))
    # 10.0.0.2 moved to another member unchanged: neither re-added nor removed.
    assert decode(broadcast_module.encode_transition(old, new)) == [
        ("add", ["10.0.0.3:8080"]),
        ("remove", ["10.0.0.1:8080"]),
    ]
    both = StreamSnapshot(members=MappingProxyType({member: state, moved_member: moved}))
    # The member left; what it held that the other member also holds stays.
    assert decode(broadcast_module.encode_transition(both, new)) == [("remove", ["10.0.0.1:8080"])]
