"""The `Get` RPC: resolve the authority, attach to the view's broadcast, stream.

Errors are answered up front with the reference's status codes (§5.1):
INVALID_ARGUMENT for a malformed authority, an IP, or an ExternalName
service; NOT_FOUND for an unknown service; UNAVAILABLE while the local cache
has not synced yet (instead of answering from an empty cache). After that the
handler only moves bytes: it writes the view's cached initial message, then
whatever its queue yields, until the client goes away (the handler task is
cancelled, and `finally` detaches it) or the server shuts down (the queue is
closed and the stream ends with OK).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import grpc
import structlog

from discovery.cluster import ClusterCache
from discovery.models import ServiceRef
from discovery.topics import ViewKey

from ._proto import destination_pb2 as pb
from .authority import InvalidAuthority, parse_context_token, parse_get_target
from .broadcast import Broadcasts
from .encode import EncodeContext, MeshSettings
from .metrics import DestinationMetrics
from .stream_queue import StreamClosed

log = structlog.get_logger("destination.get")
_stream_ids = itertools.count(1)


class GetHandler:
    def __init__(
        self,
        *,
        local: ClusterCache,
        broadcasts: Broadcasts,
        mesh: MeshSettings,
        cluster_domain: str,
        metrics: DestinationMetrics,
        sync_timeout_s: float = 10.0,
    ) -> None:
        self._local = local
        self._broadcasts = broadcasts
        self._mesh = mesh
        self._cluster_domain = cluster_domain
        self._metrics = metrics
        self._sync_timeout_s = sync_timeout_s
        self._stuck_aborts: set[asyncio.Future[None]] = set()

    async def stream(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        stream_log = log.bind(stream=next(_stream_ids), path=request.path, peer=context.peer())
        try:
            target = parse_get_target(request.path, cluster_domain=self._cluster_domain)
        except InvalidAuthority as err:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err), stream_log)
        token, token_problem = parse_context_token(request.context_token)
        if token_problem:
            stream_log.info("context_token_ignored", reason=token_problem)
        if not self._local.synced:
            try:
                async with asyncio.timeout(self._sync_timeout_s):
                    await self._local.wait_synced()
            except TimeoutError:
                await self._abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    "discovery cache is not synced yet",
                    stream_log,
                )
        service = ServiceRef(target.service.namespace, target.service.name)
        info = self._local.index.services.get(service)
        if info is None:
            await self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"Service {service.name}.{service.namespace} not found",
                stream_log,
            )
        assert info is not None
        if info.federated_local is not None or info.federated_remote is not None:
            await self._abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                f"federated service {service} is not supported yet",
                stream_log,
            )
        if info.remote_discovery_cluster is not None:
            if not info.remote_service:
                await self._abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Remote discovery service missing remote service name {request.path}",
                    stream_log,
                )
            await self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"Remote cluster not found: {info.remote_discovery_cluster}",
                stream_log,
            )
        if info.is_external_name:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid authority: {request.path}",
                stream_log,
            )

        view = ViewKey(hostname=target.service.hostname, node_name=token.node_name, filtering=True)
        broadcast, queue, initial = self._broadcasts.open_stream(
            cache=self._local,
            service=service,
            port=target.port,
            view=view,
            context=self._context(target.port, token.node_name),
            on_stuck=self._ender(context, stream_log),
        )
        active = self._metrics.active_streams.labels("Get", "local")
        active.inc()
        stream_log.debug("stream_opened", node=token.node_name)
        try:
            for payload in initial:
                yield payload
            while True:
                try:
                    payloads = await queue.next()
                except StreamClosed:
                    return
                for payload in payloads:
                    yield payload
        finally:
            self._broadcasts.close_stream(broadcast, queue)
            active.dec()
            stream_log.debug("stream_closed")

    def _context(self, port: int, node_name: str) -> Callable[[], EncodeContext]:
        def build() -> EncodeContext:
            return EncodeContext(
                mesh=self._mesh,
                requested_port=port,
                subscriber_zone=self._local.index.node_zone(node_name),
                trust_domain=self._mesh.trust_domain,
            )

        return build

    def _ender(
        self,
        context: grpc.aio.ServicerContext,
        stream_log: structlog.typing.FilteringBoundLogger,
    ) -> Callable[[], None]:
        def end_stuck_stream() -> None:
            self._metrics.stuck_streams.inc()
            stream_log.warning("stream_stuck_ended")
            # The handler is blocked in a write the client does not read; abort
            # from beside it so that gRPC sends a status and the proxy reconnects.
            abort = asyncio.ensure_future(
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "stream stalled: the client did not read updates; reconnect",
                )
            )
            self._stuck_aborts.add(abort)
            abort.add_done_callback(self._forget_abort)

        return end_stuck_stream

    def _forget_abort(self, abort: asyncio.Future[None]) -> None:
        self._stuck_aborts.discard(abort)
        if not abort.cancelled():
            abort.exception()  # AbortError is how abort() ends; nothing to report

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        code: grpc.StatusCode,
        message: str,
        stream_log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        stream_log.info("get_rejected", code=code.name, reason=message)
        self._metrics.streams_total.labels("Get", code.name).inc()
        await context.abort(code, message)
