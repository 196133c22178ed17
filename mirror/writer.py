"""Writes to the local API server: the only place the mirror controller changes anything.

Every write is one request with a bounded timeout; its outcome is a value
(`Written`) rather than an exception, so that one refused object (a name the
API server rejects, a namespace being deleted) is reported for that object
and never stops the rest of a reconcile. Writes are counted by Link, kind
and verb (`mirror_writes_total`), which is how the benchmark checks "one
write per changed object, none for unchanged ones"; reads (`read`) are not
counted, so a replica that only reads shows no writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from discovery.reflector import ApiError
from discovery.transport import ApiTransport

from .metrics import MirrorMetrics

__all__ = ["Writer", "Written", "collection_path", "object_path"]

log = structlog.get_logger("mirror.writer")

_TIMEOUT = aiohttp.ClientTimeout(total=30)
_MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
_JSON = {"Content-Type": "application/json"}
MAX_RESPONSE = 1024 * 1024

_PLURAL = {"Service": "services", "Endpoints": "endpoints", "Namespace": "namespaces"}


def _describe(status: int, raw: bytes) -> str:
    """`HTTP <status>: <reason>: <message>` of a refused write, made printable.

    Not `ApiError`'s own text: its hints explain a *reader's* failures (a 403
    there means "the credentials lack list/watch permission"), which would
    mislead in a Link's status about a write of the controller's own identity.
    """
    error = ApiError.from_body(status, raw)
    detail = ": ".join(part for part in (error.reason, error.message) if part)
    return f"HTTP {status}: {detail}" if detail else f"HTTP {status}"


def collection_path(kind: str, namespace: str) -> str:
    if kind == "Namespace":
        return "/api/v1/namespaces"
    return f"/api/v1/namespaces/{namespace}/{_PLURAL[kind]}"


def object_path(kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(kind, namespace)}/{name}"


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of one write."""

    status: int  # HTTP status; 0 when no answer came
    error: str | None = None  # why it failed, for the Link's status and logs
    body: Mapping[str, Any] | None = None  # the object, when the API server returned it

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


class Writer:
    def __init__(self, api: ApiTransport, metrics: MirrorMetrics) -> None:
        self._api = api
        self._metrics = metrics

    async def _send(
        self,
        link: str,
        kind: str,
        verb: str,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        ok_statuses: tuple[int, ...] = (200, 201),
        counted: bool = True,
    ) -> Written:
        if counted:
            self._metrics.writes.labels(link, kind, verb).inc()
        try:
            async with await self._api.request(
                method, path, json_body=body, headers=headers, client_timeout=_TIMEOUT
            ) as response:
                raw = await response.content.read(MAX_RESPONSE)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            if counted:
                self._metrics.write_failures.labels(link, kind, verb).inc()
            return Written(0, f"{verb} {kind}: {type(err).__name__}: {err}"[:300])
        document: Mapping[str, Any] | None = None
        try:
            parsed = json.loads(raw) if raw else None
            document = parsed if isinstance(parsed, Mapping) else None
        except ValueError:
            document = None
        if status in ok_statuses:
            return Written(status, None, document)
        error = _describe(status, raw)
        if status not in (404, 409) and counted:
            self._metrics.write_failures.labels(link, kind, verb).inc()
        return Written(status, f"{verb} {kind}: {error}"[:300], document)

    async def read(self, link: str, kind: str, namespace: str, name: str) -> Written:
        """GET one object from the API (not the cache): not a write, so not counted."""
        return await self._send(
            link, kind, "get", "GET", object_path(kind, namespace, name), counted=False
        )

    async def create(self, link: str, manifest: Mapping[str, Any]) -> Written:
        kind = str(manifest["kind"])
        namespace = str(manifest["metadata"].get("namespace", ""))
        return await self._send(
            link, kind, "create", "POST", collection_path(kind, namespace), manifest, _JSON
        )

    async def patch(
        self, link: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Written:
        return await self._send(
            link,
            kind,
            "patch",
            "PATCH",
            object_path(kind, namespace, name),
            patch,
            _MERGE_PATCH,
        )

    async def replace(self, link: str, manifest: Mapping[str, Any]) -> Written:
        """PUT with the manifest's resourceVersion: 409 if someone wrote it meanwhile."""
        kind = str(manifest["kind"])
        meta = manifest["metadata"]
        path = object_path(kind, str(meta.get("namespace", "")), str(meta["name"]))
        return await self._send(link, kind, "update", "PUT", path, manifest, _JSON)

    async def delete(
        self, link: str, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> Written:
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}  # type: ignore[assignment]
        written = await self._send(
            link,
            kind,
            "delete",
            "DELETE",
            object_path(kind, namespace, name),
            body,
            _JSON,
            ok_statuses=(200, 202),
        )
        if written.not_found:
            return Written(404)  # already gone: what we wanted
        return written

    async def raw(
        self,
        link: str,
        kind: str,
        verb: str,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Written:
        """Any other request (Link status, Events, Leases)."""
        return await self._send(link, kind, verb, method, path, body, headers or _JSON)
