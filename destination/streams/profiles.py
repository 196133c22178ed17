"""GetProfile fan-out: one broadcast per profile topic, encoded once, offered to every stream.

Streams that would receive the same bytes share a broadcast: one per
(service, port, fqn, client namespace) for service profiles, one per
(ip, port) for endpoint profiles. The broadcast subscribes to its discovery
topic (`discovery.profile_topics`), and on each change encodes the new state
once and offers the same `QueueItem` to every stream's bounded queue, the
queues Get uses. A profile message is a whole state, not a diff, so a stream
that falls behind catches up with the newest message alone, and a message
equal to the one a stream last received is never sent again, even when a
state nothing could be sent for came between them.

Encoding is memoized across broadcasts too: every client namespace without a
ServiceProfile of its own shares the service's profile, and a ServiceProfile
change then costs one translation, not one per namespace.

Steps from a topic change to the last `offer` contain no `await`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

import structlog

from destination.ops.metrics import DestinationMetrics
from destination.streams.stream_queue import QueueItem, StreamQueue
from destination.translate.endpoints import MeshSettings
from destination.translate.profiles import endpoint_addr, endpoint_profile, service_profile
from discovery.profile_topics import (
    EndpointProfileKey,
    EndpointProfileState,
    ProfileSubscription,
    ProfileTopics,
    ServiceProfileKey,
    ServiceProfileState,
)

log = structlog.get_logger("destination.profiles")


class Versioned(Protocol):
    """A topic state: immutable, with a version unique to it."""

    @property
    def version(self) -> int: ...


S = TypeVar("S", bound=Versioned)
K = TypeVar("K", bound=Hashable)

ENCODING_MEMO = 1_024  # distinct (state, target) encodings remembered across broadcasts
_VERSIONS_REMEMBERED = 8  # per broadcast: enough to dedup what lagging streams last got


class ProfileEncoder(Generic[K, S]):
    """Encodes topic states, once per distinct input when `inputs` says what that is.

    `inputs(key, state)` returns an *anchor* (an immutable record the message is
    built from, compared by identity: hashing a large profile by value would cost
    more than it saves) and the other, hashable, inputs. Without `inputs`, every
    call encodes.
    """

    def __init__(
        self,
        encode: Callable[[K, S], bytes | None],
        inputs: Callable[[K, S], tuple[object, Hashable]] | None = None,
    ) -> None:
        self._encode = encode
        self._inputs = inputs
        self._memo: dict[tuple[int, Hashable], tuple[object, bytes | None]] = {}

    def __call__(self, key: K, state: S) -> bytes | None:
        if self._inputs is None:
            return self._encode(key, state)
        anchor, rest = self._inputs(key, state)
        memo_key = (id(anchor), rest)
        hit = self._memo.get(memo_key)
        if hit is not None and hit[0] is anchor:
            return hit[1]
        if len(self._memo) >= ENCODING_MEMO:
            self._memo.clear()
        payload = self._encode(key, state)
        self._memo[memo_key] = (anchor, payload)  # holding the anchor keeps its id unique
        return payload


class ProfileBroadcast(Generic[K, S]):
    """Every stream of one profile topic."""

    def __init__(self, key: K, encoder: ProfileEncoder[K, S], metrics: DestinationMetrics) -> None:
        self.key = key
        self._encoder = encoder
        self._metrics = metrics
        self.queues: set[StreamQueue[S]] = set()
        self.subscription: ProfileSubscription[S] | None = None
        self.state: S | None = None
        # The state whose message was last offered: what every queue holds as
        # its latest message, except the queues in `_empty` (they joined while
        # no message could be built, and hold none). States whose message
        # cannot be built are skipped over, so returning to the message before
        # them sends nothing, as the reference's per-stream dedup does.
        self._sent: S | None = None
        self._empty: set[StreamQueue[S]] = set()
        self._payloads: dict[int, bytes | None] = {}  # by state version

    def attach(self, subscription: ProfileSubscription[S]) -> None:
        self.subscription = subscription
        self.state = subscription.initial
        if self.payload(subscription.initial) is not None:
            self._sent = subscription.initial

    def add_queue(self, queue: StreamQueue[S], *, holds_message: bool) -> None:
        """A new stream's queue; `holds_message` when it was sent the current message."""
        self.queues.add(queue)
        if not holds_message:
            self._empty.add(queue)

    def remove_queue(self, queue: StreamQueue[S]) -> None:
        self.queues.discard(queue)
        self._empty.discard(queue)

    def payload(self, state: S) -> bytes | None:
        """The message for `state`; None when it cannot be sent (nothing is, then)."""
        payload = self._payloads.get(state.version)
        if payload is None and state.version not in self._payloads:
            if len(self._payloads) >= _VERSIONS_REMEMBERED:
                self._payloads.clear()
            payload = self._payloads[state.version] = self._encode(state)
        return payload

    def _encode(self, state: S) -> bytes | None:
        """A state that fails to encode (a bug) is one nothing is sent for: its streams
        keep their last message, and the topics refreshed with it are not held up."""
        try:
            return self._encoder(self.key, state)
        except Exception:
            log.exception("profile_encode_failed", key=repr(self.key)[:300])
            self._metrics.fanout_errors.labels("encode").inc()
            return None

    def on_change(self, state: S) -> None:
        self.state = state
        payload = self.payload(state)
        if payload is None:
            return  # nothing can be said of this state: streams keep what they have
        if self._sent is not None and payload == self.payload(self._sent):
            targets: set[StreamQueue[S]] = self._empty  # the others hold this message already
        else:
            targets = self.queues
        self._sent = state
        item: QueueItem[S] = QueueItem(payloads=(payload,), snapshot=state)
        for queue in targets:
            queue.offer(item)
        self._metrics.updates.labels("GetProfile").inc(len(targets))
        self._empty = set()

    def catch_up(self, delivered: S, latest: S) -> tuple[bytes, ...]:
        """A lagging stream needs the newest message only, unless it already has it."""
        payload = self.payload(latest)
        if payload is None or payload == self.payload(delivered):
            return ()
        return (payload,)

    def initial_payloads(self) -> tuple[bytes, ...]:
        assert self.state is not None
        payload = self.payload(self.state)
        return () if payload is None else (payload,)

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None


