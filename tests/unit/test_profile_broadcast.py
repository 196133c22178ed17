"""Profile broadcasts (destination.streams.profiles): what each GetProfile stream is sent.

Scope: a message equal to the one a stream holds is never offered again, also
when a state nothing can be sent for (a meshed pod without proxy ports)
came between the two; a stream that joined during such a state holds no
message, so the next sendable one is offered to it alone. Real profile
topics over a real index, fed as the cluster cache feeds them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from destination.ops.metrics import DestinationMetrics
from destination.streams.profiles import ProfileBroadcasts, profile_encoders
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
    def __init__(self) -> None:
        self.index = ClusterIndex()
        self.topics = ProfileTopics(self.index, default_opaque_ports=PortSet.EMPTY)
        service_encoder, endpoint_encoder = profile_encoders(MESH)
        self.broadcasts = ProfileBroadcasts(
            topics=self.topics,
            service_encoder=service_encoder,
            endpoint_encoder=endpoint_encoder,
            queue_capacity=10,
            stuck_deadline_s=30,
            metrics=DestinationMetrics(CollectorRegistry()),
        )

    def apply(self, event: ReflectorEvent) -> None:
        self.topics.note(event)
        if isinstance(event, Deleted):
            self.index.delete(event.kind, event.ref)
        elif isinstance(event, Upserted):
            self.index.upsert(event.record)
        self.topics.note(event)
        self.topics.refresh()

    def pod(self, **fields: Any) -> None:
        self.apply(Upserted(Kind.POD, b.projected(b.pod("p", ip=KEY.ip, **fields))))

    def open(self) -> tuple[StreamQueue[Any], tuple[bytes, ...]]:
        _, queue, initial = self.broadcasts.open_endpoint(KEY, on_stuck=lambda: None)
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
