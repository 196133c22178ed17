"""Async helpers that tests use to shape a real cluster: namespaces, Deployments,
Services, and waiting for the EndpointSlice controller to catch up.

They talk to the API server through kubernetes-asyncio, like the product does,
and wait by polling the API with a deadline: a wait that times out fails the
test with what it saw last, never hangs it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import new_client_from_config

from .cluster import LocalCluster

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60.0
# kwok never pulls it; the name only has to be a valid image reference.
FAKE_IMAGE = "registry.invalid/app:1"


async def new_api_client(kubeconfig: Path) -> k8s.ApiClient:
    """An independent client for one cluster (never the process-wide default)."""
    return await new_client_from_config(config_file=str(kubeconfig))


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.2,
) -> T:
    """Poll `probe` until `done(result)`; fail with the last result after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; last: {result!r}"
            )
        await asyncio.sleep(interval_s)


# What an injected proxy container declares; translation reads its ports.
PROXY_ENV = [
    {"name": "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "value": "0.0.0.0:4143"},
    {"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": "0.0.0.0:4191"},
    {"name": "LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "value": "0.0.0.0:4190"},
]


@dataclass
class Kube:
    """One cluster as a test sees it: the running control plane plus an API client."""

    cluster: LocalCluster
    api: k8s.ApiClient

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    @property
    def discovery(self) -> k8s.DiscoveryV1Api:
        return k8s.DiscoveryV1Api(self.api)

    # -- namespaces --------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        """Create it and wait for its default ServiceAccount, without which pods are refused."""
        await self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))

        async def has_default_sa() -> bool:
            try:
                await self.core.read_namespaced_service_account("default", name)
                return True
            except ApiException as err:
                if err.status == 404:
                    return False
                raise

        await eventually(has_default_sa, bool, what=f"{self.cluster.name}: {name}/default SA")

    async def delete_namespace(self, name: str) -> None:
        try:
            await self.core.delete_namespace(name)
        except ApiException as err:
            if err.status != 404:
                raise

    # -- workloads ---------------------------------------------------------

    async def create_deployment(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int,
        container_ports: Mapping[str, int] | None = None,
        labels: Mapping[str, str] | None = None,
        pod_annotations: Mapping[str, str] | None = None,
        service_account: str | None = None,
        meshed_by: str | None = None,
    ) -> None:
        """A Deployment of fake pods; `meshed_by` (a control-plane namespace) adds a proxy."""
        ports = container_ports if container_ports is not None else {"http": 8080}
        pod_labels = {"app": name, **(labels or {})}
        containers: list[dict[str, Any]] = [
            {
                "name": "app",
                "image": FAKE_IMAGE,
                "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
            }
        ]
        if meshed_by is not None:
            pod_labels["linkerd.io/control-plane-ns"] = meshed_by
            containers.append({"name": "linkerd-proxy", "image": FAKE_IMAGE, "env": PROXY_ENV})
        spec: dict[str, Any] = {"containers": containers}
        if service_account:
            spec["serviceAccountName"] = service_account
        body: Any = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": dict(pod_annotations or {})},
                    "spec": spec,
                },
            },
        }
        await self.apps.create_namespaced_deployment(namespace, body)

    async def create_service(
        self,
        namespace: str,
        name: str,
        *,
        selector: Mapping[str, str] | None = None,
        ports: Mapping[str, tuple[int, int | str]] | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        extra_spec: Mapping[str, Any] | None = None,
    ) -> None:
        """A Service; `ports` maps a port name to (port, targetPort)."""
        port_map = ports if ports is not None else {"http": (80, "http")}
        body: Any = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": dict(annotations or {}),
                "labels": dict(labels or {}),
            },
            "spec": {
                "selector": dict(selector if selector is not None else {"app": name}),
                "ports": [
                    {"name": n, "port": p, "targetPort": t, "protocol": "TCP"}
                    for n, (p, t) in port_map.items()
                ],
                **(extra_spec or {}),
            },
        }
        await self.core.create_namespaced_service(namespace, body)

    async def deploy_service(self, namespace: str, name: str, *, replicas: int) -> list[str]:
        """Deployment + Service `name`; returns the ready endpoint IPs once there are `replicas`."""
        await self.create_deployment(namespace, name, replicas=replicas)
        await self.create_service(namespace, name)
        return await self.wait_for_ready_endpoints(namespace, name, replicas)

    async def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        await self.apps.patch_namespaced_deployment_scale(
            deployment, namespace, {"spec": {"replicas": replicas}}
        )

    # -- observing EndpointSlices ------------------------------------------

    async def ready_endpoint_ips(self, namespace: str, service: str) -> list[str]:
        """Ready addresses over every EndpointSlice of the Service, sorted."""
        slices = await self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
        ips: set[str] = set()
        for endpoint_slice in slices.items:
            for endpoint in endpoint_slice.endpoints or []:
                conditions = endpoint.conditions
                if conditions is None or conditions.ready is not False:
                    ips.update(endpoint.addresses)
        return sorted(ips)

    async def wait_for_ready_endpoints(
        self, namespace: str, service: str, count: int, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> list[str]:
        return await eventually(
            lambda: self.ready_endpoint_ips(namespace, service),
            lambda ips: len(ips) == count,
            what=f"{self.cluster.name}: {count} ready endpoints of {namespace}/{service}",
            timeout_s=timeout_s,
        )
