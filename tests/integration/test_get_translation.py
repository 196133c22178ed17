"""Per-address translation and per-view filtering, on real Kubernetes objects.

Scope: TLS identity and protocol hints of meshed pods, opaque ports, topology
hints (`trafficDistribution: PreferClose`, set by the real EndpointSlice
controller) and `internalTrafficPolicy: Local` against the context token's
node, and pod DNS names of a headless StatefulSet service.
The rules themselves are unit-tested in tests/unit/test_encode.py and
test_topics.py; here the real API objects drive them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from destination._proto import destination_pb2 as pb
from tests.integration.destination_client import Server, Stream, open_stream, values
from tests.kube.workloads import FAKE_IMAGE, Kube, eventually

pytestmark = pytest.mark.integration

EW_CONTROLLER = "linkerd-external-workloads-controller"

PROXY_ENV = [
    {"name": "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "value": "0.0.0.0:4143"},
    {"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": "0.0.0.0:4191"},
    {"name": "LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "value": "0.0.0.0:4190"},
]


def pod_template(
    app: str,
    *,
    meshed: bool,
    annotations: dict[str, str] | None = None,
    service_account: str = "default",
) -> dict[str, Any]:
    labels = {"app": app}
    containers: list[dict[str, Any]] = [
        {"name": "app", "image": FAKE_IMAGE, "ports": [{"name": "http", "containerPort": 8080}]},
    ]
    if meshed:
        labels["linkerd.io/control-plane-ns"] = "linkerd"
        containers.append({"name": "linkerd-proxy", "image": FAKE_IMAGE, "env": PROXY_ENV})
    return {
        "metadata": {"labels": labels, "annotations": annotations or {}},
        "spec": {"serviceAccountName": service_account, "containers": containers},
    }


async def create_deployment(
    kube: Kube, namespace: str, name: str, replicas: int, template: dict[str, Any]
) -> None:
    await kube.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": template,
            },
        },
    )


def token(namespace: str, node: str) -> str:
    return json.dumps({"ns": namespace, "nodeName": node, "pod": "client"}) + "\n"


async def wait_for(stream: Stream, ips: list[str]) -> None:
    await eventually(
        lambda: values(stream.ips()),
        lambda got: got == sorted(ips),
        what=f"stream endpoints {sorted(ips)}",
    )


async def test_meshed_pods_carry_identity_and_protocol_hints(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.core.create_namespaced_service_account(namespace, {"metadata": {"name": "web"}})
    await create_deployment(
        east, namespace, "web", 2, pod_template("web", meshed=True, service_account="web")
    )
    await east.create_service(namespace, "web")
    ips = await east.wait_for_ready_endpoints(namespace, "web", 2)
    stream = open_stream(server, f"web.{namespace}.svc.cluster.local:80")
    await wait_for(stream, ips)

    identity = f"web.{namespace}.serviceaccount.identity.linkerd.cluster.local"
    for addr in stream.addresses.values():
        assert addr.tls_identity.dns_like_identity.name == identity
        assert addr.tls_identity.server_name.name == identity
        # Default outbound transport mode is transport-header (as Helm installs).
        assert addr.protocol_hint.opaque_transport.inbound_port == 4143
        assert addr.protocol_hint.WhichOneof("protocol") == "h2"
        assert addr.metric_labels["control_plane_ns"] == "linkerd"
        assert addr.metric_labels["serviceaccount"] == "web"
    stream.call.cancel()


async def test_opaque_port_annotation_makes_the_hint_opaque(
    server: Server, east: Kube, namespace: str
) -> None:
    template = pod_template(
        "db", meshed=True, annotations={"config.linkerd.io/opaque-ports": "http"}
    )
    await create_deployment(east, namespace, "db", 1, template)
    await east.create_service(namespace, "db")
    ips = await east.wait_for_ready_endpoints(namespace, "db", 1)
    stream = open_stream(server, f"db.{namespace}.svc.cluster.local:80")
    await wait_for(stream, ips)
    (addr,) = stream.addresses.values()
    assert addr.protocol_hint.WhichOneof("protocol") == "opaque"
    assert addr.protocol_hint.opaque_transport.inbound_port == 4143
    stream.call.cancel()


async def test_an_opaque_server_makes_the_hint_opaque_until_it_is_deleted(
    server: Server, east: Kube, namespace: str
) -> None:
    await create_deployment(east, namespace, "db", 1, pod_template("db", meshed=True))
    await east.create_service(namespace, "db")
    ips = await east.wait_for_ready_endpoints(namespace, "db", 1)
    stream = open_stream(server, f"db.{namespace}.svc.cluster.local:80")
    await wait_for(stream, ips)

    def hint() -> str | None:
        (addr,) = stream.addresses.values()
        return addr.protocol_hint.WhichOneof("protocol")

    assert hint() == "h2"
    objects = k8s.CustomObjectsApi(east.api)
    body = {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": {"name": "db-http"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "port": "http",
            "proxyProtocol": "opaque",
        },
    }
    await objects.create_namespaced_custom_object(
        "policy.linkerd.io", "v1beta3", namespace, "servers", body
    )
    await eventually(lambda: _value(hint()), lambda h: h == "opaque", what="opaque from the Server")
    await objects.delete_namespaced_custom_object(
        "policy.linkerd.io", "v1beta3", namespace, "servers", "db-http"
    )
    await eventually(lambda: _value(hint()), lambda h: h == "h2", what="h2 again")
    stream.call.cancel()


async def _value(value: str | None) -> str | None:
    return value


async def test_an_external_workload_endpoint_streams_its_mesh_identity(
    server: Server, east: Kube, namespace: str
) -> None:
    """An EndpointSlice pointing at an ExternalWorkload, as Linkerd's EW controller writes it."""
    objects = k8s.CustomObjectsApi(east.api)
    await objects.create_namespaced_custom_object(
        "workload.linkerd.io",
        "v1beta1",
        namespace,
        "externalworkloads",
        {
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": {"name": "vm-1", "labels": {"app": "vm"}},
            "spec": {
                "meshTLS": {"identity": "spiffe://example.org/vm-1", "serverName": "vm-1.example"},
                "ports": [{"name": "http", "port": 8080}],
                "workloadIPs": [{"ip": "192.168.50.7"}],
            },
        },
    )
    await east.create_service(namespace, "vm", selector={})
    await east.discovery.create_namespaced_endpoint_slice(
        namespace,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "vm-1",
                "labels": {
                    "kubernetes.io/service-name": "vm",
                    "endpointslice.kubernetes.io/managed-by": EW_CONTROLLER,
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": ["192.168.50.7"],
                    "conditions": {"ready": True},
                    "targetRef": {
                        "kind": "ExternalWorkload",
                        "name": "vm-1",
                        "namespace": namespace,
                    },
                }
            ],
        },
    )
    stream = open_stream(server, f"vm.{namespace}.svc.cluster.local:80")
    await wait_for(stream, ["192.168.50.7"])
    (addr,) = stream.addresses.values()
    assert addr.tls_identity.uri_like_identity.uri == "spiffe://example.org/vm-1"
    assert addr.tls_identity.server_name.name == "vm-1.example"
    assert addr.metric_labels["external_workload"] == "vm-1"
    assert addr.protocol_hint.WhichOneof("protocol") == "h2"
    stream.call.cancel()


