"""Composition root of `destination serve`: build everything, run, shut down in order.

Startup: admin server first (so `/live` answers and `/ready` says "not yet"),
then the gRPC server, then the local cluster's watches and the cluster store
(link Secrets, then one connection per linked cluster). gRPC health turns
SERVING and `/ready` turns ready once the local cache has synced and the link
Secrets have been listed; Gets that arrive earlier wait for that (bounded)
rather than see an empty cache. Remote clusters never hold readiness back: a
linked cluster that is down is that cluster's problem, shown in its status.

Shutdown (SIGTERM or SIGINT): `/ready` turns 503 and health NOT_SERVING (so
no new proxy is sent here), every stream's queue is closed so handlers finish
with OK after writing what they hold (a stream that opens during the drain
gets the current state and ends at once), the gRPC server stops with a grace
period, then the watches and the admin server. If the watches end by
themselves (a bug: they retry every error), the server shuts down the same way
and `run` returns 1, so that the process exits non-zero and is restarted.

Exceptions nobody awaited (a callback's, a forgotten task's) reach the event
loop's handler; `run` installs one that logs them as structured events instead
of asyncio's plain stderr text.
"""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import AsyncExitStack
from typing import Any

import structlog
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from destination.api.assembly import build_api
from destination.api.server import SERVICE_NAME
from destination.config import ServerConfig
from destination.ops.admin import AdminServer
from destination.ops.gc import GcPacer
from destination.ops.metrics import DestinationMetrics
from destination.translate.endpoints import MeshSettings, http2_params_from_json
from discovery.cluster import ClusterCache
from discovery.cluster_store import ClusterStore, ClusterStoreCollector, StalenessPolicy
from discovery.connection import LOCAL_KINDS, Connection
from discovery.local_transport import connect_local_cluster
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName
from discovery.transport import ApiTransport

log = structlog.get_logger("destination.app")

EXIT_OK = 0
EXIT_WATCHES_ENDED = 1

# Each watch holds one connection; leave room for lists and relists.
API_CONNECTION_POOL = 32


async def local_api(kubeconfig: str | None) -> ApiTransport:
    """The local cluster's API server, with aiohttp directly (see `discovery.local_transport`).

    In-cluster config and plain kubeconfigs never load kubernetes-asyncio
    (~38 MB); only a kubeconfig with plugins or proxies is handed to it.
    """
    return await connect_local_cluster(kubeconfig, pool_size=API_CONNECTION_POOL)


def mesh_settings(config: ServerConfig) -> MeshSettings:
    return MeshSettings(
        controller_namespace=config.controller_namespace,
        trust_domain=config.identity_trust_domain,
        enable_h2_upgrade=config.enable_h2_upgrade,
        force_opaque_transport=config.force_opaque_transport,
        ext_endpoint_zone_weights=config.ext_endpoint_zone_weights,
        http2_params=http2_params_from_json(config.meshed_http2_client_params),
    )


async def _watch_all(
    local: ClusterCache, connection: Connection, store: ClusterStore | None
) -> None:
    """The local watches, the local sync mark and the cluster store, until cancelled."""

    async def mark_local_synced() -> None:
        await connection.synced.wait()
        local.mark_synced(took_s=time.time() - connection.started_at)

    async with asyncio.TaskGroup() as group:
        group.create_task(connection.run(), name="local watches")
        group.create_task(mark_local_synced(), name="local sync")
        if store is not None:
            group.create_task(store.run(), name="cluster store")


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: one structured error line per lost exception."""
    exception = context.get("exception")
    source = context.get("task") or context.get("future") or context.get("handle")
    log.error(
        "unhandled_exception",
        message=str(context.get("message", ""))[:300],
        source=repr(source)[:300] if source is not None else None,
        exc_info=exception if isinstance(exception, BaseException) else None,
    )


async def run(config: ServerConfig, *, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or until `stop` is set, for tests)."""
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(log_loop_exception)
    try:
        return await _run(config, loop, stop)
    finally:
        loop.set_exception_handler(previous_handler)


