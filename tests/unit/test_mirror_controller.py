"""The mirror controller's Link supervision while the local watches keep changing its view.

Scope: `MirrorController._reconcile_links`, the step that starts, stops and
finalizes per-Link workers, against an in-memory API that answers the
controller's requests (Leases, the Link finalizer patch) and, like a real
API server, lets the Link watch report the Link gone as soon as its last
finalizer is removed: the local view changes while the controller is still
walking it. Found by tests/integration/test_packaging.py, where deleting a
Link ended the whole controller (exit status 1, a crash loop in a pod).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from discovery.metrics import DiscoveryMetrics
from discovery.models import Kind, ObjectRef
from discovery.reflector import Deleted
from mirror.controller import FINALIZER, MirrorController
from mirror.links import project_link
from mirror.local import LinkRecord
from mirror.metrics import MirrorMetrics
from mirror.worker import WorkerSettings

NAMESPACE = "linkerd-multicluster"


class _Content:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        data, self._data = self._data, b""
        return data


class _Response:
    def __init__(self, status: int, body: object = None) -> None:
        self.status = status
        self.content = _Content(b"" if body is None else json.dumps(body).encode())

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class LinkApi:
    """Leases that do not exist yet; Link patches that succeed and then call `on_patch`."""

    def __init__(self, on_patch: Callable[[str], None]) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self._on_patch = on_patch

    @property
    def server(self) -> str:
        return "https://in-memory.invalid"

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        headers: Any = None,
        json_body: Any = None,
        client_timeout: Any = None,
    ) -> _Response:
        self.requests.append((method, path, json_body))
        await asyncio.sleep(0)
        if "/leases" in path:
            return _Response(201 if method == "POST" else 404)
        if method == "PATCH" and "/links/" in path:
            self._on_patch(path.rsplit("/", 1)[1])
            return _Response(200, {})
        return _Response(404)

    async def close(self) -> None:
        return None


def deleting_link(name: str) -> LinkRecord:
    raw = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "finalizers": [FINALIZER],
            "deletionTimestamp": "2026-12-07T04:00:00Z",
        },
        "spec": {"targetClusterName": name, "clusterCredentialsSecret": f"creds-{name}"},
    }
    link = project_link(raw)
    assert link is not None and link.spec is not None, link
    return LinkRecord(
        ref=ObjectRef(NAMESPACE, name), link=link, finalizers=(FINALIZER,), deleting=True
    )


async def test_links_deleted_while_being_finalized_do_not_end_the_controller() -> None:
    controller: MirrorController

    def link_gone(name: str) -> None:
        # What the Link watch delivers once the finalizer is gone: the Link is deleted.
        controller.local.apply(Deleted(Kind.LINK, ObjectRef(NAMESPACE, name)), 0.0)

    api = LinkApi(on_patch=link_gone)
    controller = MirrorController(
        api=api,
        settings=WorkerSettings(namespace=NAMESPACE),
        metrics=MirrorMetrics(CollectorRegistry()),
        discovery_metrics=DiscoveryMetrics(CollectorRegistry()),
        identity="replica-a",
    )
    for name in ("east", "north"):
        controller.local.links[ObjectRef(NAMESPACE, name)] = deleting_link(name)

    await controller._reconcile_links()

    patched = sorted(
        path.rsplit("/", 1)[1] for method, path, _ in api.requests if method == "PATCH"
    )
    assert patched == ["east", "north"]  # both finalizers removed, in one pass
    assert controller.local.links == {}
