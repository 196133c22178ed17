"""Unit tests for destination.streams.stream_queue: the bounded, coalescing per-stream queue.

Scope: FIFO delivery of items taken one at a time, and a backlog written as
one diff from the last delivered snapshot to the newest; overflow clearing the queue, marking it
lagging and later yielding one catch-up diff from the snapshot last handed to
the writer to the latest one (checked with a recording fake and with a real
`Broadcast.catch_up` over real topic snapshots); the stuck deadline, which
ends a stream only if it is still lagging; `close()` draining what is queued
before `StreamClosed`; and offers after close being ignored. Runs on the
session event loop with short real deadlines (0.05 s).
"""

from __future__ import annotations

import asyncio
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry

from destination._proto import destination_pb2 as pb
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcast
from destination.streams.members import Planner, StreamTarget
from destination.streams.stream_queue import WAKE_BATCH, QueueItem, StreamClosed, StreamQueue
from destination.translate.endpoints import MeshSettings, tcp_address
from discovery.cluster import ClusterCache
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, ServiceRef
from discovery.ports import PortSet
from discovery.topics import AddressSnapshot
from tests.unit import builders as b

DEADLINE_S = 0.05


def snapshot(tag: str) -> AddressSnapshot:
    return AddressSnapshot(addresses=MappingProxyType({}), labels=MappingProxyType({"tag": tag}))


class CatchUp:
    """A fake catch-up that records its arguments."""

    def __init__(self, result: tuple[bytes, ...] = (b"catch-up",)) -> None:
        self.calls: list[tuple[AddressSnapshot, AddressSnapshot]] = []
        self.result = result

    def __call__(self, old: AddressSnapshot, new: AddressSnapshot) -> tuple[bytes, ...]:
        self.calls.append((old, new))
        return self.result


class Harness:
    def __init__(self, capacity: int = 2, catch_up: CatchUp | None = None) -> None:
        self.initial = snapshot("initial")
        self.catch_up = catch_up or CatchUp()
        self.overflows = 0
        self.stuck = 0
        self.queue = StreamQueue(
            capacity=capacity,
            delivered=self.initial,
            catch_up=self.catch_up,
            stuck_deadline_s=DEADLINE_S,
            on_overflow=self._overflowed,
            on_stuck=self._stuck,
        )
        self.snapshots: list[AddressSnapshot] = []

    def _overflowed(self) -> None:
        self.overflows += 1

    def _stuck(self) -> None:
        self.stuck += 1

    def offer(self, count: int = 1) -> list[QueueItem]:
        items = []
        for _ in range(count):
            n = len(self.snapshots)
            self.snapshots.append(snapshot(f"s{n}"))
            item = QueueItem(payloads=(f"p{n}".encode(),), snapshot=self.snapshots[-1])
            self.queue.offer(item)
            items.append(item)
        return items


async def next_soon(queue: StreamQueue) -> tuple[bytes, ...]:
    return await asyncio.wait_for(queue.next(), timeout=1.0)


async def assert_blocks(queue: StreamQueue) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.next(), timeout=0.02)