async def _run(
    config: ServerConfig, loop: asyncio.AbstractEventLoop, stop: asyncio.Event | None
) -> int:
    handle_signals = stop is None
    stop = stop or asyncio.Event()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    discovery_metrics = DiscoveryMetrics(registry)
    metrics = DestinationMetrics(registry)

    async with AsyncExitStack() as exits:
        api = await local_api(config.kubeconfig)
        exits.push_async_callback(api.close)
        local = ClusterCache(
            name=ClusterName(config.cluster_name),
            metrics=discovery_metrics,
            default_opaque_ports=config.default_opaque_ports,
            enable_ipv6=config.enable_ipv6,
        )
        connection = Connection(
            cluster=local.name,
            api=api,
            kinds=LOCAL_KINDS,
            sink=local.apply,
            metrics=discovery_metrics,
        )
        store = None
        if config.enable_remote_discovery:
            store = ClusterStore(
                local_api=api,
                namespace=config.controller_namespace,
                local_name=config.cluster_name,
                metrics=discovery_metrics,
                default_opaque_ports=config.default_opaque_ports,
                enable_ipv6=config.enable_ipv6,
                staleness=StalenessPolicy(config.remote_withdraw_after_s or None),
                allow_insecure_remote_links=config.allow_insecure_remote_links,
                max_objects_per_kind=config.remote_max_objects_per_kind,
            )
            registry.register(ClusterStoreCollector(store))

        draining = False

        def ready() -> bool:
            return not draining and local.synced and (store is None or store.synced)

        def cluster_statuses() -> list[dict[str, object]]:
            return [status.to_json() for status in store.statuses()] if store is not None else []

        admin = AdminServer(registry=registry, ready=ready, clusters=cluster_statuses)
        await admin.start(config.admin.host, config.admin.port)
        exits.push_async_callback(admin.stop)

        health_servicer = health.aio.HealthServicer()
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        served = build_api(
            local=local,
            store=store,
            mesh=mesh_settings(config),
            metrics=metrics,
            cluster_domain=config.cluster_domain,
            queue_capacity=config.stream_queue_capacity,
            stuck_deadline_s=config.stream_stuck_deadline_s,
            max_streams_per_connection=config.max_streams_per_connection,
            health_servicer=health_servicer,
        )
        server = served.server
        port = server.add_insecure_port(str(config.listen))
        await server.start()
        log.info(
            "serving",
            grpc=f"{config.listen.host}:{port}",
            admin=f"{config.admin.host}:{admin.port}",
            cluster=config.cluster_name,
        )

        watches = asyncio.create_task(_watch_all(local, connection, store), name="cluster watches")
        pacer = GcPacer(registry, freeze=config.gc_freeze, thaw_period_s=config.gc_thaw_period_s)
        pacing = asyncio.create_task(pacer.run(), name="gc pacer")

        async def mark_serving() -> None:
            await local.wait_synced()
            if store is not None:
                await store.wait_synced()
            for service in ("", SERVICE_NAME):
                await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

        serving = asyncio.create_task(mark_serving(), name="health serving")
        stopped = asyncio.create_task(stop.wait(), name="stop signal")
        done, _ = await asyncio.wait({stopped, watches}, return_when=asyncio.FIRST_COMPLETED)
        status = EXIT_OK
        if watches in done and not stopped.done():
            status = EXIT_WATCHES_ENDED
            error = None if watches.cancelled() else watches.exception()
            log.error("watches_ended_unexpectedly", exc_info=error, error=repr(error)[:300])

        log.info("shutting_down", grace_s=config.shutdown_grace_s)
        draining = True
        await health_servicer.enter_graceful_shutdown()
        served.close_all()
        await server.stop(config.shutdown_grace_s)
        tasks: tuple[asyncio.Task[Any], ...] = (watches, serving, stopped, pacing)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            lost = isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            )
            if lost and not (task is watches and status != EXIT_OK):  # that one is logged
                log.error("task_failed", task=task.get_name(), exc_info=result)
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped", status=status)
    return status
