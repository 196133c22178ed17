"""The service-mirror controller in a test: run in-process, Links, a gateway stand-in, reads.

`running_mirror` runs `mirror.app.run` in the test's event loop against the
local cluster (east), serving the Links of one controller namespace, with
timings shortened through `MirrorConfig` (repair every 2 s, Leases of 3 s)
so that every behaviour shows within seconds. Each test gets its own
controller namespace (`controller_namespace`), so controllers of different
tests never serve each other's Links, and every Link targets a cluster name
of its own (`west-1a2b3c`), so their mirrors never meet.

A Link is made as an operator would: a credentials Secret holding the
least-privileged reader's kubeconfig (`tests/integration/links.py`:
`deploy/remote-access.yaml` on the target, a real token) and a Link whose
gateway address is this host's non-loopback address (Kubernetes refuses
loopback IPs in Endpoints). `GatewayStandIn` answers the gateway probe there:
200 on the probe path while up, 503 while down.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from mirror.app import run
from mirror.config import MirrorConfig
from tests.integration.destination_client import _free_port
from tests.integration.links import metric, reader_kubeconfig
from tests.kube.workloads import Kube, eventually

GROUP, VERSION = "multicluster.linkerd.io", "v1alpha3"
EXPORTED = {"mirror.linkerd.io/exported": "true"}
REMOTE_DISCOVERY_EXPORT = {"mirror.linkerd.io/exported": "remote-discovery"}
MEMBER = {"mirror.linkerd.io/federated": "member"}
MIRRORED = "mirror.linkerd.io/mirrored-service"
CLUSTER_LABEL = "mirror.linkerd.io/cluster-name"
FQ_NAME = "mirror.linkerd.io/remote-svc-fq-name"
GATEWAY_IDENTITY_KEY = "mirror.linkerd.io/remote-gateway-identity"
RESOURCE_VERSION = "mirror.linkerd.io/remote-resource-version"
GATEWAY_IDENTITY = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.test"
GATEWAY_PORT = 4143
FAST = {
    "repair_period_s": 2.0,
    "lease_duration_s": 3.0,
    "lease_renew_deadline_s": 2.0,
    "lease_retry_s": 0.5,
}


def host_ip() -> str:
    """This host's address towards the outside: not loopback, so Endpoints accept it."""
    for probe in ("192.0.2.1", "10.255.255.255", "203.0.113.1"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # UDP: no packet is sent, the kernel only picks a route
            address: str = s.getsockname()[0]
            if not ipaddress.ip_address(address).is_loopback:
                return address
    for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        address = str(info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    raise RuntimeError("this host has no non-loopback IPv4 address for a gateway stand-in")


class GatewayStandIn:
    """An HTTP server standing for a target's gateway: 200 on the probe path while up."""

    def __init__(self, path: str = "/ready") -> None:
        self.ip = host_ip()
        self.port = 0
        self.path = path
        self.up = True
        self.probes = 0
        self._runner: web.AppRunner | None = None

    async def _ready(self, request: web.Request) -> web.Response:
        del request
        self.probes += 1
        return web.Response(text="ok\n") if self.up else web.Response(status=503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.path, self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = _free_port()
        await web.TCPSite(self._runner, self.ip, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def gateway_stand_in() -> AsyncIterator[GatewayStandIn]:
    gateway = GatewayStandIn()
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


@dataclass
class Mirror:
    """A running controller: its namespace, identity and admin address."""

    namespace: str
    identity: str
    admin: str
    task: asyncio.Task[int]
    stop: asyncio.Event

    async def metric(self, name: str, **labels: str) -> float:
        return await metric(self.admin, name, **labels)

    async def metrics_text(self) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{self.admin}/metrics") as response,
        ):
            return await response.text()

    async def links(self) -> dict[str, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{self.admin}/links") as response,
        ):
            body = await response.json()
        return {link["name"]: link for link in body["links"]}

    async def writes(self, link: str, *kinds: str) -> float:
        """mirror_writes_total of `link` (kinds: Service/Endpoints by default)."""
        total = 0.0
        for kind in kinds or ("Service", "Endpoints"):
            total += await self.metric("mirror_writes_total", link=link, kind=kind)
        return total


@contextlib.asynccontextmanager
async def running_mirror(
    east: Kube, namespace: str, *, identity: str | None = None, **settings: object
) -> AsyncIterator[Mirror]:
    """`destination mirror` in this event loop, serving the Links of `namespace`."""
    admin = f"127.0.0.1:{_free_port()}"
    name = identity or f"replica-{secrets.token_hex(2)}"
    values: dict[str, object] = {
        "namespace": namespace,
        "kubeconfig": str(east.cluster.kubeconfig),
        "admin_address": admin,
        "identity": name,
        "log_format": "console",
        **FAST,
    }
    config = MirrorConfig(**(values | settings))  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop=stop))
    mirror = Mirror(namespace, name, admin, task, stop)

    async def ready() -> int:
        if task.done():
            return -2
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{admin}/ready") as response,
            ):
                return response.status
        except aiohttp.ClientError:
            return -1

    try:
        status = await eventually(ready, lambda s: s in (200, -2), what="mirror /ready")
        assert status == 200, f"the controller ended: {task.result()!r}"
        yield mirror
    finally:
        await stop_mirror(mirror)


