"""Unit tests for destination.ops.admin: the admin HTTP server (reference §1.3).

Scope: a real aiohttp server bound to 127.0.0.1 port 0 and real HTTP requests
through an aiohttp client: ``/metrics`` exposes the injected registry,
``/live`` and ``/ping`` always answer, ``/ready`` follows the injected
callable (503 when not ready), other paths are 404, and the server's
lifecycle (port 0, stop twice, start once, busy port).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from destination.ops.admin import AdminServer

HOST = "127.0.0.1"


class Readiness:
    """A readiness flag the test flips; raises instead when ``broken`` is set."""

    def __init__(self) -> None:
        self.ready = False
        self.broken = False

    def __call__(self) -> bool:
        if self.broken:
            raise RuntimeError("readiness check exploded")
        return self.ready


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("admin_test_scrapes", "A metric only this test's registry has.", registry=registry).inc(
        3
    )
    return registry


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def server(registry: CollectorRegistry, readiness: Readiness) -> AsyncIterator[AdminServer]:
    admin = AdminServer(registry=registry, ready=readiness)
    async with admin.running(HOST, 0):
        yield admin


@pytest.fixture
async def http(server: AdminServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://{HOST}:{server.port}") as session:
        yield session


async def _get(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path) as response:
        return response.status, await response.text()


async def test_metrics_expose_the_injected_registry(http: aiohttp.ClientSession) -> None:
    async with http.get("/metrics") as response:
        body = await response.text()
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST

    assert "# TYPE admin_test_scrapes_total counter" in body
    assert "admin_test_scrapes_total 3.0" in body


async def test_metrics_do_not_include_the_default_registry(http: aiohttp.ClientSession) -> None:
    _, body = await _get(http, "/metrics")

    assert "python_info" not in body
    assert "process_cpu_seconds_total" not in body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/live", "ok\n", id="live"),
        pytest.param("/ping", "pong\n", id="ping"),
    ],
)
async def test_liveness_answers_even_when_not_ready(
    http: aiohttp.ClientSession, path: str, body: str
) -> None:
    assert await _get(http, path) == (200, body)


async def test_ready_follows_the_readiness_callable(
    http: aiohttp.ClientSession, readiness: Readiness
) -> None:
    assert await _get(http, "/ready") == (503, "not ready\n")

    readiness.ready = True
    assert await _get(http, "/ready") == (200, "ok\n")

    readiness.ready = False
    assert await _get(http, "/ready") == (503, "not ready\n")


async def test_a_failing_readiness_callable_means_not_ready(
    http: aiohttp.ClientSession, readiness: Readiness
) -> None:
    readiness.ready = True
    readiness.broken = True

    assert await _get(http, "/ready") == (503, "not ready\n")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/", id="root"),
        pytest.param("/metrics/", id="trailing-slash"),
        pytest.param("/healthz", id="unknown"),
        pytest.param("/debug/pprof/", id="no-pprof"),
    ],
)
async def test_other_paths_are_not_found(http: aiohttp.ClientSession, path: str) -> None:
    status, _ = await _get(http, path)

    assert status == 404


async def test_other_methods_on_known_paths_are_not_allowed(http: aiohttp.ClientSession) -> None:
    async with http.post("/ready") as response:
        assert response.status == 405


async def test_head_probes_get_the_status_without_a_body(
    http: aiohttp.ClientSession, readiness: Readiness
) -> None:
    async with http.head("/ready") as response:
        assert response.status == 503
        assert await response.read() == b""


async def test_port_zero_binds_a_real_port_and_stop_releases_it(
    registry: CollectorRegistry,
) -> None:
    admin = AdminServer(registry=registry, ready=lambda: True)
    await admin.start(HOST, 0)
    port = admin.port
    assert port > 0

    await admin.stop()
    await admin.stop()  # idempotent

    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://{HOST}:{port}/ping")


async def test_the_port_is_unknown_before_start(registry: CollectorRegistry) -> None:
    admin = AdminServer(registry=registry, ready=lambda: True)

    with pytest.raises(RuntimeError, match="not started"):
        _ = admin.port


async def test_a_server_is_started_only_once(server: AdminServer) -> None:
    with pytest.raises(RuntimeError, match="only once"):
        await server.start(HOST, 0)


async def test_a_busy_port_fails_start_and_leaves_nothing_running(
    server: AdminServer, registry: CollectorRegistry
) -> None:
    second = AdminServer(registry=registry, ready=lambda: True)

    with pytest.raises(OSError):
        await second.start(HOST, server.port)

    with pytest.raises(RuntimeError, match="not started"):
        _ = second.port


async def test_clusters_redact_credentials_in_urls(registry: CollectorRegistry) -> None:
    """Hardening #16: /clusters showed remote URLs with their userinfo."""
    statuses = [
        {
            "name": "west",
            "server": "https://admin:hunter2@10.0.2.1:6443",
            "error": "GET https://token@10.0.2.1:6443/api failed; mail ops@example.com",
            "objects": {"Pod": 3},
        }
    ]
    admin = AdminServer(registry=registry, ready=lambda: True, clusters=lambda: statuses)
    async with (
        admin.running(HOST, 0),
        aiohttp.ClientSession() as http,
        http.get(f"http://{HOST}:{admin.port}/clusters") as response,
    ):
        body = await response.json()
    (west,) = body["clusters"]
    assert west["server"] == "https://REDACTED@10.0.2.1:6443"
    assert west["error"] == "GET https://REDACTED@10.0.2.1:6443/api failed; mail ops@example.com"
    assert west["objects"] == {"Pod": 3}
    assert "hunter2" not in str(body) and "token@" not in str(body)
