"""The orchestrator's own watch of EndpointSlices: when Kubernetes was done.

One list-then-watch of the benchmark namespace's EndpointSlices, raw JSON
through kubernetes-asyncio's `call_api` (no model classes). For each Service
it keeps the ready endpoints (address and pod name, `conditions.ready` not
false, as the server reads them) over all of its slices, and the wall-clock
time (`time.time()`) at which that ready set last changed. After a scale
request at t0, the Kubernetes share of the fan-out is `changed_at - t0` once
the set holds the target: the time until the EndpointSlices showed the final
state, as seen by a watch like the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from .clients import Target

SERVICE_LABEL = "kubernetes.io/service-name"


def template_hash(pod_name: str) -> str:
    """`<deployment>-<pod-template-hash>-<suffix>` -> the hash ("" if not that shape)."""
    parts = pod_name.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else ""


@dataclass
class ServiceSlices:
    slices: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    ready: frozenset[tuple[str, str]] = frozenset()
    changed_at: float = 0.0
    changed_by_event: int = 0  # SliceTracker.events when the ready set last changed
    changes: int = 0

    def recompute(self, now: float, event: int) -> None:
        ready: frozenset[tuple[str, str]] = frozenset().union(*self.slices.values())
        if ready != self.ready:
            self.ready = ready
            self.changed_at = now
            self.changed_by_event = event
            self.changes += 1

    def hashes(self) -> frozenset[str]:
        return frozenset(template_hash(pod) for _, pod in self.ready)

    def satisfies(self, target: Target) -> bool:
        if len(self.ready) != target.count:
            return False
        return target.template_hash is None or self.hashes() == {target.template_hash}


def _ready_endpoints(raw: dict[str, Any]) -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for endpoint in raw.get("endpoints") or []:
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        pod = str((endpoint.get("targetRef") or {}).get("name", ""))
        for address in endpoint.get("addresses") or []:
            out.add((str(address), pod))
    return frozenset(out)


class SliceTracker:
    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self.services: dict[str, ServiceSlices] = {}
        self._slice_service: dict[str, str] = {}
        self.synced = asyncio.Event()
        self.restarts = 0
        self.events = 0  # watch events (not list items) received so far
        self.last_event_at = 0.0
        # kwok hands a deleted pod's IP to the next pod at once: how often a ready
        # address came back under another pod, and under another Service. A
        # server that keys addresses by pod, not by ip:port, can send an Add of
        # the new pod before the Remove of the old one, which a proxy keeping
        # its set by ip:port reads as the address gone.
        # And how often a pod's ready address changed: a server keying by pod sends
        # the new address as an Add with no Remove of the old one.
        self.ip_owner: dict[str, tuple[str, str]] = {}  # ip -> (pod, service)
        self.pod_ip: dict[str, str] = {}
        self.ip_reuses = 0
        self.ip_reuses_across_services = 0
        self.pod_ip_changes = 0

    @property
    def _path(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self._namespace}/endpointslices"

    def service(self, name: str) -> ServiceSlices:
        return self.services.setdefault(name, ServiceSlices())

    def ready_count(self, name: str) -> int:
        return len(self.service(name).ready)

    async def run(self) -> None:
        """List then watch until cancelled; relist after any failure."""
        while True:
            try:
                version = await self._list()
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
                self.restarts += 1
                await asyncio.sleep(0.5)

    async def _request(
        self, query: list[tuple[str, Any]], client_timeout: aiohttp.ClientTimeout
    ) -> Any:
        return await self._api.call_api(
            self._path,
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )

    async def _list(self) -> str:
        async with await self._request([], aiohttp.ClientTimeout(total=60)) as response:
            if response.status != 200:
                raise ValueError(f"list EndpointSlices: HTTP {response.status}")
            body = await response.json(loads=json.loads)
        now = time.time()
        seen: set[str] = set()
        for item in body.get("items") or []:
            seen.add(self._apply("ADDED", item, now))
        for name in [n for n in self._slice_service if n not in seen]:
            self._apply("DELETED", {"metadata": {"name": name}}, now)
        self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", 120),
        ]
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=180)
        async with await self._request(query, timeout) as response:
            if response.status != 200:
                raise ValueError(f"watch EndpointSlices: HTTP {response.status}")
            async for line in response.content:
                if not line.strip():
                    continue
                now = time.time()
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ValueError(f"watch error: {obj.get('message')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.events += 1
                    self.last_event_at = now
                    self._apply(kind, obj, now)
        return version

    def _apply(self, kind: str, obj: dict[str, Any], now: float) -> str:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        service = self._slice_service.get(name) or (meta.get("labels") or {}).get(SERVICE_LABEL)
        if not service:
            return name
        state = self.service(service)
        if kind == "DELETED":
            state.slices.pop(name, None)
            self._slice_service.pop(name, None)
        else:
            self._slice_service[name] = service
            ready = _ready_endpoints(obj)
            state.slices[name] = ready
            self._note_owners(ready, service)
        state.recompute(now, self.events)
        return name

    def _note_owners(self, ready: frozenset[tuple[str, str]], service: str) -> None:
        for ip, pod in ready:
            owner = self.ip_owner.get(ip)
            if owner is not None and owner[0] != pod:
                self.ip_reuses += 1
                if owner[1] != service:
                    self.ip_reuses_across_services += 1
            self.ip_owner[ip] = (pod, service)
            if pod:
                if self.pod_ip.get(pod, ip) != ip:
                    self.pod_ip_changes += 1
                self.pod_ip[pod] = ip

    async def wait_for(
        self, targets: dict[str, Target], *, timeout_s: float, interval_s: float = 0.05
    ) -> bool:
        """Until every service's ready set satisfies its target; False at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.service(s).satisfies(t) for s, t in targets.items()):
                return True
            await asyncio.sleep(interval_s)
        return False


@contextlib.asynccontextmanager
async def tracking(api: ApiClient, namespace: str) -> AsyncIterator[SliceTracker]:
    """A running SliceTracker for the block; the watch is cancelled on exit."""
    tracker = SliceTracker(api, namespace)
    task = asyncio.create_task(tracker.run(), name="EndpointSlice watch")
    try:
        async with asyncio.timeout(60):
            await tracker.synced.wait()
        yield tracker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
