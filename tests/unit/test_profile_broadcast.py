"""Profile broadcasts (destination.streams.profiles): what each GetProfile stream is sent.

Scope: a message equal to the one a stream holds is never offered again, also
when a state nothing can be sent for (a meshed pod without proxy ports)
came between the two; a stream that joined during such a state holds no
message, so the next sendable one is offered to it alone; a state that fails
to encode (a bug) is counted and sends nothing, and the other topics of the
same refresh are served. Real profile topics over a real index, fed as the
cluster cache feeds them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from destination.ops.metrics import DestinationMetrics
from destination.streams.profiles import ProfileBroadcasts, ProfileEncoder, profile_encoders
from destination.streams.stream_queue import StreamQueue
from destination.translate.endpoints import MeshSettings
from discovery.index import ClusterIndex
from discovery.models import Kind, ObjectRef
from discovery.ports import PortSet
from discovery.profile_topics import EndpointProfileKey, ProfileTopics
from discovery.reflector import Deleted, ReflectorEvent, Upserted
from tests.unit import builders as b

MESH = MeshSettings(
    controller_namespace="linkerd",
    trust_domain="cluster.local",
    enable_h2_upgrade=True,
    force_opaque_transport=True,
)
KEY = EndpointProfileKey("10.0.0.9", 8080)


class World:
    def __init__(self, *, failing_ip: str | None = None) -> None:
        self.index = ClusterIndex()
        self.topics = ProfileTopics(self.index, default_opaque_ports=PortSet.EMPTY)
        service_encoder, endpoint_encoder = profile_encoders(MESH)

        def encode(key: EndpointProfileKey, state: Any) -> bytes | None:
            if key.ip == failing_ip:
                raise RuntimeError("a bug in translation")
            return endpoint_encoder(key, state)

        self.registry = CollectorRegistry()
        self.broadcasts = ProfileBroadcasts(
            topics=self.topics,
            service_encoder=service_encoder,
            endpoint_encoder=ProfileEncoder(encode),
            queue_capacity=10,
            stuck_deadline_s=30,
            metrics=DestinationMetrics(self.registry),
        )

    def apply(self, event: ReflectorEvent) -> None:
        self.topics.note(event)
        if isinstance(event, Deleted):
            self.index.delete(event.kind, event.ref)
        elif isinstance(event, Upserted):
            self.index.upsert(event.record)
        self.topics.note(event)
        self.topics.refresh()

    def pod(self, name: str = "p", ip: str = KEY.ip, **fields: Any) -> None:
        self.apply(Upserted(Kind.POD, b.projected(b.pod(name, ip=ip, **fields))))

    def open(self, key: EndpointProfileKey = KEY) -> tuple[StreamQueue[Any], tuple[bytes, ...]]:
        _, queue, initial = self.broadcasts.open_endpoint(key, on_stuck=lambda: None)
        return queue, initial


def unbuildable() -> dict[str, Any]:
    """A meshed pod whose proxy does not say where it listens: no endpoint can be built."""
    return {"meshed": True, "proxy_env": {}}


async def drained(queue: StreamQueue[Any]) -> list[bytes]:
    """What the stream's writer would send now (the queue's items, taken as the writer does)."""
    sent: list[bytes] = []
    while len(queue):
        sent.extend(await queue.next())
    return sent


async def test_the_message_before_an_unsendable_state_is_not_sent_again_after_it() -> None:
    world = World()
    holder, (bare,) = world.open()
    world.pod(**unbuildable())
    assert await drained(holder) == [], "nothing can be said of that pod"
    world.apply(Deleted(Kind.POD, ObjectRef(b.NS, "p")))
    assert await drained(holder) == [], "the bare endpoint again: the stream holds it"
    world.pod(meshed=True)
    (with_pod,) = await drained(holder)
    assert with_pod != bare


async def test_a_stream_that_joined_during_an_unsendable_state_gets_the_next_message() -> None:
    world = World()
    holder, (bare,) = world.open()
    world.pod(**unbuildable())
    joined, initial = world.open()
    assert initial == ()
    world.apply(Deleted(Kind.POD, ObjectRef(b.NS, "p")))
    assert await drained(holder) == []
    assert await drained(joined) == [bare], "it held nothing: the bare endpoint is news to it"
    world.pod(meshed=True)
    assert await drained(holder) == await drained(joined) != []


async def test_a_state_that_fails_to_encode_is_counted_and_other_topics_are_served() -> None:
    failing = EndpointProfileKey("10.0.0.66", 8080)
    world = World(failing_ip=failing.ip)
    broken, broken_initial = world.open(failing)
    assert broken_initial == (), "nothing can be sent for it"
    healthy, _ = world.open()
    # One burst touching both addresses: the failure must not hold up the other topic.
    for name, ip in (("a", failing.ip), ("p", KEY.ip)):
        event = Upserted(Kind.POD, b.projected(b.pod(name, ip=ip)))
        world.topics.note(event)
        world.index.upsert(event.record)
        world.topics.note(event)
    world.topics.refresh()
    assert len(await drained(healthy)) == 1
    assert await drained(broken) == []
    errors = world.registry.get_sample_value("destination_fanout_errors_total", {"stage": "encode"})
    assert errors == 2  # the initial state and the pod's