async def test_topology_hints_keep_same_zone_endpoints_for_a_subscriber_node(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_deployment(namespace, "zonal", replicas=4)
    await east.create_service(namespace, "zonal", extra_spec={"trafficDistribution": "PreferClose"})
    all_ips = await east.wait_for_ready_endpoints(namespace, "zonal", 4)
    slices = await east.discovery.list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=zonal"
    )

    def hinted() -> dict[str, str]:
        return {
            ep.addresses[0]: ep.zone
            for s in slices.items
            for ep in s.endpoints or []
            if ep.hints and ep.hints.for_zones
        }

    async def refreshed() -> dict[str, str]:
        nonlocal slices
        slices = await east.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=zonal"
        )
        return hinted()

    zones = await eventually(refreshed, lambda z: len(z) == 4, what="hints on every endpoint")
    node0_zone = east.cluster.spec.zones[0]
    in_zone = [ip for ip, zone in zones.items() if zone == node0_zone]
    assert in_zone and len(in_zone) < 4, zones

    path = f"zonal.{namespace}.svc.cluster.local:80"
    near = open_stream(server, path, token(namespace, east.cluster.spec.node_names()[0]))
    anywhere = open_stream(server, path)  # no node: zone unknown, nothing matches, keep all
    await wait_for(near, in_zone)
    await wait_for(anywhere, all_ips)
    assert {a.metric_labels["zone_locality"] for a in near.addresses.values()} == {"local"}
    assert {a.metric_labels["zone_locality"] for a in anywhere.addresses.values()} == {"unknown"}
    near.call.cancel()
    anywhere.call.cancel()


async def test_internal_traffic_policy_local_keeps_only_pods_on_the_subscriber_node(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_deployment(namespace, "local", replicas=4)
    await east.create_service(namespace, "local", extra_spec={"internalTrafficPolicy": "Local"})
    await east.wait_for_ready_endpoints(namespace, "local", 4)
    pods = await east.core.list_namespaced_pod(namespace, label_selector="app=local")
    node = east.cluster.spec.node_names()[1]
    on_node = [p.status.pod_ip for p in pods.items if p.spec.node_name == node]
    assert on_node, "the scheduler spreads 4 replicas over both nodes"

    path = f"local.{namespace}.svc.cluster.local:80"
    stream = open_stream(server, path, token(namespace, node))
    await wait_for(stream, on_node)
    no_node = open_stream(server, path)
    # Without a node, nothing is local: the stream stays silent (no message at all).
    await east.scale(namespace, "local", 5)
    await east.wait_for_ready_endpoints(namespace, "local", 5)
    pods = await east.core.list_namespaced_pod(namespace, label_selector="app=local")
    await wait_for(stream, [p.status.pod_ip for p in pods.items if p.spec.node_name == node])
    assert no_node.updates == []
    stream.call.cancel()
    no_node.call.cancel()


async def test_pod_dns_name_of_a_headless_statefulset_selects_one_pod(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_service(namespace, "db", extra_spec={"clusterIP": "None"})
    await east.apps.create_namespaced_stateful_set(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "replicas": 2,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "db"}},
                "template": pod_template("db", meshed=False),
            },
        },
    )
    await east.wait_for_ready_endpoints(namespace, "db", 2)
    pod = await east.core.read_namespaced_pod("db-1", namespace)
    stream = open_stream(server, f"db-1.db.{namespace}.svc.cluster.local:80")
    await wait_for(stream, [pod.status.pod_ip])
    (addr,) = stream.addresses.values()
    assert addr.metric_labels["statefulset"] == "db"
    assert isinstance(addr, pb.WeightedAddr)
    stream.call.cancel()
