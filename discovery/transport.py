"""How requests reach a Kubernetes API server: one small interface, and aiohttp under it.

`ApiTransport` is all a `Reflector` needs: send one request, get the raw
aiohttp response back unread (list bodies and watch streams are read by the
caller, line by line), and close.

`HttpTransport` implements it with aiohttp directly, from a server URL, a TLS
context and credentials: no client library is involved. Its session keeps no
cookies, follows no redirects (which could carry the credentials
elsewhere), holds a bounded pool of connections, and its sockets use TCP
keepalive and a user timeout so that a peer that vanished without a word is
noticed within about a minute instead of the read timeout's five and a half.
TLS material stays in memory (`discovery.tls`). Two uses:

* `RemoteTransport`, for LINKED clusters, whose kubeconfig comes from a
  Secret and is hostile. It is built only from a `RemoteKubeconfig` record
  (see `discovery.kubeconfig`), never from the document, and takes nothing
  from the environment (no proxy variables, no `.netrc`).
* the LOCAL cluster (`discovery.local_transport`), from the operator's own
  configuration: its bearer token may come from a file that is re-read as it
  rotates (an `AuthorizationSource`), and the proxy variables of the
  environment apply, as they do for kubectl.

`discovery.kubernetes_client` keeps a kubernetes-asyncio implementation for
the local kubeconfigs only that library understands (plugins, proxies).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import yarl

from .kubeconfig import KubeconfigError, RemoteKubeconfig, load_remote_kubeconfig
from .tls import TlsMaterialError, client_context

QueryValue = str | int
Query = Sequence[tuple[str, QueryValue]]

# A remote connection runs three watches, and a list per kind when it (re)lists.
REMOTE_CONNECTION_POOL = 8
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 3
# Unacknowledged data older than this ends the connection (Linux TCP_USER_TIMEOUT).
USER_TIMEOUT_MS = 60_000
USER_AGENT = "multicluster-destination"
READ_BUFFER_BYTES = 2 * 1024 * 1024


class ApiTransport(Protocol):
    """One API server, as the reflectors use it."""

    @property
    def server(self) -> str:
        """The server's URL, for status and logs (never holds credentials)."""
        ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Send one request; the response is returned unread (use `async with`).

        `path` is absolute (`/api/v1/pods`); any status is returned, not raised.
        `client_timeout` is aiohttp's (a watch bounds each socket read, not the total).
        """
        ...

    async def close(self) -> None: ...


class AuthorizationSource(Protocol):
    """Credentials that change over time (a rotating token file): asked before each request."""

    async def authorization(self) -> str:
        """The `Authorization` header value to send now."""
        ...


class HttpTransport:
    """An API server reached with aiohttp directly, with exactly the credentials given."""

    def __init__(
        self,
        *,
        server: str,
        ssl_context: ssl.SSLContext | None,
        tls_server_name: str | None = None,
        authorization: str | AuthorizationSource | None = None,
        proxy: str | None = None,
        pool_size: int,
    ) -> None:
        """`ssl_context` None: plaintext http:// (build contexts off the loop, they block)."""
        self._server = server
        url = yarl.URL(server)
        self._origin = url.origin()
        self._prefix = url.path.rstrip("/")
        self._server_hostname = tls_server_name
        self._proxy = proxy
        headers = {"User-Agent": USER_AGENT}
        self._authorization: AuthorizationSource | None = None
        if isinstance(authorization, str):
            headers["Authorization"] = authorization
        else:
            self._authorization = authorization
        connector = aiohttp.TCPConnector(
            ssl=ssl_context if ssl_context is not None else False,
            limit=pool_size,
            limit_per_host=pool_size,
            socket_factory=keepalive_socket,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            # The proxy, if any, is given explicitly; `trust_env` would also read
            # `.netrc`, whose credentials clash with the Authorization header.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # One watch event is one line; etcd stores objects up to 1.5 MiB, and
            # aiohttp refuses lines longer than twice this buffer.
            read_bufsize=READ_BUFFER_BYTES,
        )

    @property
    def server(self) -> str:
        return self._server

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        if not path.startswith("/"):
            raise ValueError(f"an API path is absolute, got {path[:60]!r}")
        url = self._origin.with_path(self._prefix + path)
        if query:
            url = url.with_query([(key, str(value)) for key, value in query])
        sent = dict(headers or {})
        if self._authorization is not None:
            sent["Authorization"] = await self._authorization.authorization()
        return await self._session.request(
            method,
            url,
            headers=sent,
            json=json_body,
            timeout=client_timeout,
            allow_redirects=False,
            server_hostname=self._server_hostname,
            proxy=self._proxy,
        )

    async def close(self) -> None:
        await self._session.close()


def basic_authorization(username: str, password: str) -> str:
    pair = f"{username}:{password}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


class RemoteTransport(HttpTransport):
    """A linked cluster's API server, reached with exactly what its `RemoteKubeconfig` says."""

    def __init__(
        self,
        config: RemoteKubeconfig,
        ssl_context: ssl.SSLContext | None,
        *,
        pool_size: int = REMOTE_CONNECTION_POOL,
    ) -> None:
        """Use `open_remote_transport`: the SSL context is built off the loop there."""
        authorization = None
        if config.token is not None:
            authorization = f"Bearer {config.token}"
        elif config.username is not None and config.password is not None:
            authorization = basic_authorization(config.username, config.password)
        super().__init__(
            server=config.server,
            ssl_context=ssl_context,
            tls_server_name=config.tls_server_name,
            authorization=authorization,
            pool_size=pool_size,
        )


class TlsSettings(Protocol):
    """What a cluster's config says about TLS (a link's `RemoteKubeconfig` or the local one)."""

    @property
    def plaintext(self) -> bool: ...
    @property
    def ca_pem(self) -> bytes | None: ...
    @property
    def client_cert_pem(self) -> bytes | None: ...
    @property
    def client_key_pem(self) -> bytes | None: ...
    @property
    def insecure_skip_tls_verify(self) -> bool: ...


async def tls_context(config: TlsSettings) -> ssl.SSLContext | None:
    """The client TLS context `config` asks for, built in a worker thread from memory.

    None for plain http; TlsMaterialError when the material does not load.
    """
    if config.plaintext:
        return None
    return await asyncio.to_thread(
        client_context,
        ca_pem=config.ca_pem,
        cert_pem=config.client_cert_pem,
        key_pem=config.client_key_pem,
        verify=not config.insecure_skip_tls_verify,
    )


async def open_remote_transport(
    config: RemoteKubeconfig, *, pool_size: int = REMOTE_CONNECTION_POOL
) -> RemoteTransport:
    """A transport for `config`; its TLS context is built in a worker thread, from memory."""
    try:
        ssl_context = await tls_context(config)
    except TlsMaterialError as err:
        raise KubeconfigError(str(err)) from None
    return RemoteTransport(config, ssl_context, pool_size=pool_size)


async def remote_transport_from_kubeconfig(
    data: bytes, *, allow_insecure: bool = False
) -> RemoteTransport:
    """Link Secret bytes to a transport, or KubeconfigError with the reason.

    Parsing and TLS set-up run off the event loop; nothing is written to disk,
    executed or read because the kubeconfig says so.
    """
    config = await load_remote_kubeconfig(data, allow_insecure=allow_insecure)
    return await open_remote_transport(config)


def keepalive_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A TCP socket that notices a dead peer: keepalive probes, and a user timeout."""
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
            ("TCP_KEEPCNT", KEEPALIVE_PROBES),
            ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
        ):
            if hasattr(socket, option):  # Linux has all four; others get what they have
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:
        sock.close()
        raise
    return sock
