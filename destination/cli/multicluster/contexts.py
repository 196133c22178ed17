"""The operator's own clusters: their kubeconfig and context, trusted.

`link-gen` runs against the target cluster, `check` and `unlink` against the
source cluster, each as the operator, with the operator's kubeconfig
(`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`; `--context`, else
its current context; in a pod without either, the pod's ServiceAccount).
That kubeconfig is the operator's, so kubernetes-asyncio reads it, plugins
and files included, as kubectl would.

`link-gen` also needs what the kubeconfig says about the cluster itself (its
server URL, the CA it trusts, a TLS server name) to write a kubeconfig for
the link: `ClusterAccess` carries that, with a CA given as a file read into
memory, so that the link's kubeconfig embeds everything.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from discovery.kubernetes_client import KubernetesClientTransport

from .api import Api

__all__ = ["ClusterAccess", "KubeconfigProblem", "open_cluster"]

IN_CLUSTER = "(in-cluster)"


class KubeconfigProblem(Exception):
    """The operator's kubeconfig cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """How the operator reaches a cluster: what a link kubeconfig copies from it."""

    context: str
    server: str
    ca_pem: bytes | None  # None: the system trust store
    tls_server_name: str | None
    verify_tls: bool


def _default_paths() -> str:
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def _existing(paths: str) -> list[str]:
    return [
        p for p in (os.path.expanduser(x) for x in paths.split(os.pathsep) if x) if Path(p).exists()
    ]


def _contexts(paths: str) -> tuple[list[str], str | None]:
    from kubernetes_asyncio.config import kube_config  # the operator's kubeconfig only

    contexts, current = kube_config.list_kube_config_contexts(paths)
    names = [str(c.get("name")) for c in contexts or [] if isinstance(c, dict)]
    current_name = current.get("name") if isinstance(current, dict) else None
    return names, str(current_name) if current_name else None


async def open_cluster(
    kubeconfig: str | None, context: str | None, *, timeout_s: float
) -> tuple[Api, ClusterAccess]:
    """An `Api` for the operator's cluster, and how it is reached; KubeconfigProblem if not."""
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio.client import ApiClient, Configuration
    from kubernetes_asyncio.config.config_exception import ConfigException

    paths = kubeconfig or _default_paths()
    configuration = Configuration()
    if not await asyncio.to_thread(_existing, paths):
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except ConfigException as err:
                raise KubeconfigProblem(f"in-cluster configuration: {err}") from None
            name = IN_CLUSTER
        else:
            raise KubeconfigProblem(
                f"no kubeconfig at {paths}: pass --kubeconfig PATH or set KUBECONFIG"
            )
    else:
        try:
            names, current = await asyncio.to_thread(_contexts, paths)
        except (ConfigException, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise KubeconfigProblem(f"cannot read kubeconfig {paths}: {err}") from None
        name_or_none = context or current
        if name_or_none is None:
            raise KubeconfigProblem(
                f"kubeconfig {paths} has no current context: pass --context "
                f"(one of: {', '.join(names) or 'none defined'})"
            )
        if name_or_none not in names:
            raise KubeconfigProblem(
                f"context {name_or_none!r} is not in kubeconfig {paths} "
                f"(contexts: {', '.join(names) or 'none'})"
            )
        name = name_or_none
        try:
            await k8s_config.load_kube_config(
                config_file=paths,
                context=name,
                client_configuration=configuration,
                persist_config=False,
            )
        except (
            ConfigException,
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AssertionError,
            AttributeError,
        ) as err:
            raise KubeconfigProblem(f"context {name!r} of {paths}: {err}") from None
    ca_path = configuration.ssl_ca_cert
    ca_pem = await asyncio.to_thread(Path(ca_path).read_bytes) if ca_path else None
    access = ClusterAccess(
        context=name,
        server=str(configuration.host),
        ca_pem=ca_pem,
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        verify_tls=bool(configuration.verify_ssl),
    )
    api = Api(KubernetesClientTransport(ApiClient(configuration)), timeout_s=timeout_s)
    return api, access
