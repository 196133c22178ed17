"""Smoke tests of the test environment itself, one per cluster.

Scope: a Deployment and a Service on a real control plane (etcd,
kube-apiserver, controller manager, scheduler, kwok) produce EndpointSlices
whose ready endpoints follow the replica count, with pod IPs from that
cluster's own pod CIDR. Excluded: anything of the destination service.
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration


@pytest.fixture(params=["east", "west"])
def kube(request: pytest.FixtureRequest) -> Kube:
    result: Kube = request.getfixturevalue(request.param)
    return result


async def test_deployment_endpoints_follow_scale_with_ips_from_the_clusters_pod_cidr(
    kube: Kube, namespace: str
) -> None:
    pod_cidr = ipaddress.ip_network(kube.cluster.spec.pod_cidr)

    ips = await kube.deploy_service(namespace, "web", replicas=3)
    assert len(ips) == 3
    assert all(ipaddress.ip_address(ip) in pod_cidr for ip in ips), (ips, pod_cidr)

    await kube.scale(namespace, "web", 5)
    ips = await kube.wait_for_ready_endpoints(namespace, "web", 5)
    assert all(ipaddress.ip_address(ip) in pod_cidr for ip in ips), (ips, pod_cidr)

    await kube.scale(namespace, "web", 0)
    assert await kube.wait_for_ready_endpoints(namespace, "web", 0) == []


async def test_pods_are_spread_over_nodes_in_distinct_zones(kube: Kube, namespace: str) -> None:
    await kube.deploy_service(namespace, "spread", replicas=4)
    pods = await kube.core.list_namespaced_pod(namespace, label_selector="app=spread")
    nodes = {pod.spec.node_name for pod in pods.items}
    node_list = await kube.core.list_node()
    zones = {
        node.metadata.labels["topology.kubernetes.io/zone"]
        for node in node_list.items
        if node.metadata.name in nodes
    }
    assert len(node_list.items) >= 2
    assert nodes <= {node.metadata.name for node in node_list.items}
    # The scheduler spreads replicas of one ReplicaSet over nodes by default.
    assert len(zones) == 2, (nodes, zones)


def test_clusters_have_disjoint_pod_and_service_cidrs(east: Kube, west: Kube) -> None:
    east_spec, west_spec = east.cluster.spec, west.cluster.spec
    for a, b in (
        (east_spec.pod_cidr, west_spec.pod_cidr),
        (east_spec.service_cidr, west_spec.service_cidr),
        (east_spec.pod_cidr, west_spec.service_cidr),
    ):
        assert not ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b))


async def test_services_can_be_dual_stack(east: Kube, namespace: str) -> None:
    spec = east.cluster.spec
    service = await east.core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "dual"},
            "spec": {
                "ipFamilyPolicy": "RequireDualStack",
                "ipFamilies": ["IPv4", "IPv6"],
                "ports": [{"port": 80}],
            },
        },
    )
    v4, v6 = (ipaddress.ip_address(ip) for ip in service.spec.cluster_ips)
    assert v4 in ipaddress.ip_network(spec.service_cidr)
    assert v6 in ipaddress.ip_network(spec.service_cidr_v6)


def test_kubectl_reaches_each_cluster_with_its_admin_kubeconfig(east: Kube, west: Kube) -> None:
    for kube in (east, west):
        nodes = kube.cluster.kubectl("get", "nodes", "-o", "name").split()
        assert sorted(nodes) == [f"node/{n}" for n in kube.cluster.spec.node_names()]
        crds = kube.cluster.kubectl("get", "crd", "-o", "name").split()
        assert {
            "customresourcedefinition.apiextensions.k8s.io/serviceprofiles.linkerd.io",
            "customresourcedefinition.apiextensions.k8s.io/servers.policy.linkerd.io",
            "customresourcedefinition.apiextensions.k8s.io/externalworkloads.workload.linkerd.io",
            "customresourcedefinition.apiextensions.k8s.io/links.multicluster.linkerd.io",
        } <= set(crds)
