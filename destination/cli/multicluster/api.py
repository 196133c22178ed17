"""JSON requests to one Kubernetes API server, as the multicluster commands make them.

The commands talk to up to three API servers: the operator's clusters
(through their own kubeconfig, `contexts.py`) and, for `check`, a Link's
target (through the Link's credentials Secret, hostile input, so only
through `discovery.transport.RemoteTransport`). Both are an
`ApiTransport`; `Api` adds what a command needs on top: decoded JSON
objects, one timeout per request, bounded bodies, lists followed across
pages up to a bound, and errors as `discovery.reflector.ApiError` (status
code, reason, a short printable message; nothing else of what the server
said).

Network failures (`aiohttp.ClientError`, `TimeoutError`, `OSError`) are
left to the caller: each command words them for its own situation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from discovery.reflector import ApiError
from discovery.transport import ApiTransport, Query

__all__ = ["Api", "ApiError", "BodyTooLarge"]

MAX_BODY_BYTES = 64 * 1024 * 1024
"""A list of every Service of a large cluster fits; a hostile server cannot exhaust memory."""

MAX_LIST_ITEMS = 100_000
PAGE_SIZE = 500
_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"


class BodyTooLarge(ValueError):
    """A response larger than the commands accept."""


class Api:
    """One API server: JSON in, JSON out, each request bounded by `timeout_s`."""

    def __init__(
        self,
        transport: ApiTransport,
        *,
        timeout_s: float,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_list_items: int = MAX_LIST_ITEMS,
    ) -> None:
        self.transport = transport
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_body = max_body_bytes
        self._max_items = max_list_items

    @property
    def server(self) -> str:
        return self.transport.server

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        content_type: str = _JSON,
    ) -> dict[str, Any]:
        """The decoded JSON object of a 2xx answer; ApiError for any other status."""
        headers = {"Accept": _JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        async with await self.transport.request(
            method,
            path,
            query=query,
            headers=headers,
            json_body=body,
            client_timeout=self._timeout,
        ) as response:
            raw = await _read_bounded(response, self._max_body)
            status = int(response.status)
        if not 200 <= status < 300:
            raise ApiError.from_body(status, raw)
        if not raw:
            return {}
        try:
            document = json.loads(raw)
        except ValueError:
            raise ApiError(status, "InvalidResponse", "the answer is not JSON") from None
        if not isinstance(document, dict):
            raise ApiError(status, "InvalidResponse", "the answer is not a JSON object")
        return document

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist (404)."""
        try:
            return await self.request("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a collection, page by page; BodyTooLarge past the item bound."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, str | int]] = [("limit", PAGE_SIZE)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            page = await self.request("GET", path, query=query)
            raw_items = page.get("items")
            if not isinstance(raw_items, list):
                raise ApiError(200, "InvalidResponse", "a list without items")
            items += [item for item in raw_items if isinstance(item, dict)]
            if len(items) > self._max_items:
                raise BodyTooLarge(f"{path} holds more than {self._max_items} objects")
            metadata = page.get("metadata")
            token = metadata.get("continue", "") if isinstance(metadata, dict) else ""
            if not isinstance(token, str) or not token:
                return items

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=patch, content_type=_MERGE_PATCH)

    async def delete(self, path: str, *, preconditions: Mapping[str, str] | None = None) -> bool:
        """Delete the object; False when it was already gone (404).

        `preconditions` (`uid`, `resourceVersion`) make the API server refuse
        (409) if the object was replaced or changed since it was read.
        """
        body: dict[str, Any] | None = None
        if preconditions:
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": dict(preconditions),
            }
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def close(self) -> None:
        await self.transport.close()


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    while True:
        chunk = await response.content.read(min(1024 * 1024, limit + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"an answer of more than {limit} bytes")
