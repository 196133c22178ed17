"""Composition root of `destination mirror`: the controller, its admin server, shutdown.

Startup: the admin server first (`/live` answers, `/ready` says "not yet"),
then the local watches; `/ready` turns 200 once they have listed. SIGTERM or
SIGINT stops every Link's worker (mirrors are left as they are: a restart or
another replica carries on) and releases the Leases, so that a standby takes
over at once.

`/links` is a JSON status of every Link this replica sees: whether it leads
it, the worker's state and error, the gateway's liveness and latency, and how
many Services it mirrors; `destination multicluster gateways` reads it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from contextlib import AsyncExitStack
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from destination.ops.admin import AdminServer
from discovery.local_transport import connect_local_cluster
from discovery.metrics import DiscoveryMetrics

from .config import MirrorConfig
from .controller import MirrorController
from .leases import LeaseSettings
from .local_federation import LocalFederationSettings, exclusions
from .metrics import MirrorMetrics
from .selectors import LinkSelector, parse_selector_text
from .worker import WorkerSettings

__all__ = ["links_document", "local_federation_settings", "run"]

log = structlog.get_logger("mirror.app")

API_CONNECTION_POOL = 32


def local_federation_settings(config: MirrorConfig) -> LocalFederationSettings | None:
    """The local member's settings, or None when no local Service joins (empty selector)."""
    if not config.federated_service_selector.strip():
        return None
    return LocalFederationSettings(
        selector=LinkSelector(parse_selector_text(config.federated_service_selector)),
        excluded_labels=exclusions(config.excluded_labels),
        excluded_annotations=exclusions(config.excluded_annotations),
        repair_period_s=config.repair_period_s,
    )


def links_document(controller: MirrorController) -> dict[str, object]:
    """Every Link this replica sees, for `/links` (and `destination multicluster gateways`)."""
    links: list[dict[str, Any]] = []
    for ref, record in sorted(controller.local.links.items()):
        link = record.link
        if link is None:
            continue
        supervisor = controller.supervisors.get(link.name)
        worker = supervisor.worker if supervisor is not None else None
        spec = link.spec
        probe = worker.probe if worker is not None else None
        links.append(
            {
                "name": link.name,
                "namespace": ref.namespace,
                "cluster": spec.target_cluster_name if spec is not None else None,
                "leader": bool(supervisor and supervisor.leadership.leading),
                "state": worker.state
                if worker is not None
                else ("invalid" if controller.problem_of(link.name) else "standby"),
                "error": (worker.error if worker is not None else None)
                or controller.problem_of(link.name),
                "gateway": None
                if spec is None or not spec.gateway_enabled
                else {
                    "addresses": list(spec.gateway_addresses),
                    "port": spec.gateway_port,
                    "probed": probe is not None,
                    "alive": worker.alive if worker is not None else None,
                    "latency_ms": None
                    if probe is None or probe.latency_ms is None
                    else round(probe.latency_ms, 1),
                },
                "mirrored": dict(worker.mirrored) if worker is not None else {},
                "last_reconcile": worker.last_reconcile if worker is not None else None,
            }
        )
    leadership = controller.local_federation_leadership
    return {
        "links": links,
        "identity": controller.identity,
        "local_federation": None if leadership is None else {"leader": leadership.leading},
    }


async def run(config: MirrorConfig, *, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop`, for tests); returns the exit status."""
    loop = asyncio.get_running_loop()
    handle_signals = stop is None
    stop = stop or asyncio.Event()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    identity = config.identity or os.environ.get("HOSTNAME") or socket.gethostname()
    async with AsyncExitStack() as exits:
        # Without kubernetes-asyncio in the common cases (see discovery.local_transport).
        api = await connect_local_cluster(config.kubeconfig, pool_size=API_CONNECTION_POOL)
        exits.push_async_callback(api.close)
        controller = MirrorController(
            api=api,
            settings=WorkerSettings(
                namespace=config.namespace,
                repair_period_s=config.repair_period_s,
                create_namespaces=config.enable_namespace_creation,
                headless=config.enable_headless_services,
                allow_insecure=config.allow_insecure_remote_links,
                max_objects_per_kind=config.remote_max_objects_per_kind,
            ),
            metrics=MirrorMetrics(registry),
            discovery_metrics=DiscoveryMetrics(registry),
            identity=identity,
            lease_settings=LeaseSettings(
                duration_s=config.lease_duration_s,
                renew_deadline_s=config.lease_renew_deadline_s,
                retry_s=config.lease_retry_s,
            ),
            delete_mirrors_with_link=config.delete_mirrors_with_link,
            local_federation=local_federation_settings(config),
        )
        admin = AdminServer(
            registry=registry,
            ready=lambda: controller.ready,
            documents={"/links": lambda: links_document(controller)},
        )
        await admin.start(config.admin.host, config.admin.port)
        exits.push_async_callback(admin.stop)
        log.info(
            "mirror_serving",
            namespace=config.namespace,
            admin=f"{config.admin.host}:{admin.port}",
            identity=identity,
        )
        running = asyncio.create_task(controller.run(), name="mirror controller")
        stopped = asyncio.create_task(stop.wait(), name="stop signal")
        done, _ = await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        status = 0
        if running in done:
            status = 1
            error = None if running.cancelled() else running.exception()
            log.error("mirror_controller_ended", exc_info=error)
        for task in (running, stopped):
            task.cancel()
        await asyncio.gather(running, stopped, return_exceptions=True)
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("mirror_stopped", status=status)
    return status
