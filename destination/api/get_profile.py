"""The `GetProfile` RPC: dispatch the authority to a profile flow, then stream its broadcast.

Dispatch follows the reference's order and status codes (§6.1):

1. an unparsable path: INVALID_ARGUMENT `invalid authority: "<path>": "<why>"`;
2. an IP: a Service's ClusterIP runs the service-profile flow with that
   Service's name; any other address the endpoint-profile flow, after
   checking that no two live pods (or host ports, or ExternalWorkloads) claim
   it (FAILED_PRECONDITION otherwise);
3. a name outside the cluster domain: INVALID_ARGUMENT `invalid service "<host>": "<why>"`;
4. a pod DNS name (`<host>.<svc>.<ns>.svc.<domain>`): the endpoint-profile
   flow for the endpoint with that hostname (NOT_FOUND when none has it); an
   endpoint without a pod (a headless multicluster mirror) answers for its
   address instead of crashing as the reference does;
5. otherwise the service-profile flow: an unknown Service is UNKNOWN
   `service "<svc>" not found` (the reference's code, kept: proxies treat it
   like NOT_FOUND), a port the Service does not declare gets one empty
   `DestinationProfile` and an idle stream (§6.3.1), an ExternalName Service
   INVALID_ARGUMENT.

Every stream counts against its connection's stream limit, shared with Get
(RESOURCE_EXHAUSTED beyond it), from admission to its end.

After that the handler only moves bytes, as Get's does: the broadcast's
current message, then whatever its queue yields, until the client goes away
or the server shuts down (the queue is closed: the stream ends with OK).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from prometheus_client import Gauge

from destination._proto import destination_pb2 as pb
from destination.api.guards import ConnectionLimit, LimitExceeded, StuckStreams
from destination.authority import (
    InvalidAuthority,
    is_ip,
    loggable,
    parse_authority,
    parse_context_token,
    parse_service_host,
)
from destination.ops.metrics import DestinationMetrics
from destination.streams.profiles import ProfileBroadcast, ProfileBroadcasts
from destination.streams.stream_queue import StreamClosed, StreamQueue
from discovery.by_address import normalize_ip
from discovery.cluster import ClusterCache
from discovery.models import ObjectRef, ServiceRef
from discovery.profile_topics import EndpointProfileKey, ServiceProfileKey

log = structlog.get_logger("destination.get_profile")
_stream_ids = itertools.count(1)
EMPTY_PROFILE = pb.DestinationProfile().SerializeToString()  # b"": every field unset


class Rejected(Exception):
    """A request answered with an error status before any message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Opened:
    broadcast: ProfileBroadcast[Any, Any] | None  # None: the idle empty profile
    queue: StreamQueue[Any] | None
    initial: tuple[bytes, ...]
    active: Gauge


