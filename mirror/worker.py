"""One Link's worker: read the target cluster, keep the local mirrors equal to what it says.

A worker runs while its replica holds the Link's Lease. It connects to the
target cluster with the Link's credentials (discovery's `Connection`: the
same transport, watches, backoff and liveness probe as remote discovery,
with the mirror's own projection of Services), probes the gateway when the
Link says how, and reconciles: desired objects (`desired.py`) against the
local cluster's objects of this Link (`local.py`), writing only what differs
(`objects.plan`), then the federated memberships and the Link's status.

Reconciles are triggered by events (remote Services and EndpointSlices, our
own objects changing or disappearing, namespaces appearing, the gateway's
liveness) and coalesced: a burst of events costs one reconcile, and at most
one runs at a time. A periodic reconcile (`repair_period_s`) repairs drift
that no event reports. Nothing is reconciled before the remote watches have
listed everything: a half-listed target must never make mirrors look
orphaned. A failed reconcile is retried with backoff; an object whose write
failed waits out its own backoff, so that other objects' events do not make
it fail again and again (it stays reported in the Link's status meanwhile).

Each worker is isolated: its own connection, tasks and backoff; a slow,
broken or unreachable target delays only its own Link.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from discovery.connection import Connection
from discovery.kubeconfig import KubeconfigError
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef, ServiceRef, SliceInfo
from discovery.project import Invalid, Record, Warn, project_slice
from discovery.reflector import Deleted, Listed, ReflectorEvent
from discovery.transport import ApiTransport, remote_transport_from_kubeconfig

from .desired import Condition, Desired, Situation, desired_state
from .events import record_link_event
from .federation import parse_remote_members
from .links import LINK_API, Link, LinkSpec
from .local import Credentials, LocalState
from .membership import write_membership
from .metrics import MirrorMetrics
from .naming import (
    CLUSTER_NAME,
    FEDERATED_SUFFIX,
    HEADLESS_MIRROR_OF,
    MIRRORED_SERVICE,
    REMOTE_DISCOVERY,
    remote_name,
)
from .objects import Action, LocalObject, Step, plan
from .probe import GatewayProbe
from .remote import RemoteService, RemoteView, project_remote_service
from .status import link_status
from .writer import Writer

__all__ = ["LinkWorker", "WorkerSettings"]

log = structlog.get_logger("mirror.worker")

RESOLVE_TIMEOUT_S = 5.0
WRITE_CONCURRENCY = 16
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 60.0


@dataclass(frozen=True, slots=True)
class _Held:
    """An object whose last write failed: not tried again before `until` (loop time)."""

    until: float
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    namespace: str  # the controller's: Links, credentials, Events
    repair_period_s: float = 60.0
    debounce_s: float = 0.05
    create_namespaces: bool = False
    headless: bool = False
    allow_insecure: bool = False
    max_objects_per_kind: int = 250_000


def _remote_projector(kind: Kind, raw: Any, *, on_warning: Warn | None = None) -> Record | Invalid:
    """Target Services as RemoteService; EndpointSlices as discovery reads them."""
    if kind is Kind.ENDPOINT_SLICE:
        return project_slice(raw, on_warning=on_warning)
    service = project_remote_service(raw)
    if service is None:
        return Invalid(kind, "None", "Service without name or namespace")
    if service.problems and on_warning is not None:
        on_warning("; ".join(service.problems)[:300])
    return service


async def resolve_gateway(addresses: tuple[str, ...]) -> tuple[str, ...] | None:
    """Every IP of the gateway's addresses (names resolved now), sorted; None on failure."""
    loop = asyncio.get_running_loop()
    found: set[str] = set()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            for address in addresses:
                infos = await loop.getaddrinfo(address, None, type=socket.SOCK_STREAM)
                found.update(str(info[4][0]) for info in infos)
    except (OSError, TimeoutError) as err:
        log.warning("gateway_unresolved", addresses=list(addresses), error=repr(err)[:200])
        return None
    return tuple(sorted(found)) if found else None


