"""grpc.aio wiring: the Destination service, gRPC health and server reflection.

The Destination methods are registered as generic handlers with no response
serializer, so a handler yields the bytes its view encoded once and gRPC writes
them as they are. Reflection reads the descriptors our `_proto` import put in
the default pool, so `grpcurl list/describe` and calls work without protos.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from destination._proto import destination_pb2 as pb
from destination.api.get import GetHandler
from destination.api.get_profile import GetProfileHandler

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Destination"].full_name

# Keepalive: notice dead proxies within about a minute, and let idle proxies
# keep their stream without being punished for pings.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Every proxy reconnects at once after a restart: with the defaults,
    # grpc.aio cancelled about half of a burst of 10,000 new streams
    # (bench/grpc_burst.py); with these limits, none.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]


def build_server(
    *,
    get: GetHandler,
    get_profile: GetProfileHandler,
    health_servicer: health.aio.HealthServicer,
    options: list[tuple[str, object]] | None = None,
) -> grpc.aio.Server:
    """The server, with SERVER_OPTIONS unless `options` replaces them (tests)."""
    server = grpc.aio.server(options=SERVER_OPTIONS if options is None else options)
    handlers = {
        "Get": grpc.unary_stream_rpc_method_handler(
            get.stream,
            request_deserializer=pb.GetDestination.FromString,
            response_serializer=None,
        ),
        "GetProfile": grpc.unary_stream_rpc_method_handler(
            get_profile.stream,
            request_deserializer=pb.GetDestination.FromString,
            response_serializer=None,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server
