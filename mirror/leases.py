"""One writer per Link among replicas: a coordination.k8s.io Lease per Link (reference §3.1).

Replicas run the same loop for each Link: take the Lease
`service-mirror-write-<link>` when it is free or expired, renew it while
holding it, and give it up on shutdown. Only the holder runs the Link's
worker; the others wait, ready to take over within a lease duration (30 s)
after the holder dies. A holder that fails to renew for the renew deadline
(10 s) steps down by itself before anyone else could take the Lease, so
two replicas never write a Link's mirrors at once.

Time is wall-clock (`renewTime` is compared across replicas, as client-go
does); the loop itself sleeps with the event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from discovery.transport import ApiTransport

__all__ = ["Leadership", "LeaseSettings"]

log = structlog.get_logger("mirror.leases")

_TIMEOUT = aiohttp.ClientTimeout(total=10)
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    duration_s: float = 30.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class Leadership:
    """Holds one Lease for `identity`; `run(work)` runs `work` only while holding it."""

    def __init__(
        self,
        *,
        api: ApiTransport,
        namespace: str,
        name: str,
        identity: str,
        settings: LeaseSettings = LeaseSettings(),
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self.name = name
        self._identity = identity
        self._settings = settings
        self._on_change = on_change
        self._clock = clock
        self.leading = False

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self._namespace}/leases"

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            async with await self._api.request(
                method, path, json_body=body, headers=_JSON, client_timeout=_TIMEOUT
            ) as response:
                raw = await response.content.read(256 * 1024)
                document = json.loads(raw) if raw else None
                return response.status, document
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            log.warning("lease_request_failed", lease=self.name, error=f"{type(err).__name__}")
            return 0, None

    def _spec(self, acquired: str | None, transitions: int) -> dict[str, Any]:
        now = _format(self._clock())
        return {
            "holderIdentity": self._identity,
            # Whole seconds, rounded up: a Lease shorter than what the holder
            # renews against would let another replica take it too early.
            "leaseDurationSeconds": max(1, math.ceil(self._settings.duration_s)),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this identity holds the Lease afterwards."""
        status, lease = await self._request("GET", f"{self._path}/{self.name}")
        if status == 404:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self._namespace},
                "spec": self._spec(None, 0),
            }
            created, _ = await self._request("POST", self._path, body)
            return created == 201
        if status != 200 or not isinstance(lease, dict):
            return False
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or self._settings.duration_s
        mine = holder == self._identity
        expired = renewed is None or (self._clock() - renewed).total_seconds() > float(duration)
        if not mine and holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(spec.get("acquireTime") if mine else None, transitions)
        # The resourceVersion in metadata makes this a compare-and-swap: 409 if raced.
        updated, _ = await self._request("PUT", f"{self._path}/{self.name}", lease)
        return updated == 200

    async def release(self) -> None:
        """Give the Lease up (an empty holder), so a standby takes over at once."""
        status, lease = await self._request("GET", f"{self._path}/{self.name}")
        if status != 200 or not isinstance(lease, dict):
            return
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self._identity:
            return
        spec["holderIdentity"] = None
        lease["spec"] = spec
        await self._request("PUT", f"{self._path}/{self.name}", lease)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info("lease_leadership", lease=self.name, leading=leading, identity=self._identity)
            if self._on_change is not None:
                self._on_change(leading)

    async def run(self, work: Callable[[], Any]) -> None:
        """Forever: win the Lease, run `work()` while holding it, stop it when lost.

        Cancelled (shutdown, or the Link went away), it stops `work` and releases
        the Lease, so that a standby replica takes over without waiting for expiry.
        """
        try:
            await self._run(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.release()
            raise

    async def _run(self, work: Callable[[], Any]) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        while True:
            if not await self.try_acquire_or_renew():
                await asyncio.sleep(settings.retry_s)  # a standby: try again soon
                continue
            self._set(True)
            task: asyncio.Task[Any] = asyncio.ensure_future(work())
            renewed_at = loop.time()
            try:
                while not task.done():
                    done, _ = await asyncio.wait({task}, timeout=settings.retry_s)
                    if done:
                        break
                    if await self.try_acquire_or_renew():
                        renewed_at = loop.time()
                    elif loop.time() - renewed_at > settings.renew_deadline_s:
                        log.warning("lease_lost", lease=self.name, identity=self._identity)
                        break
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                self._set(False)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("leader_work_failed", lease=self.name, error=repr(task.exception()))
                await asyncio.sleep(settings.retry_s)
