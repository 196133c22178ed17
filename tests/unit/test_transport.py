"""Unit tests for discovery.transport and discovery.tls: what a link's client sends, and how.

Scope: a request goes to the kubeconfig's server under its path prefix, with
the query encoded, the token (or basic credentials) of the record and
nothing taken from the environment (proxy variables, .netrc); a redirect is
returned, not followed (it could carry the credentials elsewhere). A socket
listening on loopback records the raw request head: it plays no API server,
it only shows the bytes. Sockets get keepalive and a user timeout; TLS
material is refused with a reason when it is not a certificate or when the
key does not match or is encrypted; insecure links need the explicit flag.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from discovery import transport
from discovery.kubeconfig import KubeconfigError, RemoteKubeconfig
from discovery.tls import TlsMaterialError, client_context
from discovery.transport import open_remote_transport, remote_transport_from_kubeconfig
from tests.kube.pki import ClusterPki, create_cluster_pki

TIMEOUT = aiohttp.ClientTimeout(total=10)


class Recorder:
    """Accepts connections on loopback, keeps each request head, answers a redirect."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head.decode("latin-1"))
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/stolen\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()


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


def header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


async def test_a_request_carries_the_records_credentials_and_nothing_from_the_environment(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(variable, proxy)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-netrc\n")
    monkeypatch.setenv("NETRC", str(netrc))
    config = RemoteKubeconfig(
        server=f"http://127.0.0.1:{recorder.port}/k8s/clusters/west/", token="the-token"
    )
    api = await open_remote_transport(config)
    try:
        async with await api.request(
            "GET",
            "/api/v1/pods",
            query=[("limit", 5), ("continue", "a=b&c")],
            headers={"Accept": "application/json"},
            client_timeout=TIMEOUT,
        ) as response:
            assert response.status == 302  # returned, not followed
    finally:
        await api.close()
    [head] = recorder.heads
    assert head.startswith("GET /k8s/clusters/west/api/v1/pods?limit=5&continue=a%3Db%26c ")
    assert header(head, "Authorization") == "Bearer the-token"
    assert header(head, "Accept") == "application/json"
    assert header(head, "Host") == f"127.0.0.1:{recorder.port}"


async def test_basic_credentials_are_sent_as_basic_auth(recorder: Recorder) -> None:
    config = RemoteKubeconfig(
        server=f"http://127.0.0.1:{recorder.port}", username="reader", password="pässword"
    )
    api = await open_remote_transport(config)
    try:
        async with await api.request("GET", "/api", client_timeout=TIMEOUT):
            pass
    finally:
        await api.close()
    expected = base64.b64encode("reader:pässword".encode()).decode()
    assert header(recorder.heads[0], "Authorization") == f"Basic {expected}"


def test_sockets_probe_a_quiet_peer_and_give_up_on_unacknowledged_data() -> None:
    family, kind, proto = socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    with transport.keepalive_socket((family, kind, proto, "", ("127.0.0.1", 1))) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return create_cluster_pki(
        tmp_path_factory.mktemp("pki"),
        cluster="west",
        cluster_domain="cluster.local",
        service_ip="10.96.0.1",
    )


def test_a_client_certificate_is_loaded_from_memory(pki: ClusterPki) -> None:
    context = client_context(
        ca_pem=pki.ca.cert_pem(), cert_pem=pki.admin.cert_pem(), key_pem=pki.admin.key_pem()
    )
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname


def test_unusable_tls_material_is_refused_with_the_reason(pki: ClusterPki) -> None:
    key = serialization.load_pem_private_key(pki.admin.key_pem(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    cases = {
        "holds no valid certificate": {"ca_pem": b"-----BEGIN CERTIFICATE-----\nMIIB\n"},
        "not a valid certificate and matching key": {
            "ca_pem": None,
            "cert_pem": pki.admin.cert_pem(),
            "key_pem": pki.scheduler.key_pem(),
        },
        "is encrypted": {"ca_pem": None, "cert_pem": pki.admin.cert_pem(), "key_pem": encrypted},
    }
    for reason, material in cases.items():
        with pytest.raises(TlsMaterialError, match=reason):
            client_context(**material)  # type: ignore[arg-type]


def kubeconfig(**cluster: object) -> bytes:
    return yaml.safe_dump(
        {
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        }
    ).encode()


async def test_insecure_links_need_the_explicit_flag() -> None:
    plaintext = kubeconfig(server="http://127.0.0.1:1")
    unverified = kubeconfig(server="https://127.0.0.1:1", **{"insecure-skip-tls-verify": True})
    for data in (plaintext, unverified):
        with pytest.raises(KubeconfigError, match="--allow-insecure-remote-links"):
            await remote_transport_from_kubeconfig(data)
        api = await remote_transport_from_kubeconfig(data, allow_insecure=True)
        await api.close()


async def test_a_ca_that_is_not_a_certificate_is_a_kubeconfig_error() -> None:
    bogus = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    data = kubeconfig(
        server="https://127.0.0.1:1", **{"certificate-authority-data": bogus.decode()}
    )
    with pytest.raises(KubeconfigError, match="certificate-authority-data holds no valid"):
        await remote_transport_from_kubeconfig(data)
