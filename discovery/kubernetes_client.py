"""The local cluster through kubernetes-asyncio: for kubeconfigs our own reader leaves to it.

`discovery.local_config` reads in-cluster config and plain kubeconfigs
itself, since `kubernetes_asyncio.client` costs ~860 modules and ~38 MB of
resident memory. A kubeconfig that needs more (an `exec` or `auth-provider`
plugin, `proxy-url`, impersonation, fields unknown to our reader, a list of
several files) is the operator's own and worked before, so it is handed to
kubernetes-asyncio here, which runs its plugins and writes inline
certificates to temporary files as it always did. Import this module only
in that case (and in the operator's CLI, which uses the library anyway).
Never for linked clusters: their kubeconfigs are hostile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client import ApiClient, Configuration

from .transport import Query


class KubernetesClientTransport:
    """An `ApiTransport` over kubernetes-asyncio's `ApiClient` (its config is the operator's)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

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
        response: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=list(query),
            header_params=dict(headers or {}),
            body=json_body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )
        return response

    async def close(self) -> None:
        await self.api.close()


async def client_library_transport(
    kubeconfig: str | None, *, pool_size: int
) -> KubernetesClientTransport:
    """The kubeconfig (or the in-cluster config) as kubernetes-asyncio reads it.

    The pool size is set before the `ApiClient` exists: its connector is made
    in its constructor, and a size set afterwards has no effect.
    """
    configuration = Configuration()
    if kubeconfig:
        await k8s_config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = pool_size
    return KubernetesClientTransport(ApiClient(configuration))
