"""One API client of one cluster and the reflectors that read through it.

A `Connection` is what credential rotation swaps: the index and topics of a
cluster (`ClusterCache`) stay, the connection feeding them is replaced. A new
connection can be *staged*: its events are held back (`StagedEvents`) until
every reflector has listed and watches, and only then does it go live,
replaying what it holds into the cache. Because a relist replaces the index's
contents kind by kind, going live sends subscribers exactly the differences
between what the old credentials saw and what the new ones see, which is
normally nothing. Held events are kept as the latest state of each object, so
what a hold costs is bounded by the cluster's objects, not by how long the
hold lasts or how busy the remote is; STAGED_MAX_OBJECTS bounds even that.

Health is tracked per reflector: the connection is *synced* once every kind
has listed, and *failing* while any reflector's last attempt failed. Owners
are told of every change through `on_change`, so a cluster's status is
derived from the connection rather than polled.

Recovery is atomic too. After an outage every failed kind relists on its own
schedule, and applying those lists one by one would show subscribers states
that never existed (a new slice whose pods are not listed yet: a Remove, then
an Add when the pods arrive). So once a synced connection has a failing kind,
the events of the failed kinds are held back until every failed kind has
listed again, then applied in one batch: subscribers get exactly the
differences between before and after the outage. Kinds that never failed keep
flowing; a hold lasts at most `HOLD_MAX_S` after the first kind recovers, so
one kind failing for good cannot freeze the others, and a hold that reaches
STAGED_MAX_OBJECTS objects is released at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

import aiohttp
import structlog

from .index import record_key
from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind, ObjectRef
from .project import Record, project
from .reflector import (
    Deleted,
    Listed,
    Projector,
    Reflector,
    ReflectorEvent,
    Upserted,
    describe_error,
)
from .transport import ApiTransport

log = structlog.get_logger("discovery.connection")

EventSink = Callable[[ReflectorEvent, float], None]

HOLD_MAX_S = 10.0
# Liveness: a probe every LIVENESS_INTERVAL_S, each given LIVENESS_TIMEOUT_S;
# LIVENESS_FAILURES in a row and the API server counts as gone. A server that
# stops answering just after a probe is found within
# LIVENESS_INTERVAL_S + LIVENESS_FAILURES * LIVENESS_TIMEOUT_S (11 s).
LIVENESS_PATH = "/livez"
LIVENESS_INTERVAL_S = 3.0
LIVENESS_TIMEOUT_S = 4.0
LIVENESS_FAILURES = 2
LIVENESS_BODY_MAX_BYTES = 1024
# The most objects held back (a recovery hold, a staged rotation). Above any
# real cluster (Kubernetes' own limits: 150,000 pods, 10,000 services), so it
# only stops a remote that invents objects faster than we can give up on it.
STAGED_MAX_OBJECTS = 250_000

LOCAL_KINDS = (
    Kind.SERVICE,
    Kind.ENDPOINT_SLICE,
    Kind.POD,
    Kind.NODE,
    Kind.REPLICA_SET,
    Kind.JOB,
    Kind.SERVER,
    Kind.EXTERNAL_WORKLOAD,
    Kind.SERVICE_PROFILE,
)
# What remote discovery reads in a linked cluster, and nothing more: these
# three kinds are all that the remote RBAC (deploy/remote-access.yaml) grants.
REMOTE_KINDS = (Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.POD)


class StagedEvents:
    """Events held back, kept as the latest state of each object until they are replayed.

    Whoever receives them later only needs the end state, so memory is bounded
    by the number of objects, not by the number of events: an object modified
    a thousand times while held is held once. Per kind, after a `Listed`: the
    listed objects with every later change applied, replayed as one `Listed`;
    before one, the latest change of each object, replayed as upserts and
    deletes. Past `limit` objects, `on_overflow` is called (once) and later
    events are ignored until the next `replay` or `clear`: the owner decides
    whether to let everything through (a recovery hold) or to give up (a
    staged rotation).
    """

    def __init__(
        self, *, limit: int | None = None, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self._limit = STAGED_MAX_OBJECTS if limit is None else limit
        self._on_overflow = on_overflow
        self._listed: dict[Kind, dict[ObjectRef, Record]] = {}
        self._changes: dict[Kind, dict[ObjectRef, Record | None]] = {}
        self._count = 0
        self.overflowed = False

    def __len__(self) -> int:
        """Objects held (not events)."""
        return self._count

    def __call__(self, event: ReflectorEvent, received: float) -> None:
        del received  # replayed events are timed from their release
        if self.overflowed:
            return
        kind = event.kind
        if isinstance(event, Listed):
            self._count -= len(self._listed.get(kind, ())) + len(self._changes.pop(kind, ()))
            self._listed[kind] = {record_key(record): record for record in event.records}
            self._count += len(self._listed[kind])
        else:
            key = event.ref if isinstance(event, Deleted) else record_key(event.record)
            record = None if isinstance(event, Deleted) else event.record
            listed = self._listed.get(kind)
            if listed is None:
                changes = self._changes.setdefault(kind, {})
                self._count += key not in changes
                changes[key] = record
            elif record is None:
                self._count -= listed.pop(key, None) is not None
            else:
                self._count += key not in listed
                listed[key] = record
        if self._count > self._limit:
            self.overflowed = True
            if self._on_overflow is not None:
                self._on_overflow()

    def replay(self, sink: EventSink) -> int:
        """Send what is held to `sink` (a whole kind as one `Listed`); returns objects sent."""
        listed, changes = self._listed, self._changes
        self.clear()
        received = time.perf_counter()
        sent = 0
        for kind, objects in listed.items():
            sink(Listed(kind, tuple(objects.values())), received)
            sent += len(objects)
        for kind, latest in changes.items():
            for key, record in latest.items():
                sink(Deleted(kind, key) if record is None else Upserted(kind, record), received)
                sent += 1
        return sent

    def clear(self) -> None:
        self._listed, self._changes, self._count = {}, {}, 0
        self.overflowed = False


class Connection:
    def __init__(
        self,
        *,
        cluster: ClusterName,
        api: ApiTransport,
        kinds: Iterable[Kind],
        sink: EventSink,
        metrics: DiscoveryMetrics,
        on_change: Callable[[], None] | None = None,
        paths: dict[Kind, str] | None = None,
        selectors: Sequence[tuple[str, str]] = (),
        projector: Projector = project,
    ) -> None:
        self.cluster = cluster
        self.api = api
        self._sink = sink
        self._on_change = on_change
        self._held_kinds: set[Kind] = set()
        self._held = StagedEvents(on_overflow=self._hold_overflowed)
        self._hold_timer: asyncio.TimerHandle | None = None
        self.errors: dict[Kind, str] = {}
        self.liveness_error: str | None = None  # the API server stopped answering probes
        self._unresponsive_since = 0.0
        self.synced = asyncio.Event()
        self.synced_at: float | None = None  # wall-clock time of the first full sync
        self.started_at = time.time()
        self.reflectors = [
            Reflector(
                cluster=cluster,
                kind=kind,
                api=api,
                on_event=self._deliverer(kind),
                metrics=metrics,
                path=(paths or {}).get(kind),
                selectors=selectors,
                on_health=self._health,
                projector=projector,
            )
            for kind in kinds
        ]

    @property
    def failing(self) -> bool:
        return bool(self.errors) or self.liveness_error is not None

    @property
    def watching(self) -> bool:
        """Every kind listed and its watch open: what staged credentials must reach."""
        return all(reflector.healthy for reflector in self.reflectors)

    def error_summary(self) -> str | None:
        """The errors of failing kinds in one line; identical errors are told once."""
        if not self.failing:
            return None
        by_error: dict[str, list[str]] = {}
        for kind, error in sorted(self.errors.items(), key=lambda item: item[0].value):
            if error != self.liveness_error:  # kinds interrupted by it: told once, below
                by_error.setdefault(error, []).append(kind.value)
        parts = [f"{'/'.join(kinds)}: {error}" for error, kinds in by_error.items()]
        if self.liveness_error is not None:
            parts.insert(0, self.liveness_error)
        return "; ".join(parts)

    def retarget(self, sink: EventSink) -> None:
        """Send every later event to `sink` (a staged connection going live)."""
        self._sink = sink

    @property
    def holding(self) -> bool:
        return bool(self._held_kinds)

    def _deliverer(self, kind: Kind) -> EventSink:
        def deliver(event: ReflectorEvent, received: float) -> None:
            if kind in self._held_kinds:
                self._held(event, received)
            else:
                self._sink(event, received)

        return deliver

    def _release(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._held_kinds.clear()
        self._held.replay(self._sink)

    def _release_overdue(self) -> None:
        """The hold timer (a loop callback): its failures are logged, with the cluster."""
        try:
            self._release()
        except Exception:
            log.exception("recovery_hold_release_failed", cluster=self.cluster)

    def _hold_overflowed(self) -> None:
        """Too much held: deliver it now, not atomically, rather than hold more."""
        log.warning(
            "recovery_hold_released_early",
            cluster=self.cluster,
            held_objects=len(self._held),
            kinds=sorted(kind.value for kind in self._held_kinds),
        )
        self._release()

    async def run(self) -> None:
        """Run every reflector, and the liveness probe, until cancelled; they retry on their own."""
        async with asyncio.TaskGroup() as group:
            for reflector in self.reflectors:
                group.create_task(
                    reflector.run(), name=f"reflector {self.cluster}/{reflector.kind.value}"
                )
            group.create_task(self._watch_liveness(), name=f"liveness {self.cluster}")

    # -- liveness ------------------------------------------------------------------

    async def _watch_liveness(self) -> None:
        """Probe the API server every LIVENESS_INTERVAL_S, whatever its watches are doing.

        A server that stops answering (stopped, hung, a network that drops packets
        without resetting connections) leaves watches open and silent: TCP
        keepalive cannot tell, since a stopped process's kernel still answers, and
        a quiet watch is normal. LIVENESS_FAILURES probes in a row without an HTTP
        answer mark the connection failing (its cluster stale) and interrupt the
        watches, which then relist with backoff; the first answer again clears it.
        """
        loop = asyncio.get_running_loop()
        failures = 0
        delay = LIVENESS_INTERVAL_S
        while True:
            await asyncio.sleep(delay)
            started = loop.time()
            try:
                async with asyncio.timeout(LIVENESS_TIMEOUT_S):
                    await self._probe()
            except Exception as err:  # no HTTP answer, whatever the reason
                failures += 1
                if failures == LIVENESS_FAILURES:
                    detail = "no answer" if isinstance(err, TimeoutError) else describe_error(err)
                    self._unresponsive(
                        f"API server not answering: {LIVENESS_FAILURES} liveness probes "
                        f"failed ({detail}, {LIVENESS_TIMEOUT_S:g}s timeout)"
                    )
            else:
                if self.liveness_error is not None:
                    self._responsive()
                failures = 0
            # Probes start LIVENESS_INTERVAL_S apart, or back to back when they time out.
            delay = max(0.0, LIVENESS_INTERVAL_S - (loop.time() - started))

    async def _probe(self) -> None:
        """One request that any HTTP answer (even 401 or 503) proves the server alive."""
        response = await self.api.request(
            "GET",
            LIVENESS_PATH,
            client_timeout=aiohttp.ClientTimeout(total=LIVENESS_TIMEOUT_S),
        )
        async with response:
            await response.content.read(LIVENESS_BODY_MAX_BYTES)

    def _unresponsive(self, reason: str) -> None:
        self.liveness_error = reason
        self._unresponsive_since = time.monotonic()
        log.warning("api_server_unresponsive", cluster=self.cluster, reason=reason)
        for reflector in self.reflectors:
            reflector.interrupt(reason)
        self._changed()

    def _responsive(self) -> None:
        self.liveness_error = None
        silent_s = time.monotonic() - self._unresponsive_since
        log.info("api_server_answering_again", cluster=self.cluster, after_s=round(silent_s, 1))
        for reflector in self.reflectors:
            reflector.wake()  # retry now rather than at the end of a long backoff
        self._changed()

    def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            log.exception("connection_change_callback_failed", cluster=self.cluster)

    async def close(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        await self.api.close()

    def _health(self, reflector: Reflector, error: str | None) -> None:
        if error is None:
            self.errors.pop(reflector.kind, None)
            if self._held_kinds:
                if not self.errors:
                    self._release()
                elif self._hold_timer is None:
                    self._hold_timer = asyncio.get_running_loop().call_later(
                        HOLD_MAX_S, self._release_overdue
                    )
        else:
            self.errors[reflector.kind] = error
            if self.synced.is_set():
                self._held_kinds.add(reflector.kind)
        if not self.synced.is_set() and all(r.synced.is_set() for r in self.reflectors):
            self.synced_at = time.time()
            self.synced.set()
        self._changed()
