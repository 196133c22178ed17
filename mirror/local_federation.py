"""The local cluster's own members of federated Services (the reference's local service mirror).

A federated Service `<svc>-federated` unites the members of every linked
cluster *and* the local cluster's own Service `<svc>`, when that Service
carries the federated label (by default `mirror.linkerd.io/federated=member`).
The reference runs a separate Deployment for the local member (§3.11: a
synthetic Link with an empty cluster name whose "remote" is the local API);
here it is one more worker of the same process, under its own Lease
(`local-service-mirror-write`), so that one replica writes it.

It reads the local Services that the selector picks (the API server filters
them: `labelSelector`), turns them into members with the same pure function
Links use (`desired.desired_state` over a synthetic Link that only
federates), and keeps the `multicluster.linkerd.io/local-discovery` entry of
each `<svc>-federated` equal to what they say: a member joins, leaves (its
label removed, the Service deleted, even while the controller was down), and
gives the federated Service its labels, annotations and ports, since the
local member always wins (§3.9). Our own objects (labelled
`mirror.linkerd.io/mirrored-service`) are never members, whatever the
selector: a mirror or a federated Service must not federate itself.

No Link status exists for the local member: what cannot join (a headless
Service, one without ports, a name too long) is logged once per reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog

from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef, ServiceRef
from discovery.project import Invalid, Record, Warn
from discovery.reflector import Deleted, Listed, Reflector, ReflectorEvent
from discovery.transport import ApiTransport

from .desired import Condition, Situation, desired_state
from .federation import LOCAL
from .links import LinkSpec
from .local import LocalState
from .membership import write_membership
from .naming import FEDERATED_SUFFIX, LOCAL_DISCOVERY, MIRRORED_SERVICE
from .remote import RemoteService, RemoteView, project_remote_service
from .selectors import LinkSelector, selector_query
from .writer import Writer

__all__ = ["LOCAL_LEASE", "WRITER_NAME", "LocalFederation", "LocalFederationSettings"]

log = structlog.get_logger("mirror.local_federation")

LOCAL_LEASE = "local-service-mirror-write"
# The `link` label of its writes: a colon cannot appear in a Link's name.
WRITER_NAME = ":local"
# Its watch's `cluster` label in discovery's metrics (the controller's own
# watches of the local cluster are `local`).
WATCH_CLUSTER = ClusterName("local-members")
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 60.0


@dataclass(frozen=True, slots=True)
class LocalFederationSettings:
    selector: LinkSelector  # which local Services are members; never empty
    excluded_labels: tuple[str, ...] = ()
    excluded_annotations: tuple[str, ...] = ()
    repair_period_s: float = 60.0
    debounce_s: float = 0.05

    @property
    def query(self) -> str:
        assert self.selector.selector is not None
        return selector_query(self.selector.selector)


def _project(kind: Kind, raw: Any, *, on_warning: Warn | None = None) -> Record | Invalid:
    service = project_remote_service(raw)
    if service is None:
        return Invalid(kind, "None", "Service without a name and namespace that are DNS labels")
    if service.problems and on_warning is not None:
        on_warning("; ".join(service.problems)[:300])
    return service


class LocalFederation:
    """Keeps the local member of every federated Service; runs while holding its Lease."""

    def __init__(
        self,
        *,
        api: ApiTransport,
        local: LocalState,
        writer: Writer,
        discovery_metrics: DiscoveryMetrics,
        settings: LocalFederationSettings,
    ) -> None:
        self._api = api
        self._local = local
        self._writer = writer
        self._discovery_metrics = discovery_metrics
        self.settings = settings
        self.services: dict[ServiceRef, RemoteService] = {}
        self._dirty = asyncio.Event()
        self._reported: set[tuple[ServiceRef, str]] = set()
        self._spec = LinkSpec(
            target_cluster_name=LOCAL,
            target_cluster_domain="cluster.local",
            target_linkerd_namespace="linkerd",
            credentials_secret="",
            gateway_addresses=(),
            gateway_port=None,
            gateway_identity="",
            probe=None,
            selector=LinkSelector(None),
            remote_discovery_selector=LinkSelector(None),
            federated_selector=settings.selector,
            excluded_labels=settings.excluded_labels,
            excluded_annotations=settings.excluded_annotations,
        )

    def mark_dirty(self) -> None:
        self._dirty.set()

    def _event(self, event: ReflectorEvent, received: float) -> None:
        del received
        if isinstance(event, Listed):
            self.services = {r.service: r for r in event.records if isinstance(r, RemoteService)}
        elif isinstance(event, Deleted):
            self.services.pop(ServiceRef(*event.ref), None)
        elif isinstance(event.record, RemoteService):
            self.services[event.record.service] = event.record
        self._dirty.set()

    async def run(self) -> None:
        """Watch the member Services and reconcile, until cancelled (the Lease lost)."""
        reflector = Reflector(
            cluster=WATCH_CLUSTER,
            kind=Kind.SERVICE,
            api=self._api,
            on_event=self._event,
            metrics=self._discovery_metrics,
            path="/api/v1/services",
            selectors=[("labelSelector", self.settings.query)],
            projector=_project,
        )
        log.info("local_federation_started", selector=self.settings.query)
        async with asyncio.TaskGroup() as group:
            group.create_task(reflector.run(), name="local federated members watch")
            group.create_task(self._loop(reflector), name="local federation reconciles")

    async def _loop(self, reflector: Reflector) -> None:
        loop = asyncio.get_running_loop()
        next_repair = loop.time() + self.settings.repair_period_s
        retry_s = RETRY_INITIAL_S
        retry_at: float | None = None
        while True:
            wake_at = next_repair if retry_at is None else min(next_repair, retry_at)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                    await self._dirty.wait()
            if loop.time() >= next_repair:
                next_repair = loop.time() + self.settings.repair_period_s
            await asyncio.sleep(self.settings.debounce_s)
            self._dirty.clear()
            if not reflector.synced.is_set() or not self._local.synced:
                continue  # never leave a federation because of a half-listed cluster
            if await self.reconcile():
                retry_s, retry_at = RETRY_INITIAL_S, None
            else:
                retry_at = loop.time() + retry_s
                retry_s = min(retry_s * 2, RETRY_MAX_S)

    def _members(self) -> RemoteView:
        view = RemoteView()
        for service in self.services.values():
            if service.label_map().get(MIRRORED_SERVICE) == "true":
                continue  # our own objects never federate
            if self.settings.selector.matches(service.label_map()):
                view.put_service(service)
        return view

    async def reconcile(self) -> bool:
        """One pass over every local membership; True when every write succeeded."""
        desired = desired_state(
            Situation(
                link=self._spec,
                remote=self._members(),
                gateway_ips=(),
                gateway_alive=True,
                namespaces=frozenset(self._local.namespaces),
            )
        )
        self._report(desired.federated_conditions)
        members = {
            ServiceRef(m.service.namespace, f"{m.service.name}{FEDERATED_SUFFIX}"): m
            for m in desired.members
        }
        touched = set(members)
        for ref, obj in self._local.services.items():
            if ref.name.endswith(FEDERATED_SUFFIX) and obj.annotations.get(LOCAL_DISCOVERY):
                touched.add(ServiceRef(*ref))
        ok = True
        for ref in sorted(touched):
            error, _ = await write_membership(
                self._writer,
                writer_name=WRITER_NAME,
                ref=ref,
                cluster=LOCAL,
                member=members.get(ref),
                created={},
                cached=self._local.services.get(ObjectRef(*ref)),
            )
            if error is not None:
                ok = False
                log.warning("local_member_not_written", federated=f"{ref[0]}/{ref[1]}", error=error)
        return ok

    def _report(self, conditions: tuple[Condition, ...]) -> None:
        """Log, once per reason, each local Service that cannot join."""
        now = {(c.remote, c.reason): c.message for c in conditions if not c.mirrored}
        for (ref, reason), message in sorted(now.items()):
            if (ref, reason) not in self._reported:
                log.warning(
                    "local_member_skipped",
                    service=f"{ref.namespace}/{ref.name}",
                    reason=reason,
                    message=message,
                )
        self._reported = set(now)


def exclusions(text: str) -> tuple[str, ...]:
    """A comma-separated list of label or annotation keys (a flag's value)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