async def stop_mirror(mirror: Mirror) -> None:
    """Stop it (SIGTERM's path) and check it ended cleanly; again is a no-op."""
    mirror.stop.set()
    async with asyncio.timeout(30):
        assert await mirror.task == 0


# -- the controller's namespace and Links ---------------------------------------------------


def links_api(kube: Kube) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube.api)


async def create_controller_namespace(east: Kube) -> str:
    name = f"mc-{secrets.token_hex(3)}"
    await east.create_namespace(name)
    return name


async def delete_controller_namespace(east: Kube, namespace: str) -> None:
    """Let go of the Links (finalizers) and delete the namespace."""
    listed = await links_api(east).list_namespaced_custom_object(GROUP, VERSION, namespace, "links")
    for item in listed.get("items", []):
        if item["metadata"].get("finalizers"):
            with contextlib.suppress(ApiException):
                await links_api(east).patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    "links",
                    item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json",
                )
    await east.delete_namespace(namespace)


@dataclass
class Linked:
    """A Link of the controller namespace to a target cluster."""

    name: str  # the Link's, its target cluster name, and the mirrors' suffix
    namespace: str
    target: Kube
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def secret(self) -> str:
        return f"cluster-credentials-{self.name}"


def credentials_secret(name: str, namespace: str, kubeconfig: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "mirror.linkerd.io/remote-kubeconfig",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()},
    }


def link_spec(
    cluster: str,
    *,
    gateway: GatewayStandIn | None = None,
    gateway_ip: str | None = None,
    probe_period: str = "500ms",
    failure_threshold: int = 2,
) -> dict[str, Any]:
    """A Link spec as link-gen writes it, with a gateway at this host."""
    spec: dict[str, Any] = {
        "targetClusterName": cluster,
        "targetClusterDomain": "cluster.local",
        "clusterCredentialsSecret": f"cluster-credentials-{cluster}",
        "gatewayAddress": gateway.ip if gateway is not None else (gateway_ip or host_ip()),
        "gatewayPort": str(GATEWAY_PORT),
        "gatewayIdentity": GATEWAY_IDENTITY,
        "selector": {"matchLabels": EXPORTED},
        "remoteDiscoverySelector": {"matchLabels": REMOTE_DISCOVERY_EXPORT},
        "federatedServiceSelector": {"matchLabels": MEMBER},
    }
    if gateway is not None:
        spec["probeSpec"] = {
            "path": gateway.path,
            "port": str(gateway.port),
            "period": probe_period,
            "timeout": "1s",
            "failureThreshold": str(failure_threshold),
        }
    return spec


async def link(
    east: Kube,
    target: Kube,
    namespace: str,
    *,
    name: str | None = None,
    server: str | None = None,
    spec: Mapping[str, Any] | None = None,
    **options: Any,
) -> Linked:
    """A credentials Secret and a Link to `target` (through `server`, default its primary)."""
    cluster = name or f"{target.cluster.name}-{secrets.token_hex(3)}"
    kubeconfig = await reader_kubeconfig(target.cluster, server=server)
    await east.core.create_namespaced_secret(
        namespace, credentials_secret(f"cluster-credentials-{cluster}", namespace, kubeconfig)
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Link",
        "metadata": {"name": cluster, "namespace": namespace},
        "spec": dict(spec) if spec is not None else link_spec(cluster, **options),
    }
    await links_api(east).create_namespaced_custom_object(GROUP, VERSION, namespace, "links", body)
    return Linked(cluster, namespace, target, body["spec"])


async def read_link(east: Kube, linked: Linked) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = await links_api(east).get_namespaced_custom_object(
            GROUP, VERSION, linked.namespace, "links", linked.name
        )
        return found
    except ApiException as err:
        if err.status == 404:
            return None
        raise


async def patch_link(east: Kube, linked: Linked, patch: Mapping[str, Any]) -> None:
    await links_api(east).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        linked.namespace,
        "links",
        linked.name,
        dict(patch),
        _content_type="application/merge-patch+json",
    )


