"""Per-target fan-out: encode once, offer the same bytes to every stream.

A `Broadcast` serves every Get stream of one target (service, port, hostname,
subscriber node). It holds one subscription per *member* of the target's plan
(members.py): one local view for an ordinary service, one remote view for a
remote-discovery mirror, several for a federated service. On each member
change it encodes that member's diff once, with that member's context (the
remote trust domain for remote pods), and offers one shared `QueueItem` to
every stream's queue. When the plan changes (the Service was edited, a cluster
was linked, unlinked or withdrawn), `reconcile` sends a Remove of everything
a departed member contributed and an Add of everything a new member holds.

A new stream's first messages (the whole current set) are encoded once per
snapshot version and reused by every stream that joins while it holds. A
stream that fell behind catches up with one diff from the snapshot it last
saw; that diff is memoized by (old, new) version, because streams overflow
together and then share both versions.

Steps from a change to the last `offer` contain no `await`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from discovery.cluster import ClusterCache
from discovery.models import Address, ServiceRef
from discovery.topics import (
    AddressDiff,
    AddressSnapshot,
    Subscription,
    diff_snapshots,
)

from .encode import EncodeContext, encode_diff, encode_initial, remove_update
from .members import Member, MemberPlan, StreamTarget
from .metrics import DestinationMetrics
from .stream_queue import QueueItem, StreamQueue

_versions = itertools.count(1)
CATCH_UP_MEMO = 8  # distinct (old, new) transitions remembered per broadcast


@dataclass(frozen=True, slots=True, eq=False)
class MemberState:
    snapshot: AddressSnapshot
    context: EncodeContext
    cache: ClusterCache


@dataclass(frozen=True, slots=True, eq=False)
class StreamSnapshot:
    """What a stream of this target has been sent, member by member. Immutable."""

    members: Mapping[Member, MemberState]
    version: int = field(default_factory=lambda: next(_versions))


EMPTY_STREAM = StreamSnapshot(members=MappingProxyType({}), version=0)


def _adds(state: MemberState) -> tuple[bytes, ...]:
    return encode_initial(state.snapshot, state.context)


def _same_source(old: MemberState, new: MemberState) -> bool:
    return old.cache is new.cache and old.context == new.context


def encode_transition(old: StreamSnapshot, new: StreamSnapshot) -> tuple[bytes, ...]:
    """Messages that take a stream from `old` to `new`: each member's Adds, then one Remove."""
    payloads: list[bytes] = []
    removed: list[Address] = []
    for member, before in old.members.items():
        if member not in new.members:
            removed += before.snapshot.addresses.values()
    for member, after in new.members.items():
        previous = old.members.get(member)
        if previous is None:
            payloads += _adds(after)
            continue
        if previous.snapshot is after.snapshot and _same_source(previous, after):
            continue
        diff = diff_snapshots(previous.snapshot, after.snapshot)
        removed += diff.removed
        if not _same_source(previous, after):
            # Same addresses seen differently (a trust domain changed): re-send them all.
            diff = AddressDiff(
                added=tuple(after.snapshot.addresses.values()),
                removed=(),
                labels=after.snapshot.labels,
            )
        payloads += encode_diff(AddressDiff(diff.added, (), diff.labels), after.context)
    payload = remove_update(removed)
    if payload is not None:
        payloads.append(payload)
    return tuple(payloads)


class _MemberSink:
    """The view sink of one member; forwards to its broadcast."""

    __slots__ = ("_broadcast", "_member")

    def __init__(self, broadcast: Broadcast, member: Member) -> None:
        self._broadcast = broadcast
        self._member = member

    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        self._broadcast.member_changed(self._member, diff, snapshot)


