"""The workload behind the proxy: a plain HTTP server with a few telling routes.

The proxy refuses to connect to loopback addresses (its outbound stack forbids
it unless built with a test-only feature), so each backend listens on an
address of the cluster's pod range that the end-to-end check adds to the
loopback interface of its private network namespace; the EndpointSlice of the
test Service points there. Each backend records what it served, so the check
can tell which endpoint the proxy chose and how many attempts a request took.

Routes:
  GET /            200, names the backend (which endpoint answered)
  GET /slow        200 after SLOW_S seconds (a ServiceProfile timeout must cut it short)
  GET /flaky/KEY   500 the first time any backend sees KEY, 200 afterwards (a retry,
                   which may go to another endpoint, turns it into 200)
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from aiohttp import web

SLOW_S = 2.0


@dataclass
class Backend:
    """One endpoint of the test Service."""

    name: str
    host: str
    # Attempts per path across every backend of the Service (shared between them).
    attempts: collections.Counter[str]
    port: int = 0
    # What this backend answered, per path.
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    _runner: web.AppRunner | None = None

    def _count(self, path: str) -> int:
        self.served[path] += 1
        self.attempts[path] += 1
        return self.attempts[path]

    async def _root(self, request: web.Request) -> web.Response:
        self._count("/")
        return web.Response(text=f"hello from {self.name}\n", headers={"x-backend": self.name})

    async def _slow(self, request: web.Request) -> web.Response:
        self._count("/slow")
        await asyncio.sleep(SLOW_S)
        return web.Response(text=f"slow answer from {self.name}\n")

    async def _flaky(self, request: web.Request) -> web.Response:
        path = request.path
        attempt = self._count(path)
        if attempt == 1:
            return web.Response(status=500, text=f"first attempt at {path} fails\n")
        return web.Response(text=f"{path} served by {self.name} on attempt {attempt}\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/flaky/{key}", self._flaky)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
