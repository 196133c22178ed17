"""The `Get` RPC: resolve the authority, attach to the target's broadcast, stream.

Errors are answered up front with the reference's status codes (§5.1):
INVALID_ARGUMENT for a malformed authority, an IP, or an ExternalName
service; NOT_FOUND for an unknown service or an unlinked remote cluster;
FAILED_PRECONDITION for a remote-discovery mirror without its remote service
name; UNAVAILABLE while the local cache or the link Secrets have not been
listed yet (instead of answering from an empty cache). The mode (local,
remote, federated) chosen here only labels the stream's metrics: which
members serve it is re-planned as the Service and the links change. After that the
handler only moves bytes: it writes the view's cached initial message, then
whatever its queue yields, until the client goes away (the handler task is
cancelled, and `finally` detaches it) or the server shuts down (the queue is
closed and the stream ends with OK).

Every client is hostile until parsed: paths are bounded by DNS limits (and
logged truncated), a context token's node name only chooses a zone and, for
`internalTrafficPolicy: Local` services, a node the cache knows, and each
connection (gRPC peer) may hold at most `max_streams_per_connection` streams;
more are refused with RESOURCE_EXHAUSTED before any work is done for them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import grpc
import structlog
from prometheus_client import Gauge

from destination._proto import destination_pb2 as pb
from destination.api.guards import ConnectionLimit, LimitExceeded, StuckStreams
from destination.authority import (
    InvalidAuthority,
    loggable,
    parse_context_token,
    parse_get_target,
)
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcasts, StreamSnapshot
from destination.streams.members import Mode, StreamRequest, mode_of
from destination.streams.stream_queue import StreamClosed, StreamQueue
from discovery.cluster import ClusterCache
from discovery.cluster_store import ClusterState, ClusterStore
from discovery.models import ServiceInfo, ServiceRef

log = structlog.get_logger("destination.api.get")
_stream_ids = itertools.count(1)


class GetHandler:
    def __init__(
        self,
        *,
        local: ClusterCache,
        store: ClusterStore | None,
        broadcasts: Broadcasts,
        cluster_domain: str,
        metrics: DestinationMetrics,
        sync_timeout_s: float = 10.0,
        max_streams_per_connection: int = 10_000,
        limit: ConnectionLimit | None = None,
        stuck: StuckStreams | None = None,
    ) -> None:
        self._local = local
        self._store = store
        self._broadcasts = broadcasts
        self._cluster_domain = cluster_domain
        self._metrics = metrics
        self._sync_timeout_s = sync_timeout_s
        # Shared with GetProfile in the server: one limit per connection for both RPCs.
        self.limit = limit if limit is not None else ConnectionLimit(max_streams_per_connection)
        self._stuck = stuck if stuck is not None else StuckStreams(metrics)

    def streams_of(self, peer: str) -> int:
        """Streams the connection `peer` holds now, counted from admission to the end."""
        return self.limit.streams_of(peer)

    @property
    def admitted(self) -> int:
        """Streams admitted and not yet ended, over every connection."""
        return self.limit.admitted

    async def stream(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        # This frame lives as long as the stream, ten thousand at a time: it
        # keeps only what writing needs (no per-stream logger, no context
        # manager objects); parsing and checks live in `_open`.
        peer = context.peer()
        stream = next(_stream_ids)
        try:
            self.limit.acquire(peer)
        except LimitExceeded as err:
            await self._abort(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(err), stream, request
            )
        try:
            queue, initial, active = await self._open(request, context, stream)
            del request  # kept by nothing now: ten thousand frames hold only what they write
            try:
                for payload in initial:
                    yield payload
                del initial
                while True:
                    try:
                        payloads = await queue.next()
                    except StreamClosed:
                        return
                    for payload in payloads:
                        yield payload
            finally:
                self._broadcasts.close_stream(queue)
                active.dec()
                log.debug("stream_closed", stream=stream)
        finally:
            self.limit.release(peer)

    async def _open(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext, stream: int
    ) -> tuple[StreamQueue[StreamSnapshot], tuple[bytes, ...], Gauge]:
        """Parse, check and attach a new stream; aborts it with the right status."""
        try:
            parsed = parse_get_target(request.path, cluster_domain=self._cluster_domain)
        except InvalidAuthority as err:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err), stream, request)
        token, token_problem = parse_context_token(request.context_token)
        if token_problem:
            log.info("context_token_ignored", stream=stream, reason=token_problem)
        await self._wait_synced(context, stream, request)
        service = ServiceRef(parsed.service.namespace, parsed.service.name)
        info = self._local.index.services.get(service)
        if info is None:
            await self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"Service {service.name}.{service.namespace} not found",
                stream,
                request,
            )
        assert info is not None
        mode = mode_of(info)
        problem = self._refusal(info, mode, request.path)
        if problem is not None:
            await self._abort(context, problem[0], problem[1], stream, request)

        stream_request = StreamRequest(
            service=service,
            port=parsed.port,
            hostname=parsed.service.hostname,
            node_name=token.node_name,
        )
        _, queue, initial = self._broadcasts.open_stream(
            request=stream_request,
            on_stuck=self._stuck.ender(context, stream, loggable(request.path)),
        )
        active = self._metrics.active_streams.labels("Get", mode.value)
        active.inc()
        log.debug(
            "stream_opened",
            stream=stream,
            path=loggable(request.path),
            peer=context.peer(),
            node=token.node_name,
            mode=mode.value,
        )
        return queue, initial, active

    async def _wait_synced(
        self, context: grpc.aio.ServicerContext, stream: int, request: pb.GetDestination
    ) -> None:
        """Answer from a listed cache only: the local objects and the link Secrets."""
        if self._local.synced and (self._store is None or self._store.synced):
            return
        try:
            async with asyncio.timeout(self._sync_timeout_s):
                await self._local.wait_synced()
                if self._store is not None:
                    await self._store.wait_synced()
        except TimeoutError:
            await self._abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "discovery cache is not synced yet",
                stream,
                request,
            )

    def _refusal(
        self, info: ServiceInfo, mode: Mode, path: str
    ) -> tuple[grpc.StatusCode, str] | None:
        """Why a Get of this Service cannot start (reference §5.1), or None."""
        if mode is Mode.FEDERATED:
            return None
        if mode is Mode.REMOTE:
            cluster = info.remote_discovery_cluster or ""
            if not info.remote_service:
                return (
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Remote discovery service missing remote service name {path}",
                )
            remote = self._store.get(cluster) if self._store is not None else None
            if remote is None:
                return grpc.StatusCode.NOT_FOUND, f"Remote cluster not found: {cluster}"
            if remote.state is ClusterState.INVALID:
                return (
                    grpc.StatusCode.NOT_FOUND,
                    f"Remote cluster not usable: {cluster}: {remote.error}",
                )
            remote_info = remote.cache.index.services.get(
                ServiceRef(info.ref.namespace, info.remote_service)
            )
            if remote_info is not None and remote_info.is_external_name:
                return grpc.StatusCode.INVALID_ARGUMENT, f"Invalid authority: {path}"
            return None
        if info.is_external_name:
            return grpc.StatusCode.INVALID_ARGUMENT, f"Invalid authority: {path}"
        return None

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        code: grpc.StatusCode,
        message: str,
        stream: int,
        request: pb.GetDestination,
    ) -> None:
        log.info(
            "get_rejected",
            stream=stream,
            path=loggable(request.path),
            peer=context.peer(),
            code=code.name,
            reason=message,
        )
        self._metrics.streams_total.labels("Get", code.name).inc()
        await context.abort(code, message)
