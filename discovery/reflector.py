"""List-then-watch of one resource kind in one cluster, forever.

The loop has three layers (as in kopf): `run` never returns; it relists after
`410 Gone` or any failure, with jittered exponential backoff, and counts each
restart by reason. `_list` pages through the collection and hands the whole
result over as one `Listed` event, so the index can drop objects deleted while
we were away. `_watch` streams events from the list's resourceVersion, with
bookmarks so that a quiet watch still advances, and a read timeout so that a
dead connection is noticed.

Objects are read as raw JSON lines and projected straight into slim records:
no generated model classes are built (kubernetes-asyncio's `Watch` would build
one per event). A malformed object is logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from .metrics import DiscoveryMetrics
from .models import ClusterName, Kind, ObjectRef
from .project import Invalid, Record, object_key, project
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
}

# Kinds of optional CRDs: a cluster without them lists as empty (and is asked
# again every NOT_SERVED_RETRY_S), instead of never syncing.
OPTIONAL_KINDS = frozenset({Kind.SERVER, Kind.EXTERNAL_WORKLOAD})
NOT_SERVED_RETRY_S = 60.0


def secrets_path(namespace: str) -> str:
    """Secrets are only ever read in one namespace (the controller's)."""
    return f"/api/v1/namespaces/{namespace}/secrets"


# ReplicaSets, Jobs and Nodes: only their metadata is read, so ask for that.
_METADATA_ONLY = frozenset({Kind.REPLICA_SET, Kind.JOB, Kind.NODE})
_ACCEPT_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_ACCEPT_METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

PAGE_SIZE = 500
WATCH_TIMEOUT_S = 300  # the API server ends each watch after this; we then resume
# Above WATCH_TIMEOUT_S: the API server ends each watch itself, and quiet watches
# (bookmarks are not guaranteed) must not be mistaken for dead links.
READ_TIMEOUT_S = 330.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0


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


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}{_STATUS_HINTS.get(status, '')}: {body[:300]}")
        self.status = status


_STATUS_HINTS = {
    401: " (unauthorized: the credentials were rejected)",
    403: " (forbidden: the credentials lack list/watch permission)",
}

HealthCallback = Callable[["Reflector", str | None], None]


class Reflector:
    """Keeps one (cluster, kind) flowing into `on_event`, which must not block."""

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
    ) -> None:
        self.cluster = cluster
        self.kind = kind
        self._api = api
        self._on_event = on_event
        self._metrics = metrics
        self._path = path or LIST_PATHS[kind]
        self._selectors = list(selectors)
        self._on_health = on_health
        self._log = log.bind(cluster=cluster, kind=kind.value)
        self.synced = asyncio.Event()
        self.last_error: str | None = None

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            reason = "watch_ended"
            try:
                version = await self._list()
                backoff = BACKOFF_INITIAL_S
                if self.last_error is not None:
                    self._log.info("watch_recovered")
                self.last_error = None
                if self._on_health is not None:
                    self._on_health(self, None)
                while True:
                    version = await self._watch(version)
            except WatchExpired:
                reason = "expired"
                self._log.info("watch_expired_relisting")
            except NotServed:
                reason = "not_served"
                await asyncio.sleep(NOT_SERVED_RETRY_S)
            except (aiohttp.ClientError, TimeoutError, ApiError, OSError, ValueError) as err:
                reason = type(err).__name__
                await self._failed(str(err) or reason, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except Exception as err:  # a client bug must not end this cluster's watches
                reason = "unexpected"
                self._log.exception("watch_failed_unexpectedly")
                await self._failed(f"{type(err).__name__}: {err}", backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            self._metrics.watch_restarts.labels(self.cluster, self.kind.value, reason).inc()

    async def _failed(self, error: str, backoff: float) -> None:
        self.last_error = error
        self._log.warning("watch_failed", error=error, retry_in_s=round(backoff, 2))
        if self._on_health is not None:
            self._on_health(self, error)
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))

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
                    raise ApiError(response.status, await response.text())
                body = await response.json(loads=json.loads)
            for item in body.get("items") or []:
                record = self._project(item)
                if record is not None:
                    records.append(record)
            metadata = body.get("metadata") or {}
            continue_token = metadata.get("continue") or ""
            if not continue_token:
                version = str(metadata.get("resourceVersion") or "")
                break
        self._on_event(Listed(self.kind, tuple(records)), started)
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
                raise ApiError(response.status, await response.text())
            async for line in response.content:
                if not line.strip():
                    continue
                received = time.perf_counter()
                event = json.loads(line)
                version = self._handle(event, received) or version
        return version

    def _not_served(self, started: float) -> None:
        """An optional CRD that is not installed: nothing of it exists, for now."""
        if not self.synced.is_set():
            self._log.info("resource_not_served", path=self._path, retry_in_s=NOT_SERVED_RETRY_S)
        self._on_event(Listed(self.kind, ()), started)
        self.synced.set()
        self.last_error = None
        if self._on_health is not None:
            self._on_health(self, None)
        raise NotServed()

    def _handle(self, event: dict[str, Any], received: float) -> str | None:
        """Apply one watch event; returns the resourceVersion to resume from."""
        event_type = event.get("type")
        obj = event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired()
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if event_type == "BOOKMARK":
            return str(version) if version else None
        self._metrics.watch_events.labels(self.cluster, self.kind.value, str(event_type)).inc()
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
        record = project(self.kind, raw, on_warning=lambda reason: self._skipped(raw, reason))
        if isinstance(record, Invalid):
            self._metrics.invalid_objects.labels(self.cluster, self.kind.value).inc()
            self._log.warning("invalid_object", ref=record.ref, reason=record.reason)
            return None
        return record

    def _skipped(self, raw: dict[str, Any], reason: str) -> None:
        """Part of an object was unreadable and skipped (project.py); the rest is kept."""
        self._metrics.invalid_parts.labels(self.cluster, self.kind.value).inc()
        self._log.warning("invalid_object_part", ref=str(object_key(raw))[:300], reason=reason)
