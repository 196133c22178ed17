"""The admin HTTP server: metrics and probes (reference §1.3), on aiohttp.

Routes (``GET``, and ``HEAD`` with the same status and no body):

* ``/metrics``: the injected Prometheus registry in the text exposition format.
* ``/live`` and ``/ping``: ``200 "ok\\n"`` and ``200 "pong\\n"`` while the
  event loop answers. They never look at Kubernetes or gRPC state: a liveness
  probe that fails because the API server is slow would restart a healthy
  process.
* ``/clusters``: JSON status of every linked remote cluster (state, error,
  last sync, objects cached), read by ``destination clusters``. Credentials
  in URLs (``https://user:password@host``) are redacted from every string
  before it is served.
* ``/ready``: ``200 "ok\\n"`` when the injected readiness callable returns
  ``True``, else ``503 "not ready\\n"``. Linkerd answers 500 here; we answer
  503 Service Unavailable, which says "temporarily cannot serve", and any
  non-2xx status fails a Kubernetes probe the same way. A callable that raises
  counts as not ready and is logged.
* Any other path: 404. Another method on a known path: 405, as HTTP says.

Design choices
--------------
* **Everything is injected.** The registry (so tests and the app choose
  between the default registry and their own) and the readiness callable
  (so the server knows nothing of what "ready" means). The callable runs on
  the event loop for each probe and must be cheap and non-blocking.
* **Port 0 works.** :meth:`AdminServer.start` binds, then :attr:`port` reads
  the port the kernel chose, so tests never race for a free port.
* **No access log.** Probes and scrapes arrive every few seconds; logging them
  would drown the events that matter.
* **Bounded shutdown.** :meth:`AdminServer.stop` waits at most
  ``shutdown_timeout_s`` for in-flight requests, then closes connections.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from structlog.typing import FilteringBoundLogger

__all__ = ["AdminServer"]

log: FilteringBoundLogger = structlog.get_logger(__name__)

# The userinfo of a URL: what stands between "scheme://" and "@" before any "/".
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")


def redact(value: object) -> object:
    """`value` (decoded JSON) with the userinfo of every URL in its strings replaced."""
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\1REDACTED@", value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


class AdminServer:
    """Serves ``/metrics``, ``/live``, ``/ping`` and ``/ready`` on one address.

    Use :meth:`start` and :meth:`stop`, or ``async with server.running(host,
    port):``. One instance serves once: after :meth:`stop` it cannot be
    started again.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        clusters: Callable[[], list[dict[str, object]]] | None = None,
        documents: Mapping[str, Callable[[], dict[str, object]]] | None = None,
        shutdown_timeout_s: float = 1.0,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._clusters = clusters
        # Other JSON status pages by path (the mirror controller's `/links`).
        self._documents = dict(documents or {})
        self._shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when started with port 0)."""
        if self._port is None:
            raise RuntimeError("the admin server is not started")
        return self._port

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` and serve; raises :class:`OSError` if the address is unusable."""
        if self._runner is not None or self._stopped:
            raise RuntimeError("the admin server can be started only once")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/live", self._live)
        app.router.add_get("/ping", self._ping)
        app.router.add_get("/ready", self._readiness)
        app.router.add_get("/clusters", self._cluster_statuses)
        for path, document in self._documents.items():
            app.router.add_get(path, self._document_handler(document))
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout_s,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        # A host name that resolves to several addresses gets several sockets, each with
        # its own port when port 0 was asked for; report the first.
        bound = runner.addresses[0]
        self._port = int(bound[1])
        log.info("admin_server_started", host=host, port=self._port)

    async def stop(self) -> None:
        """Stop listening and close connections; safe to call more than once."""
        runner, self._runner = self._runner, None
        self._stopped = True
        if runner is None:
            return
        await runner.cleanup()
        if self._port is not None:
            log.info("admin_server_stopped", port=self._port)

    @asynccontextmanager
    async def running(self, host: str, port: int) -> AsyncIterator[AdminServer]:
        """Serve for the duration of the ``async with`` block."""
        await self.start(host, port)
        try:
            yield self
        finally:
            await self.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong\n")

    async def _readiness(self, request: web.Request) -> web.Response:
        try:
            ready = self._ready()
        except Exception as err:
            log.warning("readiness_check_failed", error=repr(err))
            ready = False
        if ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready\n")

    def _document_handler(
        self, document: Callable[[], dict[str, object]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return web.json_response(redact(document()))

        return handle

    async def _cluster_statuses(self, request: web.Request) -> web.Response:
        clusters = self._clusters() if self._clusters is not None else []
        return web.json_response({"clusters": redact(clusters)})
