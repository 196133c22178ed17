"""Unit tests for discovery.local_transport: the local cluster reached without kubernetes-asyncio.

Scope: a request carries the configuration's token, re-read from its file
once the refresh period has passed (a rotated ServiceAccount token is sent
from then on) and kept when a re-read fails; basic credentials; the proxy of
the environment unless NO_PROXY names the server; TLS material from files
loaded from memory, a bad key refused with the kubeconfig named; a
kubeconfig only kubernetes-asyncio implements handed to it; and, in a child
process, that `destination serve`'s and the mirror's code paths with a plain
kubeconfig never import kubernetes_asyncio. A socket on loopback records
the raw request head: it plays no API server, it only shows the bytes (the
integration tests run the same transport against real API servers).
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from discovery.kubernetes_client import KubernetesClientTransport
from discovery.local_config import LocalClusterConfig, LocalConfigError
from discovery.local_transport import (
    TokenFile,
    connect_local_cluster,
    environment_proxy,
    open_local_transport,
)
from tests.kube.binaries import REPO_ROOT
from tests.kube.pki import ClusterPki, create_cluster_pki

TIMEOUT = aiohttp.ClientTimeout(total=10)


class Recorder:
    """Accepts connections on loopback and keeps each request head; answers 200, empty."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            self.heads.append(head.decode("latin-1"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    def authorization(self, index: int) -> str | None:
        for line in self.heads[index].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "authorization":
                return value.strip()
        return None


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        server.close()
        await server.wait_closed()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def get(api: object, path: str = "/api") -> None:
    async with await api.request("GET", path, client_timeout=TIMEOUT):  # type: ignore[attr-defined]
        pass


async def test_a_rotated_token_file_is_sent_after_the_refresh_period(
    recorder: Recorder, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first")
    clock = Clock()
    config = LocalClusterConfig(server=f"http://127.0.0.1:{recorder.port}", source="test")
    api = await open_local_transport(config, pool_size=2)
    api._authorization = TokenFile(
        token_file, "first", source="test", refresh_s=60, retry_s=10, clock=clock
    )
    try:
        await get(api)
        token_file.write_text("second\n")  # the kubelet rotated it
        clock.now += 59
        await get(api)
        clock.now += 2
        await get(api)
        token_file.unlink()  # a failed re-read keeps the last token
        clock.now += 61
        await get(api)
        token_file.write_text("third")
        clock.now += 5
        await get(api)  # the retry is not due yet
        clock.now += 6
        await get(api)
    finally:
        await api.close()
    sent = [recorder.authorization(index) for index in range(len(recorder.heads))]
    assert sent == [
        "Bearer first",
        "Bearer first",
        "Bearer second",
        "Bearer second",
        "Bearer second",
        "Bearer third",
    ]


async def test_concurrent_requests_share_one_re_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("fresh")
    clock = Clock()
    source = TokenFile(token_file, "stale", source="test", refresh_s=60, clock=clock)
    clock.now += 60
    reads = 0
    real_reread = source._reread

    async def counting_reread() -> None:
        nonlocal reads
        reads += 1
        await real_reread()

    source._reread = counting_reread  # type: ignore[method-assign]
    headers = await asyncio.gather(*(source.authorization() for _ in range(20)))
    assert set(headers) == {"Bearer fresh"} and reads == 1


async def test_a_config_from_the_in_cluster_token_file_uses_it(
    recorder: Recorder, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token")
    config = LocalClusterConfig(
        server=f"http://127.0.0.1:{recorder.port}/",
        source="test",
        token="sa-token",
        token_file=token_file,
    )
    api = await open_local_transport(config, pool_size=2)
    try:
        assert isinstance(api._authorization, TokenFile)
        await get(api, "/api/v1/pods")
    finally:
        await api.close()
    assert recorder.heads[0].startswith("GET /api/v1/pods ")
    assert recorder.authorization(0) == "Bearer sa-token"


async def test_basic_credentials(recorder: Recorder) -> None:
    config = LocalClusterConfig(
        server=f"http://127.0.0.1:{recorder.port}", source="test", username="u", password="p"
    )
    api = await open_local_transport(config, pool_size=2)
    try:
        await get(api)
    finally:
        await api.close()
    assert recorder.authorization(0) == f"Basic {base64.b64encode(b'u:p').decode()}"


def test_the_environment_proxy_applies_unless_no_proxy_names_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for name in (variable, variable.lower()):
            monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://10.96.0.1:443") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert environment_proxy("https://10.96.0.1:443") == "http://proxy:3128"
    monkeypatch.setenv("NO_PROXY", "10.96.0.1,.svc")
    assert environment_proxy("https://10.96.0.1:443") is None


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return create_cluster_pki(
        tmp_path_factory.mktemp("pki"),
        cluster="east",
        cluster_domain="cluster.local",
        service_ip="10.96.0.1",
    )


async def test_tls_material_is_loaded_and_a_bad_key_names_the_source(pki: ClusterPki) -> None:
    good = LocalClusterConfig(
        server="https://127.0.0.1:1",
        source="kubeconfig K",
        ca_pem=pki.ca.cert_pem(),
        client_cert_pem=pki.admin.cert_pem(),
        client_key_pem=pki.admin.key_pem(),
    )
    api = await open_local_transport(good, pool_size=2)
    await api.close()
    bad = LocalClusterConfig(
        server=good.server,
        source="kubeconfig K",
        ca_pem=pki.ca.cert_pem(),
        client_cert_pem=pki.admin.cert_pem(),
        client_key_pem=pki.scheduler.key_pem(),
    )
    with pytest.raises(LocalConfigError, match=r"^kubeconfig K: .*not a valid certificate"):
        await open_local_transport(bad, pool_size=2)


async def test_a_kubeconfig_only_the_client_library_reads_is_handed_to_it(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "config"
    user = {"token": "t", "as": "someone-else"}  # impersonation: not implemented here
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    api = await connect_local_cluster(str(kubeconfig), pool_size=7)
    try:
        assert isinstance(api, KubernetesClientTransport)
        assert api.api.configuration.connection_pool_maxsize == 7
        assert api.api.rest_client.pool_manager.connector.limit == 7  # set before the client
    finally:
        await api.close()


def test_serve_and_mirror_with_a_plain_kubeconfig_never_import_kubernetes_asyncio(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    program = f"""
import asyncio, sys
import destination.app, destination.cli, mirror.app
from discovery.transport import HttpTransport

async def main():
    api = await destination.app.local_api({str(kubeconfig)!r})
    assert isinstance(api, HttpTransport), api
    await api.close()

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))
assert not loaded, loaded[:5]
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
