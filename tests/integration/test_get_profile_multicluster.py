"""GetProfile for multicluster services: ordinary local service-profile flows (§7).

Scope: a gateway-mode mirror (a selector-less Service and the Endpoints a
service mirror writes), a remote-discovery mirror of a Service in a linked
cluster (west), and a federated Service with a local and a remote member.
Whatever Get does with them, GetProfile answers from the local Service
alone: its name, its ports (an undeclared one gets the empty profile), its
opaque-ports annotation (not the remote Service's), and ServiceProfiles
named after it in the local cluster (not the remote cluster's).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.destination_client import (
    Server,
    open_known_profile_stream,
    open_profile_stream,
    open_stream,
)
from tests.integration.links import (
    LOCAL_DISCOVERY,
    REMOTE_DISCOVERY,
    converge,
    create_remote_mirror,
    delete_link,
    link_name,
    link_secret,
    put_link,
    reader_kubeconfig,
    wait_for_state,
)
from tests.integration.mesh_objects import fqn, put_service_profile
from tests.integration.test_gateway_mirror import mirror_endpoints
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

OPAQUE_PORTS = "config.linkerd.io/opaque-ports"
ONE_ROUTE: dict[str, Any] = {"routes": [{"name": "local", "condition": {"method": "GET"}}]}


async def test_a_gateway_mirror_has_the_profile_of_its_local_service(
    server: Server, east: Kube, namespace: str
) -> None:
    ns = namespace
    await east.create_service(
        ns,
        "web-west",
        selector={},
        labels={
            "mirror.linkerd.io/mirrored-service": "true",
            "mirror.linkerd.io/cluster-name": "west",
        },
        annotations={
            "mirror.linkerd.io/remote-svc-fq-name": fqn("web", ns),
            OPAQUE_PORTS: "",  # copied from the remote Service by the mirror
        },
    )
    await east.core.create_namespaced_endpoints(ns, mirror_endpoints(ns, ready=True))
    service = await east.core.read_namespaced_service("web-west", ns)
    by_name = await open_known_profile_stream(server, f"{fqn('web-west', ns)}:80")
    by_ip = open_profile_stream(server, f"{service.spec.cluster_ip}:80")
    for stream in (by_name, by_ip):
        first = await stream.until(lambda p: p.fully_qualified_name != "", what="the profile")
        assert first.fully_qualified_name == fqn("web-west", ns)
        assert first.parent_ref.resource.name == "web-west"
        assert not first.HasField("endpoint"), "a service profile, not the gateway's endpoint"
        assert not first.routes and not first.opaque_protocol

    await put_service_profile(east, ns, fqn("web-west", ns), ONE_ROUTE)
    for stream in (by_name, by_ip):
        applied = await stream.until(lambda p: len(p.routes) == 1, what="the local profile")
        assert applied.profile_ref.resource.name == fqn("web-west", ns)
        stream.cancel()
    undeclared = open_profile_stream(server, f"{fqn('web-west', ns)}:4143")
    await undeclared.count(1, what="the gateway port is not the mirror's")
    assert undeclared.payloads == [b""]
    undeclared.cancel()


async def test_remote_discovery_and_federated_services_have_local_profiles(
    server: Server, east: Kube, west: Kube, namespace: str
) -> None:
    ns = namespace
    cluster = link_name(west.cluster)
    kubeconfig = await reader_kubeconfig(west.cluster)
    await put_link(east, link_secret(cluster, kubeconfig=kubeconfig, trust_domain="west.example"))
    # In west: the exported Service, opaque on 80, with a ServiceProfile of its own.
    await west.create_deployment(ns, "web", replicas=1, meshed_by="linkerd")
    await west.create_service(ns, "web", annotations={OPAQUE_PORTS: "80"})
    await put_service_profile(west, ns, fqn("web", ns), {"routes": []})
    west_ips = await west.wait_for_ready_endpoints(ns, "web", 1)
    # In east: the mirror (no opaque-ports annotation), a local member, the federated Service.
    mirror = await create_remote_mirror(east, ns, cluster=cluster)
    local_ips = await east.deploy_service(ns, "web", replicas=1)
    await east.create_service(
        ns,
        "web-federated",
        selector={},
        annotations={LOCAL_DISCOVERY: "web", REMOTE_DISCOVERY: f"web@{cluster}"},
    )
    await wait_for_state(server.admin, cluster, "synced")
    endpoints = open_stream(server, mirror)
    federated_endpoints = open_stream(server, f"{fqn('web-federated', ns)}:80")
    await converge(endpoints, west_ips, "Get streams west's pods for the mirror")
    await converge(federated_endpoints, local_ips + west_ips, "and both members for federated")

    mirror_profile = open_profile_stream(server, mirror)
    federated_profile = open_profile_stream(server, f"{fqn('web-federated', ns)}:80")
    for stream, name in ((mirror_profile, "web-west"), (federated_profile, "web-federated")):
        first = await stream.until(lambda p: p.fully_qualified_name != "", what=name)
        assert first.fully_qualified_name == fqn(name, ns)
        assert first.parent_ref.resource.name == name
        assert not first.opaque_protocol, "the local Service's annotation, not west's"
        assert first.profile_ref.resource.name == "", "west's ServiceProfile does not apply"

    # The local mirror's own annotation and a local ServiceProfile do.
    await east.core.patch_namespaced_service(
        "web-west", ns, {"metadata": {"annotations": {OPAQUE_PORTS: "http"}}}
    )
    await mirror_profile.until(lambda p: p.opaque_protocol, what="the mirror's annotation")
    for stream, name in ((mirror_profile, "web-west"), (federated_profile, "web-federated")):
        await put_service_profile(east, ns, fqn(name, ns), ONE_ROUTE)
        applied = await stream.until(lambda p: len(p.routes) == 1, what=f"{name}'s profile")
        assert applied.profile_ref.resource.namespace == ns
        assert stream.open
        stream.cancel()
    endpoints.call.cancel()
    federated_endpoints.call.cancel()
    await delete_link(east, cluster)