class LinkWorker:
    def __init__(
        self,
        *,
        link: Link,
        credentials: Credentials,
        local: LocalState,
        api: ApiTransport,
        writer: Writer,
        metrics: MirrorMetrics,
        discovery_metrics: DiscoveryMetrics,
        settings: WorkerSettings,
    ) -> None:
        assert link.spec is not None
        self.link = link
        self.spec: LinkSpec = link.spec
        self.cluster = link.spec.target_cluster_name
        self._credentials = credentials
        self._local = local
        self._api = api
        self._writer = writer
        self._metrics = metrics
        self._discovery_metrics = discovery_metrics
        self._settings = settings
        self.remote = RemoteView(limit=settings.max_objects_per_kind)
        self.connection: Connection | None = None
        self.probe: GatewayProbe | None = None
        self.alive = True
        self.state = "connecting"
        self.error: str | None = None
        self.last_reconcile: float | None = None  # wall clock
        self.mirrored: dict[str, int] = {}
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None
        self._retry_s = RETRY_INITIAL_S
        self._events_sent: set[tuple[str, str]] = set()
        self._refused_reported = 0
        self._held: dict[tuple[str, ObjectRef], _Held] = {}
        self._log = log.bind(link=link.name, cluster=self.cluster)

    # -- triggers ----------------------------------------------------------------

    def mark_dirty(self, since: float | None = None) -> None:
        if self._dirty_since is None:
            self._dirty_since = since if since is not None else time.perf_counter()
        self._dirty.set()

    def _remote_event(self, event: ReflectorEvent, received: float) -> None:
        if isinstance(event, Listed):
            if event.kind is Kind.SERVICE:
                self.remote.replace_services(
                    r for r in event.records if isinstance(r, RemoteService)
                )
            else:
                self.remote.replace_slices(r for r in event.records if isinstance(r, SliceInfo))
        elif isinstance(event, Deleted):
            if event.kind is Kind.SERVICE:
                self.remote.drop_service(ServiceRef(*event.ref))
            else:
                self.remote.drop_slice(event.ref)
        else:
            record = event.record
            if isinstance(record, RemoteService):
                self.remote.put_service(record)
            elif isinstance(record, SliceInfo):
                self.remote.put_slice(record)
        if self.remote.refused > 2 * self._refused_reported:  # logged ever more rarely
            self._log.warning(
                "remote_objects_refused",
                refused=self.remote.refused,
                limit=self._settings.max_objects_per_kind,
            )
            self._refused_reported = self.remote.refused
        self.mark_dirty(received)

    def _liveness_changed(self, alive: bool) -> None:
        self.alive = alive
        self.mark_dirty()

    # -- running -----------------------------------------------------------------

    async def run(self) -> None:
        self._set_state("connecting", None)
        try:
            transport = await remote_transport_from_kubeconfig(
                self._credentials.kubeconfig, allow_insecure=self._settings.allow_insecure
            )
        except KubeconfigError as err:
            self._set_state("invalid", f"credentials {err}")
            await self._event("Warning", "InvalidCredentials", f"credentials {err}")
            await asyncio.Event().wait()  # nothing to do until the Secret or Link changes
            return
        connection = Connection(
            cluster=ClusterName(self.cluster),
            api=transport,
            kinds=(Kind.SERVICE, Kind.ENDPOINT_SLICE),
            sink=self._remote_event,
            metrics=self._discovery_metrics,
            on_change=self._connection_changed,
            projector=_remote_projector,
        )
        self.connection = connection
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(connection.run(), name=f"mirror watches {self.cluster}")
                if self.spec.probe is not None and self.spec.gateway_enabled:
                    self.probe = GatewayProbe(
                        cluster=self.cluster,
                        spec=self.spec.probe,
                        addresses=self._gateway_ips,
                        metrics=self._metrics,
                        on_change=self._liveness_changed,
                    )
                    group.create_task(self.probe.run(), name=f"gateway probe {self.cluster}")
                group.create_task(self._loop(), name=f"reconciles {self.cluster}")
        finally:
            await transport.close()

    def _connection_changed(self) -> None:
        connection = self.connection
        if connection is None:
            return
        error = connection.error_summary()
        if not connection.synced.is_set():
            self._set_state("failing" if error else "connecting", error)
        else:
            self._set_state("stale" if error else "synced", error)
            self.mark_dirty()

    def _set_state(self, state: str, error: str | None) -> None:
        self.error = error
        if state != self.state:
            self._log.info("link_worker_state", state=state, previous=self.state, error=error)
        self.state = state
        for value in ("connecting", "failing", "synced", "stale", "invalid"):
            self._metrics.link_state.labels(self.link.name, value).set(float(value == state))

    async def _gateway_ips(self) -> tuple[str, ...] | None:
        return await resolve_gateway(self.spec.gateway_addresses)

    async def _loop(self) -> None:
        """Reconcile on events (coalesced), periodically, and after failures with backoff.

        A failure never blocks the loop: new events still reconcile at once, and
        without events a retry comes after the backoff (doubling to a minute).
        """
        loop = asyncio.get_running_loop()
        next_repair = loop.time() + self._settings.repair_period_s
        retry_at: float | None = None
        while True:
            wake_at = next_repair if retry_at is None else min(next_repair, retry_at)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                    await self._dirty.wait()
            now = loop.time()
            if now >= next_repair:
                next_repair = now + self._settings.repair_period_s
                self._metrics.endpoint_repairs.labels(self.cluster).inc()
            await asyncio.sleep(self._settings.debounce_s)  # let the burst land
            self._dirty.clear()
            connection = self.connection
            if connection is None or not connection.synced.is_set():
                continue  # never reconcile from a half-listed target
            since, self._dirty_since = self._dirty_since, None
            if await self.reconcile(since):
                self._retry_s = RETRY_INITIAL_S
                retry_at = None
            else:
                retry_at = loop.time() + self._retry_s
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    # -- reconciling ---------------------------------------------------------------

    def _situation(self, gateway_ips: tuple[str, ...] | None) -> Situation:
        cluster_ips = {
            (obj.ref.namespace, obj.ref.name): obj.cluster_ip
            for obj in self._local.services.values()
            if obj.cluster_ip and obj.labels.get(CLUSTER_NAME) == self.cluster
        }
        headless_mirrors = frozenset(
            (obj.ref.namespace, obj.ref.name)
            for obj in self._local.services.values()
            if obj.normalized.get("headless") and obj.labels.get(CLUSTER_NAME) == self.cluster
        )
        return Situation(
            link=self.spec,
            remote=self.remote,
            headless_mirrors=headless_mirrors,
            gateway_ips=gateway_ips,
            gateway_alive=self.alive,
            namespaces=frozenset(self._local.namespaces),
            create_namespaces=self._settings.create_namespaces,
            headless=self._settings.headless,
            cluster_ips={k: v for k, v in cluster_ips.items() if v},
        )

    async def reconcile(self, since: float | None = None) -> bool:
        """One pass; True when every write succeeded."""
        started = time.perf_counter()
        gateway_ips = await self._gateway_ips() if self.spec.gateway_enabled else ()
        desired = desired_state(self._situation(gateway_ips))
        failures: dict[ServiceRef, str] = {}
        wrote = await self._create_namespaces(desired, failures)
        wrote |= await self._apply_objects(desired, failures)
        wrote |= await self._federate(desired, failures)
        mirror_conditions = _with_failures(desired.mirror_conditions, failures)
        federated_conditions = _with_failures(desired.federated_conditions, failures)
        await self._write_status(mirror_conditions, federated_conditions)
        await self._report_skips(mirror_conditions + federated_conditions)
        self._count(desired)
        if gateway_ips is None and self.spec.gateway_enabled:
            failures[ServiceRef("", "")] = "gateway address did not resolve"
        self.last_reconcile = time.time()
        finished = time.perf_counter()
        self._metrics.reconciles.labels(self.link.name).observe(finished - started)
        if since is not None and wrote:
            self._metrics.change_to_write.labels(self.link.name).observe(finished - since)
        return not failures

    def _count(self, desired: Desired) -> None:
        rd = sum(1 for c in desired.mirror_conditions if c.mirrored and c.local is not None)
        counts = {
            "mirror": rd,
            "federated": sum(1 for c in desired.federated_conditions if c.mirrored),
        }
        self.mirrored = counts
        for mode, value in counts.items():
            self._metrics.mirrored.labels(self.link.name, mode).set(value)

    async def _create_namespaces(self, desired: Desired, failures: dict[ServiceRef, str]) -> bool:
        wrote = False
        for namespace in sorted(desired.namespaces_to_create):
            manifest = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {MIRRORED_SERVICE: "true", CLUSTER_NAME: self.cluster},
                },
            }
            written = await self._writer.create(self.link.name, manifest)
            wrote = True
            if not written.ok and not written.conflict:
                for condition in desired.mirror_conditions:
                    if condition.remote.namespace == namespace:
                        failures[condition.remote] = f"Failed to create namespace: {written.error}"
        return wrote

    def _actual(self) -> dict[tuple[str, ObjectRef], LocalObject]:
        """This Link's mirror objects now (federated Services belong to no single Link)."""
        return {
            key: obj
            for key, obj in self._local.owned(self.cluster, CLUSTER_NAME).items()
            if not obj.ref.name.endswith(FEDERATED_SUFFIX)
            or obj.labels.get(CLUSTER_NAME) == self.cluster
        }

    def _remote_of(
        self, kind_ref: tuple[str, ObjectRef], step: Step, obj: LocalObject | None
    ) -> ServiceRef:
        """The remote Service an object mirrors (a per-pod mirror's is its root's)."""
        _, ref = kind_ref
        labels: Mapping[str, Any] = (
            ((step.manifest or {}).get("metadata") or {}).get("labels") or {}
            if step.manifest is not None
            else (obj.labels if obj is not None else {})
        )
        local = str(labels.get(HEADLESS_MIRROR_OF) or ref.name)
        name = remote_name(local, self.cluster) or local
        return ServiceRef(ref.namespace, name)

    async def _apply_objects(self, desired: Desired, failures: dict[ServiceRef, str]) -> bool:
        actual = self._actual()
        steps: list[tuple[tuple[str, ObjectRef], Any, Any]] = []
        for key, manifest in desired.objects.items():
            local_key = (key.kind, ObjectRef(key.namespace, key.name))
            step = plan(manifest, actual.get(local_key))
            if step.action is not Action.NONE:
                steps.append((local_key, step, actual.get(local_key)))
        wanted = {(k.kind, ObjectRef(k.namespace, k.name)) for k in desired.objects}
        kept = {(k.kind, ObjectRef(k.namespace, k.name)) for k in desired.keep}
        # A kept headless root keeps its per-pod mirrors (and their Endpoints) too.
        kept_roots = {ref for kind, ref in kept if kind == "Service"}
        kept |= {
            (kind, ref)
            for (kind, ref), obj in actual.items()
            if ObjectRef(ref.namespace, obj.labels.get(HEADLESS_MIRROR_OF, "")) in kept_roots
        }
        for local_key, obj in actual.items():
            if local_key not in wanted and local_key not in kept:
                steps.append((local_key, plan(None, obj), obj))
        # An object whose last write failed waits out its own backoff: the events
        # of other objects must not make it fail again and again (the reference
        # backs off per item too). What it still lacks is reported meanwhile.
        now = asyncio.get_running_loop().time()
        pending = {local_key for local_key, _, _ in steps}
        self._held = {key: held for key, held in self._held.items() if key in pending}
        ready = []
        for local_key, step, obj in steps:
            held = self._held.get(local_key)
            if held is not None and now < held.until:
                failures[self._remote_of(local_key, step, obj)] = held.error
            else:
                ready.append((local_key, step, obj))
        if not ready:
            return False
        # Services before their Endpoints: an Endpoints object names its Service.
        ready.sort(key=lambda s: (s[0][0] != "Service", s[0][1]))
        semaphore = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def run(local_key: tuple[str, ObjectRef], step: Any, obj: LocalObject | None) -> None:
            kind, ref = local_key
            async with semaphore:
                error = await self._apply_step(kind, ref, step, obj)
            if error is None:
                self._held.pop(local_key, None)
                return
            failures[self._remote_of(local_key, step, obj)] = error
            self._log.warning("mirror_write_failed", object=f"{kind} {ref}", error=error)
            previous = self._held.get(local_key)
            delay = min(previous.delay * 2, RETRY_MAX_S) if previous else RETRY_INITIAL_S
            self._held[local_key] = _Held(asyncio.get_running_loop().time() + delay, delay, error)

        services = [s for s in ready if s[0][0] == "Service"]
        others = [s for s in ready if s[0][0] != "Service"]
        for batch in (services, others):
            await asyncio.gather(*(run(*s) for s in batch))
        return True

    async def _apply_step(
        self, kind: str, ref: ObjectRef, step: Any, obj: LocalObject | None
    ) -> str | None:
        link = self.link.name
        if step.action is Action.CREATE:
            written = await self._writer.create(link, step.manifest)
            if written.conflict and kind == "Service":
                # Ours would be in the local view (we watch our label): this one is not.
                return (
                    f"Failed to create mirror service: a Service {ref.namespace}/{ref.name} "
                    "exists that is not a mirror (no mirror.linkerd.io/mirrored-service label)"
                )
            if written.conflict:
                return None  # it exists after all: the next reconcile compares it
            return (
                None if written.ok else f"Failed to create mirror {kind.lower()}: {written.error}"
            )
        if step.action is Action.PATCH:
            written = await self._writer.patch(link, kind, ref.namespace, ref.name, step.patch)
            return (
                None if written.ok else f"Failed to update mirror {kind.lower()}: {written.error}"
            )
        if step.action is Action.RECREATE:
            uid = obj.uid if obj is not None else None
            deleted = await self._writer.delete(link, kind, ref.namespace, ref.name, uid=uid)
            if not deleted.ok:
                return f"Failed to replace mirror {kind.lower()}: {deleted.error}"
            written = await self._writer.create(link, step.manifest)
            return (
                None if written.ok else f"Failed to create mirror {kind.lower()}: {written.error}"
            )
        if step.action is Action.DELETE:
            uid = obj.uid if obj is not None else None
            written = await self._writer.delete(link, kind, ref.namespace, ref.name, uid=uid)
            return (
                None if written.ok else f"Failed to delete mirror {kind.lower()}: {written.error}"
            )
        return None

    async def _federate(self, desired: Desired, failures: dict[ServiceRef, str]) -> bool:
        members = {
            ServiceRef(m.service.namespace, f"{m.service.name}{FEDERATED_SUFFIX}"): m
            for m in desired.members
        }
        touched = set(members)
        kept = desired.keep_members
        for ref, obj in self._local.services.items():
            if not ref.name.endswith(FEDERATED_SUFFIX):
                continue
            entries = parse_remote_members(obj.annotations.get(REMOTE_DISCOVERY))
            if any(cluster == self.cluster for _, cluster in entries):
                touched.add(ServiceRef(*ref))
        touched -= kept
        created = {
            record.link.spec.target_cluster_name: record.link.created
            for record in self._local.links.values()
            if record.link is not None and record.link.spec is not None
        }
        wrote = False
        for ref in sorted(touched):
            member = members.get(ref)
            error, did_write = await write_membership(
                self._writer,
                writer_name=self.link.name,
                ref=ref,
                cluster=self.cluster,
                member=member,
                created=created,
                cached=self._local.services.get(ObjectRef(*ref)),
            )
            wrote |= did_write
            if error is not None and member is not None:
                failures[member.service] = error
        return wrote

    async def _write_status(
        self, mirror: tuple[Condition, ...], federated: tuple[Condition, ...]
    ) -> None:
        record = self._local.links.get(self.link.ref)
        current = record.status if record is not None else {}
        status = link_status(current, mirror, federated)
        if status is None:
            return
        path = f"{LINK_API}/namespaces/{self.link.ref.namespace}/links/{self.link.name}/status"
        written = await self._writer.raw(
            self.link.name,
            "Link",
            "patch",
            "PATCH",
            path,
            {"status": status},
            {"Content-Type": "application/merge-patch+json"},
        )
        if not written.ok:
            self._log.warning("link_status_not_written", error=written.error)

    async def _report_skips(self, conditions: tuple[Condition, ...]) -> None:
        """An Event on the Link, once, for each Service that is not mirrored and why."""
        now = {
            (f"{c.remote.namespace}/{c.remote.name}", c.reason)
            for c in conditions
            if not c.mirrored
        }
        for remote, reason in sorted(now - self._events_sent):
            message = next(
                c.message
                for c in conditions
                if f"{c.remote.namespace}/{c.remote.name}" == remote and c.reason == reason
            )
            await self._event("Normal", "ServiceMirroringSkipped", f"{remote}: {message}")
        self._events_sent = now

    async def _event(self, kind: str, reason: str, message: str) -> None:
        await record_link_event(self._writer, self.link, kind, reason, message)


def _with_failures(
    conditions: tuple[Condition, ...], failures: Mapping[ServiceRef, str]
) -> tuple[Condition, ...]:
    return tuple(
        Condition(c.remote, False, "Error", failures[c.remote])
        if c.mirrored and c.remote in failures
        else c
        for c in conditions
    )
