"""List-then-watch of one resource kind in one cluster, forever.

The loop has three layers (as in kopf): `run` never returns; it relists after
`410 Gone` or any failure and counts each restart by reason. `_list` pages
through the collection and hands the whole result over as one `Listed` event,
so the index can drop objects deleted while we were away. `_watch` streams
events from the list's resourceVersion, with bookmarks so that a quiet watch
still advances, and a read timeout as a last resort (a silent server is found
sooner by the connection's liveness probe, which `interrupt`s us).

Retries never storm: every way an attempt can end (an error, a 410, a watch
refused after a list that worked, a watch the server ends at once) waits a
jittered, exponentially growing delay (`Backoff`, capped at BACKOFF_MAX_S).
The delay starts small again only after a watch stayed open HEALTHY_AFTER_S:
a successful list proves nothing about the watch that follows it. Health
follows the same rule: a kind is healthy again when its watch is open, not
when its list succeeded, and a kind that keeps breaking right after each
recovery must hold a watch open for HEALTHY_AFTER_S before it counts as
healthy again (`FLAPS_FORGIVEN`), so a cluster's status does not flip between
synced and stale on every cycle.

Objects are read as raw JSON lines and projected straight into slim records:
no generated model classes are built (kubernetes-asyncio's `Watch` would build
one per event). A malformed object is logged and counted, never raised. What
the remote says in errors is reduced to a status code and a short printable
reason and message (`ApiError`) before it reaches a status or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
import structlog

from .jsondecode import loads
from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind, ObjectRef
from .project import Invalid, Record, Warn, object_key, project
from .sanitize import printable
from .transport import ApiTransport

log = structlog.get_logger("discovery.reflector")

# Where each kind is listed, cluster-wide.
LIST_PATHS: dict[Kind, str] = {
    Kind.SERVICE: "/api/v1/services",
    Kind.ENDPOINT_SLICE: "/apis/discovery.k8s.io/v1/endpointslices",
    Kind.POD: "/api/v1/pods",
    Kind.NODE: "/api/v1/nodes",
    Kind.REPLICA_SET: "/apis/apps/v1/replicasets",
    Kind.JOB: "/apis/batch/v1/jobs",
    Kind.SERVER: "/apis/policy.linkerd.io/v1beta3/servers",
    Kind.EXTERNAL_WORKLOAD: "/apis/workload.linkerd.io/v1beta1/externalworkloads",
    Kind.SERVICE_PROFILE: "/apis/linkerd.io/v1alpha2/serviceprofiles",
    Kind.ENDPOINTS: "/api/v1/endpoints",
    Kind.NAMESPACE: "/api/v1/namespaces",
}

# Kinds of optional CRDs: a cluster without them lists as empty (and is asked
# again every NOT_SERVED_RETRY_S), instead of never syncing.
OPTIONAL_KINDS = frozenset({Kind.SERVER, Kind.EXTERNAL_WORKLOAD, Kind.SERVICE_PROFILE})
NOT_SERVED_RETRY_S = 60.0


def secrets_path(namespace: str) -> str:
    """Secrets are only ever read in one namespace (the controller's)."""
    return f"/api/v1/namespaces/{namespace}/secrets"


# ReplicaSets, Jobs and Nodes: only their metadata is read, so ask for that.
_METADATA_ONLY = frozenset({Kind.REPLICA_SET, Kind.JOB, Kind.NODE, Kind.NAMESPACE})
_ACCEPT_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_ACCEPT_METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

PAGE_SIZE = 500
# A page of PAGE_SIZE objects is a few MiB in practice; an API server sending
# more is broken or hostile, and its list is refused (and retried with backoff).
MAX_LIST_PAGE_BYTES = 128 * 1024 * 1024
WATCH_TIMEOUT_S = 300  # the API server ends each watch after this; we then resume
# Above WATCH_TIMEOUT_S: the API server ends each watch itself, and quiet watches
# (bookmarks are not guaranteed) must not be mistaken for dead links. A silent
# server is found much sooner by the connection's liveness probe (connection.py).
READ_TIMEOUT_S = 330.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
# A watch that stayed open this long proves the link healthy: only then does
# the backoff start again from BACKOFF_INITIAL_S, and only then is a watch
# that the server ended resumed at once.
HEALTHY_AFTER_S = 60.0
# Failures that come soon (< HEALTHY_AFTER_S) after a recovery are flaps. The
# first FLAPS_FORGIVEN of them recover as soon as a watch is open again; after
# that a recovery is only reported once a watch has stayed open
# HEALTHY_AFTER_S, so a link that keeps breaking stays unhealthy instead of
# flipping between healthy and failing on every cycle.
FLAPS_FORGIVEN = 2
# What of a remote error body may reach statuses and logs.
ERROR_BODY_MAX_BYTES = 65536  # a Status is small; anything longer is not read
ERROR_REASON_MAX = 64
ERROR_MESSAGE_MAX = 200
ERROR_TEXT_MAX = 300
# The `type` label of watch_events_total: the remote chooses the string, we
# choose the label.
EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


@dataclass(frozen=True, slots=True)
class Listed:
    kind: Kind
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Upserted:
    kind: Kind
    record: Record


@dataclass(frozen=True, slots=True)
class Deleted:
    kind: Kind
    ref: ObjectRef


ReflectorEvent = Listed | Upserted | Deleted


class NotServed(Exception):
    """The API server does not serve this (optional) resource."""


class WatchExpired(Exception):
    """The resourceVersion we watch from is gone (410): relist."""


class Interrupted(Exception):
    """The request under way was abandoned on purpose (see `Reflector.interrupt`)."""


class ApiError(Exception):
    """An HTTP error of the API server, reduced to what is safe to show anywhere.

    The remote chooses its error bodies. Only the status code is kept as is;
    of a Kubernetes `Status` body, its `reason` and a short `message`,
    both made printable (sanitize.py); any other body is dropped.
    """

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        self.status = status
        self.reason = printable(reason, ERROR_REASON_MAX)
        self.message = printable(message, ERROR_MESSAGE_MAX)
        text = f"HTTP {status}{_STATUS_HINTS.get(status, '')}"
        detail = ": ".join(part for part in (self.reason, self.message) if part)
        super().__init__(f"{text}: {detail}" if detail else text)

    @classmethod
    def from_status(cls, status: int, body: object) -> ApiError:
        """From a decoded Status object (a watch ERROR event), whatever its shape."""
        if not isinstance(body, dict):
            return cls(status)
        reason, message = body.get("reason"), body.get("message")
        return cls(
            status,
            reason if isinstance(reason, str) else "",
            message if isinstance(message, str) else "",
        )

    @classmethod
    def from_body(cls, status: int, body: bytes) -> ApiError:
        try:
            decoded = json.loads(body)
        except ValueError:
            return cls(status)
        return cls.from_status(status, decoded)


async def _api_error(response: Any) -> ApiError:
    """The error of a non-2xx response, reading at most ERROR_BODY_MAX_BYTES of its body."""
    body = bytearray()
    while len(body) < ERROR_BODY_MAX_BYTES:
        chunk = await response.content.read(ERROR_BODY_MAX_BYTES - len(body))
        if not chunk:
            break
        body += chunk
    return ApiError.from_body(int(response.status), bytes(body))


def _status_code(value: object) -> int:
    """The HTTP code of a watch ERROR event; 500 when the remote sent nonsense."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return 500


def describe_error(err: BaseException) -> str:
    """An exception as one short printable line (its text may come from the remote)."""
    text = str(err) or type(err).__name__
    return printable(text, ERROR_TEXT_MAX)


_STATUS_HINTS = {
    401: " (unauthorized: the credentials were rejected)",
    403: " (forbidden: the credentials lack list/watch permission)",
}


class Projector(Protocol):
    """Raw object to record: `project` for discovery; other packages bring their own."""

    def __call__(
        self, kind: Kind, raw: Any, *, on_warning: Warn | None = None
    ) -> Record | Invalid: ...


HealthCallback = Callable[["Reflector", str | None], None]

_T = TypeVar("_T")


class Backoff:
    """Jittered exponential delays between attempts, capped; reset only by proven health."""

    def __init__(self) -> None:
        self._next = BACKOFF_INITIAL_S

    def next_delay(self) -> float:
        delay = min(self._next, BACKOFF_MAX_S) * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, BACKOFF_MAX_S)
        return delay

    def reset(self) -> None:
        self._next = BACKOFF_INITIAL_S


class Reflector:
    """Keeps one (cluster, kind) flowing into `on_event`, which must not block.

    Health, as told to `on_health`: an error as soon as an attempt fails; OK
    once a watch is open again after a list (not after the list alone: a list
    that works in front of a watch that is refused is not a working link).
    """

    def __init__(
        self,
        *,
        cluster: ClusterName,
        kind: Kind,
        api: ApiTransport,
        on_event: Callable[[ReflectorEvent, float], None],
        metrics: DiscoveryMetrics,
        path: str | None = None,
        selectors: Sequence[tuple[str, str]] = (),
        on_health: HealthCallback | None = None,
        projector: Projector = project,
    ) -> None:
        self.cluster = cluster
        self.kind = kind
        self._projector = projector
        self._api = api
        self._on_event = on_event
        self._metrics = metrics
        self._path = path or LIST_PATHS[kind]
        self._selectors = list(selectors)
        self._on_health = on_health
        self._log = log.bind(cluster=cluster, kind=kind.value)
        self.synced = asyncio.Event()
        self._served = False  # an optional kind that listed: its going away is worth a log line
        self.last_error: str | None = None
        self.healthy = False  # the last health reported was OK
        self._backoff = Backoff()
        self._flaps = 0
        self._recovered_at: float | None = None  # monotonic, last OK report
        self._opened_at: float | None = None  # monotonic, the open watch's start
        self._confirm: asyncio.TimerHandle | None = None
        self._attempt: asyncio.Future[Any] | None = None
        self._interrupt_reason = ""
        self._wake = asyncio.Event()

    # -- control from the connection -------------------------------------------

    def interrupt(self, reason: str) -> None:
        """Abandon the request under way (e.g. the API server stopped answering).

        The reflector counts it as a failure and retries after its backoff.
        """
        if self._attempt is not None and not self._attempt.done():
            self._interrupt_reason = reason
            self._attempt.cancel()

    def wake(self) -> None:
        """Cut a backoff sleep short (the API server answers again)."""
        self._wake.set()

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            self._cancel_confirm()

    async def _loop(self) -> None:
        version: str | None = None  # None: list first
        while True:
            error: str | None = None
            try:
                if version is None:
                    version = await self._interruptible(self._list())
                version = await self._interruptible(self._watch(version))
                reason = "watch_ended"
            except WatchExpired:
                version, reason = None, "expired"
                self._log.info("watch_expired_relisting")
            except NotServed:
                version, reason = None, "not_served"
            except Interrupted as err:
                version, reason, error = None, "interrupted", describe_error(err)
            except (aiohttp.ClientError, TimeoutError, ApiError, OSError, ValueError) as err:
                version, reason, error = None, type(err).__name__, describe_error(err)
            except Exception as err:  # a client bug must not end this cluster's watches
                version, reason = None, "unexpected"
                error = printable(f"{type(err).__name__}: {err}", ERROR_TEXT_MAX)
                self._log.exception("watch_failed_unexpectedly")
            if self._end_attempt() and reason == "watch_ended":
                continue  # the server's routine end of a long watch: resume at once
            self._metrics.watch_restarts.labels(self.cluster, self.kind.value, reason).inc()
            if reason == "not_served":
                await self._sleep(NOT_SERVED_RETRY_S)
                continue
            delay = self._backoff.next_delay()
            if error is not None:
                self._failed(error, delay)
            await self._sleep(delay)

    async def _interruptible(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run one request as a task of its own, so that `interrupt` can abandon it."""
        attempt: asyncio.Task[_T] = asyncio.ensure_future(work)
        self._attempt = attempt
        try:
            return await attempt
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if attempt.cancelled() and current is not None and not current.cancelling():
                raise Interrupted(self._interrupt_reason or "interrupted") from None
            raise
        finally:
            self._attempt = None

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    # -- health ------------------------------------------------------------------

    def _end_attempt(self) -> bool:
        """Whether the attempt that just ended had a watch open long enough to prove health."""
        opened, self._opened_at = self._opened_at, None
        self._cancel_confirm()
        proven = opened is not None and time.monotonic() - opened >= HEALTHY_AFTER_S
        if proven:
            self._backoff.reset()
        return proven

    def _watch_opened(self) -> None:
        self._opened_at = time.monotonic()
        if self.healthy:
            return
        if self._flaps < FLAPS_FORGIVEN:
            self._recovered()
        else:
            # Flapping: recover only once this watch has stayed open a while.
            self._confirm = asyncio.get_running_loop().call_later(HEALTHY_AFTER_S, self._recovered)

    def _cancel_confirm(self) -> None:
        if self._confirm is not None:
            self._confirm.cancel()
            self._confirm = None

    def _recovered(self) -> None:
        self._confirm = None
        if self.last_error is not None:
            self._log.info("watch_recovered")
        self.last_error = None
        self.healthy = True
        self._recovered_at = time.monotonic()
        self._report(None)

    def _failed(self, error: str, retry_in_s: float) -> None:
        now = time.monotonic()
        if self.healthy and self._recovered_at is not None:
            if now - self._recovered_at < HEALTHY_AFTER_S:
                self._flaps += 1
            else:
                self._flaps = 0
        self.last_error = error
        self.healthy = False
        self._log.warning(
            "watch_failed", error=error, retry_in_s=round(retry_in_s, 2), flaps=self._flaps
        )
        self._report(error)

    def _report(self, error: str | None) -> None:
        if self._on_health is None:
            return
        try:
            self._on_health(self, error)
        except Exception:  # the owner's bug: logged here, never the end of this watch
            self._log.exception("health_callback_failed")

    # -- requests ----------------------------------------------------------------

    async def _request(
        self, query: list[tuple[str, Any]], *, watch: bool
    ) -> aiohttp.ClientResponse:
        accept = "application/json"
        if self.kind in _METADATA_ONLY:
            accept = _ACCEPT_METADATA_WATCH if watch else _ACCEPT_METADATA
        timeout = (
            aiohttp.ClientTimeout(sock_connect=10, sock_read=READ_TIMEOUT_S)
            if watch
            else aiohttp.ClientTimeout(total=60)
        )
        return await self._api.request(
            "GET",
            self._path,
            query=[*query, *self._selectors],
            headers={"Accept": accept},
            client_timeout=timeout,
        )

    async def _list(self) -> str:
        started = time.perf_counter()
        records: list[Record] = []
        continue_token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)]
            if continue_token:
                query.append(("continue", continue_token))
            async with await self._request(query, watch=False) as response:
                if response.status == 410:
                    raise WatchExpired()  # the continue token expired mid-list
                if response.status == 404 and self.kind in OPTIONAL_KINDS:
                    self._not_served(started)
                if response.status != 200:
                    raise await _api_error(response)
                body = loads(await _read_bounded(response, MAX_LIST_PAGE_BYTES))
            items, metadata = _list_parts(body)
            for item in items:
                record = self._project(item)
                if record is not None:
                    records.append(record)
            continue_token = str(metadata.get("continue") or "")
            if not continue_token:
                version = str(metadata.get("resourceVersion") or "")
                break
        self._on_event(Listed(self.kind, tuple(records)), started)
        self._served = True
        self.synced.set()
        self._metrics.watch_lists.labels(self.cluster, self.kind.value).inc()
        self._log.info(
            "listed", objects=len(records), took_s=round(time.perf_counter() - started, 3)
        )
        return version

    async def _watch(self, version: str) -> str:
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", WATCH_TIMEOUT_S),
        ]
        async with await self._request(query, watch=True) as response:
            if response.status == 410:
                raise WatchExpired()
            if response.status != 200:
                raise await _api_error(response)
            self._watch_opened()
            async for line in response.content:
                if not line.strip():
                    continue
                received = time.perf_counter()
                event = loads(line)
                version = self._handle(event, received) or version
        return version

    def _not_served(self, started: float) -> None:
        """An optional CRD that is not installed: nothing of it exists, for now.

        Said once when it is first found missing, and again whenever a resource
        that was served goes away (its CRD deleted at runtime).
        """
        if not self.synced.is_set() or self._served:
            self._log.info("resource_not_served", path=self._path, retry_in_s=NOT_SERVED_RETRY_S)
        self._served = False
        self._on_event(Listed(self.kind, ()), started)
        self.synced.set()
        if not self.healthy:
            self._recovered()
        raise NotServed()

    def _handle(self, event: object, received: float) -> str | None:
        """Apply one watch event; returns the resourceVersion to resume from."""
        if not isinstance(event, dict):
            raise ValueError("watch event is not a JSON object")
        event_type = event.get("type")
        label = event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else "other"
        self._metrics.watch_events.labels(self.cluster, self.kind.value, label).inc()
        obj = event.get("object") or {}
        if not isinstance(obj, dict):
            raise ValueError("watch event object is not a JSON object")
        if event_type == "ERROR":
            code = _status_code(obj.get("code"))
            if code == 410:
                raise WatchExpired()
            raise ApiError.from_status(code, obj)
        metadata = obj.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if event_type == "DELETED":
            ref = object_key(obj)
            if ref is not None:
                self._on_event(Deleted(self.kind, ref), received)
        elif event_type in ("ADDED", "MODIFIED"):
            record = self._project(obj)
            if record is not None:
                self._on_event(Upserted(self.kind, record), received)
        return str(version) if version else None

    def _project(self, raw: dict[str, Any]) -> Record | None:
        record = self._projector(
            self.kind, raw, on_warning=lambda reason: self._skipped(raw, reason)
        )
        if isinstance(record, Invalid):
            self._metrics.invalid_objects.labels(self.cluster, self.kind.value).inc()
            self._log.warning("invalid_object", ref=record.ref, reason=record.reason)
            return None
        return record

    def _skipped(self, raw: dict[str, Any], reason: str) -> None:
        """Part of an object was unreadable and skipped (project.py); the rest is kept."""
        self._metrics.invalid_parts.labels(self.cluster, self.kind.value).inc()
        self._log.warning("invalid_object_part", ref=str(object_key(raw))[:300], reason=reason)


class ResponseTooLarge(ValueError):
    """A response body over its bound: refused, never buffered whole."""


async def _read_bounded(response: Any, limit: int) -> bytes:
    """The body of `response`, or ResponseTooLarge as soon as it passes `limit` bytes."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(f"list page of {declared} bytes is over {limit}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 20):
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"list page is over {limit} bytes")
    return bytes(body)


def _list_parts(body: object) -> tuple[list[Any], dict[str, Any]]:
    """The items and metadata of a list response, or ValueError if it is not one."""
    if not isinstance(body, dict):
        raise ValueError("list response is not a JSON object")
    items = body.get("items") or []
    metadata = body.get("metadata") or {}
    if not isinstance(items, list) or not isinstance(metadata, dict):
        raise ValueError("list response has no items list or no metadata object")
    return items, metadata
