"""Linking test clusters the way an operator does: a credentials Secret per remote.

A link is a Secret of type `mirror.linkerd.io/remote-kubeconfig` in the local
cluster's controller namespace, holding a kubeconfig for the remote cluster
that authenticates as the least-privileged reader of
`deploy/remote-access.yaml` (a real ServiceAccount token, so RBAC is
enforced: a permission missing from that file fails the tests). Each test
links a cluster under a name of its own (`west-1a2b3c`), so tests sharing the
session server never see each other's links.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from tests.integration.destination_client import Stream, values
from tests.kube.cluster import LocalCluster
from tests.kube.credentials import apply_remote_access, service_account_kubeconfig
from tests.kube.workloads import Kube, eventually

CONTROLLER_NAMESPACE = "linkerd"
REMOTE_DISCOVERY = "multicluster.linkerd.io/remote-discovery"
REMOTE_SERVICE = "multicluster.linkerd.io/remote-service"
LOCAL_DISCOVERY = "multicluster.linkerd.io/local-discovery"


def link_name(cluster: LocalCluster) -> str:
    return f"{cluster.name}-{secrets.token_hex(3)}"


async def reader_kubeconfig(cluster: LocalCluster, *, server: str | None = None) -> str:
    """A kubeconfig for the remote-access reader of `cluster` (its RBAC applied first)."""
    namespace, account = await asyncio.to_thread(apply_remote_access, cluster)
    return await asyncio.to_thread(
        service_account_kubeconfig,
        cluster,
        namespace=namespace,
        service_account=account,
        server=server,
    )


def link_secret(
    name: str, *, kubeconfig: str | bytes, trust_domain: str, cluster_domain: str = "cluster.local"
) -> dict[str, Any]:
    data = kubeconfig.encode() if isinstance(kubeconfig, str) else kubeconfig
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "mirror.linkerd.io/remote-kubeconfig",
        "metadata": {
            "name": f"cluster-credentials-{name}",
            "namespace": CONTROLLER_NAMESPACE,
            "labels": {"multicluster.linkerd.io/cluster-name": name},
            "annotations": {
                "multicluster.linkerd.io/trust-domain": trust_domain,
                "multicluster.linkerd.io/cluster-domain": cluster_domain,
            },
        },
        "data": {"kubeconfig": base64.b64encode(data).decode()},
    }


async def ensure_controller_namespace(local: Kube) -> None:
    try:
        await local.core.create_namespace({"metadata": {"name": CONTROLLER_NAMESPACE}})
    except ApiException as err:
        if err.status != 409:
            raise


async def put_link(local: Kube, body: dict[str, Any]) -> None:
    """Create the link Secret, or replace it (a credential rotation)."""
    await ensure_controller_namespace(local)
    name = body["metadata"]["name"]
    try:
        await local.core.create_namespaced_secret(CONTROLLER_NAMESPACE, body)
    except ApiException as err:
        if err.status != 409:
            raise
        await local.core.replace_namespaced_secret(name, CONTROLLER_NAMESPACE, body)


async def delete_link(local: Kube, name: str) -> None:
    try:
        await local.core.delete_namespaced_secret(
            f"cluster-credentials-{name}", CONTROLLER_NAMESPACE
        )
    except ApiException as err:
        if err.status != 404:
            raise


async def cluster_statuses(admin: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{admin}/clusters") as resp:
        body = await resp.json()
    return {cluster["name"]: cluster for cluster in body["clusters"]}


async def wait_for_state(admin: str, name: str, *states: str, timeout_s: float = 30) -> Any:
    async def status() -> dict[str, Any] | None:
        return (await cluster_statuses(admin)).get(name)

    return await eventually(
        status,
        lambda s: s is not None and s["state"] in states,
        what=f"cluster {name} in state {'/'.join(states)}",
        timeout_s=timeout_s,
    )


async def metric(admin: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{admin}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def create_remote_mirror(
    local: Kube, namespace: str, *, cluster: str, name: str = "web-west"
) -> str:
    """Mirror `name` of `web` in linked `cluster`, as a service mirror writes it; its path."""
    await local.create_service(
        namespace,
        name,
        selector={},
        labels={REMOTE_DISCOVERY: cluster, REMOTE_SERVICE: "web"},
    )
    return f"{name}.{namespace}.svc.cluster.local:80"


async def converge(stream: Stream, ips: list[str], what: str) -> None:
    """Wait until the stream holds exactly `ips`."""
    await eventually(
        lambda: values(stream.ips()), lambda got: got == sorted(ips), what=what, timeout_s=60
    )