@pytest.mark.parametrize("capacity", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_a_queue_needs_a_positive_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        Harness(capacity=capacity)


async def test_items_taken_one_at_a_time_come_out_in_order() -> None:
    harness = Harness(capacity=3)
    taken = []
    for _ in range(3):
        harness.offer()
        taken.append(await next_soon(harness.queue))
    assert taken == [(b"p0",), (b"p1",), (b"p2",)]
    assert harness.catch_up.calls == []


async def test_a_backlog_is_written_as_one_diff_from_delivered_to_newest() -> None:
    harness = Harness(capacity=3)
    harness.offer(3)
    assert len(harness.queue) == 3
    assert await next_soon(harness.queue) == (b"catch-up",)
    assert harness.catch_up.calls == [(harness.initial, harness.snapshots[2])]
    assert not harness.queue.lagging
    assert harness.overflows == 0
    harness.offer()  # the next item starts from the newest snapshot
    assert await next_soon(harness.queue) == (b"p3",)


async def test_an_empty_backlog_diff_sends_nothing_and_waits_for_more() -> None:
    harness = Harness(capacity=3, catch_up=CatchUp(result=()))
    harness.offer(2)  # e.g. an address added, then removed again
    await assert_blocks(harness.queue)


async def test_next_waits_until_something_is_offered() -> None:
    harness = Harness()
    waiter = asyncio.create_task(harness.queue.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    harness.offer()
    assert await asyncio.wait_for(waiter, timeout=1.0) == (b"p0",)


async def test_the_same_item_object_is_shared_not_copied() -> None:
    harness = Harness()
    (item,) = harness.offer()
    assert await next_soon(harness.queue) is item.payloads


async def test_overflow_clears_the_queue_and_marks_it_lagging() -> None:
    harness = Harness(capacity=2)
    harness.offer(2)
    assert (len(harness.queue), harness.queue.lagging, harness.overflows) == (2, False, 0)
    harness.offer()
    assert len(harness.queue) == 0
    assert harness.queue.lagging
    assert harness.overflows == 1
    assert harness.queue.overflows == 1


async def test_a_lagging_queue_yields_one_catch_up_from_delivered_to_latest() -> None:
    harness = Harness(capacity=2)
    harness.offer(5)
    assert harness.overflows == 1  # later offers while lagging only move `latest`
    assert await next_soon(harness.queue) == (b"catch-up",)
    assert harness.catch_up.calls == [(harness.initial, harness.snapshots[-1])]
    assert not harness.queue.lagging
    await assert_blocks(harness.queue)


async def test_catch_up_starts_from_the_last_item_handed_to_the_writer() -> None:
    harness = Harness(capacity=2)
    harness.offer()
    assert await next_soon(harness.queue) == (b"p0",)
    harness.offer(3)  # s1 and s2 fill the queue, s3 overflows
    assert await next_soon(harness.queue) == (b"catch-up",)
    assert harness.catch_up.calls == [(harness.snapshots[0], harness.snapshots[3])]


async def test_after_catching_up_the_queue_is_fifo_again_from_the_latest() -> None:
    harness = Harness(capacity=1)
    harness.offer(2)
    await next_soon(harness.queue)
    harness.offer()
    assert await next_soon(harness.queue) == (b"p2",)
    harness.offer(2)
    await next_soon(harness.queue)
    assert harness.catch_up.calls[-1] == (harness.snapshots[2], harness.snapshots[4])
    assert harness.overflows == 2


async def test_an_empty_catch_up_sends_nothing_and_waits_for_more() -> None:
    harness = Harness(capacity=1, catch_up=CatchUp(result=()))
    harness.offer(2)
    await assert_blocks(harness.queue)
    assert len(harness.catch_up.calls) == 1
    assert not harness.queue.lagging
    harness.offer()
    assert await next_soon(harness.queue) == (b"p2",)


async def test_a_real_broadcast_catch_up_is_the_diff_from_delivered_to_latest() -> None:
    cache = ClusterCache(
        name=ClusterName("east"),
        metrics=DiscoveryMetrics(CollectorRegistry()),
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=True,
    )
    service = ServiceRef(b.NS, "web")

    def apply(raw: dict[str, object]) -> None:
        cache.topics.refresh(cache.index.upsert(b.projected(raw)))

    apply(b.service())
    for i in range(1, 5):
        apply(b.pod(f"web-{i}", ip=f"10.0.0.{i}"))
    apply(b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")]))

    mesh = MeshSettings(
        controller_namespace=b.CNS,
        trust_domain="cluster.local",
        enable_h2_upgrade=True,
        force_opaque_transport=False,
    )
    planner = Planner(local=cache, store=None, mesh=mesh)
    broadcast = Broadcast(
        target=StreamTarget(service=service, port=80, hostname=None),
        planner=planner.plan,
        metrics=DestinationMetrics(CollectorRegistry()),
    )
    broadcast.reconcile()
    queue = StreamQueue(
        capacity=1,
        delivered=broadcast.snapshot,
        catch_up=broadcast.catch_up,
        stuck_deadline_s=DEADLINE_S,
        on_overflow=lambda: None,
        on_stuck=lambda: None,
    )

    for pods in (["web-1", "web-2"], ["web-2", "web-3"], ["web-3", "web-4"]):
        apply(
            b.endpoint_slice(
                endpoints=[b.endpoint(f"10.0.0.{p[-1]}", pod=p) for p in pods],
            )
        )
        queue.offer(QueueItem(payloads=(b"never sent",), snapshot=broadcast.snapshot))
    assert queue.lagging

    updates = [pb.Update.FromString(p) for p in await next_soon(queue)]
    assert [u.WhichOneof("update") for u in updates] == ["add", "remove"]
    assert sorted(a.addr.ip.ipv4 for a in updates[0].add.addrs) == [
        tcp_address("10.0.0.3", 8080).ip.ipv4,
        tcp_address("10.0.0.4", 8080).ip.ipv4,
    ]
    # 10.0.0.2 came and went between the two snapshots: the proxy never hears of it.
    assert list(updates[1].remove.addrs) == [tcp_address("10.0.0.1", 8080)]


# --------------------------------------------------------------------------
# stuck streams


async def test_a_stream_still_lagging_at_the_deadline_is_reported_stuck_once() -> None:
    harness = Harness(capacity=1)
    harness.offer(2)
    assert harness.stuck == 0  # only once the deadline has passed
    await asyncio.sleep(DEADLINE_S * 2)
    assert harness.stuck == 1
    harness.offer(3)  # still lagging: no new deadline
    await asyncio.sleep(DEADLINE_S * 2)
    assert harness.stuck == 1


async def test_a_stream_that_catches_up_before_the_deadline_is_not_stuck() -> None:
    harness = Harness(capacity=1)
    harness.offer(2)
    await next_soon(harness.queue)
    await asyncio.sleep(DEADLINE_S * 2)
    assert harness.stuck == 0


async def test_a_closed_stream_is_not_reported_stuck() -> None:
    harness = Harness(capacity=1)
    harness.offer(2)
    harness.queue.close()
    await asyncio.sleep(DEADLINE_S * 2)
    assert harness.stuck == 0


async def test_each_new_overflow_gets_its_own_deadline() -> None:
    harness = Harness(capacity=1)
    harness.offer(2)
    await next_soon(harness.queue)
    harness.offer(2)
    await asyncio.sleep(DEADLINE_S * 2)
    assert (harness.overflows, harness.stuck) == (2, 1)


# --------------------------------------------------------------------------
# closing


async def test_close_drains_queued_items_then_raises_stream_closed() -> None:
    harness = Harness(capacity=3)
    harness.offer(2)
    harness.queue.close()
    assert await next_soon(harness.queue) == (b"catch-up",)
    with pytest.raises(StreamClosed):
        await next_soon(harness.queue)
    with pytest.raises(StreamClosed):
        await next_soon(harness.queue)


async def test_close_while_lagging_still_sends_the_catch_up() -> None:
    harness = Harness(capacity=1)
    harness.offer(3)
    harness.queue.close()
    assert await next_soon(harness.queue) == (b"catch-up",)
    with pytest.raises(StreamClosed):
        await next_soon(harness.queue)


async def test_close_wakes_a_waiting_writer() -> None:
    harness = Harness()
    waiter = asyncio.create_task(harness.queue.next())
    await asyncio.sleep(0)
    harness.queue.close()
    with pytest.raises(StreamClosed):
        await asyncio.wait_for(waiter, timeout=1.0)


async def test_offers_after_close_are_ignored() -> None:
    harness = Harness(capacity=1)
    harness.queue.close()
    harness.offer(5)
    assert len(harness.queue) == 0
    assert not harness.queue.lagging
    assert harness.overflows == 0
    with pytest.raises(StreamClosed):
        await next_soon(harness.queue)


async def test_writers_are_woken_a_batch_per_loop_iteration_so_others_get_turns() -> None:
    """One offer to thousands of waiting streams must not queue every writer ahead of,
    say, the next watch event's refresh: writers wake WAKE_BATCH per iteration."""
    count = 3 * WAKE_BATCH
    harnesses = [Harness() for _ in range(count)]
    order: list[str] = []

    async def writer(harness: Harness) -> None:
        await harness.queue.next()
        order.append("writer")

    tasks = [asyncio.create_task(writer(h)) for h in harnesses]
    await asyncio.sleep(0)  # every writer now waits
    for harness in harnesses:
        harness.offer()
    asyncio.get_running_loop().call_soon(order.append, "refresh")  # the next event's flush
    await asyncio.gather(*tasks)
    assert order.count("writer") == count
    # All at once, "refresh" would come after every writer; in batches, early on.
    assert order.index("refresh") <= 2 * WAKE_BATCH
