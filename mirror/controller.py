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
letting the Link go (the reference leaves them behind, Q7); the clean-up is
retried until complete. A Link that cannot be used (its spec, its
credentials, or a target cluster name another, older Link already serves)
keeps its mirrors until fixed, and the Lease holder says why in a Warning
Event on the Link (`InvalidLink`, `InvalidCredentials`).

Beside the Links, the local federation (`local_federation.py`) keeps the
local cluster's own members of federated Services, under its own Lease.
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

from .events import record_link_event
from .federation import parse_remote_members
from .leases import Leadership, LeaseSettings
from .links import LINK_API, Link
from .local import LinkRecord, LocalState
from .local_federation import LOCAL_LEASE, LocalFederation, LocalFederationSettings
from .membership import write_membership
from .metrics import MirrorMetrics
from .naming import CLUSTER_NAME, FEDERATED_SUFFIX, REMOTE_DISCOVERY, lease_name
from .worker import LinkWorker, WorkerSettings
from .writer import Writer, Written

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
        problem = controller.problem_of(self.link.name)
        spec = self.link.spec
        credentials = (
            controller.local.credentials.get(
                ObjectRef(controller.settings.namespace, spec.credentials_secret)
            )
            if spec is not None
            else None
        )
        if spec is None or problem is not None or credentials is None or credentials.problem:
            # Nothing can be served until the Link or its Secret changes (which
            # restarts this supervisor); the leader says why, once, on the Link.
            await record_link_event(
                controller.writer,
                self.link,
                "Warning",
                controller.problem_reason(self.link.name),
                problem or "credentials Secret not found",
            )
            await asyncio.Event().wait()
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
            record = controller.local.links.get(self.link.ref)
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
        local_federation: LocalFederationSettings | None = None,
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
        self._reported: dict[str, tuple[str, str]] = {}  # link -> (reason, problem) reported
        self.local_federation: LocalFederation | None = None
        self.local_federation_leadership: Leadership | None = None
        if local_federation is not None:
            self.local_federation = LocalFederation(
                api=api,
                local=self.local,
                writer=self.writer,
                discovery_metrics=discovery_metrics,
                settings=local_federation,
            )
            self.local_federation_leadership = Leadership(
                api=api,
                namespace=settings.namespace,
                name=LOCAL_LEASE,
                identity=identity,
                settings=lease_settings,
            )

    @property
    def ready(self) -> bool:
        return self.local.synced

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.local.run(), name="local watches")
                group.create_task(self._supervise(), name="link supervision")
                if self.local_federation is not None:
                    group.create_task(self._run_local_federation(), name="local federation")
        finally:
            for supervisor in list(self.supervisors.values()):
                await supervisor.stop()

    async def _run_local_federation(self) -> None:
        assert self.local_federation is not None
        assert self.local_federation_leadership is not None
        await self.local.wait_synced()
        await self.local_federation_leadership.run(self.local_federation.run)

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
            self._all_dirty()  # memberships of several Links and of the local cluster
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
        if self.local_federation is not None:
            self.local_federation.mark_dirty()

    # -- supervision ---------------------------------------------------------------

    def _owners(self) -> dict[str, str]:
        """Per target cluster, the Link that serves it: the oldest (creation time, then name).

        Two Links naming one cluster would fight over the same mirrors (each
        deleting what the other writes); the younger one is refused instead.
        """
        owners: dict[str, str] = {}
        links = [r.link for r in self.local.links.values() if r.link is not None and not r.deleting]
        for link in sorted(links, key=lambda link: (link.created, link.name)):
            if link.spec is not None:
                owners.setdefault(link.spec.target_cluster_name, link.name)
        return owners

    def _inputs(self, record: LinkRecord, owners: dict[str, str]) -> _Inputs | None:
        link = record.link
        if link is None:
            return None
        if link.spec is not None and owners.get(link.spec.target_cluster_name) != link.name:
            owner = owners.get(link.spec.target_cluster_name)
            return _Inputs(link.uid, f"duplicate of {owner}:{link.spec!r}", "-")
        if link.spec is None:
            # A supervisor all the same: its leader reports the problem on the Link.
            return _Inputs(
                uid=link.uid, spec_json=f"problem:{link.problem}", credentials_digest="-"
            )
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
        loop = asyncio.get_running_loop()
        while True:
            self._links_changed.clear()
            if not await self._reconcile_links():
                # A deleted Link's clean-up is not finished (a write failed, or
                # another replica holds its Lease): try again soon.
                loop.call_later(self.lease_settings.retry_s, self._links_changed.set)
            await self._links_changed.wait()

    async def _reconcile_links(self) -> bool:
        """Start, restart and stop supervisors; False when a deletion must be retried."""
        done = True
        wanted: dict[str, tuple[LinkRecord, _Inputs]] = {}
        owners = self._owners()
        # A snapshot: finalizing a deleted Link awaits API requests, and meanwhile
        # the Link watch changes `local.links` (the Link itself goes once its
        # finalizer is removed).
        for record in list(self.local.links.values()):
            link = record.link
            if link is None:
                continue
            self._report(record, owners)
            if record.deleting:
                done &= await self._delete_link(record, owners)
                continue
            inputs = self._inputs(record, owners)
            if inputs is not None:
                wanted[link.name] = (record, inputs)
        for name in list(self.supervisors):
            supervisor = self.supervisors[name]
            if name not in wanted or wanted[name][1] != supervisor.inputs:
                log.info("link_worker_stopping", link=name, reason="the Link or its Secret changed")
                del self.supervisors[name]
                await supervisor.stop()
                old = _cluster_of(supervisor.link)
                new = _cluster_of(wanted[name][0].link) if name in wanted else None
                if name not in wanted:
                    self._forget(name, old)
                elif old is not None and old != new:
                    self.metrics.forget_cluster(old)  # the Link now targets another cluster
                    self.discovery_metrics.forget_cluster(old)
        for name, (record, inputs) in wanted.items():
            if name not in self.supervisors:
                log.info("link_worker_starting", link=name)
                self.supervisors[name] = _Supervisor(self, record, inputs)
        return done

    def _forget(self, link: str, cluster: str | None) -> None:
        """Every series of a Link that is gone: ours, and its remote watches'."""
        self.metrics.forget_link(link, cluster or link)
        if cluster is not None:
            self.discovery_metrics.forget_cluster(cluster)

    def _report(self, record: LinkRecord, owners: dict[str, str]) -> None:
        """Log a Link that cannot be served, once per distinct problem."""
        link = record.link
        assert link is not None
        problem, reason = link.problem, "InvalidLink"
        if link.spec is not None:
            cluster = link.spec.target_cluster_name
            secret = self.local.credentials.get(
                ObjectRef(self.settings.namespace, link.spec.credentials_secret)
            )
            if owners.get(cluster, link.name) != link.name:
                problem = (
                    f"spec.targetClusterName {cluster} is already the target of Link "
                    f"{owners[cluster]}: its mirrors are that Link's"
                )
            elif secret is None:
                problem = f"credentials Secret {link.spec.credentials_secret} not found"
                reason = "InvalidCredentials"
            elif secret.problem:
                problem = f"credentials Secret {link.spec.credentials_secret}: {secret.problem}"
                reason = "InvalidCredentials"
        if problem is None:
            self._reported.pop(link.name, None)
        elif self._reported.get(link.name) != (reason, problem):
            self._reported[link.name] = (reason, problem)
            log.error("link_not_served", link=link.name, problem=problem)

    def problem_of(self, name: str) -> str | None:
        reported = self._reported.get(name)
        return reported[1] if reported is not None else None

    def problem_reason(self, name: str) -> str:
        """The Event reason of a Link's problem: InvalidLink or InvalidCredentials."""
        reported = self._reported.get(name)
        return reported[0] if reported is not None else "InvalidCredentials"

    async def add_finalizer(self, record: LinkRecord) -> None:
        finalizers = [*record.finalizers, FINALIZER]
        await self._patch_link(record, {"metadata": {"finalizers": finalizers}})

    async def _patch_link(self, record: LinkRecord, patch: dict[str, object]) -> Written:
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
        return written

    async def _delete_link(self, record: LinkRecord, owners: dict[str, str]) -> bool:
        """A deleted Link: remove its objects, then its finalizer, holding its Lease.

        True when there is nothing more to do here; False to be called again
        (a write failed, or another replica holds the Lease and may be gone).
        """
        link = record.link
        if FINALIZER not in record.finalizers or link is None:
            return True
        supervisor = self.supervisors.pop(link.name, None)
        if supervisor is not None:
            await supervisor.stop()
        cluster = _cluster_of(link) or record.cluster_hint
        leadership = Leadership(
            api=self.api,
            namespace=self.settings.namespace,
            name=lease_name(link.name),
            identity=self.identity,
            settings=self.lease_settings,
        )
        if not await leadership.try_acquire_or_renew():
            return False  # another replica holds it: it cleans up, or its Lease expires
        try:
            if cluster is not None and owners.get(cluster, link.name) != link.name:
                # Another Link serves that cluster: the mirrors are its own.
                log.info("link_deleted_mirrors_kept", link=link.name, owner=owners[cluster])
            elif cluster is not None:
                removed, complete = await remove_link_objects(
                    self.writer, self.local, link.name, cluster
                )
                if not complete:
                    log.warning("link_objects_not_all_removed", link=link.name, removed=removed)
                    return False
            else:
                log.warning("link_deleted_without_cluster_name", link=link.name)
            finalizers = [f for f in record.finalizers if f != FINALIZER]
            written = await self._patch_link(
                record,
                {"metadata": {"finalizers": finalizers, "resourceVersion": link.resource_version}},
            )
            if not written.ok:
                return False  # changed meanwhile (409): the watch brings the new version
            log.info("link_deleted_with_its_mirrors", link=link.name, cluster=cluster)
            self._forget(link.name, cluster)
            return True
        finally:
            with contextlib.suppress(Exception):
                await leadership.release()


