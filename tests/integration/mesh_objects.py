"""Objects GetProfile reads, written to a real API server as tests need them.

ServiceProfiles (created, replaced and deleted on live streams), Servers,
ExternalWorkloads, and bare pods, including pods whose status the test
writes itself: kwok leaves a pod annotated `kwok.x-k8s.io/status=custom`
alone (the clusters run kwok with that selector), so the test chooses its
phase and IP with status patches: a pod can be Pending, Running at an
address picked by the test (two pods at one address, even), or Succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kube.workloads import FAKE_IMAGE, PROXY_ENV, Kube, eventually

SP_GROUP, SP_VERSION, SP_PLURAL = "linkerd.io", "v1alpha2", "serviceprofiles"
CUSTOM_STATUS = {"kwok.x-k8s.io/status": "custom"}
CONTROL_PLANE_NS = "linkerd"  # the session server's controller namespace (the default)


def fqn(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"


def client_token(namespace: str) -> str:
    """The context token an injected proxy sends (with the injector's trailing newline)."""
    return json.dumps({"ns": namespace, "nodeName": "", "pod": "client"}) + "\n"


# --------------------------------------------------------------------------
# ServiceProfiles


async def put_service_profile(
    kube: Kube, namespace: str, name: str, spec: Mapping[str, Any]
) -> None:
    """Create the ServiceProfile, or replace its spec (an update on the live object)."""
    objects = k8s.CustomObjectsApi(kube.api)
    body: dict[str, Any] = {
        "apiVersion": f"{SP_GROUP}/{SP_VERSION}",
        "kind": "ServiceProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }
    try:
        await objects.create_namespaced_custom_object(
            SP_GROUP, SP_VERSION, namespace, SP_PLURAL, body
        )
        return
    except ApiException as err:
        if err.status != 409:
            raise
    current = await objects.get_namespaced_custom_object(
        SP_GROUP, SP_VERSION, namespace, SP_PLURAL, name
    )
    body["metadata"] = current["metadata"]
    await objects.replace_namespaced_custom_object(
        SP_GROUP, SP_VERSION, namespace, SP_PLURAL, name, body
    )


async def label_service_profile(kube: Kube, namespace: str, name: str, value: str) -> None:
    """A metadata-only change: a new object version with the same spec."""
    objects = k8s.CustomObjectsApi(kube.api)
    current = await objects.get_namespaced_custom_object(
        SP_GROUP, SP_VERSION, namespace, SP_PLURAL, name
    )
    current["metadata"].setdefault("labels", {})["touched"] = value
    await objects.replace_namespaced_custom_object(
        SP_GROUP, SP_VERSION, namespace, SP_PLURAL, name, current
    )


async def delete_service_profile(kube: Kube, namespace: str, name: str) -> None:
    objects = k8s.CustomObjectsApi(kube.api)
    await objects.delete_namespaced_custom_object(SP_GROUP, SP_VERSION, namespace, SP_PLURAL, name)


# --------------------------------------------------------------------------
# Servers and ExternalWorkloads


async def create_server(
    kube: Kube, namespace: str, name: str, *, app: str, port: int | str, protocol: str = "opaque"
) -> None:
    await k8s.CustomObjectsApi(kube.api).create_namespaced_custom_object(
        "policy.linkerd.io",
        "v1beta3",
        namespace,
        "servers",
        {
            "apiVersion": "policy.linkerd.io/v1beta3",
            "kind": "Server",
            "metadata": {"name": name},
            "spec": {
                "podSelector": {"matchLabels": {"app": app}},
                "port": port,
                "proxyProtocol": protocol,
            },
        },
    )


async def delete_server(kube: Kube, namespace: str, name: str) -> None:
    await k8s.CustomObjectsApi(kube.api).delete_namespaced_custom_object(
        "policy.linkerd.io", "v1beta3", namespace, "servers", name
    )


def external_workload(
    name: str,
    ip: str,
    *,
    ports: Mapping[str, int],
    owner: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app": name},
        "annotations": dict(annotations or {}),
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": metadata,
        "spec": {
            "meshTLS": {"identity": f"spiffe://example.org/{name}", "serverName": f"{name}.vm"},
            "ports": [{"name": port_name, "port": port} for port_name, port in ports.items()],
            "workloadIPs": [{"ip": ip}],
        },
    }


async def create_external_workload(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    await k8s.CustomObjectsApi(kube.api).create_namespaced_custom_object(
        "workload.linkerd.io", "v1beta1", namespace, "externalworkloads", body
    )


async def delete_external_workload(kube: Kube, namespace: str, name: str) -> None:
    await k8s.CustomObjectsApi(kube.api).delete_namespaced_custom_object(
        "workload.linkerd.io", "v1beta1", namespace, "externalworkloads", name
    )


# --------------------------------------------------------------------------
# pods


def pod_body(
    name: str,
    *,
    app: str | None = None,
    meshed: bool = False,
    proxy: bool = True,
    custom_status: bool = False,
    node: str | None = None,
    host_port: int | None = None,
    service_account: str = "default",
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A bare pod with one `http` port (8080); `meshed` adds the label and (with `proxy`)
    the proxy container whose environment translation reads."""
    labels = {"app": app or name}
    port: dict[str, Any] = {"name": "http", "containerPort": 8080}
    if host_port is not None:
        port["hostPort"] = host_port
    containers: list[dict[str, Any]] = [{"name": "app", "image": FAKE_IMAGE, "ports": [port]}]
    if meshed:
        labels["linkerd.io/control-plane-ns"] = CONTROL_PLANE_NS
        if proxy:
            containers.append({"name": "linkerd-proxy", "image": FAKE_IMAGE, "env": PROXY_ENV})
    spec: dict[str, Any] = {"containers": containers, "serviceAccountName": service_account}
    if node is not None:
        spec["nodeName"] = node  # skips the scheduler: a custom-status pod is placed at once
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {**(CUSTOM_STATUS if custom_status else {}), **(annotations or {})},
        },
        "spec": spec,
    }


async def create_running_pod(kube: Kube, namespace: str, body: dict[str, Any]) -> k8s.V1Pod:
    """Create a pod kwok runs, and wait until it is Running with an IP."""
    await kube.core.create_namespaced_pod(namespace, body)
    name = body["metadata"]["name"]

    async def read() -> k8s.V1Pod:
        return await kube.core.read_namespaced_pod(name, namespace)

    pod: k8s.V1Pod = await eventually(
        read,
        lambda p: p.status.phase == "Running" and bool(p.status.pod_ip),
        what=f"{namespace}/{name} Running",
        interval_s=0.1,
    )
    return pod


async def set_pod_status(
    kube: Kube, namespace: str, name: str, *, phase: str, ip: str | None = None
) -> None:
    """Write the status of a custom-status pod (as a kubelet would)."""
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1"}
    await kube.core.patch_namespaced_pod_status(name, namespace, {"status": status})


async def delete_pod_now(kube: Kube, namespace: str, name: str) -> None:
    await kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
