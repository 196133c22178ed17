"""The endpoint-profile flow on live streams: what lives at an address (§6.5).

Scope: a meshed pod at its IP (identity, protocol hint with opaque transport,
labels, no zone locality) followed through every change: a Server making its
port opaque and then not (the reference only turns it on), a label edit that
brings it under a Server, an owner appearing (a ReplicaSet adopting it), an
opaque-ports annotation, and its deletion (a bare endpoint again). Pods whose
status the test writes go Pending → Running → Succeeded at an address the
test picks; a meshed pod without proxy ports sends nothing, and the bare
endpoint after it is not sent twice. A host port on the node address
(127.0.0.1 for every kwok node) follows the pod there and its replacement;
an ExternalWorkload at its address carries its URI identity, the owner kind
as written, Server opacity on and off, and leaves a bare endpoint when
deleted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client as k8s

from destination._proto import destination_pb2 as pb
from destination._proto import net_pb2
from tests.integration.destination_client import ProfileStream, Server, open_profile_stream
from tests.integration.mesh_objects import (
    create_external_workload,
    create_running_pod,
    create_server,
    delete_external_workload,
    delete_pod_now,
    delete_server,
    external_workload,
    pod_body,
    set_pod_status,
)
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

SETTLE_S = 0.3
# Addresses the tests pick for pods whose status they write: in east's pod
# range, far beyond what kwok hands out during a session.
PHASE_IP = "10.11.252.2"
UNBUILDABLE_IP = "10.11.252.3"
TERMINATING_IP = "10.11.252.4"
EW_IP = "192.168.71.1"
HOST_PORT = 31_502


def bare(ip: int, port: int, *, opaque: bool = False) -> pb.DestinationProfile:
    """The endpoint profile of an address where nothing is known to live."""
    return pb.DestinationProfile(
        opaque_protocol=opaque,
        retry_budget=pb.RetryBudget(
            retry_ratio=0.2, min_retries_per_second=10, ttl={"seconds": 10}
        ),
        endpoint=pb.WeightedAddr(
            addr=net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv4=ip), port=port), weight=10_000
        ),
    )


def ipv4(text: str) -> int:
    a, b, c, d = (int(part) for part in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def protocol(profile: pb.DestinationProfile) -> str | None:
    return profile.endpoint.protocol_hint.WhichOneof("protocol")


_sentinel_ips = (f"10.11.253.{n}" for n in itertools.count(1))


class PodSentinel:
    """A pod at an address of its own whose phase the test flips, watched by a stream.

    Pod events reach the server on one watch, in order: once the sentinel's
    stream shows a flip, every pod event before it has been applied.
    """

    def __init__(self, server: Server, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self._server = server
        self._running = False
        self._ip = next(_sentinel_ips)
        self.stream: ProfileStream | None = None

    async def start(self) -> None:
        node = self._kube.cluster.spec.node_names()[0]
        body = pod_body("sentinel", custom_status=True, node=node)
        await self._kube.core.create_namespaced_pod(self._namespace, body)
        self.stream = open_profile_stream(self._server, f"{self._ip}:8080")
        await self.sync()

    async def stop(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        await delete_pod_now(self._kube, self._namespace, "sentinel")

    async def sync(self) -> None:
        assert self.stream is not None
        self._running = not self._running
        await set_pod_status(
            self._kube,
            self._namespace,
            "sentinel",
            phase="Running" if self._running else "Pending",
            ip=self._ip,
        )
        running = self._running
        await self.stream.until(
            lambda p: p.endpoint.metric_labels.get("pod") == ("sentinel" if running else None),
            what="the sentinel pod's flip",
        )
        await asyncio.sleep(SETTLE_S)


@pytest.fixture
async def pods(server: Server, east: Kube, namespace: str) -> AsyncIterator[PodSentinel]:
    sentinel = PodSentinel(server, east, namespace)
    await sentinel.start()
    yield sentinel
    await sentinel.stop()


async def test_a_meshed_pod_at_its_ip_is_followed_through_every_change(
    server: Server, east: Kube, namespace: str
) -> None:
    ns = namespace
    await east.core.create_namespaced_service_account(ns, {"metadata": {"name": "web"}})
    pod = await create_running_pod(
        east, ns, pod_body("web-0", app="web", meshed=True, service_account="web")
    )
    ip = pod.status.pod_ip
    stream = open_profile_stream(server, f"{ip}:8080")
    first = await stream.until(lambda p: p.HasField("endpoint"), what="the pod's profile")
    identity = f"web.{ns}.serviceaccount.identity.linkerd.cluster.local"
    endpoint = first.endpoint
    assert endpoint.addr.ip.ipv4 == ipv4(ip) and endpoint.addr.port == 8080
    assert endpoint.weight == 10_000
    assert dict(endpoint.metric_labels) == {
        "pod": "web-0",
        "serviceaccount": "web",
        "control_plane_ns": "linkerd",
        "namespace": ns,
        "zone": "",
    }, "no zone_locality in an endpoint profile, and the namespace is a label"
    assert endpoint.tls_identity.dns_like_identity.name == identity
    assert endpoint.tls_identity.server_name.name == identity
    assert protocol(first) == "h2"
    assert endpoint.protocol_hint.opaque_transport.inbound_port == 4143
    assert not first.opaque_protocol
    assert not first.fully_qualified_name and not first.routes
    assert first.retry_budget.retry_ratio == pytest.approx(0.2)

    # A Server makes the port opaque; deleting it makes it not opaque again.
    await create_server(east, ns, "web-http", app="web", port="http")
    opaque = await stream.until(lambda p: p.opaque_protocol, what="opaque by the Server")
    assert protocol(opaque) == "opaque"
    assert opaque.endpoint.protocol_hint.opaque_transport.inbound_port == 4143
    await delete_server(east, ns, "web-http")
    await stream.until(
        lambda p: not p.opaque_protocol and protocol(p) == "h2", what="the Server deleted"
    )

    # A Server for other pods applies once the pod's labels bring it under it.
    await create_server(east, ns, "db-http", app="db", port=8080)
    await east.core.patch_namespaced_pod("web-0", ns, {"metadata": {"labels": {"app": "db"}}})
    await stream.until(lambda p: p.opaque_protocol, what="relabelled under the Server")
    await east.core.patch_namespaced_pod("web-0", ns, {"metadata": {"labels": {"app": "web"}}})
    await stream.until(lambda p: not p.opaque_protocol, what="relabelled out of it")

    # The pod's own opaque-ports annotation, edited on the running pod.
    annotate = {"metadata": {"annotations": {"config.linkerd.io/opaque-ports": "http"}}}
    await east.core.patch_namespaced_pod("web-0", ns, annotate)
    await stream.until(lambda p: p.opaque_protocol, what="opaque by the annotation")
    annotate["metadata"]["annotations"]["config.linkerd.io/opaque-ports"] = None  # type: ignore[index]
    await east.core.patch_namespaced_pod("web-0", ns, annotate)
    await stream.until(lambda p: not p.opaque_protocol, what="the annotation removed")

    # A ReplicaSet whose selector matches adopts the running pod: the owner label follows.
    await east.apps.create_namespaced_replica_set(
        ns,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "adopter"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {
                        "labels": pod_body("x", app="web", meshed=True)["metadata"]["labels"]
                    },
                    "spec": pod_body("x", meshed=True, service_account="web")["spec"],
                },
            },
        },
    )
    adopted = await stream.until(
        lambda p: p.endpoint.metric_labels.get("replicaset") == "adopter", what="adopted"
    )
    assert adopted.endpoint.metric_labels["pod"] == "web-0"

    # Deleted: a bare endpoint.
    await east.apps.delete_namespaced_replica_set("adopter", ns, orphan_dependents=True)
    await delete_pod_now(east, ns, "web-0")
    await stream.until(lambda p: p == bare(ipv4(ip), 8080), what="a bare endpoint")
    assert stream.open
    stream.cancel()


async def test_a_pod_is_in_its_profile_only_while_running(
    server: Server, east: Kube, namespace: str, pods: PodSentinel
) -> None:
    ns = namespace
    stream = open_profile_stream(server, f"{PHASE_IP}:8080")
    await stream.until(lambda p: p == bare(ipv4(PHASE_IP), 8080), what="nothing there yet")
    node = east.cluster.spec.node_names()[1]
    await east.core.create_namespaced_pod(ns, pod_body("phased", custom_status=True, node=node))
    await set_pod_status(east, ns, "phased", phase="Pending", ip=PHASE_IP)
    await pods.sync()
    assert len(stream.profiles) == 1, "a Pending pod is not in the profile"

    await set_pod_status(east, ns, "phased", phase="Running", ip=PHASE_IP)
    running = await stream.until(
        lambda p: p.HasField("endpoint") and bool(p.endpoint.metric_labels.get("pod")),
        what="Running",
    )
    assert running.endpoint.metric_labels["pod"] == "phased"
    assert running.endpoint.metric_labels["namespace"] == ns
    assert not running.endpoint.HasField("tls_identity"), "not meshed"

    await set_pod_status(east, ns, "phased", phase="Succeeded")
    await stream.until(lambda p: p == bare(ipv4(PHASE_IP), 8080), what="Succeeded")
    sent = len(stream.profiles)
    await east.core.patch_namespaced_pod("phased", ns, {"metadata": {"labels": {"x": "y"}}})
    await pods.sync()
    assert len(stream.profiles) == sent, "a terminated pod's changes send nothing"
    assert stream.open
    stream.cancel()
    await delete_pod_now(east, ns, "phased")  # kwok leaves custom-status pods to the test


async def test_a_pod_whose_endpoint_cannot_be_built_sends_nothing_and_no_repeat_after(
    server: Server, east: Kube, namespace: str, pods: PodSentinel
) -> None:
    """A meshed pod without proxy ports: nothing is sent for it (as in the reference),
    and the bare endpoint that follows it, equal to the last message, is not sent again."""
    ns = namespace
    stream = open_profile_stream(server, f"{UNBUILDABLE_IP}:8080")
    await stream.count(1, what="the bare endpoint")
    node = east.cluster.spec.node_names()[0]
    body = pod_body("no-proxy", meshed=True, proxy=False, custom_status=True, node=node)
    await east.core.create_namespaced_pod(ns, body)
    await set_pod_status(east, ns, "no-proxy", phase="Running", ip=UNBUILDABLE_IP)
    await pods.sync()
    assert len(stream.profiles) == 1, "nothing can be said of a meshed pod without its proxy ports"
    joining = open_profile_stream(server, f"{UNBUILDABLE_IP}:8080")

    await set_pod_status(east, ns, "no-proxy", phase="Succeeded")
    await joining.count(1, what="the bare endpoint, for a stream that had nothing")
    await pods.sync()
    assert stream.profiles == [bare(ipv4(UNBUILDABLE_IP), 8080)], "sent once, not twice"
    assert joining.profiles == stream.profiles
    stream.cancel()
    joining.cancel()
    await delete_pod_now(east, ns, "no-proxy")


async def test_a_host_port_follows_the_pod_there_and_its_replacement(
    server: Server, east: Kube, namespace: str
) -> None:
    ns = namespace
    node = east.cluster.spec.node_names()[0]
    pod = await create_running_pod(
        east, ns, pod_body("hp-1", app="hp", node=node, host_port=HOST_PORT)
    )
    assert pod.status.host_ip == "127.0.0.1", "kwok gives its nodes the loopback address"
    stream = open_profile_stream(server, f"127.0.0.1:{HOST_PORT}")
    first = await stream.until(lambda p: p.HasField("endpoint"), what="the host port's pod")
    assert first.endpoint.metric_labels["pod"] == "hp-1"
    assert first.endpoint.addr.ip.ipv4 == ipv4("127.0.0.1")
    assert first.endpoint.addr.port == HOST_PORT, "the host address and port, not the pod's"

    await delete_pod_now(east, ns, "hp-1")
    await stream.until(lambda p: p == bare(ipv4("127.0.0.1"), HOST_PORT), what="pod gone")
    await create_running_pod(east, ns, pod_body("hp-2", app="hp", node=node, host_port=HOST_PORT))
    await stream.until(
        lambda p: p.endpoint.metric_labels.get("pod") == "hp-2", what="the replacement"
    )
    stream.cancel()


async def test_an_external_workload_at_its_address(
    server: Server, east: Kube, namespace: str
) -> None:
    ns = namespace
    group = await east.core.create_namespaced_config_map(ns, {"metadata": {"name": "vm-group"}})
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "vm-group",
        "uid": group.metadata.uid,
    }
    body = external_workload(
        "vm-1", EW_IP, ports={"http": 8080, "linkerd-proxy": 4200}, owner=owner
    )
    await create_external_workload(east, ns, body)
    stream = open_profile_stream(server, f"{EW_IP}:8080")
    first = await stream.until(
        lambda p: p.endpoint.metric_labels.get("external_workload") == "vm-1", what="the EW"
    )
    endpoint = first.endpoint
    assert dict(endpoint.metric_labels) == {
        "external_workload": "vm-1",
        "ConfigMap": "vm-group",  # the owner's kind as written (§6.5, unlike Get)
        "namespace": ns,
        "zone": "",
    }
    assert endpoint.tls_identity.uri_like_identity.uri == "spiffe://example.org/vm-1"
    assert endpoint.tls_identity.server_name.name == "vm-1.vm"
    assert protocol(first) == "h2"
    assert endpoint.protocol_hint.opaque_transport.inbound_port == 4200
    assert not first.opaque_protocol

    # Servers select ExternalWorkloads too, on and off (the reference never re-evaluates them).
    server_body = {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": {"name": "vm-http"},
        "spec": {
            "externalWorkloadSelector": {"matchLabels": {"app": "vm-1"}},
            "port": "http",
            "proxyProtocol": "opaque",
        },
    }
    objects = k8s.CustomObjectsApi(east.api)
    await objects.create_namespaced_custom_object(
        "policy.linkerd.io", "v1beta3", ns, "servers", server_body
    )
    await stream.until(lambda p: p.opaque_protocol and protocol(p) == "opaque", what="opaque")
    await delete_server(east, ns, "vm-http")
    await stream.until(lambda p: not p.opaque_protocol, what="not opaque")

    await delete_external_workload(east, ns, "vm-1")
    await stream.until(lambda p: p == bare(ipv4(EW_IP), 8080), what="the EW deleted")
    assert stream.open
    stream.cancel()


async def test_a_terminating_pod_stays_on_open_streams_until_it_is_gone(
    server: Server, east: Kube, namespace: str
) -> None:
    """A pod being deleted (deletionTimestamp set, still Running) is not found by a new
    lookup (§2.1), but the address's open topic keeps it (and its identity) while it
    drains, as the reference's shared publisher does, until the pod is gone; a stream
    joining meanwhile shares that answer."""
    ns = namespace
    node = east.cluster.spec.node_names()[0]
    await east.core.create_namespaced_pod(ns, pod_body("leaving", custom_status=True, node=node))
    await set_pod_status(east, ns, "leaving", phase="Running", ip=TERMINATING_IP)
    stream = open_profile_stream(server, f"{TERMINATING_IP}:8080")
    await stream.until(lambda p: p.endpoint.metric_labels.get("pod") == "leaving", what="Running")
    # kwok leaves custom-status pods alone: with a grace period, this one stays terminating.
    await east.core.delete_namespaced_pod("leaving", ns, grace_period_seconds=300)
    pod = await east.core.read_namespaced_pod("leaving", ns)
    assert pod.metadata.deletion_timestamp is not None and pod.status.phase == "Running"
    late = open_profile_stream(server, f"{TERMINATING_IP}:8080")
    await late.until(
        lambda p: p.endpoint.metric_labels.get("pod") == "leaving", what="the shared answer"
    )
    held = len(stream.profiles)
    await asyncio.sleep(0.5)
    assert len(stream.profiles) == held  # the open stream keeps the draining pod
    assert stream.profiles[-1].endpoint.metric_labels.get("pod") == "leaving"
    await delete_pod_now(east, ns, "leaving")
    await stream.until(lambda p: p == bare(ipv4(TERMINATING_IP), 8080), what="pod gone")
    stream.cancel()
    late.cancel()
