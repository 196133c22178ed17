"""Gateway liveness: probe a Link's gateway, and tell its worker when that changes (§4).

Every `probeSpec.period` (plus up to a tenth of it of random jitter) the
probe sends `GET http://<address>:<probeSpec.port><probeSpec.path>` to each
of the gateway's resolved addresses, with `probeSpec.timeout`; the gateway is
alive when one of them answers 200. After `failureThreshold` consecutive
failures it is dead, and mirror Endpoints move to `notReadyAddresses`, so
local proxies fail fast instead of sending traffic nowhere.

Differences from the reference, deliberately: the gateway is probed
directly at its addresses, not through a local probe Service and the
controller pod's own proxy (the mirror does not need to be meshed; a
NodePort gateway is probed at the port the Link names, which the reference
gets wrong, Q13); the worker starts optimistic (alive) as the reference does,
to avoid failing fast after a restart (#8590), but a gateway that never
answers is declared dead once the threshold is reached (Q5).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp
import structlog

from .links import ProbeSpec
from .metrics import MirrorMetrics

__all__ = ["GatewayProbe"]

log = structlog.get_logger("mirror.probe")


class GatewayProbe:
    def __init__(
        self,
        *,
        cluster: str,
        spec: ProbeSpec,
        addresses: Callable[[], Awaitable[tuple[str, ...] | None]],
        metrics: MirrorMetrics,
        on_change: Callable[[bool], None],
    ) -> None:
        self._cluster = cluster
        self._spec = spec
        self._addresses = addresses
        self._metrics = metrics
        self._on_change = on_change
        self.alive = True  # optimistic, like the worker (see the module docstring)
        self.latency_ms: float | None = None
        self.failures = 0
        metrics.gateway_enabled.labels(cluster).set(1)
        metrics.gateway_alive.labels(cluster).set(0)  # until a probe says otherwise

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._spec.timeout_s)
        connector = aiohttp.TCPConnector(force_close=True, limit=8)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, trust_env=False
        ) as session:
            while True:
                period = self._spec.period_s
                await asyncio.sleep(period + random.uniform(0, period / 10))
                await self.probe_once(session)

    async def _probe_address(self, session: aiohttp.ClientSession, address: str) -> float | None:
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{self._spec.port}{self._spec.path}"
        started = time.perf_counter()
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status == 200:
                    return (time.perf_counter() - started) * 1000
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        return None

    async def probe_once(self, session: aiohttp.ClientSession) -> bool:
        """One probe round; updates metrics and the state. Returns whether it succeeded."""
        addresses = await self._addresses()
        latencies: list[float] = []
        if addresses:
            results = await asyncio.gather(*(self._probe_address(session, a) for a in addresses))
            latencies = [r for r in results if r is not None]
        cluster = self._cluster
        if latencies:
            latency = min(latencies)
            self.failures = 0
            self.latency_ms = latency
            self._metrics.gateway_alive.labels(cluster).set(1)
            self._metrics.gateway_latency.labels(cluster).set(latency)
            self._metrics.gateway_probe_latency.labels(cluster).observe(latency)
            self._metrics.gateway_probes.labels(cluster, "true").inc()
            self._set(True)
            return True
        self.failures += 1
        if self.failures >= self._spec.failure_threshold:
            self._metrics.gateway_alive.labels(cluster).set(0)
            self._metrics.gateway_probes.labels(cluster, "false").inc()
            self._set(False)
        return False

    def _set(self, alive: bool) -> None:
        if alive != self.alive:
            self.alive = alive
            log.info("gateway_liveness", cluster=self._cluster, alive=alive)
            self._on_change(alive)
