"""Per-target fan-out: encode once, offer the same bytes to every stream.

A `Broadcast` serves every Get stream of one target: (service, port, hostname)
and what of the caller changes the answer, its zone and, only for a service
with `internalTrafficPolicy: Local`, its node (members.py `StreamTarget`). It
holds one subscription per *member* of the target's plan (members.py): one
local view for an ordinary service, one remote view for a remote-discovery
mirror, several for a federated service. On each member change it encodes that
member's diff once, with that member's context (the remote trust domain for
remote pods), and offers one shared `QueueItem` to every stream's queue. When
the plan changes (the Service was edited, a cluster was linked, unlinked or
withdrawn), `reconcile` sends what takes streams from the old members to the
new ones. When a stream's *target* changes (the Service's traffic policy was
edited), the stream moves to the broadcast of its new target and catches up
from the snapshot it last delivered to that broadcast's.

A new stream's first messages (the whole current set) are encoded once per
snapshot version and reused by every stream that joins while it holds. A
stream that fell behind catches up with one diff from the snapshot it last
saw; that diff is memoized by (old, new) version, because streams overflow
together and then share both versions.

Every transition is computed over all members at once: Removes are the
addresses present before and absent after, whichever member held them, so an
address that moves between members is never removed after being re-added.

Steps from a change to the last `offer` contain no `await`. A failure while
encoding or re-planning one broadcast is logged and counted, and never stops
the others: its streams are resynchronised from their own snapshots.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import structlog

from destination.ops.metrics import DestinationMetrics
from destination.streams.members import Member, MemberPlan, StreamRequest, StreamTarget
from destination.streams.stream_queue import QueueItem, StreamQueue
from destination.translate.endpoints import (
    EncodeContext,
    add_update,
    encode_diff,
    encode_initial,
    remove_update,
)
from discovery.cluster import ClusterCache
from discovery.models import Address, AddressKey, ServiceRef
from discovery.topics import (
    AddressDiff,
    AddressSnapshot,
    Subscription,
)

log = structlog.get_logger("destination.streams.broadcast")

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


def _already_sent(
    held: tuple[Address, MemberState] | None, address: Address, after: MemberState
) -> bool:
    """Whether a stream at the old snapshot holds `address` exactly as `after` would send it."""
    if held is None:
        return False
    sent, state = held
    return (
        sent == address
        and _same_source(state, after)
        and state.snapshot.labels == after.snapshot.labels
    )


def encode_transition(old: StreamSnapshot, new: StreamSnapshot) -> tuple[bytes, ...]:
    """Messages that take a stream from `old` to `new`: each member's Adds, then one Remove.

    Computed across members, by address: an address is added when no member
    of `old` sent it as `new` would (same record, same encoding context, same
    set labels), and removed when it was held before and no member of `new`
    holds it. The snapshots may belong to different broadcasts (a stream that
    moved), so nothing here assumes the members of the two are related.
    """
    held: dict[AddressKey, tuple[Address, MemberState]] = {}
    for state in old.members.values():
        for key, address in state.snapshot.addresses.items():
            held[key] = (address, state)
    payloads: list[bytes] = []
    kept: set[AddressKey] = set()
    for member, after in new.members.items():
        addresses = after.snapshot.addresses
        kept.update(addresses)
        before = old.members.get(member)
        if before is not None and before.snapshot is after.snapshot and _same_source(before, after):
            continue  # the common case: this member did not change
        adds = [a for key, a in addresses.items() if not _already_sent(held.get(key), a, after)]
        payload = add_update(adds, after.snapshot.labels, after.context)
        if payload is not None:
            payloads.append(payload)
    payload = remove_update(address for key, (address, _) in held.items() if key not in kept)
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
        # Each stream's queue, and the node its caller named (what re-keying reads).
        self.queues: dict[StreamQueue[StreamSnapshot], str] = {}
        self._subscriptions: dict[Member, Subscription] = {}
        self._initial: tuple[int, tuple[bytes, ...]] | None = None
        self._catch_ups: dict[tuple[int, int], tuple[bytes, ...]] = {}

    @property
    def members(self) -> list[Member]:
        return list(self.snapshot.members)

    def services(self) -> frozenset[ServiceRef]:
        """The Services whose edits can change this broadcast's plan or target."""
        return frozenset({self.target.service, *(m.service for m in self.snapshot.members)})

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
            self._offer_or_resync(lambda: encode_transition(old, self.snapshot))

    def member_changed(self, member: Member, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        state = self.snapshot.members.get(member)
        if state is None:
            return
        members = dict(self.snapshot.members)
        members[member] = MemberState(snapshot, state.context, state.cache)
        self.snapshot = StreamSnapshot(members=MappingProxyType(members))
        if self.queues:
            self._offer_or_resync(
                lambda: encode_diff(self._still_held(member, diff), state.context)
            )

    def _still_held(self, member: Member, diff: AddressDiff) -> AddressDiff:
        """The diff without Removes of addresses another member still holds."""
        others = [s.snapshot.addresses for m, s in self.snapshot.members.items() if m != member]
        if not others or not diff.removed:
            return diff
        removed = tuple(a for a in diff.removed if not any(a.key in held for held in others))
        return AddressDiff(added=diff.added, removed=removed, labels=diff.labels)

    def _offer_or_resync(self, encode: Callable[[], tuple[bytes, ...]]) -> None:
        """Offer what `encode` makes; if it fails, every stream catches up on its own."""
        try:
            payloads = encode()
        except Exception:
            log.exception(
                "broadcast_encode_failed",
                service=str(self.target.service),
                port=self.target.port,
                streams=len(self.queues),
            )
            self._metrics.fanout_errors.labels("encode").inc()
            for queue in self.queues:
                queue.resync(self.snapshot)
            return
        self._offer(payloads)

    def _offer(self, payloads: tuple[bytes, ...]) -> None:
        if not payloads:
            # Everything changed was unaddressable (e.g. a meshed pod without
            # proxy ports). Streams catch up from their own snapshot later, so
            # skipping costs nothing and saves queue capacity.
            return
        item = QueueItem(payloads=payloads, snapshot=self.snapshot)
        for queue in self.queues:
            queue.offer(item)
        self._metrics.updates.labels("Get").inc(len(payloads) * len(self.queues))

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


class StreamPlanner(Protocol):
    """What broadcasts need of planning (members.py `Planner`)."""

    def target(self, request: StreamRequest) -> StreamTarget: ...

    def plan(self, target: StreamTarget) -> list[MemberPlan]: ...


class Broadcasts:
    """Every live broadcast, created on a target's first stream, dropped on its last."""

    def __init__(
        self,
        *,
        queue_capacity: int,
        stuck_deadline_s: float,
        metrics: DestinationMetrics,
        planner: StreamPlanner,
    ) -> None:
        self._queue_capacity = queue_capacity
        self._stuck_deadline_s = stuck_deadline_s
        self._metrics = metrics
        self._planner = planner
        self._broadcasts: dict[StreamTarget, Broadcast] = {}
        # Broadcasts by every Service their target or members name (see `services_changed`).
        self._by_service: dict[ServiceRef, set[Broadcast]] = {}
        self._indexed: dict[Broadcast, frozenset[ServiceRef]] = {}
        self._homes: dict[StreamQueue[StreamSnapshot], Broadcast] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._broadcasts)

    @property
    def streams(self) -> int:
        """Open streams attached to a broadcast."""
        return len(self._homes)

    def open_stream(
        self, *, request: StreamRequest, on_stuck: Callable[[], None]
    ) -> tuple[Broadcast, StreamQueue[StreamSnapshot], tuple[bytes, ...]]:
        """Attach a new stream; returns its broadcast, queue and the payloads to send first.

        The initial payloads are encoded before anything is attached: if that
        fails, nothing is left behind. After `close_all` a stream still gets
        the current state, then ends at once (with OK).
        """
        broadcast = self._broadcast_for(self._planner.target(request))
        try:
            initial = broadcast.initial_payloads()
        except BaseException:
            self._drop_if_idle(broadcast)
            raise
        queue: StreamQueue[StreamSnapshot] = StreamQueue(
            capacity=self._queue_capacity,
            delivered=broadcast.snapshot,
            catch_up=broadcast.catch_up,
            stuck_deadline_s=self._stuck_deadline_s,
            on_overflow=self._metrics.queue_overflows.inc,
            on_stuck=on_stuck,
        )
        if self._closed:
            queue.close()
        broadcast.queues[queue] = request.node_name
        self._homes[queue] = broadcast
        return broadcast, queue, initial

    def close_stream(self, queue: StreamQueue[StreamSnapshot]) -> None:
        """Detach a finished stream (idempotent); its stuck-stream timer goes with it."""
        queue.close()
        broadcast = self._homes.pop(queue, None)
        if broadcast is None:
            return
        broadcast.queues.pop(queue, None)
        self._drop_if_idle(broadcast)

    def _broadcast_for(self, target: StreamTarget) -> Broadcast:
        broadcast = self._broadcasts.get(target)
        if broadcast is None:
            broadcast = Broadcast(target=target, planner=self._planner.plan, metrics=self._metrics)
            try:
                broadcast.reconcile()
            except BaseException:
                broadcast.close()
                raise
            self._broadcasts[target] = broadcast
            self._reindex(broadcast)
        return broadcast

    def _drop_if_idle(self, broadcast: Broadcast) -> None:
        if broadcast.queues or self._broadcasts.get(broadcast.target) is not broadcast:
            return
        del self._broadcasts[broadcast.target]
        for service in self._indexed.pop(broadcast, frozenset()):
            same_service = self._by_service.get(service)
            if same_service is not None:
                same_service.discard(broadcast)
                if not same_service:
                    del self._by_service[service]
        broadcast.close()

    def _reindex(self, broadcast: Broadcast) -> None:
        before = self._indexed.get(broadcast, frozenset())
        after = broadcast.services()
        if after == before:
            return
        for service in before - after:
            same_service = self._by_service.get(service)
            if same_service is not None:
                same_service.discard(broadcast)
                if not same_service:
                    del self._by_service[service]
        for service in after - before:
            self._by_service.setdefault(service, set()).add(broadcast)
        self._indexed[broadcast] = after

    def services_changed(self, services: set[ServiceRef]) -> None:
        """Local Services changed: the targets and plans of their streams may have, too."""
        affected: dict[Broadcast, None] = {}
        for service in services:
            for broadcast in self._by_service.get(service, ()):
                affected[broadcast] = None
        self._each(affected, self._replan)

    def clusters_changed(self) -> None:
        """A cluster was linked, unlinked, withdrawn or restored: re-plan every target."""
        self._each(list(self._broadcasts.values()), self._reconcile)

    def _each(self, broadcasts: Iterable[Broadcast], step: Callable[[Broadcast], None]) -> None:
        """Run `step` on each broadcast; one failing never stops the rest."""
        for broadcast in list(broadcasts):
            if self._broadcasts.get(broadcast.target) is not broadcast:
                continue  # dropped by an earlier step (its streams moved away)
            try:
                step(broadcast)
            except Exception:
                log.exception(
                    "broadcast_replan_failed",
                    service=str(broadcast.target.service),
                    port=broadcast.target.port,
                    streams=len(broadcast.queues),
                )
                self._metrics.fanout_errors.labels("replan").inc()
                for queue in broadcast.queues:
                    queue.resync(broadcast.snapshot)

    def _reconcile(self, broadcast: Broadcast) -> None:
        broadcast.reconcile()
        self._reindex(broadcast)

    def _replan(self, broadcast: Broadcast) -> None:
        """Move streams whose target changed, then reconcile those that stay."""
        target = broadcast.target
        moves: dict[StreamTarget, list[tuple[StreamQueue[StreamSnapshot], str]]] = {}
        for queue, node_name in broadcast.queues.items():
            request = StreamRequest(target.service, target.port, target.hostname, node_name)
            new_target = self._planner.target(request)
            if new_target != target:
                moves.setdefault(new_target, []).append((queue, node_name))
        for new_target, streams in moves.items():
            destination = self._broadcast_for(new_target)
            for queue, node_name in streams:
                del broadcast.queues[queue]
                destination.queues[queue] = node_name
                self._homes[queue] = destination
                queue.resync(destination.snapshot, destination.catch_up)
        if broadcast.queues:
            self._reconcile(broadcast)
        else:
            self._drop_if_idle(broadcast)

    def close_all(self) -> None:
        """Server shutdown: every stream finishes what it holds, then ends with OK.

        Streams that open afterwards get the current state and end at once.
        """
        self._closed = True
        for queue in list(self._homes):
            queue.close()