class ProfileBroadcasts:
    """Live profile broadcasts, created on a topic's first stream, dropped on its last."""

    def __init__(
        self,
        *,
        topics: ProfileTopics,
        service_encoder: ProfileEncoder[ServiceProfileKey, ServiceProfileState],
        endpoint_encoder: ProfileEncoder[EndpointProfileKey, EndpointProfileState],
        queue_capacity: int,
        stuck_deadline_s: float,
        metrics: DestinationMetrics,
    ) -> None:
        self._topics = topics
        self._service_encoder = service_encoder
        self._endpoint_encoder = endpoint_encoder
        self._queue_capacity = queue_capacity
        self._stuck_deadline_s = stuck_deadline_s
        self._metrics = metrics
        self._services: dict[ServiceProfileKey, ProfileBroadcast[Any, Any]] = {}
        self._endpoints: dict[EndpointProfileKey, ProfileBroadcast[Any, Any]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._services) + len(self._endpoints)

    def open_service(
        self, key: ServiceProfileKey, *, on_stuck: Callable[[], None]
    ) -> tuple[ProfileBroadcast[Any, Any], StreamQueue[Any], tuple[bytes, ...]]:
        broadcast = self._services.get(key)
        if broadcast is None:
            broadcast = ProfileBroadcast(key, self._service_encoder, self._metrics)
            broadcast.attach(self._topics.subscribe_service(key, broadcast))
            self._services[key] = broadcast
        return self._attach(broadcast, on_stuck)

    def open_endpoint(
        self, key: EndpointProfileKey, *, on_stuck: Callable[[], None]
    ) -> tuple[ProfileBroadcast[Any, Any], StreamQueue[Any], tuple[bytes, ...]]:
        broadcast = self._endpoints.get(key)
        if broadcast is None:
            broadcast = ProfileBroadcast(key, self._endpoint_encoder, self._metrics)
            broadcast.attach(self._topics.subscribe_endpoint(key, broadcast))
            self._endpoints[key] = broadcast
        return self._attach(broadcast, on_stuck)

    def _attach(
        self, broadcast: ProfileBroadcast[Any, Any], on_stuck: Callable[[], None]
    ) -> tuple[ProfileBroadcast[Any, Any], StreamQueue[Any], tuple[bytes, ...]]:
        # Encode before attaching: a failure leaves nothing behind.
        initial = broadcast.initial_payloads()
        queue: StreamQueue[Any] = StreamQueue(
            capacity=self._queue_capacity,
            delivered=broadcast.state,
            catch_up=broadcast.catch_up,
            stuck_deadline_s=self._stuck_deadline_s,
            on_overflow=self._metrics.queue_overflows.inc,
            on_stuck=on_stuck,
        )
        if self._closed:
            queue.close()
        broadcast.add_queue(queue, holds_message=bool(initial))
        return broadcast, queue, initial

    def close_stream(self, broadcast: ProfileBroadcast[Any, Any], queue: StreamQueue[Any]) -> None:
        queue.close()
        broadcast.remove_queue(queue)
        if broadcast.queues:
            return
        table: dict[Any, ProfileBroadcast[Any, Any]] = (
            self._services if isinstance(broadcast.key, ServiceProfileKey) else self._endpoints
        )
        if table.get(broadcast.key) is broadcast:
            del table[broadcast.key]
        broadcast.close()

    def close_all(self) -> None:
        """Server shutdown: every stream ends with OK after what it holds."""
        self._closed = True
        for table in (self._services, self._endpoints):
            for broadcast in table.values():
                for queue in broadcast.queues:
                    queue.close()


def profile_encoders(
    mesh: MeshSettings,
) -> tuple[
    ProfileEncoder[ServiceProfileKey, ServiceProfileState],
    ProfileEncoder[EndpointProfileKey, EndpointProfileState],
]:
    """The encoders of both profile flows, for one server's mesh settings."""

    def encode_service(key: ServiceProfileKey, state: ServiceProfileState) -> bytes:
        message = service_profile(
            state.profile, fqn=key.fqn, service=key.service, port=key.port, opaque=state.opaque
        )
        return message.SerializeToString(deterministic=True)

    def encode_endpoint(key: EndpointProfileKey, state: EndpointProfileState) -> bytes | None:
        endpoint = endpoint_addr(state, mesh)
        if endpoint is None:
            return None  # a meshed pod without proxy ports: nothing is sent (reference §6.5)
        return endpoint_profile(endpoint, opaque=state.opaque).SerializeToString(deterministic=True)

    return (
        ProfileEncoder(
            encode_service,
            inputs=lambda key, state: (state.profile, (state.opaque, key)),
        ),
        ProfileEncoder(encode_endpoint),
    )