def _cluster_of(link: Link | None) -> str | None:
    return link.spec.target_cluster_name if link is not None and link.spec is not None else None


async def remove_link_objects(
    writer: Writer, local: LocalState, link: str, cluster: str
) -> tuple[int, bool]:
    """Delete every object of `cluster` and its federated memberships.

    Returns how many were removed, and whether every removal succeeded.
    """
    removed, complete = 0, True
    for (kind, ref), obj in sorted(local.owned(cluster, CLUSTER_NAME).items()):
        written = await writer.delete(link, kind, ref.namespace, ref.name, uid=obj.uid)
        removed += written.ok and not written.not_found
        complete &= written.ok or written.conflict  # conflict: a new object with that name
    for ref, obj in list(local.services.items()):
        if not ref.name.endswith(FEDERATED_SUFFIX):
            continue
        entries = parse_remote_members(obj.annotations.get(REMOTE_DISCOVERY))
        if not any(c == cluster for _, c in entries):
            continue
        error, _ = await write_membership(
            writer,
            writer_name=link,
            ref=ServiceRef(*ref),
            cluster=cluster,
            member=None,
            created={},
            cached=obj,
        )
        if error is None:
            removed += 1
        else:
            complete = False
            log.warning(
                "federated_membership_not_removed", link=link, service=str(ref), error=error
            )
    return removed, complete
