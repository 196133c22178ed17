"""Linked remote clusters, kept in step with their credential Secrets.

The store watches link Secrets (type `mirror.linkerd.io/remote-kubeconfig`,
labelled `multicluster.linkerd.io/cluster-name`) in the controller namespace
and reconciles the set of linked clusters with them: every Secret event,
including the initial list and relists, runs the same `_reconcile`. Each
linked cluster is a `ClusterCache` (index and topics, which subscriptions
hold on to) fed by one live `Connection`.

Where Linkerd's controller falls short, and what is done here instead:

* Secret updates (credential rotation) are applied. The new credentials get a
  connection of their own, *staged*: it lists everything while the old one
  keeps serving, and goes live only once every kind has listed and its watch
  is open. Its lists then replace the cache's contents in one batch, so
  streams receive only what really differs: normally nothing. Until then the
  status and the identities served (trust domain) are the old ones. New
  credentials that do not work leave the old connection serving; the status
  says why. Those that have not synced within ROTATION_DEADLINE_S, or whose
  held objects pass STAGED_MAX_OBJECTS, are abandoned: their connection is
  closed, the status says `abandoned: ...`, the old connection stays.
* Each Secret content is acted upon once: a relist of the Secrets does not
  retry (or count again) a rejected or abandoned rotation, and a newer Secret
  cancels whatever an older one had started, including a first connection
  whose client is still being built.
* A cluster that is unreachable, refuses the credentials or never syncs only
  affects itself: its watches retry with backoff, its status and metrics say
  what is wrong, and the process stays up and ready.
* A deleted Secret unlinks the cluster: listeners (the gRPC layer) are told
  first and send Removes for its endpoints to every stream; Linkerd leaves
  such streams holding endpoints of a cluster it no longer watches.
* Staleness is a policy: by default the last known endpoints of a cluster
  whose API server went away are kept (stale, not withdrawn) until it returns;
  with `withdraw_after_s` they are withdrawn once the cluster has been stale
  that long, and announced again when it is back.
* Two Secrets naming the same cluster: the one whose namespace/name sorts
  first wins, on every replica alike, and the other is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .cluster import ClusterCache
from .connection import REMOTE_KINDS, STAGED_MAX_OBJECTS, Connection, StagedEvents
from .kubeconfig import KubeconfigError
from .metrics import DiscoveryMetrics
from .models import ClusterCredentials, ClusterName, Kind, ObjectRef
from .ports import PortSet
from .project import CLUSTER_NAME_LABEL, CREDENTIALS_SECRET_TYPE
from .reflector import Deleted, Listed, Reflector, ReflectorEvent, Upserted, secrets_path
from .sanitize import printable
from .transport import ApiTransport, remote_transport_from_kubeconfig

log = structlog.get_logger("discovery.cluster_store")

# New credentials that have not listed and watched everything this long after
# the Secret changed are abandoned (their connection closed, the old one kept).
ROTATION_DEADLINE_S = 120.0


class ClusterState(enum.StrEnum):
    INVALID = "invalid"  # the Secret or its kubeconfig cannot be used; waits for a fix
    CONNECTING = "connecting"  # first sync under way
    FAILING = "failing"  # never synced: unreachable or refused; retrying with backoff
    SYNCED = "synced"  # every watch listed and healthy
    STALE = "stale"  # was synced, watches failing: last known endpoints still served
    WITHDRAWN = "withdrawn"  # stale past the policy's limit: endpoints withdrawn


# States in which a cluster's endpoints are served to streams.
SERVING_STATES = frozenset(
    {ClusterState.CONNECTING, ClusterState.FAILING, ClusterState.SYNCED, ClusterState.STALE}
)


@dataclass(frozen=True, slots=True)
class StalenessPolicy:
    """What to do with the endpoints of a cluster whose API server is gone."""

    withdraw_after_s: float | None = None  # None: keep them until it returns

    def describe(self) -> str:
        if self.withdraw_after_s is None:
            return "keep last known endpoints until the cluster returns"
        return f"withdraw endpoints after {self.withdraw_after_s:g}s stale"


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """One linked cluster as operators see it (admin `/clusters`, `destination clusters`)."""

    name: str
    state: ClusterState
    since: float  # wall-clock time of the last state change
    secret: str
    server: str | None
    trust_domain: str
    cluster_domain: str
    error: str | None
    last_synced: float | None  # when the cluster was last known to be fully up to date
    objects: dict[str, int]
    rotation: str | None  # a credential update in progress or rejected, and why

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state.value,
            "since": round(self.since, 3),
            "secret": self.secret,
            "server": self.server,
            "trust_domain": self.trust_domain,
            "cluster_domain": self.cluster_domain,
            "error": self.error,
            "last_synced": None if self.last_synced is None else round(self.last_synced, 3),
            "objects": self.objects,
            "rotation": self.rotation,
        }


@dataclass(eq=False)
class _Live:
    """A connection, the task running it, and the credentials it was built from."""

    connection: Connection
    task: asyncio.Task[None]
    server: str
    credentials: ClusterCredentials


@dataclass(eq=False)
class RemoteCluster:
    name: ClusterName
    credentials: ClusterCredentials  # those in use (serving, or being tried first)
    cache: ClusterCache
    state: ClusterState = ClusterState.CONNECTING
    since: float = field(default_factory=time.time)
    error: str | None = None
    last_synced: float | None = None
    live: _Live | None = None
    staged: _Live | None = None  # new credentials syncing while `live` serves
    staged_events: StagedEvents | None = None
    starting: asyncio.Task[None] | None = None  # building the client of a first connection
    staging: asyncio.Task[None] | None = None  # building the client of a staged one
    rotation: str | None = None
    rotation_deadline: asyncio.TimerHandle | None = None
    withdraw_timer: asyncio.TimerHandle | None = None
    desired: ClusterCredentials = field(init=False)  # the Secret's latest content, acted on once

    def __post_init__(self) -> None:
        self.desired = self.credentials

    @property
    def serving(self) -> bool:
        return self.state in SERVING_STATES


StoreListener = Callable[[], None]


class ClusterStore:
    def __init__(
        self,
        *,
        local_api: ApiTransport,
        namespace: str,
        local_name: str,
        metrics: DiscoveryMetrics,
        default_opaque_ports: PortSet,
        enable_ipv6: bool,
        staleness: StalenessPolicy = StalenessPolicy(),
        allow_insecure_remote_links: bool = False,
        max_objects_per_kind: int | None = None,
    ) -> None:
        self._namespace = namespace
        # Plaintext http:// servers and insecure-skip-tls-verify in link kubeconfigs (tests only).
        self._allow_insecure = allow_insecure_remote_links
        self._max_objects_per_kind = max_objects_per_kind
        self._local_name = local_name
        self._metrics = metrics
        self._default_opaque_ports = default_opaque_ports
        self._enable_ipv6 = enable_ipv6
        self.staleness = staleness
        self._secrets: dict[ObjectRef, ClusterCredentials] = {}
        self._clusters: dict[ClusterName, RemoteCluster] = {}
        self._listeners: list[StoreListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()  # clients of ended connections
        self._secret_reflector = Reflector(
            cluster=ClusterName(local_name),
            kind=Kind.SECRET,
            api=local_api,
            on_event=self.apply,
            metrics=metrics,
            path=secrets_path(namespace),
            selectors=[
                ("labelSelector", CLUSTER_NAME_LABEL),
                ("fieldSelector", f"type={CREDENTIALS_SECRET_TYPE}"),
            ],
            on_health=self._secrets_health,
        )
        # Set once the Secrets are listed, or once listing them is refused: a
        # missing Role must cost remote discovery only, not readiness of the rest.
        self._settled = asyncio.Event()
        self.secrets_error: str | None = None

    # -- reads -----------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """The Secrets were listed (or refused): "cluster not found" now means it."""
        return self._settled.is_set()

    async def wait_synced(self) -> None:
        await self._settled.wait()

    def _secrets_health(self, reflector: Reflector, error: str | None) -> None:
        del reflector
        self.secrets_error = error
        if error is None:
            self._settled.set()
        elif "HTTP 401" in error or "HTTP 403" in error:
            if not self._settled.is_set():
                log.error(
                    "link_secrets_unreadable",
                    namespace=self._namespace,
                    error=error,
                    consequence="no remote cluster is linked until they can be listed",
                )
            self._settled.set()

    def get(self, name: str) -> RemoteCluster | None:
        return self._clusters.get(ClusterName(name))

    def serving(self, name: str) -> RemoteCluster | None:
        """The cluster if its endpoints are to be served now, else None."""
        cluster = self._clusters.get(ClusterName(name))
        return cluster if cluster is not None and cluster.serving else None

    def statuses(self) -> list[ClusterStatus]:
        return [self._status(c) for c in sorted(self._clusters.values(), key=lambda c: c.name)]

    def add_listener(self, listener: StoreListener) -> None:
        """Called whenever which clusters are served, or how, changes."""
        self._listeners.append(listener)

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Watch the link Secrets until cancelled; then close every cluster."""
        try:
            await self._secret_reflector.run()
        finally:
            for cluster in list(self._clusters.values()):
                self._stop(cluster)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Their done-callbacks have started closing the clients: let them finish.
            await asyncio.gather(*self._closing, return_exceptions=True)

    def apply(self, event: ReflectorEvent, received: float) -> None:
        """A link Secret event (from the Secret watch, or from a test)."""
        del received
        if isinstance(event, Listed):
            self._secrets = {r.ref: r for r in event.records if isinstance(r, ClusterCredentials)}
        elif isinstance(event, Deleted):
            self._secrets.pop(event.ref, None)
        elif isinstance(event, Upserted) and isinstance(event.record, ClusterCredentials):
            self._secrets[event.record.ref] = event.record
        self._reconcile()

    def _reconcile(self) -> None:
        desired: dict[ClusterName, ClusterCredentials] = {}
        for ref in sorted(self._secrets):
            credentials = self._secrets[ref]
            if credentials.cluster == self._local_name:
                log.error(
                    "link_rejected",
                    secret=str(ref),
                    cluster=credentials.cluster,
                    reason="a link Secret names the local cluster",
                )
                self._metrics.links_rejected.labels("local_name").inc()
                continue
            winner = desired.get(credentials.cluster)
            if winner is not None:
                log.error(
                    "link_rejected",
                    secret=str(ref),
                    cluster=credentials.cluster,
                    reason=f"Secret {winner.ref} already links this cluster",
                )
                self._metrics.links_rejected.labels("duplicate").inc()
                continue
            desired[credentials.cluster] = credentials
        changed = False
        for name in [n for n in self._clusters if n not in desired]:
            with _own_failure(name, "unlink"):
                self._unlink(self._clusters[name])
            changed = True
        for name, credentials in desired.items():
            cluster = self._clusters.get(name)
            # One cluster's failure here must not keep the others from being reconciled.
            with _own_failure(name, "reconcile"):
                if cluster is None:
                    changed = True
                    self._link(credentials)
                elif cluster.desired != credentials:
                    # Once per distinct Secret content: a relist, or another cluster's Secret
                    # changing, must not retry (or count again) what was already decided.
                    cluster.desired = credentials
                    changed |= self._update(cluster, credentials)
        self._metrics.cluster_store_size.set(len(self._clusters))
        if changed:
            self._notify()

    # -- link, update, unlink --------------------------------------------------

    def _link(self, credentials: ClusterCredentials) -> None:
        cache = ClusterCache(
            name=credentials.cluster,
            metrics=self._metrics,
            default_opaque_ports=self._default_opaque_ports,
            enable_ipv6=self._enable_ipv6,
            max_objects_per_kind=self._max_objects_per_kind,
        )
        # The remote role grants no ReplicaSets: a pod's Deployment is read from its
        # ReplicaSet's name, so remote pods are labelled `deployment=` like local ones.
        cache.index.owners_from_template_hash = True
        cluster = RemoteCluster(name=credentials.cluster, credentials=credentials, cache=cache)
        self._clusters[cluster.name] = cluster
        log.info(
            "cluster_linked",
            cluster=cluster.name,
            secret=str(credentials.ref),
            trust_domain=credentials.trust_domain,
            staleness=self.staleness.describe(),
        )
        if credentials.problem:
            self._set_state(cluster, ClusterState.INVALID, credentials.problem)
            return
        self._start(cluster, credentials, staged=False)

    def _update(self, cluster: RemoteCluster, credentials: ClusterCredentials) -> bool:
        """Apply a changed Secret; returns whether listeners must hear of it."""
        if cluster.live is None:
            # Nothing serves yet: whatever was being tried gives way to the new Secret.
            cluster.credentials = credentials
            if credentials.problem:
                self._cancel_start(cluster)
                self._set_state(cluster, ClusterState.INVALID, credentials.problem)
            else:
                self._start(cluster, credentials, staged=False)
            return True
        if credentials.problem:
            # Keep serving with the credentials that work; say why the new ones are not used.
            self._cancel_rotation(cluster)
            cluster.rotation = f"rejected: {credentials.problem}"
            self._metrics.credential_rotations.labels(cluster.name, "rejected").inc()
            log.error("credentials_rejected", cluster=cluster.name, reason=credentials.problem)
            return False
        old = cluster.credentials
        if credentials.kubeconfig == old.kubeconfig:
            # The credentials in use: only the names changed, no reconnection. A rotation
            # to other credentials under way is no longer what the Secret says.
            self._cancel_rotation(cluster)
            cluster.rotation = None
            cluster.credentials = credentials
            log.info(
                "cluster_metadata_updated",
                cluster=cluster.name,
                trust_domain=credentials.trust_domain,
                cluster_domain=credentials.cluster_domain,
            )
            return _names(credentials) != _names(old)
        # Until the staged connection goes live, the status and the identities of
        # streams stay those of the credentials in use.
        cluster.rotation = "pending: syncing with the new credentials"
        log.info("credentials_rotating", cluster=cluster.name, secret=str(credentials.ref))
        self._start(cluster, credentials, staged=True)
        return False

    def _unlink(self, cluster: RemoteCluster) -> None:
        del self._clusters[cluster.name]
        self._stop(cluster)
        cluster.state = ClusterState.INVALID
        cluster.cache.close()
        log.info("cluster_unlinked", cluster=cluster.name, secret=str(cluster.credentials.ref))

    def _stop(self, cluster: RemoteCluster) -> None:
        self._cancel_rotation(cluster)
        self._cancel_start(cluster)
        if cluster.live is not None:
            cluster.live.task.cancel()
            cluster.live = None
        if cluster.withdraw_timer is not None:
            cluster.withdraw_timer.cancel()
            cluster.withdraw_timer = None

    def _cancel_start(self, cluster: RemoteCluster) -> None:
        """Give up building the client of a first connection."""
        if cluster.starting is not None:
            cluster.starting.cancel()
            cluster.starting = None

    def _cancel_rotation(self, cluster: RemoteCluster) -> None:
        """Give up a staged connection, or the building of one; the live one stays."""
        if cluster.staging is not None:
            cluster.staging.cancel()
            cluster.staging = None
        if cluster.staged is not None:
            cluster.staged.task.cancel()
            cluster.staged = None
        if cluster.staged_events is not None:
            cluster.staged_events.clear()
            cluster.staged_events = None
        if cluster.rotation_deadline is not None:
            cluster.rotation_deadline.cancel()
            cluster.rotation_deadline = None

    # -- connections -----------------------------------------------------------

    def _start(
        self, cluster: RemoteCluster, credentials: ClusterCredentials, *, staged: bool
    ) -> None:
        task = asyncio.create_task(
            self._connect(cluster, credentials, staged=staged),
            name=f"connect {cluster.name}",
        )
        self._track(task, cluster)
        if staged:
            self._cancel_rotation(cluster)
            cluster.staging = task
            cluster.rotation_deadline = asyncio.get_running_loop().call_later(
                ROTATION_DEADLINE_S, self._rotation_overdue, cluster
            )
        else:
            self._cancel_start(cluster)
            cluster.starting = task

    async def _connect(
        self, cluster: RemoteCluster, credentials: ClusterCredentials, *, staged: bool
    ) -> None:
        attempt = asyncio.current_task()
        try:
            api = await remote_transport_from_kubeconfig(
                credentials.kubeconfig, allow_insecure=self._allow_insecure
            )
        except Exception as err:  # any failure to build a client is this cluster's alone
            if not self._connecting(cluster, attempt, staged=staged):
                return  # superseded meanwhile: its failure is nobody's concern
            self._connected(cluster, staged=staged)
            problem = (
                f"kubeconfig {err}"
                if isinstance(err, KubeconfigError)
                else f"kubeconfig unusable: {type(err).__name__}: {err}"
            )
            log.error("kubeconfig_rejected", cluster=cluster.name, reason=problem)
            if staged:
                self._cancel_rotation(cluster)
                cluster.rotation = f"rejected: {problem}"
                self._metrics.credential_rotations.labels(cluster.name, "rejected").inc()
            else:
                self._set_state(cluster, ClusterState.INVALID, problem)
                self._notify(cluster)
            return
        if not self._connecting(cluster, attempt, staged=staged):
            # A newer Secret (or an unlink) came while the client was built: these
            # credentials must never go live.
            await api.close()
            return
        self._connected(cluster, staged=staged)
        events = (
            StagedEvents(on_overflow=lambda: self._staged_overflowed(cluster, events))
            if staged
            else None
        )
        connection = Connection(
            cluster=cluster.name,
            api=api,
            kinds=REMOTE_KINDS,
            sink=events if events is not None else cluster.cache.apply,
            metrics=self._metrics,
            on_change=lambda: self._connection_changed(cluster, connection),
        )
        task = self._run_connection(cluster, connection)
        running = _Live(
            connection=connection, task=task, server=api.server, credentials=credentials
        )
        if staged:
            cluster.staged, cluster.staged_events = running, events
        else:
            previous, cluster.live = cluster.live, running
            if previous is not None:
                previous.task.cancel()
            self._set_state(cluster, ClusterState.CONNECTING, None)
            self._notify(cluster)

    def _connecting(
        self, cluster: RemoteCluster, attempt: asyncio.Task[object] | None, *, staged: bool
    ) -> bool:
        """Whether `attempt` is still the connection wanted for the cluster."""
        current = cluster.staging if staged else cluster.starting
        return current is attempt and self._clusters.get(cluster.name) is cluster

    def _connected(self, cluster: RemoteCluster, *, staged: bool) -> None:
        if staged:
            cluster.staging = None
        else:
            cluster.starting = None

    def _run_connection(self, cluster: RemoteCluster, connection: Connection) -> asyncio.Task[None]:
        """Run the connection's watches; close its client once they end, however they end.

        The close is a done-callback, not a `finally` in the task: a task cancelled
        before it first runs never executes its body, and its session would leak.
        """
        task = asyncio.create_task(connection.run(), name=f"watches {cluster.name}")
        self._track(task, cluster)
        task.add_done_callback(lambda _: self._close_later(connection))
        return task

    def _close_later(self, connection: Connection) -> None:
        closing = asyncio.create_task(connection.close(), name=f"close {connection.cluster}")
        self._closing.add(closing)
        closing.add_done_callback(lambda done: self._closed(done, connection.cluster))

    def _closed(self, closing: asyncio.Task[None], cluster: str) -> None:
        self._closing.discard(closing)
        if not closing.cancelled() and closing.exception() is not None:
            log.error("client_close_failed", cluster=cluster, exc_info=closing.exception())

    def _track(self, task: asyncio.Task[None], cluster: RemoteCluster) -> None:
        """Keep `task` until it ends; then log its exception, if any, with the cluster."""
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_ended(done, cluster))

    def _task_ended(self, task: asyncio.Task[None], cluster: RemoteCluster) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error("cluster_task_failed", cluster=cluster.name, task=task.get_name(), exc_info=error)
        if not self._alive(cluster):
            return
        orphaned_rotation = (
            cluster.rotation_deadline is not None
            and cluster.staging is None
            and cluster.staged is None
        )
        if orphaned_rotation:  # the staged connection failed to start
            self._abandon_rotation(cluster, f"internal error: {type(error).__name__}")
            return
        broken = cluster.live is not None and cluster.live.task is task
        never_started = cluster.live is None and cluster.starting is None
        if broken or never_started:
            # Nothing feeds the cluster any more: say so, rather than show a state for ever.
            self._set_state(
                cluster,
                ClusterState.STALE if cluster.cache.synced else ClusterState.FAILING,
                printable(f"internal error, {task.get_name()}: {error!r}", 300),
            )
            self._notify(cluster)

    def _alive(self, cluster: RemoteCluster) -> bool:
        return self._clusters.get(cluster.name) is cluster

    def _connection_changed(self, cluster: RemoteCluster, connection: Connection) -> None:
        if self._clusters.get(cluster.name) is not cluster:
            return  # unlinked meanwhile
        if cluster.staged is not None and cluster.staged.connection is connection:
            # Only a connection that listed everything and watches everything replaces
            # one that works: credentials that can list but not watch are no rotation.
            if connection.synced.is_set() and connection.watching and not connection.failing:
                self._promote(cluster)
            else:
                cluster.rotation = f"pending: {connection.error_summary() or 'syncing'}"
            return
        if cluster.live is None or cluster.live.connection is not connection:
            return  # a replaced connection's last words
        self._refresh_state(cluster)

    def _promote(self, cluster: RemoteCluster) -> None:
        """The staged connection has listed everything: it goes live, the old one goes."""
        staged, events = cluster.staged, cluster.staged_events
        assert staged is not None and events is not None
        if cluster.rotation_deadline is not None:
            cluster.rotation_deadline.cancel()
            cluster.rotation_deadline = None
        old = cluster.live
        cluster.live, cluster.staged, cluster.staged_events = staged, None, None
        if old is not None:
            old.task.cancel()
        replayed = events.replay(cluster.cache.apply)
        staged.connection.retarget(cluster.cache.apply)
        previous, cluster.credentials = cluster.credentials, staged.credentials
        cluster.rotation = None
        self._metrics.credential_rotations.labels(cluster.name, "applied").inc()
        log.info("credentials_rotated", cluster=cluster.name, objects_replayed=replayed)
        self._refresh_state(cluster)
        if _names(previous) != _names(cluster.credentials):
            self._notify(cluster)  # identities (trust domain) change only now

    def _rotation_overdue(self, cluster: RemoteCluster) -> None:
        cluster.rotation_deadline = None
        staged = cluster.staged
        why = staged.connection.error_summary() if staged is not None else None
        self._abandon_rotation(
            cluster,
            f"the new credentials did not sync within {ROTATION_DEADLINE_S:g}s"
            f" ({why or 'still listing'})",
        )

    def _staged_overflowed(self, cluster: RemoteCluster, events: StagedEvents | None) -> None:
        if events is None or cluster.staged_events is not events:
            return
        self._abandon_rotation(
            cluster, f"more than {STAGED_MAX_OBJECTS} objects held while the new ones synced"
        )

    def _abandon_rotation(self, cluster: RemoteCluster, reason: str) -> None:
        """Give up new credentials that do not sync; the old connection keeps serving."""
        self._cancel_rotation(cluster)
        cluster.rotation = f"abandoned: {reason}; the old credentials keep serving"
        self._metrics.credential_rotations.labels(cluster.name, "abandoned").inc()
        log.error(
            "credentials_rotation_abandoned",
            cluster=cluster.name,
            secret=str(cluster.desired.ref),
            reason=reason,
        )

    def _refresh_state(self, cluster: RemoteCluster) -> None:
        assert cluster.live is not None
        connection = cluster.live.connection
        error = connection.error_summary()
        if not connection.synced.is_set():
            state = ClusterState.FAILING if error else ClusterState.CONNECTING
        elif error:
            state = (
                ClusterState.WITHDRAWN
                if cluster.state is ClusterState.WITHDRAWN
                else ClusterState.STALE
            )
        else:
            state = ClusterState.SYNCED
            cluster.last_synced = time.time()
            if not cluster.cache.synced:
                cluster.cache.mark_synced(took_s=time.time() - connection.started_at)
        was_serving = cluster.serving
        self._set_state(cluster, state, error)
        if cluster.serving != was_serving:
            self._notify(cluster)

    def _set_state(self, cluster: RemoteCluster, state: ClusterState, error: str | None) -> None:
        cluster.error = error
        if state is cluster.state:
            return
        previous, cluster.state, cluster.since = cluster.state, state, time.time()
        if previous is ClusterState.SYNCED and cluster.last_synced is not None:
            cluster.last_synced = time.time()
        log_method = log.warning if state not in SERVING_STATES or error else log.info
        log_method(
            "cluster_state",
            cluster=cluster.name,
            state=state.value,
            previous=previous.value,
            error=error,
        )
        if cluster.withdraw_timer is not None:
            cluster.withdraw_timer.cancel()
            cluster.withdraw_timer = None
        if state is ClusterState.STALE and self.staleness.withdraw_after_s is not None:
            cluster.withdraw_timer = asyncio.get_running_loop().call_later(
                self.staleness.withdraw_after_s, self._withdraw, cluster
            )

    def _withdraw(self, cluster: RemoteCluster) -> None:
        """The withdraw timer (a loop callback): its failures are logged, with the cluster."""
        cluster.withdraw_timer = None
        with _own_failure(cluster.name, "withdraw"):
            if cluster.state is ClusterState.STALE and self._alive(cluster):
                self._set_state(cluster, ClusterState.WITHDRAWN, cluster.error)
                self._notify(cluster)

    def _notify(self, cluster: RemoteCluster | None = None) -> None:
        """Tell every listener; one that fails is logged and does not stop the others."""
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception(
                    "store_listener_failed",
                    cluster=cluster.name if cluster is not None else None,
                    listener=repr(listener),
                )

    def _status(self, cluster: RemoteCluster) -> ClusterStatus:
        credentials = cluster.credentials
        sizes = cluster.cache.index.sizes()
        return ClusterStatus(
            name=cluster.name,
            state=cluster.state,
            since=cluster.since,
            secret=str(credentials.ref),
            server=cluster.live.server if cluster.live else None,
            trust_domain=credentials.trust_domain,
            cluster_domain=credentials.cluster_domain,
            error=cluster.error,
            last_synced=(
                time.time() if cluster.state is ClusterState.SYNCED else cluster.last_synced
            ),
            objects={kind.value: sizes[kind] for kind in REMOTE_KINDS},
            rotation=cluster.rotation,
        )


@contextlib.contextmanager
def _own_failure(cluster: str, action: str) -> Iterator[None]:
    """An exception while handling one cluster is logged with its name, and goes no further."""
    try:
        yield
    except Exception:
        log.exception("cluster_action_failed", cluster=cluster, action=action)


def _names(credentials: ClusterCredentials) -> tuple[str, str]:
    """What a Secret says besides its credentials: how to name the cluster's pods."""
    return credentials.trust_domain, credentials.cluster_domain


class ClusterStoreCollector(Collector):
    """Per-cluster state for Prometheus, read from the store at scrape time."""

    def __init__(self, store: ClusterStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "remote_cluster_state",
            "1 for the state each linked cluster is in, 0 for the others.",
            labels=["cluster", "state"],
        )
        synced = GaugeMetricFamily(
            "remote_cluster_last_synced_timestamp_seconds",
            "When each linked cluster was last known to be fully up to date.",
            labels=["cluster"],
        )
        for status in self._store.statuses():
            for value in ClusterState:
                state.add_metric([status.name, value.value], float(status.state is value))
            if status.last_synced is not None:
                synced.add_metric([status.name], status.last_synced)
        yield state
        yield synced
