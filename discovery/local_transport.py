"""The connection to this server's OWN cluster, without loading a Kubernetes client library.

`connect_local_cluster` reads the operator's configuration
(`discovery.local_config`: in-cluster, or `--kubeconfig`) and opens an
`HttpTransport` with aiohttp directly, as for linked clusters, but from
trusted settings:

* a bearer token read from a file (the ServiceAccount's, or a kubeconfig's
  `tokenFile`) is re-read every `TOKEN_REFRESH_S` in a worker thread, since
  bound ServiceAccount tokens rotate (the kubelet refreshes them well before
  they expire). A failed re-read keeps the last token and retries soon: a
  token being rotated must not fail the watches;
* the proxy variables of the environment (`HTTPS_PROXY`, `NO_PROXY`, ...)
  apply, as they did through kubernetes-asyncio and do for kubectl;
* TLS material stays in memory (`discovery.tls`), read files included.

When the kubeconfig needs what only kubernetes-asyncio implements (see
`NeedsClientLibrary`), `discovery.kubernetes_client` is imported then, and
only then: in the common cases `destination serve` never loads that library
(~860 modules, ~38 MB of resident memory).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import structlog
import yarl

from .local_config import (
    TOKEN_REFRESH_S,
    LocalClusterConfig,
    LocalConfigError,
    NeedsClientLibrary,
    load_local_config,
    read_token_file,
)
from .tls import TlsMaterialError
from .transport import ApiTransport, HttpTransport, basic_authorization, tls_context

log = structlog.get_logger("discovery.local_transport")

TOKEN_RETRY_S = 10.0
"""After a failed re-read of a token file, the last token is used this long before trying again."""


async def connect_local_cluster(kubeconfig: str | None, *, pool_size: int) -> ApiTransport:
    """The local cluster's transport: ours when the configuration allows, else the library's.

    Raises LocalConfigError (with the file and the reason) when the
    configuration cannot work.
    """
    try:
        config = await load_local_config(kubeconfig)
    except NeedsClientLibrary as reason:
        log.info("local_kubeconfig_read_by_client_library", reason=str(reason))
        from .kubernetes_client import client_library_transport  # ~38 MB: only when needed

        return await client_library_transport(kubeconfig, pool_size=pool_size)
    return await open_local_transport(config, pool_size=pool_size)


async def open_local_transport(config: LocalClusterConfig, *, pool_size: int) -> HttpTransport:
    """A transport for `config`; its TLS context is built in a worker thread, from memory."""
    try:
        ssl_context = await tls_context(config)
    except TlsMaterialError as err:
        raise LocalConfigError(f"{config.source}: {err}") from None
    authorization: str | TokenFile | None = None
    if config.token_file is not None and config.token is not None:
        authorization = TokenFile(config.token_file, config.token, source=config.source)
    elif config.token is not None:
        authorization = f"Bearer {config.token}"
    elif config.username is not None and config.password is not None:
        authorization = basic_authorization(config.username, config.password)
    return HttpTransport(
        server=config.server,
        ssl_context=ssl_context,
        tls_server_name=config.tls_server_name,
        authorization=authorization,
        proxy=environment_proxy(config.server),
        pool_size=pool_size,
    )


def environment_proxy(server: str) -> str | None:
    """The proxy the environment gives for `server` (`*_PROXY`, minus `NO_PROXY`), or None."""
    url = yarl.URL(server)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or url.host is None:
        return None
    if urllib.request.proxy_bypass(url.host):  # NO_PROXY (on Linux: the environment only)
        return None
    return proxy


class TokenFile:
    """A bearer token file, re-read at most every `refresh_s`; the read runs in a worker thread.

    One read at a time: requests that find the token due wait for the same
    read rather than start their own.
    """

    def __init__(
        self,
        path: Path,
        token: str,
        *,
        source: str,
        refresh_s: float = TOKEN_REFRESH_S,
        retry_s: float = TOKEN_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._token = token
        self._source = source
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._clock = clock
        self._due = clock() + refresh_s
        self._lock = asyncio.Lock()

    async def authorization(self) -> str:
        if self._clock() >= self._due:
            async with self._lock:
                if self._clock() >= self._due:  # not re-read while this one waited
                    await self._reread()
        return f"Bearer {self._token}"

    async def _reread(self) -> None:
        try:
            token = await asyncio.to_thread(read_token_file, self.path, self._source)
        except LocalConfigError as err:
            self._due = self._clock() + self._retry_s
            log.warning("local_token_file_unreadable", error=str(err), retry_s=self._retry_s)
            return
        if token != self._token:
            log.info("local_token_reloaded", source=self._source)
        self._token = token
        self._due = self._clock() + self._refresh_s
