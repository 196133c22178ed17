"""An in-memory stand-in for the API transport the reflectors read through.

`ScriptedApi.request` takes the arguments the reflectors and the liveness
probe pass to an `ApiTransport` (discovery/transport.py) and answers with a
`ScriptedResponse` chosen by a test's `route` function: a status, a body, and
for watches a stream of lines that can end, fail or hang. Every request is
recorded, so tests can count lists and watches over a period. This replaces
the network, never the code under test: the Reflector, Connection and
ClusterStore run unchanged on top of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    at: float  # loop time

    @property
    def watch(self) -> bool:
        return self.query.get("watch") == "true"


class _Content:
    """What aiohttp's `response.content` offers the reflector: lines, and bounded reads."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            self._buffer += await anext(self._chunks)
        except StopAsyncIteration:
            self._eof = True
            return False
        return True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[: newline + 1], self._buffer[newline + 1 :]
                yield line
            elif not await self._fill():
                if self._buffer:
                    line, self._buffer = self._buffer, b""
                    yield line
                return

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.read(n)
            if not chunk:
                return
            yield chunk

    async def read(self, n: int = -1) -> bytes:
        if not self._buffer:
            await self._fill()
        if n < 0:
            while await self._fill():
                pass
            n = len(self._buffer)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


class ScriptedResponse:
    def __init__(
        self, status: int, chunks: AsyncIterator[bytes], content_length: int | None = None
    ) -> None:
        self.status = status
        self.content = _Content(chunks)
        self.content_length = content_length
        self.closed = False

    async def read(self) -> bytes:
        return await self.content.read()

    async def text(self) -> str:
        return (await self.read()).decode("utf-8", errors="replace")

    async def json(self, *, loads: Callable[[str], Any] = json.loads) -> Any:
        return loads(await self.text())

    def release(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> ScriptedResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _stream(lines: Iterable[bytes], *, then: str, delay_s: float) -> AsyncIterator[bytes]:
    for line in lines:
        if delay_s:
            await asyncio.sleep(delay_s)
        yield line
    if then == "hang":
        await asyncio.Event().wait()


async def _until_cut(lines: Iterable[bytes], cut: asyncio.Event) -> AsyncIterator[bytes]:
    for line in lines:
        yield line
    await cut.wait()
    raise ConnectionResetError("connection reset by peer")


def reply(status: int = 200, body: object = b"") -> ScriptedResponse:
    """A whole response: bytes as they are, anything else as JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ScriptedResponse(status, _once(data))


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes Status object, as the API server sends with errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def list_reply(items: Iterable[dict[str, Any]] = (), version: str = "1") -> ScriptedResponse:
    return reply(200, {"items": list(items), "metadata": {"resourceVersion": version}})


def watch_reply(
    events: Iterable[dict[str, Any]] = (), *, then: str = "hang", delay_s: float = 0.0
) -> ScriptedResponse:
    """A 200 watch: `events` as JSON lines, then `hang` (stay open) or `end` (close cleanly)."""
    lines = [json.dumps(event).encode() + b"\n" for event in events]
    return ScriptedResponse(200, _stream(lines, then=then, delay_s=delay_s))


async def hang() -> ScriptedResponse:
    """A server that accepted the request and never answers."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


Route = Callable[[Request], Awaitable[ScriptedResponse]]


@dataclass
class ScriptedApi:
    """`request` answered by `route`; `requests` records every call in order."""

    route: Route
    server_url: str = "https://scripted.invalid"
    requests: list[Request] = field(default_factory=list)
    closed: bool = False
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def server(self) -> str:
        return self.server_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, Any]] = (),
        headers: Any = None,
        json_body: Any = None,
        client_timeout: Any = None,
    ) -> ScriptedResponse:
        assert method == "GET"
        request = Request(
            path,
            {key: str(value) for key, value in query},
            asyncio.get_running_loop().time(),
        )
        self.requests.append(request)
        self._arrived.set()
        self._arrived = asyncio.Event()
        await asyncio.sleep(0)  # as any network I/O would, let the loop run others
        return await self.route(request)

    async def close(self) -> None:
        self.closed = True

    async def next_request(self, wanted: Callable[[Request], bool], *, after: int = 0) -> int:
        """The position of the first request from position `after` on that is `wanted`."""
        while True:
            arrived = self._arrived
            for position in range(after, len(self.requests)):
                if wanted(self.requests[position]):
                    return position
            await arrived.wait()

    def lists(self, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if not r.watch and r.path != "/livez" and _at(r, path)]

    def watches(self, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.watch and _at(r, path)]


def _at(request: Request, path: str | None) -> bool:
    return path is None or request.path == path


REMOTE_PATHS = {
    "services": "/api/v1/services",
    "slices": "/apis/discovery.k8s.io/v1/endpointslices",
    "pods": "/api/v1/pods",
}
LIVENESS_PATH = "/livez"


@dataclass
class ScriptedCluster:
    """A remote API server's behaviour, by path, that a test changes as it goes.

    Lists answer `items[path]`; a watch sends the events queued in
    `events[path]` and stays open; a path in `refuse_lists` / `refuse_watches`
    answers that status; `silent` makes every request (liveness probes too)
    hang like a stopped server, until it is cleared.
    """

    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refuse_lists: dict[str, int] = field(default_factory=dict)
    refuse_watches: dict[str, int] = field(default_factory=dict)
    silent: bool = False
    version: int = 1
    _resumed: asyncio.Event = field(default_factory=asyncio.Event)
    _cuts: dict[str, asyncio.Event] = field(default_factory=dict)

    def cut_watches(self, path: str) -> None:
        """Open watches of `path` fail as if the connection were reset."""
        self._cuts.pop(path, asyncio.Event()).set()

    def go_silent(self) -> None:
        self.silent = True
        self._resumed = asyncio.Event()

    def resume(self) -> None:
        self.silent = False
        self._resumed.set()

    async def route(self, request: Request) -> ScriptedResponse:
        while self.silent:
            await self._resumed.wait()
        if request.path == LIVENESS_PATH:
            return reply(200, b"ok")
        if request.watch:
            status = self.refuse_watches.get(request.path)
            if status is not None:
                return reply(status, status_body(status, "Refused", "watch refused"))
            events, self.events[request.path] = self.events.get(request.path, []), []
            cut = self._cuts.setdefault(request.path, asyncio.Event())
            lines = [json.dumps(event).encode() + b"\n" for event in events]
            return ScriptedResponse(200, _until_cut(lines, cut))
        status = self.refuse_lists.get(request.path)
        if status is not None:
            return reply(status, status_body(status, "Refused", "list refused"))
        self.version += 1
        return list_reply(self.items.get(request.path, []), str(self.version))

    def api(self, server: str = "https://scripted.invalid") -> ScriptedApi:
        return ScriptedApi(self.route, server)


class RecordingTransport:
    """Answers each request with the next scripted response, in order.

    It records (method, path, a copy of the JSON body) for the writers' tests
    (Leases, federated membership), which check what was sent, not how it was read.
    """

    def __init__(self, *responses: ScriptedResponse) -> None:
        self.responses = list(responses)
        self.requests: list[tuple[str, str, Any]] = []

    async def request(
        self, method: str, path: str, *, json_body: Any = None, **_: Any
    ) -> ScriptedResponse:
        self.requests.append((method, path, json.loads(json.dumps(json_body))))
        return self.responses.pop(0)