class Broadcast:
    def __init__(
        self,
        *,
        target: StreamTarget,
        planner: Callable[[StreamTarget], list[MemberPlan]],
        metrics: DestinationMetrics,
    ) -> None:
        self.target = target
        self._planner = planner
        self._metrics = metrics
        self.snapshot: StreamSnapshot = EMPTY_STREAM
        self.queues: set[StreamQueue[StreamSnapshot]] = set()
        self._subscriptions: dict[Member, Subscription] = {}
        self._initial: tuple[int, tuple[bytes, ...]] | None = None
        self._catch_ups: dict[tuple[int, int], tuple[bytes, ...]] = {}

    @property
    def members(self) -> list[Member]:
        return list(self.snapshot.members)

    def reconcile(self) -> None:
        """Bring the members in line with the current plan, telling every stream."""
        plans = {plan.member: plan for plan in self._planner(self.target)}
        old = self.snapshot
        members = dict(old.members)
        changed = False
        for member, state in old.members.items():
            plan = plans.get(member)
            if plan is None or plan.cache is not state.cache:
                del members[member]
                self._subscriptions.pop(member).close()
                changed = True
        for member, plan in plans.items():
            current = members.get(member)
            if current is None:
                subscription = plan.cache.topics.subscribe(
                    service=member.service,
                    port=self.target.port,
                    key=member.view,
                    sink=_MemberSink(self, member),
                )
                self._subscriptions[member] = subscription
                members[member] = MemberState(subscription.initial, plan.context, plan.cache)
                changed = True
            elif current.context != plan.context:
                members[member] = MemberState(current.snapshot, plan.context, plan.cache)
                changed = True
        if not changed:
            return
        self.snapshot = StreamSnapshot(members=MappingProxyType(members))
        if self.queues:
            self._offer(encode_transition(old, self.snapshot))

    def member_changed(self, member: Member, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        state = self.snapshot.members.get(member)
        if state is None:
            return
        members = dict(self.snapshot.members)
        members[member] = MemberState(snapshot, state.context, state.cache)
        self.snapshot = StreamSnapshot(members=MappingProxyType(members))
        self._offer(encode_diff(diff, state.context))

    def _offer(self, payloads: tuple[bytes, ...]) -> None:
        if not payloads:
            # Everything changed was unaddressable (e.g. a meshed pod without
            # proxy ports). Streams catch up from their own snapshot later, so
            # skipping costs nothing and saves queue capacity.
            return
        item = QueueItem(payloads=payloads, snapshot=self.snapshot)
        for queue in self.queues:
            queue.offer(item)
        self._metrics.updates.inc(len(payloads) * len(self.queues))

    def initial_payloads(self) -> tuple[bytes, ...]:
        snapshot = self.snapshot
        if self._initial is None or self._initial[0] != snapshot.version:
            payloads: list[bytes] = []
            for state in snapshot.members.values():
                payloads += _adds(state)
            self._initial = (snapshot.version, tuple(payloads))
        return self._initial[1]

    def catch_up(self, old: StreamSnapshot, new: StreamSnapshot) -> tuple[bytes, ...]:
        """One diff for a lagging stream, shared by every stream making the same jump."""
        key = (old.version, new.version)
        payloads = self._catch_ups.get(key)
        if payloads is None:
            if len(self._catch_ups) >= CATCH_UP_MEMO:
                self._catch_ups.clear()
            payloads = self._catch_ups[key] = encode_transition(old, new)
        return payloads

    def close(self) -> None:
        for subscription in self._subscriptions.values():
            subscription.close()
        self._subscriptions.clear()


class Broadcasts:
    """Every live broadcast, created on a target's first stream, dropped on its last."""

    def __init__(
        self,
        *,
        queue_capacity: int,
        stuck_deadline_s: float,
        metrics: DestinationMetrics,
        planner: Callable[[StreamTarget], list[MemberPlan]],
    ) -> None:
        self._queue_capacity = queue_capacity
        self._stuck_deadline_s = stuck_deadline_s
        self._metrics = metrics
        self._planner = planner
        self._broadcasts: dict[StreamTarget, Broadcast] = {}
        self._by_service: dict[ServiceRef, set[Broadcast]] = {}

    def __len__(self) -> int:
        return len(self._broadcasts)

    def open_stream(
        self, *, target: StreamTarget, on_stuck: Callable[[], None]
    ) -> tuple[Broadcast, StreamQueue[StreamSnapshot], tuple[bytes, ...]]:
        """Attach a new stream; returns its queue and the payloads to send first."""
        broadcast = self._broadcasts.get(target)
        if broadcast is None:
            broadcast = Broadcast(target=target, planner=self._planner, metrics=self._metrics)
            broadcast.reconcile()
            self._broadcasts[target] = broadcast
            self._by_service.setdefault(target.service, set()).add(broadcast)
        queue: StreamQueue[StreamSnapshot] = StreamQueue(
            capacity=self._queue_capacity,
            delivered=broadcast.snapshot,
            catch_up=broadcast.catch_up,
            stuck_deadline_s=self._stuck_deadline_s,
            on_overflow=self._metrics.queue_overflows.inc,
            on_stuck=on_stuck,
        )
        broadcast.queues.add(queue)
        return broadcast, queue, broadcast.initial_payloads()

    def close_stream(self, broadcast: Broadcast, queue: StreamQueue[StreamSnapshot]) -> None:
        broadcast.queues.discard(queue)
        if not broadcast.queues and self._broadcasts.get(broadcast.target) is broadcast:
            del self._broadcasts[broadcast.target]
            same_service = self._by_service.get(broadcast.target.service)
            if same_service is not None:
                same_service.discard(broadcast)
                if not same_service:
                    del self._by_service[broadcast.target.service]
            broadcast.close()

    def services_changed(self, services: set[ServiceRef]) -> None:
        """A local Service changed: the plans of its streams may have, too."""
        for service in services:
            for broadcast in list(self._by_service.get(service, ())):
                broadcast.reconcile()

    def clusters_changed(self) -> None:
        """A cluster was linked, unlinked, withdrawn or restored: re-plan every target."""
        for broadcast in list(self._broadcasts.values()):
            broadcast.reconcile()

    def close_all(self) -> None:
        """Server shutdown: every stream finishes what it holds, then ends with OK."""
        for broadcast in self._broadcasts.values():
            for queue in broadcast.queues:
                queue.close()
