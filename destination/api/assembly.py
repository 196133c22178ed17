"""The Destination API over a set of cluster caches: handlers, fan-out, the gRPC server.

`build_api` wires what serves proxies, in one place, for the server
(`destination.app`) and for tests that run a real grpc.aio server over caches
they feed themselves: the Get broadcasts (re-planned when local Services or
the linked clusters change), the GetProfile broadcasts over the local
cluster's profile topics, one per-connection stream limit for both RPCs, and
the server with health and reflection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from destination.api.get import GetHandler
from destination.api.get_profile import GetProfileHandler
from destination.api.guards import ConnectionLimit, StuckStreams
from destination.api.server import build_server
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcasts
from destination.streams.members import Planner
from destination.streams.profiles import ProfileBroadcasts, profile_encoders
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.cluster_store import ClusterStore

__all__ = ["Api", "build_api"]


@dataclass(eq=False)
class Api:
    server: grpc.aio.Server
    get: GetHandler
    get_profile: GetProfileHandler
    broadcasts: Broadcasts
    profile_broadcasts: ProfileBroadcasts
    limit: ConnectionLimit
    shutting_down: asyncio.Event

    def close_all(self) -> None:
        """Shutdown: every stream ends with OK after what it holds; idle ones at once."""
        self.broadcasts.close_all()
        self.profile_broadcasts.close_all()
        self.shutting_down.set()


def build_api(
    *,
    local: ClusterCache,
    store: ClusterStore | None,
    mesh: MeshSettings,
    metrics: DestinationMetrics,
    cluster_domain: str,
    queue_capacity: int,
    stuck_deadline_s: float,
    max_streams_per_connection: int,
    health_servicer: health.aio.HealthServicer,
    server_options: list[tuple[str, object]] | None = None,
) -> Api:
    planner = Planner(local=local, store=store, mesh=mesh)
    broadcasts = Broadcasts(
        queue_capacity=queue_capacity,
        stuck_deadline_s=stuck_deadline_s,
        metrics=metrics,
        planner=planner,
    )
    local.add_service_listener(broadcasts.services_changed)
    if store is not None:
        store.add_listener(broadcasts.clusters_changed)
    limit = ConnectionLimit(max_streams_per_connection)
    stuck = StuckStreams(metrics)
    get = GetHandler(
        local=local,
        store=store,
        broadcasts=broadcasts,
        cluster_domain=cluster_domain,
        metrics=metrics,
        limit=limit,
        stuck=stuck,
    )
    service_encoder, endpoint_encoder = profile_encoders(mesh)
    profile_broadcasts = ProfileBroadcasts(
        topics=local.profiles,
        service_encoder=service_encoder,
        endpoint_encoder=endpoint_encoder,
        queue_capacity=queue_capacity,
        stuck_deadline_s=stuck_deadline_s,
        metrics=metrics,
    )
    shutting_down = asyncio.Event()
    get_profile = GetProfileHandler(
        local=local,
        broadcasts=profile_broadcasts,
        cluster_domain=cluster_domain,
        metrics=metrics,
        shutting_down=shutting_down,
        limit=limit,
        stuck=stuck,
    )
    server = build_server(
        get=get, get_profile=get_profile, health_servicer=health_servicer, options=server_options
    )
    return Api(
        server=server,
        get=get,
        get_profile=get_profile,
        broadcasts=broadcasts,
        profile_broadcasts=profile_broadcasts,
        limit=limit,
        shutting_down=shutting_down,
    )
