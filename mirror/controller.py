"""The mirror controller: every Link of its namespace, each served by its own worker.

One process serves every Link in its namespace (reference: one Deployment per
Link). Per Link, a supervisor competes for the Link's Lease; the replica that
holds it runs the Link's worker (`worker.py`). Links are isolated from each
other: a worker has its own connection, tasks and backoff, and whatever one
target does (slow, broken, unreachable) never delays the others.

A worker is (re)started when its Link's spec or its credentials Secret
changes: credential rotation is picked up without a restart (the reference
ignores Secret updates, Q14). Mirrors are never deleted because a worker
stops; they are deleted when their remote Service is unexported or gone
(the worker's reconcile), and when the Link itself is deleted: the
controller puts a finalizer on each Link it serves and, on deletion, removes
every object of the Link (mirrors, Endpoints, federated memberships) before
letting the Link go (the reference leaves them behind, Q7). A Link that
cannot be used (its spec or credentials) keeps its mirrors until fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass

import structlog

from discovery.metrics import DiscoveryMetrics
from discovery.models import Kind, ObjectRef, ServiceRef
from discovery.transport import ApiTransport

from .federation import next_federated, parse_remote_members
from .leases import Leadership, LeaseSettings
from .links import LINK_API, Link
from .local import LinkRecord, LocalState
from .metrics import MirrorMetrics
from .naming import CLUSTER_NAME, FEDERATED_SUFFIX, REMOTE_DISCOVERY, lease_name
from .worker import LinkWorker, WorkerSettings
from .writer import Writer, object_path

__all__ = ["FINALIZER", "MirrorController"]

log = structlog.get_logger("mirror.controller")

FINALIZER = "multicluster.linkerd.io/mirrors"
DEFAULT_LEASE = LeaseSettings()


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What a running worker was started with: a change restarts it."""

    uid: str
    spec_json: str
    credentials_digest: str