async def delete_link_object(east: Kube, linked: Linked) -> None:
    await links_api(east).delete_namespaced_custom_object(
        GROUP, VERSION, linked.namespace, "links", linked.name
    )


async def rotate_credentials(east: Kube, linked: Linked, kubeconfig: str) -> None:
    await east.core.replace_namespaced_secret(
        linked.secret,
        linked.namespace,
        credentials_secret(linked.secret, linked.namespace, kubeconfig),
    )


async def link_statuses(
    east: Kube, linked: Linked, field_name: str, *namespaces: str
) -> dict[str, dict[str, Any]]:
    """`status.<field_name>` of the remote Services in `namespaces`, by name (its one condition).

    Only those namespaces: a Link mirrors every namespace of its target, and
    other tests' namespaces may still be terminating there.
    """
    found = await read_link(east, linked)
    entries = ((found or {}).get("status") or {}).get(field_name) or []
    return {
        entry["remoteRef"]["name"]: {"entry": entry, **entry["conditions"][0]}
        for entry in entries
        if entry["remoteRef"]["namespace"] in namespaces
    }


async def status_of(
    east: Kube, linked: Linked, field_name: str, namespace: str, remote: str
) -> dict[str, Any]:
    """The status entry of `remote`, once the worker has written one (after its objects)."""
    statuses = await eventually(
        lambda: link_statuses(east, linked, field_name, namespace),
        lambda found: remote in found,
        what=f"a {field_name} entry for {namespace}/{remote}",
    )
    return statuses[remote]


async def link_events(east: Kube, linked: Linked) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events recorded on the Link, oldest first."""
    listed = await east.core.list_namespaced_event(
        linked.namespace, field_selector=f"involvedObject.name={linked.name}"
    )
    items = sorted(listed.items, key=lambda e: (str(e.first_timestamp), e.metadata.name))
    return [(e.type, e.reason, e.message) for e in items]


# -- reading local objects ------------------------------------------------------------------


async def get_object(kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """A Service or Endpoints as a plain JSON document (camelCase keys), or None."""
    read: Callable[..., Any] = (
        kube.core.read_namespaced_service
        if kind == "Service"
        else kube.core.read_namespaced_endpoints
    )
    try:
        found = await read(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    document: dict[str, Any] = kube.api.sanitize_for_serialization(found)
    return document


async def mirror_names(kube: Kube, namespace: str, kind: str = "Service") -> set[str]:
    """Names of our objects (the mirrored-service label) of `kind` in `namespace`."""
    list_: Callable[..., Any] = (
        kube.core.list_namespaced_service
        if kind == "Service"
        else kube.core.list_namespaced_endpoints
    )
    listed = await list_(namespace, label_selector=f"{MIRRORED}=true")
    return {item.metadata.name for item in listed.items}


async def wait_object(
    kube: Kube,
    kind: str,
    namespace: str,
    name: str,
    done: Callable[[dict[str, Any] | None], bool] = lambda o: o is not None,
    *,
    what: str = "",
    timeout_s: float = 30,
) -> dict[str, Any] | None:
    return await eventually(
        lambda: get_object(kube, kind, namespace, name),
        done,
        what=what or f"{kind} {namespace}/{name}",
        timeout_s=timeout_s,
        interval_s=0.1,
    )


async def wait_gone(
    kube: Kube, kind: str, namespace: str, name: str, timeout_s: float = 30
) -> None:
    await wait_object(
        kube,
        kind,
        namespace,
        name,
        lambda o: o is None,
        what=f"{kind} {name} deleted",
        timeout_s=timeout_s,
    )


def labels_of(document: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((document or {}).get("metadata") or {}).get("labels") or {})


def annotations_of(document: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((document or {}).get("metadata") or {}).get("annotations") or {})


def addresses(endpoints: Mapping[str, Any] | None, key: str = "addresses") -> list[str]:
    return sorted(
        a["ip"] for subset in (endpoints or {}).get("subsets") or [] for a in subset.get(key) or []
    )


def ports_of(document: Mapping[str, Any] | None) -> list[tuple[str, int, str]]:
    """(name, port, protocol) of a Service's or an Endpoints' ports, sorted."""
    if document is None:
        return []
    raw = (document.get("spec") or {}).get("ports")
    if raw is None:
        raw = [p for subset in document.get("subsets") or [] for p in subset.get("ports") or []]
    return sorted((p.get("name") or "", p["port"], p.get("protocol") or "TCP") for p in raw)


async def export(kube: Kube, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
    """Set (or, with None, remove) labels of a Service: how a target exports or unexports."""
    await kube.core.patch_namespaced_service(name, namespace, {"metadata": {"labels": labels}})


def dumps(document: Any) -> str:
    return json.dumps(document, indent=1, sort_keys=True, default=str)