class GetProfileHandler:
    def __init__(
        self,
        *,
        local: ClusterCache,
        broadcasts: ProfileBroadcasts,
        cluster_domain: str,
        metrics: DestinationMetrics,
        shutting_down: asyncio.Event,
        limit: ConnectionLimit,
        stuck: StuckStreams,
        sync_timeout_s: float = 10.0,
    ) -> None:
        self._local = local
        self._broadcasts = broadcasts
        self._cluster_domain = cluster_domain
        self._metrics = metrics
        self._shutting_down = shutting_down
        self._limit = limit
        self._stuck = stuck
        self._sync_timeout_s = sync_timeout_s

    async def stream(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        # Lives as long as the stream: holds only what writing needs (see Get's).
        peer = context.peer()
        stream = next(_stream_ids)
        try:
            # Against the same per-connection limit as Get: a proxy opens both.
            self._limit.acquire(peer)
        except LimitExceeded as err:
            rejected = Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
            await self._reject(context, rejected, stream, request)
        try:
            try:
                opened = await self._open(request, context, stream)
            except Rejected as rejected:
                await self._reject(context, rejected, stream, request)
                return
            broadcast, queue, initial, active = (
                opened.broadcast,
                opened.queue,
                opened.initial,
                opened.active,
            )
            del opened, request  # the frame keeps only what writing needs
            active.inc()
            try:
                for payload in initial:
                    yield payload
                del initial
                if queue is None:
                    await self._shutting_down.wait()  # the empty profile: idle until shutdown
                    return
                while True:
                    try:
                        payloads = await queue.next()
                    except StreamClosed:
                        return
                    for payload in payloads:
                        yield payload
            finally:
                if broadcast is not None and queue is not None:
                    self._broadcasts.close_stream(broadcast, queue)
                active.dec()
        finally:
            self._limit.release(peer)

    async def _reject(
        self,
        context: grpc.aio.ServicerContext,
        rejected: Rejected,
        stream: int,
        request: pb.GetDestination,
    ) -> None:
        log.info(
            "get_profile_rejected",
            stream=stream,
            path=loggable(request.path),
            peer=context.peer(),
            code=rejected.code.name,
            reason=rejected.message,
        )
        self._metrics.streams_total.labels("GetProfile", rejected.code.name).inc()
        await context.abort(rejected.code, rejected.message)

    async def _open(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext, stream: int
    ) -> _Opened:
        path = request.path
        try:
            authority = parse_authority(path)
        except InvalidAuthority as err:
            raise Rejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'invalid authority: "{loggable(path)}": "{loggable(err.reason)}"',
            ) from None
        token, token_problem = parse_context_token(request.context_token)
        if token_problem:
            log.info("context_token_ignored", stream=stream, reason=token_problem)
        await self._wait_synced()
        on_stuck = self._stuck.ender(context, stream, loggable(path))
        if is_ip(authority.host):
            ip = normalize_ip(authority.host)
            assert ip is not None
            return self._by_ip(ip, authority.port, token.ns, on_stuck)
        try:
            name = parse_service_host(authority.host, cluster_domain=self._cluster_domain)
        except InvalidAuthority as err:
            raise Rejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'invalid service "{loggable(authority.host)}": "{loggable(err.reason)}"',
            ) from None
        service = ServiceRef(name.namespace, name.name)
        if name.hostname is not None:
            ip = self._pod_dns_ip(service, name.hostname)
            return self._endpoint(ip, authority.port, on_stuck)
        return self._service(service, authority.port, authority.host, token.ns, path, on_stuck)

    async def _wait_synced(self) -> None:
        if self._local.synced:
            return
        try:
            async with asyncio.timeout(self._sync_timeout_s):
                await self._local.wait_synced()
        except TimeoutError:
            raise Rejected(
                grpc.StatusCode.UNAVAILABLE, "discovery cache is not synced yet"
            ) from None

    # -- flows ---------------------------------------------------------------------

    def _by_ip(self, ip: str, port: int, client_ns: str, on_stuck: Callable[[], None]) -> _Opened:
        index = self._local.index
        services = index.services_at(ip)
        if len(services) > 1:
            raise Rejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"found {len(services)} services with conflicting cluster IP {ip}",
            )
        if services:
            service = services[0]
            fqn = f"{service.name}.{service.namespace}.svc.{self._cluster_domain}"
            return self._service(service, port, fqn, client_ns, ip, on_stuck)
        pods = index.live_pods_at(ip)
        if len(pods) > 1:
            raise Rejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"found {len(pods)} pods with a conflicting pod network IP {ip}",
            )
        if not pods:
            host_pods = index.live_pods_at_host_port(ip, port)
            if len(host_pods) > 1:
                raise Rejected(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"found {len(host_pods)} pods with a conflicting host network endpoint "
                    f"{ip}:{port}",
                )
            if not host_pods:
                workloads = index.workloads_at(ip, port)
                if len(workloads) > 1:
                    raise Rejected(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"found {len(workloads)} externalworkloads with a conflicting ip "
                        f"{ip}:{port}",
                    )
        return self._endpoint(ip, port, on_stuck)

    def _pod_dns_ip(self, service: ServiceRef, hostname: str) -> str:
        """The address of the endpoint named `hostname` in the service's slices."""
        index = self._local.index
        for slice_info in sorted(index.slices_of(service), key=lambda s: s.ref.name):
            if slice_info.address_type == "FQDN":
                continue
            for endpoint in slice_info.endpoints:
                if endpoint.hostname != hostname or not endpoint.addresses:
                    continue
                target = endpoint.target
                if target is not None and target.kind == "Pod":
                    pod = index.pods.get(
                        ObjectRef(target.namespace or slice_info.ref.namespace, target.name)
                    )
                    if pod is None:
                        raise Rejected(
                            grpc.StatusCode.UNKNOWN,
                            f'pod "{target.name}" not found',
                        )
                    for candidate in (*pod.ips, *endpoint.addresses):
                        ip = normalize_ip(candidate)
                        if ip is not None:
                            return ip
                # No pod behind it (a headless multicluster mirror): its own address.
                for candidate in endpoint.addresses:
                    ip = normalize_ip(candidate)
                    if ip is not None:
                        return ip
        raise Rejected(
            grpc.StatusCode.NOT_FOUND,
            f"no pod found in EndpointSlices of Service {service.namespace}/{service.name} "
            f"for hostname {hostname}",
        )

    def _endpoint(self, ip: str, port: int, on_stuck: Callable[[], None]) -> _Opened:
        broadcast, queue, initial = self._broadcasts.open_endpoint(
            EndpointProfileKey(ip, port), on_stuck=on_stuck
        )
        return _Opened(
            broadcast, queue, initial, self._metrics.active_streams.labels("GetProfile", "endpoint")
        )

    def _service(
        self,
        service: ServiceRef,
        port: int,
        fqn: str,
        client_ns: str,
        path: str,
        on_stuck: Callable[[], None],
    ) -> _Opened:
        info = self._local.index.services.get(service)
        if info is None:
            raise Rejected(grpc.StatusCode.UNKNOWN, f'service "{service.name}" not found')
        if not any(declared.port == port for declared in info.ports):
            return _Opened(
                None,
                None,
                (EMPTY_PROFILE,),
                self._metrics.active_streams.labels("GetProfile", "undeclared_port"),
            )
        if info.is_external_name:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid authority: {loggable(path)}")
        key = ServiceProfileKey(
            service=service,
            port=port,
            fqn=fqn,
            client_ns="" if client_ns == service.namespace else client_ns,
        )
        broadcast, queue, initial = self._broadcasts.open_service(key, on_stuck=on_stuck)
        return _Opened(
            broadcast, queue, initial, self._metrics.active_streams.labels("GetProfile", "service")
        )