class _Supervisor:
    """One Link: its Lease, and its worker while this replica holds the Lease."""

    def __init__(self, controller: MirrorController, record: LinkRecord, inputs: _Inputs) -> None:
        assert record.link is not None
        self.link: Link = record.link
        self.inputs = inputs
        self.worker: LinkWorker | None = None
        self._controller = controller
        self.leadership = Leadership(
            api=controller.api,
            namespace=controller.settings.namespace,
            name=lease_name(self.link.name),
            identity=controller.identity,
            settings=controller.lease_settings,
            on_change=lambda leading: controller.metrics.leader.labels(self.link.name).set(
                float(leading)
            ),
        )
        self.task: asyncio.Task[None] = asyncio.create_task(
            self.leadership.run(self._lead), name=f"link {self.link.name}"
        )

    async def _lead(self) -> None:
        controller = self._controller
        record = controller.local.links.get(self.link.ref)
        credentials = controller.local.credentials.get(
            ObjectRef(controller.settings.namespace, self.link.spec.credentials_secret)
            if self.link.spec is not None
            else ObjectRef("", "")
        )
        if self.link.spec is None or credentials is None or credentials.problem:
            await asyncio.Event().wait()  # reported by the controller; wait for a change
            return
        worker = LinkWorker(
            link=self.link,
            credentials=credentials,
            local=controller.local,
            api=controller.api,
            writer=controller.writer,
            metrics=controller.metrics,
            discovery_metrics=controller.discovery_metrics,
            settings=controller.settings,
        )
        self.worker = worker
        try:
            if record is not None and FINALIZER not in record.finalizers and controller.gc:
                await controller.add_finalizer(record)
            await worker.run()
        finally:
            self.worker = None

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class MirrorController:
    def __init__(
        self,
        *,
        api: ApiTransport,
        settings: WorkerSettings,
        metrics: MirrorMetrics,
        discovery_metrics: DiscoveryMetrics,
        identity: str,
        lease_settings: LeaseSettings = DEFAULT_LEASE,
        delete_mirrors_with_link: bool = True,
    ) -> None:
        self.api = api
        self.settings = settings
        self.metrics = metrics
        self.discovery_metrics = discovery_metrics
        self.identity = identity
        self.lease_settings = lease_settings
        self.gc = delete_mirrors_with_link
        self.writer = Writer(api, metrics)
        self.local = LocalState(
            api=api,
            namespace=settings.namespace,
            metrics=discovery_metrics,
            on_change=self._changed,
        )
        self.supervisors: dict[str, _Supervisor] = {}
        self._links_changed = asyncio.Event()
        self._reported: dict[str, str] = {}  # link -> problem already reported

    @property
    def ready(self) -> bool:
        return self.local.synced

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.local.run(), name="local watches")
                group.create_task(self._supervise(), name="link supervision")
        finally:
            for supervisor in list(self.supervisors.values()):
                await supervisor.stop()

    # -- events ------------------------------------------------------------------

    def _changed(self, kind: Kind, ref: ObjectRef) -> None:
        if kind in (Kind.LINK, Kind.SECRET):
            self._links_changed.set()
            return
        if kind is Kind.NAMESPACE:
            self._all_dirty()
            return
        table = self.local.services if kind is Kind.SERVICE else self.local.endpoints
        obj = table.get(ref)
        if ref.name.endswith(FEDERATED_SUFFIX) and kind is Kind.SERVICE:
            self._all_dirty()  # memberships of several Links
            return
        cluster = obj.labels.get(CLUSTER_NAME) if obj is not None else None
        for supervisor in self.supervisors.values():
            worker = supervisor.worker
            if worker is not None and (cluster is None or worker.cluster == cluster):
                worker.mark_dirty()

    def _all_dirty(self) -> None:
        for supervisor in self.supervisors.values():
            if supervisor.worker is not None:
                supervisor.worker.mark_dirty()

    # -- supervision ---------------------------------------------------------------

    def _inputs(self, record: LinkRecord) -> _Inputs | None:
        link = record.link
        if link is None or link.spec is None:
            return None
        secret = self.local.credentials.get(
            ObjectRef(self.settings.namespace, link.spec.credentials_secret)
        )
        digest = hashlib.sha256(secret.kubeconfig).hexdigest() if secret is not None else "-"
        if secret is not None and secret.problem:
            digest = f"problem:{secret.problem}"
        return _Inputs(
            uid=link.uid,
            spec_json=json.dumps(repr(link.spec)),
            credentials_digest=digest,
        )

    async def _supervise(self) -> None:
        await self.local.wait_synced()
        log.info("mirror_controller_synced", links=len(self.local.links))
        while True:
            self._links_changed.clear()
            await self._reconcile_links()
            await self._links_changed.wait()

    async def _reconcile_links(self) -> None:
        wanted: dict[str, tuple[LinkRecord, _Inputs]] = {}
        # A snapshot: finalizing a deleted Link awaits API requests, and meanwhile
        # the Link watch changes `local.links` (the Link itself goes once its
        # finalizer is removed).
        for record in list(self.local.links.values()):
            link = record.link
            if link is None:
                continue
            self._report(record)
            if record.deleting:
                await self._delete_link(record)
                continue
            inputs = self._inputs(record)
            if inputs is not None:
                wanted[link.name] = (record, inputs)
        for name in list(self.supervisors):
            supervisor = self.supervisors[name]
            if name not in wanted or wanted[name][1] != supervisor.inputs:
                log.info("link_worker_stopping", link=name, reason="the Link or its Secret changed")
                del self.supervisors[name]
                await supervisor.stop()
                if name not in wanted:
                    cluster = (
                        supervisor.link.spec.target_cluster_name if supervisor.link.spec else name
                    )
                    self.metrics.forget_link(name, cluster)
        for name, (record, inputs) in wanted.items():
            if name not in self.supervisors:
                log.info("link_worker_starting", link=name)
                self.supervisors[name] = _Supervisor(self, record, inputs)

    def _report(self, record: LinkRecord) -> None:
        """Log a Link that cannot be served, once per distinct problem."""
        link = record.link
        assert link is not None
        problem = link.problem
        if link.spec is not None:
            secret = self.local.credentials.get(
                ObjectRef(self.settings.namespace, link.spec.credentials_secret)
            )
            if secret is None:
                problem = f"credentials Secret {link.spec.credentials_secret} not found"
            elif secret.problem:
                problem = f"credentials Secret {link.spec.credentials_secret}: {secret.problem}"
        if problem is None:
            self._reported.pop(link.name, None)
        elif self._reported.get(link.name) != problem:
            self._reported[link.name] = problem
            log.error("link_not_served", link=link.name, problem=problem)

    def problem_of(self, name: str) -> str | None:
        return self._reported.get(name)

    async def add_finalizer(self, record: LinkRecord) -> None:
        finalizers = [*record.finalizers, FINALIZER]
        await self._patch_link(record, {"metadata": {"finalizers": finalizers}})

    async def _patch_link(self, record: LinkRecord, patch: dict[str, object]) -> None:
        ref = record.ref
        path = f"{LINK_API}/namespaces/{ref.namespace}/links/{ref.name}"
        written = await self.writer.raw(
            ref.name,
            "Link",
            "patch",
            "PATCH",
            path,
            patch,
            {"Content-Type": "application/merge-patch+json"},
        )
        if not written.ok:
            log.warning("link_not_patched", link=ref.name, error=written.error)

    async def _delete_link(self, record: LinkRecord) -> None:
        """A deleted Link: remove its objects, then its finalizer (if we hold its Lease)."""
        link = record.link
        if FINALIZER not in record.finalizers or link is None:
            return
        supervisor = self.supervisors.pop(link.name, None)
        if supervisor is not None:
            await supervisor.stop()
        cluster = link.spec.target_cluster_name if link.spec is not None else link.name
        leadership = Leadership(
            api=self.api,
            namespace=self.settings.namespace,
            name=lease_name(link.name),
            identity=self.identity,
            settings=self.lease_settings,
        )
        if not await leadership.try_acquire_or_renew():
            return  # another replica holds it and will clean up
        try:
            await remove_link_objects(self.writer, self.local, link.name, cluster)
            finalizers = [f for f in record.finalizers if f != FINALIZER]
            await self._patch_link(
                record,
                {"metadata": {"finalizers": finalizers, "resourceVersion": link.resource_version}},
            )
            log.info("link_deleted_with_its_mirrors", link=link.name, cluster=cluster)
            self.metrics.forget_link(link.name, cluster)
        finally:
            with contextlib.suppress(Exception):
                await leadership.release()


async def remove_link_objects(writer: Writer, local: LocalState, link: str, cluster: str) -> int:
    """Delete every object of `cluster` and its federated memberships; returns how many."""
    removed = 0
    for (kind, ref), obj in sorted(local.owned(cluster, CLUSTER_NAME).items()):
        written = await writer.delete(link, kind, ref.namespace, ref.name, uid=obj.uid)
        removed += written.ok
    for ref, obj in list(local.services.items()):
        if not ref.name.endswith(FEDERATED_SUFFIX):
            continue
        entries = parse_remote_members(obj.annotations.get(REMOTE_DISCOVERY))
        if not any(c == cluster for _, c in entries):
            continue
        for _ in range(3):
            path = object_path("Service", ref.namespace, ref.name)
            read = await writer.raw(link, "Service", "get", "GET", path)
            if not read.ok or read.body is None:
                break
            current = dict(read.body)
            new = next_federated(
                current, service=ServiceRef(*ref), cluster=cluster, member=None, source=False
            )
            if new is None:
                written = await writer.delete(link, "Service", ref.namespace, ref.name)
            else:
                new["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                written = await writer.replace(link, new)
            if not written.conflict:
                removed += written.ok
                break
    return removed
