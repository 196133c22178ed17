"""The local objects one Link should own, as exact manifests (reference §3.5-§3.9).

Scope: `mirror.desired.desired_state`. Inputs are real projections: the Link
through `mirror.links.project_link`, remote Services through
`mirror.remote.project_remote_service` and EndpointSlices through
`discovery.project.project_slice`, all from the raw builders. Checked:
gateway-mode Service and Endpoints (gateway IPs, every port sent to the
gateway port by name, `notReadyAddresses` while the gateway is dead, no
subsets while the remote has no ready endpoint, the gateway identity),
remote-discovery mirrors (labels, no Endpoints), a Service matching both
selectors (remote discovery wins), federated membership, missing namespaces,
names over 63 characters, headless Services with per-pod mirrors, and an
unresolved gateway (`keep`), and per-pod mirror names that collide with
other mirrors. Hypothesis tests check invariants over arbitrary remote
states, and over states whose names are chosen to collide: no orphan
Endpoints, names fit, every object is labelled as a mirror of this cluster,
no two mirrors share a name, one condition per handled Service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.models import ServiceRef, SliceInfo
from discovery.project import project_slice
from mirror.desired import Condition, Desired, ObjectKey, Situation, desired_state
from mirror.links import LinkSpec, project_link
from mirror.remote import RemoteService, RemoteView, project_remote_service
from tests.unit import builders

NS = "ns"
GATEWAY_IP = "203.0.113.10"
IDENTITY = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
EXPORTED = {"mirror.linkerd.io/exported": "true"}
REMOTE_DISCOVERY = {"mirror.linkerd.io/exported": "remote-discovery"}
MEMBER = {"mirror.linkerd.io/federated": "member"}
MIRROR_LABELS = {
    "mirror.linkerd.io/mirrored-service": "true",
    "mirror.linkerd.io/cluster-name": "east",
}
FQ = "mirror.linkerd.io/remote-svc-fq-name"
RV = "mirror.linkerd.io/remote-resource-version"
GATEWAY_IDENTITY = "mirror.linkerd.io/remote-gateway-identity"
HEADLESS_OF = "mirror.linkerd.io/headless-mirror-svc-name"


def link_spec(**fields: Any) -> LinkSpec:
    spec: dict[str, Any] = {
        "targetClusterName": "east",
        "targetClusterDomain": "cluster.local",
        "clusterCredentialsSecret": "cluster-credentials-east",
        "gatewayAddress": "gateway.east.example.com",
        "gatewayPort": "4143",
        "gatewayIdentity": IDENTITY,
        "probeSpec": {"path": "/ready", "port": "4191", "period": "3s"},
        "selector": {"matchLabels": EXPORTED},
        "remoteDiscoverySelector": {"matchLabels": REMOTE_DISCOVERY},
        "federatedServiceSelector": {"matchLabels": MEMBER},
    }
    spec.update(fields)
    link = project_link({"metadata": {"name": "east", "namespace": "mc"}, "spec": spec})
    assert link is not None and link.spec is not None, link
    return link.spec


def remote_service(
    name: str = "web",
    namespace: str = NS,
    *,
    labels: Mapping[str, str] = EXPORTED,
    ports: Sequence[tuple[str | None, int]] = (("http", 80),),
    headless: bool = False,
    **fields: Any,
) -> RemoteService:
    raw = builders.service(
        name,
        namespace,
        labels=labels,
        ports=ports,
        cluster_ip="None" if headless else "10.96.0.10",
        **fields,
    )
    service = project_remote_service(raw)
    assert service is not None
    return service


def remote_slice(service: str = "web", *endpoints: dict[str, Any], **fields: Any) -> SliceInfo:
    fields.setdefault("name", f"{service}-abc")
    info = project_slice(builders.endpoint_slice(service=service, endpoints=endpoints, **fields))
    assert isinstance(info, SliceInfo), info
    return info


def ready_slice(service: str = "web") -> SliceInfo:
    return remote_slice(service, builders.endpoint("10.1.0.1", pod=f"{service}-1"))


def view(*items: RemoteService | SliceInfo) -> RemoteView:
    remote = RemoteView()
    for item in items:
        if isinstance(item, RemoteService):
            remote.put_service(item)
        else:
            remote.put_slice(item)
    return remote


def situation(remote: RemoteView, link: LinkSpec | None = None, **fields: Any) -> Situation:
    values: dict[str, Any] = {
        "link": link or link_spec(),
        "remote": remote,
        "gateway_ips": (GATEWAY_IP,),
        "gateway_alive": True,
        "namespaces": frozenset({NS}),
    }
    values.update(fields)
    return Situation(**values)


def service_key(name: str, namespace: str = NS) -> ObjectKey:
    return ObjectKey("Service", namespace, name)


def endpoints_key(name: str, namespace: str = NS) -> ObjectKey:
    return ObjectKey("Endpoints", namespace, name)


def mirrored(remote: str, local: str, namespace: str = NS) -> Condition:
    return Condition(
        ServiceRef(namespace, remote), True, "Mirrored", local=ServiceRef(namespace, local)
    )


def nothing_written(desired: Desired) -> None:
    assert desired.objects == {}
    assert desired.keep == frozenset()
    assert desired.namespaces_to_create == frozenset()
    assert desired.members == ()


# -- gateway mode ------------------------------------------------------------------------------


def test_a_gateway_mode_mirror_is_a_service_and_endpoints_at_the_gateway() -> None:
    web = remote_service(
        labels=EXPORTED | {"app": "web"},
        annotations={"team": "a", "config.linkerd.io/opaque-ports": "9090"},
        ports=(("http", 80), ("grpc", 9090)),
        resource_version="42",
    )
    desired = desired_state(situation(view(web, ready_slice())))
    assert desired.objects == {
        service_key("web-east"): {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web-east",
                "namespace": NS,
                "labels": {"app": "web"} | MIRROR_LABELS,
                "annotations": {
                    "team": "a",
                    "config.linkerd.io/opaque-ports": "9090",
                    FQ: "web.ns.svc.cluster.local",
                    RV: "42",
                },
            },
            "spec": {
                "type": "ClusterIP",
                "ports": [
                    {"port": 80, "protocol": "TCP", "name": "http", "targetPort": 8080},
                    {"port": 9090, "protocol": "TCP", "name": "grpc", "targetPort": 17090},
                ],
            },
        },
        endpoints_key("web-east"): {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": "web-east",
                "namespace": NS,
                "labels": {"app": "web"} | MIRROR_LABELS,
                "annotations": {FQ: "web.ns.svc.cluster.local", GATEWAY_IDENTITY: IDENTITY},
            },
            "subsets": [
                {
                    "addresses": [{"ip": GATEWAY_IP}],
                    "ports": [
                        {"port": 4143, "protocol": "TCP", "name": "http"},
                        {"port": 4143, "protocol": "TCP", "name": "grpc"},
                    ],
                }
            ],
        },
    }
    assert desired.mirror_conditions == (mirrored("web", "web-east"),)
    assert desired.federated_conditions == ()
    assert desired.keep == frozenset()
    assert desired.members == ()


def test_every_gateway_ip_is_an_address_sorted_as_text() -> None:
    """Regression (§3.6): IPs were written in the order given, duplicates included."""
    ips = ("203.0.113.9", "198.51.100.20", "2001:db8::1", "203.0.113.10", "198.51.100.20")
    desired = desired_state(situation(view(remote_service(), ready_slice()), gateway_ips=ips))
    subsets = desired.objects[endpoints_key("web-east")]["subsets"]
    assert [a["ip"] for a in subsets[0]["addresses"]] == [
        "198.51.100.20",
        "2001:db8::1",
        "203.0.113.10",
        "203.0.113.9",
    ]


def test_the_gateway_port_of_the_link_is_every_endpoint_port() -> None:
    link = link_spec(gatewayPort="30143")
    web = remote_service(ports=(("http", 80), ("admin", 9990)))
    desired = desired_state(situation(view(web, ready_slice()), link))
    ports = desired.objects[endpoints_key("web-east")]["subsets"][0]["ports"]
    assert ports == [
        {"port": 30143, "protocol": "TCP", "name": "http"},
        {"port": 30143, "protocol": "TCP", "name": "admin"},
    ]


def test_a_dead_gateway_makes_every_address_not_ready() -> None:
    desired = desired_state(
        situation(
            view(remote_service(), ready_slice()),
            gateway_ips=("10.0.0.2", "10.0.0.1"),
            gateway_alive=False,
        )
    )
    assert desired.objects[endpoints_key("web-east")]["subsets"] == [
        {
            "notReadyAddresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
            "ports": [{"port": 4143, "protocol": "TCP", "name": "http"}],
        }
    ]
    assert desired.mirror_conditions == (mirrored("web", "web-east"),)


def test_a_remote_without_ready_endpoints_gives_endpoints_without_subsets() -> None:
    not_ready = remote_slice("web", builders.endpoint("10.1.0.1", pod="web-1", ready=False))
    no_addresses = remote_slice("web", builders.endpoint(pod="web-2"), name="web-def")
    for remote in (
        view(remote_service()),
        view(remote_service(), not_ready),
        view(remote_service(), not_ready, no_addresses),
        view(remote_service(), remote_slice("web", address_type="FQDN")),
    ):
        desired = desired_state(situation(remote))
        assert desired.objects[endpoints_key("web-east")]["subsets"] == []
        assert service_key("web-east") in desired.objects
        assert desired.mirror_conditions == (mirrored("web", "web-east"),)
    # One ready endpoint anywhere is enough.
    desired = desired_state(situation(view(remote_service(), not_ready, ready_slice())))
    assert desired.objects[endpoints_key("web-east")]["subsets"] != []


def test_endpoints_carry_the_identity_only_when_the_link_has_one() -> None:
    desired = desired_state(
        situation(view(remote_service(), ready_slice()), link_spec(gatewayIdentity=""))
    )
    assert desired.objects[endpoints_key("web-east")]["metadata"]["annotations"] == {
        FQ: "web.ns.svc.cluster.local"
    }


def test_the_target_cluster_domain_names_the_remote_service() -> None:
    desired = desired_state(
        situation(view(remote_service(), ready_slice()), link_spec(targetClusterDomain="east.dev"))
    )
    for kind in ("Service", "Endpoints"):
        annotations = desired.objects[ObjectKey(kind, NS, "web-east")]["metadata"]["annotations"]
        assert annotations[FQ] == "web.ns.svc.east.dev"


def test_service_and_endpoints_carry_the_same_labels() -> None:
    """Q22: both come from the remote labels of this round."""
    web = remote_service(labels=EXPORTED | {"version": "v2", "team": "a"})
    desired = desired_state(situation(view(web, ready_slice())))
    service_labels = desired.objects[service_key("web-east")]["metadata"]["labels"]
    assert desired.objects[endpoints_key("web-east")]["metadata"]["labels"] == service_labels
    assert service_labels == {"version": "v2", "team": "a"} | MIRROR_LABELS


def test_the_link_exclusions_apply_to_labels_and_annotations() -> None:
    link = link_spec(excludedLabels=["team", "helm.sh/*"], excludedAnnotations=["internal.io/*"])
    web = remote_service(
        labels=EXPORTED | {"team": "a", "helm.sh/chart": "web", "app": "web"},
        annotations={"internal.io/owner": "x", "public": "y"},
    )
    desired = desired_state(situation(view(web, ready_slice()), link))
    metadata = desired.objects[service_key("web-east")]["metadata"]
    assert metadata["labels"] == {"app": "web"} | MIRROR_LABELS
    assert metadata["annotations"] == {"public": "y", FQ: "web.ns.svc.cluster.local", RV: "1"}


def test_a_gateway_mirror_never_carries_remote_discovery_labels() -> None:
    """Regression: copied from the remote, they routed the mirror through another cluster."""
    web = remote_service(
        labels=EXPORTED
        | {
            "multicluster.linkerd.io/remote-discovery": "west",
            "multicluster.linkerd.io/remote-service": "payments",
        }
    )
    desired = desired_state(situation(view(web, ready_slice())))
    assert desired.objects[service_key("web-east")]["metadata"]["labels"] == MIRROR_LABELS


def test_an_unresolved_gateway_keeps_the_endpoints_as_they_are() -> None:
    """Regression for `()`: resolving to no address used to empty the mirror's Endpoints."""
    for ips in (None, ()):
        desired = desired_state(situation(view(remote_service(), ready_slice()), gateway_ips=ips))
        assert desired.keep == frozenset({endpoints_key("web-east")})
        assert endpoints_key("web-east") not in desired.objects
        assert service_key("web-east") in desired.objects
        (condition,) = desired.mirror_conditions  # not reported as mirrored meanwhile
        assert (condition.mirrored, condition.reason) == (False, "Error")
        assert condition.message.startswith("Failed to get gateway address")


def test_a_link_without_a_gateway_cannot_mirror_in_gateway_mode() -> None:
    for link in (link_spec(gatewayAddress=""), link_spec(gatewayPort=None)):
        desired = desired_state(situation(view(remote_service(), ready_slice()), link))
        nothing_written(desired)
        (condition,) = desired.mirror_conditions
        assert (condition.mirrored, condition.reason, condition.local) == (False, "Error", None)


def test_services_no_selector_matches_are_not_mirrored() -> None:
    remote = view(
        remote_service("a", labels={}),
        remote_service("b", labels={"mirror.linkerd.io/exported": "false"}),
        remote_service("c", labels={"app": "c"}),
    )
    desired = desired_state(situation(remote))
    nothing_written(desired)
    assert desired.mirror_conditions == desired.federated_conditions == ()
    # A Link without selectors (absent = nothing) mirrors nothing either.
    bare = link_spec(selector=None, remoteDiscoverySelector=None, federatedServiceSelector={})
    everything = view(remote_service(labels=EXPORTED | REMOTE_DISCOVERY | MEMBER))
    nothing_written(desired_state(situation(everything, bare)))


def test_a_service_without_ports_is_invalid_not_an_empty_cluster_ip_service() -> None:
    """Regression: it was written as a ClusterIP Service without ports, which the API refuses;
    and a mirror (or membership) it had before its ports went is kept, never deleted."""
    for labels in (EXPORTED, REMOTE_DISCOVERY, MEMBER):
        bare = remote_service(labels=labels, ports=(), type="ExternalName")
        desired = desired_state(situation(view(bare)))
        assert desired.objects == {}
        assert desired.namespaces_to_create == frozenset()
        assert desired.members == ()
        if labels is MEMBER:
            assert desired.keep == frozenset()
            assert desired.keep_members == frozenset({ServiceRef(NS, "web-federated")})
        else:
            assert desired.keep == {service_key("web-east"), endpoints_key("web-east")}
            assert desired.keep_members == frozenset()
        (condition,) = desired.mirror_conditions + desired.federated_conditions
        assert (condition.mirrored, condition.reason) == (False, "InvalidService")
        assert condition.message == "object spec has no exposed ports"


# -- remote discovery --------------------------------------------------------------------------


def test_a_remote_discovery_mirror_is_a_labelled_service_without_endpoints() -> None:
    web = remote_service(labels=REMOTE_DISCOVERY | {"app": "web"}, resource_version="7")
    desired = desired_state(situation(view(web, ready_slice()), gateway_ips=None))
    assert desired.objects == {
        service_key("web-east"): {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web-east",
                "namespace": NS,
                "labels": {"app": "web"}
                | MIRROR_LABELS
                | {
                    "multicluster.linkerd.io/remote-discovery": "east",
                    "multicluster.linkerd.io/remote-service": "web",
                },
                "annotations": {FQ: "web.ns.svc.cluster.local", RV: "7"},
            },
            "spec": {
                "type": "ClusterIP",
                "ports": [{"port": 80, "protocol": "TCP", "name": "http", "targetPort": 8080}],
            },
        }
    }
    assert desired.keep == frozenset()  # the gateway does not matter here
    assert desired.mirror_conditions == (mirrored("web", "web-east"),)


def test_remote_discovery_needs_no_gateway() -> None:
    link = link_spec(gatewayAddress="", gatewayPort=None, gatewayIdentity="", selector=None)
    desired = desired_state(situation(view(remote_service(labels=REMOTE_DISCOVERY)), link))
    assert set(desired.objects) == {service_key("web-east")}


def test_a_service_matching_both_selectors_is_mirrored_for_remote_discovery() -> None:
    link = link_spec(
        selector={"matchLabels": {"app": "web"}},
        remoteDiscoverySelector={"matchLabels": {"tier": "flat"}},
    )
    web = remote_service(labels={"app": "web", "tier": "flat"})
    desired = desired_state(situation(view(web, ready_slice()), link))
    assert set(desired.objects) == {service_key("web-east")}
    labels = desired.objects[service_key("web-east")]["metadata"]["labels"]
    assert labels["multicluster.linkerd.io/remote-discovery"] == "east"
    assert desired.mirror_conditions == (mirrored("web", "web-east"),)


# -- federated ---------------------------------------------------------------------------------


def test_a_federated_member_joins_and_writes_no_object_itself() -> None:
    web = remote_service(
        labels=MEMBER | {"app": "web"},
        annotations={"team": "a", "service.kubernetes.io/topology-mode": "Auto"},
    )
    desired = desired_state(situation(view(web)))
    assert desired.objects == {}
    (member,) = desired.members
    assert member.service == ServiceRef(NS, "web")
    assert dict(member.labels) == {"app": "web", "mirror.linkerd.io/mirrored-service": "true"}
    assert dict(member.annotations) == {"team": "a"}
    assert member.ports == web.ports
    assert desired.federated_conditions == (mirrored("web", "web-federated"),)
    assert desired.mirror_conditions == ()


def test_a_service_may_be_both_mirrored_and_a_federated_member() -> None:
    web = remote_service(labels=EXPORTED | MEMBER)
    desired = desired_state(situation(view(web, ready_slice())))
    assert set(desired.objects) == {service_key("web-east"), endpoints_key("web-east")}
    assert [m.service for m in desired.members] == [ServiceRef(NS, "web")]
    assert desired.mirror_conditions == (mirrored("web", "web-east"),)
    assert desired.federated_conditions == (mirrored("web", "web-federated"),)


def test_a_headless_service_cannot_join_a_federated_service() -> None:
    desired = desired_state(situation(view(remote_service(labels=MEMBER, headless=True))))
    assert desired.members == ()
    assert desired.federated_conditions == (
        Condition(
            ServiceRef(NS, "web"),
            False,
            "InvalidService",
            "Headless service cannot join federated service",
        ),
    )


# -- namespaces and names ----------------------------------------------------------------------


def test_a_missing_namespace_writes_nothing_and_says_so() -> None:
    remote = view(
        remote_service("web", "shop", labels=EXPORTED | MEMBER),
        remote_service("api", "shop", labels=REMOTE_DISCOVERY),
        remote_slice("web", builders.endpoint("10.1.0.1"), namespace="shop"),
    )
    desired = desired_state(situation(remote))
    nothing_written(desired)
    missing = ("MissingNamespace", "Namespace does not exist")
    assert [
        (c.remote.name, c.mirrored, c.reason, c.message) for c in desired.mirror_conditions
    ] == [
        ("api", False, *missing),
        ("web", False, *missing),
    ]
    assert [(c.remote.name, c.reason, c.local) for c in desired.federated_conditions] == [
        ("web", "MissingNamespace", None)
    ]


def test_with_namespace_creation_the_namespace_is_to_be_created() -> None:
    remote = view(
        remote_service("web", "shop", labels=EXPORTED | MEMBER),
        remote_slice("web", builders.endpoint("10.1.0.1"), namespace="shop"),
    )
    desired = desired_state(situation(remote, create_namespaces=True))
    assert desired.namespaces_to_create == frozenset({"shop"})
    assert set(desired.objects) == {
        service_key("web-east", "shop"),
        endpoints_key("web-east", "shop"),
    }
    assert desired.mirror_conditions == (mirrored("web", "web-east", "shop"),)
    assert desired.federated_conditions == (mirrored("web", "web-federated", "shop"),)
    # Existing namespaces are not created again.
    assert (
        desired_state(
            situation(view(remote_service()), create_namespaces=True)
        ).namespaces_to_create
        == frozenset()
    )


def test_names_over_63_characters_are_invalid_services() -> None:
    longest = "s" * 58  # "-east" makes 63
    too_long = "s" * 59
    remote = view(
        remote_service(longest, labels=REMOTE_DISCOVERY),
        remote_service(too_long, labels=EXPORTED),
        remote_service("f" * 54, labels=MEMBER),  # "-federated" makes 64
    )
    desired = desired_state(situation(remote))
    assert set(desired.objects) == {service_key(longest + "-east")}
    assert desired.members == ()
    (ok, invalid) = desired.mirror_conditions
    assert ok == mirrored(longest, longest + "-east")
    assert (invalid.remote.name, invalid.mirrored, invalid.reason) == (
        too_long,
        False,
        "InvalidService",
    )
    assert "longer than 63" in invalid.message
    (federated,) = desired.federated_conditions
    assert (federated.reason, federated.local) == ("InvalidService", None)


# -- headless ----------------------------------------------------------------------------------


def stateful_set(*hostnames: str, ready: bool = True, ports: Any = (("pg", 5432),)) -> SliceInfo:
    return remote_slice(
        "db",
        *(
            builders.endpoint(f"10.1.0.{i}", pod=name, hostname=name, ready=ready)
            for i, name in enumerate(hostnames, start=1)
        ),
        ports=ports,
        name=f"db-{'-'.join(hostnames) or 'empty'}-{ready}",
    )


DB = {"labels": EXPORTED | {"app": "db"}, "ports": (("pg", 5432),), "headless": True}


def test_a_headless_service_gets_a_headless_root_and_per_pod_mirrors() -> None:
    remote = view(
        remote_service("db", **DB, resource_version="9"),
        stateful_set("db-0", "db-1"),
        stateful_set("db-2", ready=False),
    )
    desired = desired_state(situation(remote, headless=True))
    root_labels = {"app": "db"} | MIRROR_LABELS
    pod_labels = root_labels | {HEADLESS_OF: "db-east"}
    service_ports = [{"port": 5432, "protocol": "TCP", "name": "pg", "targetPort": 13432}]
    gateway_ports = [{"port": 4143, "protocol": "TCP", "name": "pg"}]
    assert set(desired.objects) == {
        service_key("db-east"),
        endpoints_key("db-east"),
        service_key("db-0-east"),
        endpoints_key("db-0-east"),
        service_key("db-1-east"),
        endpoints_key("db-1-east"),
    }
    assert desired.objects[service_key("db-east")] == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "db-east",
            "namespace": NS,
            "labels": root_labels,
            "annotations": {FQ: "db.ns.svc.cluster.local", RV: "9"},
        },
        "spec": {"type": "ClusterIP", "ports": service_ports, "clusterIP": "None"},
    }
    assert desired.objects[service_key("db-0-east")] == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "db-0-east",
            "namespace": NS,
            "labels": pod_labels,
            "annotations": {FQ: "db-0.db.ns.svc.cluster.local", RV: "9"},
        },
        "spec": {"type": "ClusterIP", "ports": service_ports},
    }
    assert desired.objects[endpoints_key("db-1-east")] == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "db-1-east",
            "namespace": NS,
            "labels": pod_labels,
            "annotations": {FQ: "db-1.db.ns.svc.cluster.local", GATEWAY_IDENTITY: IDENTITY},
        },
        "subsets": [{"addresses": [{"ip": GATEWAY_IP}], "ports": gateway_ports}],
    }
    # The root's Endpoints point at the per-pod mirrors' cluster IPs: none known yet.
    assert desired.objects[endpoints_key("db-east")] == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "db-east",
            "namespace": NS,
            "labels": root_labels,
            "annotations": {FQ: "db.ns.svc.cluster.local", GATEWAY_IDENTITY: IDENTITY},
        },
        "subsets": [],
    }
    assert desired.mirror_conditions == (mirrored("db", "db-east"),)  # Q1: Mirrored


def test_the_headless_root_endpoints_point_at_known_cluster_ips_always_ready() -> None:
    remote = view(remote_service("db", **DB), stateful_set("db-0", "db-1"))
    cluster_ips = {(NS, "db-1-east"): "10.96.5.1", (NS, "db-0-east"): "10.96.5.0"}
    for alive in (True, False):
        desired = desired_state(
            situation(remote, headless=True, cluster_ips=cluster_ips, gateway_alive=alive)
        )
        assert desired.objects[endpoints_key("db-east")]["subsets"] == [
            {
                "addresses": [
                    {"hostname": "db-0", "ip": "10.96.5.0"},
                    {"hostname": "db-1", "ip": "10.96.5.1"},
                ],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            }
        ]
        pod_subsets = desired.objects[endpoints_key("db-0-east")]["subsets"]
        assert list(pod_subsets[0]) == ["addresses" if alive else "notReadyAddresses", "ports"]
    only_one = desired_state(
        situation(remote, headless=True, cluster_ips={(NS, "db-1-east"): "10.96.5.1"})
    )
    assert only_one.objects[endpoints_key("db-east")]["subsets"][0]["addresses"] == [
        {"hostname": "db-1", "ip": "10.96.5.1"}
    ]


def test_root_subsets_follow_the_remote_port_sets_and_protocols() -> None:
    """Regression: every root address was put in one subset with the ports of the last
    endpoint's slice, and every port was called TCP."""
    db = remote_service("db", labels=EXPORTED, ports=(("pg", 5432), ("stats", 9187)), headless=True)
    remote = view(
        db,
        stateful_set("db-0", ports=(("pg", 5432),)),
        stateful_set("db-1", ports=(("pg", 5432), ("stats", 9187))),
    )
    ips = {(NS, "db-0-east"): "10.96.5.0", (NS, "db-1-east"): "10.96.5.1"}
    desired = desired_state(situation(remote, headless=True, cluster_ips=ips))
    assert desired.objects[endpoints_key("db-east")]["subsets"] == [
        {
            "addresses": [{"hostname": "db-0", "ip": "10.96.5.0"}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        },
        {
            "addresses": [{"hostname": "db-1", "ip": "10.96.5.1"}],
            "ports": [
                {"name": "pg", "port": 5432, "protocol": "TCP"},
                {"name": "stats", "port": 9187, "protocol": "TCP"},
            ],
        },
    ]
    raw = builders.service("dns", labels=EXPORTED, ports=(("dns", 53),), cluster_ip="None")
    raw["spec"]["ports"][0]["protocol"] = "UDP"
    dns = project_remote_service(raw)
    assert dns is not None
    dns_slice = remote_slice(
        "dns", builders.endpoint("10.1.0.1", hostname="dns-0"), ports=(("dns", 53),)
    )
    desired = desired_state(
        situation(
            view(dns, dns_slice), headless=True, cluster_ips={(NS, "dns-0-east"): "10.96.6.0"}
        )
    )
    (subset,) = desired.objects[endpoints_key("dns-east")]["subsets"]
    assert subset["ports"] == [{"name": "dns", "port": 53, "protocol": "UDP"}]


def test_a_headless_mirror_stays_headless_while_its_pods_are_not_ready() -> None:
    """Regression (§3.8: any address with a hostname, ready or not): a StatefulSet whose
    pods were all restarting turned its mirror into a ClusterIP Service, a clusterIP the
    API server will not change back."""
    remote = view(remote_service("db", **DB), stateful_set("db-0", "db-1", ready=False))
    desired = desired_state(situation(remote, headless=True))
    assert desired.objects[service_key("db-east")]["spec"]["clusterIP"] == "None"
    assert desired.objects[endpoints_key("db-east")]["subsets"] == []
    assert set(desired.objects) == {service_key("db-east"), endpoints_key("db-east")}


def test_headless_without_hostnames_or_support_is_an_ordinary_gateway_mirror() -> None:
    deployment = remote_slice("db", builders.endpoint("10.1.0.1", pod="db-abc"))
    for remote, headless in (
        (view(remote_service("db", **DB), deployment), True),
        (view(remote_service("db", **DB), stateful_set("db-0")), False),
    ):
        desired = desired_state(situation(remote, headless=headless))
        assert set(desired.objects) == {service_key("db-east"), endpoints_key("db-east")}
        assert "clusterIP" not in desired.objects[service_key("db-east")]["spec"]
        assert desired.objects[endpoints_key("db-east")]["subsets"][0]["addresses"] == [
            {"ip": GATEWAY_IP}
        ]


def test_a_headless_service_exported_for_remote_discovery_is_a_remote_discovery_mirror() -> None:
    """Q2: never left unmirrored when headless support is on."""
    db = remote_service("db", labels=REMOTE_DISCOVERY, headless=True)
    desired = desired_state(situation(view(db, stateful_set("db-0")), headless=True))
    assert set(desired.objects) == {service_key("db-east")}
    spec = desired.objects[service_key("db-east")]["spec"]
    assert "clusterIP" not in spec
    assert desired.mirror_conditions == (mirrored("db", "db-east"),)


def test_per_pod_mirror_names_over_63_characters_are_skipped() -> None:
    long_host = "h" * 59
    remote = view(remote_service("db", **DB), stateful_set("db-0", long_host))
    desired = desired_state(situation(remote, headless=True))
    assert service_key("db-0-east") in desired.objects
    assert service_key(f"{long_host}-east") not in desired.objects
    assert endpoints_key(f"{long_host}-east") not in desired.objects
    assert all(len(key.name) <= 63 for key in desired.objects)


def test_per_pod_endpoints_follow_an_unresolved_gateway() -> None:
    remote = view(remote_service("db", **DB), stateful_set("db-0"))
    desired = desired_state(situation(remote, headless=True, gateway_ips=None))
    assert desired.keep == frozenset({endpoints_key("db-0-east")})
    assert endpoints_key("db-east") in desired.objects  # the root does not use the gateway


# -- names that collide ------------------------------------------------------------------------


def pods(service: str, *hostnames: str) -> SliceInfo:
    """A slice of `service` with one ready pod per hostname (pods of a StatefulSet)."""
    return remote_slice(
        service,
        *(
            builders.endpoint(f"10.2.0.{i}", pod=name, hostname=name)
            for i, name in enumerate(hostnames, start=1)
        ),
        ports=(("pg", 5432),),
    )


def taken(*reasons: str) -> str:
    return "per-pod mirrors not written, their names are taken: " + "; ".join(reasons)


def test_a_per_pod_mirror_never_takes_the_name_of_a_mirrored_service() -> None:
    """Regression: a Service `db-0` next to pod `db-0` of headless Service `db` (or a Service
    `a` next to pod `a` of `b`) made two desired objects named `db-0-east`; the last one
    written won, so a root's Endpoints pointed a hostname at another Service's ClusterIP and
    a Service could get the other's Endpoints. The handled Service's mirror keeps its name,
    in either order, gateway or remote-discovery mode."""
    for other, root, hostnames in (("db-0", "db", ("db-0", "db-1")), ("a", "b", ("a", "b-1"))):
        (lost, kept) = hostnames
        for labels in (EXPORTED, REMOTE_DISCOVERY):
            remote = view(
                remote_service(root, **DB),
                pods(root, *hostnames),
                remote_service(other, labels=labels),
                ready_slice(other),
            )
            ips = {(NS, f"{lost}-east"): "10.96.0.5", (NS, f"{kept}-east"): "10.96.0.6"}
            desired = desired_state(situation(remote, headless=True, cluster_ips=ips))
            mirror = desired.objects[service_key(f"{other}-east")]
            assert HEADLESS_OF not in mirror["metadata"]["labels"]
            assert mirror["metadata"]["annotations"][FQ] == f"{other}.ns.svc.cluster.local"
            if labels is EXPORTED:
                endpoints = desired.objects[endpoints_key(f"{other}-east")]
                assert endpoints["metadata"]["annotations"][FQ] == f"{other}.ns.svc.cluster.local"
                assert endpoints["subsets"][0]["addresses"] == [{"ip": GATEWAY_IP}]
            else:
                assert endpoints_key(f"{other}-east") not in desired.objects
            # The root points only at its own per-pod mirror, never at the other's ClusterIP.
            (subset,) = desired.objects[endpoints_key(f"{root}-east")]["subsets"]
            assert subset["addresses"] == [{"hostname": kept, "ip": "10.96.0.6"}]
            pod = desired.objects[service_key(f"{kept}-east")]["metadata"]
            assert pod["labels"][HEADLESS_OF] == f"{root}-east"
            assert desired.keep == frozenset()
            lost_reason = f"{lost}-east (hostname {lost}) is the name of Service {other}'s mirror"
            assert set(desired.mirror_conditions) == {
                Condition(ServiceRef(NS, root), False, "InvalidService", taken(lost_reason)),
                mirrored(other, f"{other}-east"),
            }


def test_a_headless_service_named_like_one_of_its_pods_keeps_its_root() -> None:
    """Regression: Service `db-0` governing StatefulSet pods `db-0` and `db-1` wrote its root
    and the per-pod mirror of `db-0` under one name: a ClusterIP Service with the root's
    Endpoints (hostnames, always ready), and with an unresolved gateway those Endpoints were
    both kept as they are and desired."""
    remote = view(remote_service("db-0", **DB), pods("db-0", "db-0", "db-1"))
    ips = {(NS, "db-0-east"): "10.96.0.5", (NS, "db-1-east"): "10.96.0.6"}
    for gateway_ips in ((GATEWAY_IP,), None):
        desired = desired_state(
            situation(remote, headless=True, cluster_ips=ips, gateway_ips=gateway_ips)
        )
        assert set(desired.objects) == {
            service_key("db-0-east"),
            endpoints_key("db-0-east"),
            service_key("db-1-east"),
        } | ({endpoints_key("db-1-east")} if gateway_ips else set())
        assert desired.objects[service_key("db-0-east")]["spec"]["clusterIP"] == "None"
        assert HEADLESS_OF not in desired.objects[service_key("db-0-east")]["metadata"]["labels"]
        (subset,) = desired.objects[endpoints_key("db-0-east")]["subsets"]
        assert subset["addresses"] == [{"hostname": "db-1", "ip": "10.96.0.6"}]
        assert desired.keep == (frozenset() if gateway_ips else {endpoints_key("db-1-east")})
        (condition,) = desired.mirror_conditions
        if gateway_ips:  # an unresolved gateway says so first: nothing moves meanwhile
            assert condition == Condition(
                ServiceRef(NS, "db-0"),
                False,
                "InvalidService",
                taken("db-0-east (hostname db-0) is the name of this Service's own mirror"),
            )
        else:
            assert condition.message.startswith("Failed to get gateway address")


def test_two_headless_services_never_share_a_per_pod_mirror() -> None:
    """Regression: pods of two headless Services with the same hostname `x` gave one
    `x-east` to both; the later Service's won, so the first one's root Endpoints sent `x`
    to the other Service's pod. The Service that sorts first keeps the name."""
    remote = view(
        remote_service("a", **DB),
        pods("a", "x"),
        remote_service("b", **DB),
        pods("b", "x", "y"),
    )
    ips = {(NS, "x-east"): "10.96.0.7", (NS, "y-east"): "10.96.0.8"}
    desired = desired_state(situation(remote, headless=True, cluster_ips=ips))
    x = desired.objects[service_key("x-east")]["metadata"]
    assert x["labels"][HEADLESS_OF] == "a-east"
    assert x["annotations"][FQ] == "x.a.ns.svc.cluster.local"
    x_endpoints = desired.objects[endpoints_key("x-east")]["metadata"]
    assert x_endpoints["annotations"][FQ] == "x.a.ns.svc.cluster.local"
    assert desired.objects[endpoints_key("a-east")]["subsets"][0]["addresses"] == [
        {"hostname": "x", "ip": "10.96.0.7"}
    ]
    assert desired.objects[endpoints_key("b-east")]["subsets"][0]["addresses"] == [
        {"hostname": "y", "ip": "10.96.0.8"}
    ]
    assert desired.mirror_conditions == (
        mirrored("a", "a-east"),
        Condition(
            ServiceRef(NS, "b"),
            False,
            "InvalidService",
            taken("x-east (hostname x) is the per-pod mirror of hostname x of Service a"),
        ),
    )


def test_a_collision_message_names_at_most_three_per_pod_mirrors() -> None:
    names = ("p1", "p2", "p3", "p4", "p5")
    remote = view(
        remote_service("db", **DB),
        pods("db", *names),
        *(remote_service(name) for name in names),
    )
    desired = desired_state(situation(remote, headless=True))
    assert not any(HEADLESS_OF in m["metadata"]["labels"] for m in desired.objects.values())
    condition = desired.mirror_conditions[0]
    assert condition.remote == ServiceRef(NS, "db")
    assert condition.message == taken(
        *(f"{n}-east (hostname {n}) is the name of Service {n}'s mirror" for n in names[:3]),
        "and 2 more",
    )


# -- properties --------------------------------------------------------------------------------

LABEL_SETS = st.sampled_from(
    [{}, EXPORTED, REMOTE_DISCOVERY, MEMBER, EXPORTED | MEMBER, REMOTE_DISCOVERY | MEMBER]
)
SERVICE_NAMES = st.sampled_from(["web", "db", "api", "x" * 58, "y" * 60, "db-0"])
HOSTNAMES = st.sampled_from(["db-0", "db-1", "web", "h" * 60])
NAMESPACES = st.sampled_from([NS, "other"])


@st.composite
def remote_views(
    draw: st.DrawFn,
    names: st.SearchStrategy[str] = SERVICE_NAMES,
    hostnames: st.SearchStrategy[str] = HOSTNAMES,
    label_sets: st.SearchStrategy[dict[str, str]] = LABEL_SETS,
    namespaces: st.SearchStrategy[str] = NAMESPACES,
) -> RemoteView:
    remote = RemoteView()
    for name, namespace in draw(st.lists(st.tuples(names, namespaces), max_size=5, unique=True)):
        remote.put_service(
            remote_service(
                name,
                namespace,
                labels=draw(label_sets),
                ports=draw(st.sampled_from([(), (("http", 80),), (("a", 1), ("b", 2))])),
                headless=draw(st.booleans()),
            )
        )
        for index in range(draw(st.integers(0, 2))):
            endpoints = [
                builders.endpoint(
                    f"10.1.{index}.{i}",
                    hostname=draw(st.none() | hostnames),
                    ready=draw(st.booleans()),
                )
                for i in range(draw(st.integers(0, 3)))
            ]
            remote.put_slice(
                remote_slice(name, *endpoints, namespace=namespace, name=f"{name}-{index}")
            )
    return remote


@settings(max_examples=150, deadline=None)
@given(
    remote_views(),
    st.sampled_from([None, (), (GATEWAY_IP,), ("10.0.0.2", "10.0.0.1")]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([{}, {(NS, "db-0-east"): "10.96.0.5"}]),
)
def test_desired_state_invariants(
    remote: RemoteView,
    ips: tuple[str, ...] | None,
    alive: bool,
    headless: bool,
    create: bool,
    cluster_ips: dict[tuple[str, str], str],
) -> None:
    link = link_spec()
    current = situation(
        remote,
        link,
        gateway_ips=ips,
        gateway_alive=alive,
        headless=headless,
        create_namespaces=create,
        cluster_ips=cluster_ips,
    )
    check_invariants(current)


# Names that collide: Services named like other Services' pods, pods of two Services
# with one hostname, a headless Service named like its own pod (`db-0`).
COLLIDING = ["db", "db-0", "db-1", "web"]
COLLIDING_IPS = {(NS, f"{name}-east"): f"10.96.0.{i}" for i, name in enumerate(COLLIDING)}


@settings(max_examples=150, deadline=None)
@given(
    remote_views(
        names=st.sampled_from(COLLIDING),
        hostnames=st.sampled_from(COLLIDING[1:]),
        label_sets=st.sampled_from([EXPORTED, EXPORTED, REMOTE_DISCOVERY, {}]),
        namespaces=st.just(NS),
    ),
    st.sampled_from([None, (GATEWAY_IP,)]),
    st.booleans(),
    st.sampled_from([{}, COLLIDING_IPS]),
)
def test_mirror_names_never_collide(
    remote: RemoteView,
    ips: tuple[str, ...] | None,
    alive: bool,
    cluster_ips: dict[tuple[str, str], str],
) -> None:
    """`check_invariants`, with headless support on and names chosen to collide (the
    cluster IPs are those the worker sees, root mirrors' included)."""
    check_invariants(
        situation(
            remote, gateway_ips=ips, gateway_alive=alive, headless=True, cluster_ips=cluster_ips
        )
    )


def check_invariants(current: Situation) -> None:
    remote, link, ips = current.remote, current.link, current.gateway_ips
    alive, cluster_ips = current.gateway_alive, current.cluster_ips
    desired = desired_state(current)
    assert desired_state(current) == desired  # a pure function

    namespaces = {NS} | set(desired.namespaces_to_create)
    assert desired.namespaces_to_create <= {"other"}
    for key, manifest in desired.objects.items():
        assert len(key.name) <= 63
        assert key.namespace in namespaces
        metadata = manifest["metadata"]
        assert (manifest["kind"], metadata["namespace"], metadata["name"]) == key
        assert metadata["labels"]["mirror.linkerd.io/mirrored-service"] == "true"
        assert metadata["labels"]["mirror.linkerd.io/cluster-name"] == "east"
        if key.kind == "Endpoints":
            # Q3: never an Endpoints without its Service
            service = desired.objects[ObjectKey("Service", key.namespace, key.name)]
            assert "multicluster.linkerd.io/remote-discovery" not in service["metadata"]["labels"]
            root = service["spec"].get("clusterIP") == "None"
            for subset in manifest["subsets"]:
                if not root:
                    assert ("addresses" in subset) is alive
                    assert ips  # no gateway address, no gateway subset
        else:
            assert manifest["spec"]["ports"]
    assert not desired.keep & set(desired.objects)
    # No two mirrors share a name: each Endpoints is its own Service's, a root's hostname
    # points at its own per-pod mirror, a per-pod mirror's root is a headless root mirror.
    for key, manifest in desired.objects.items():
        metadata = manifest["metadata"]
        service = desired.objects[ObjectKey("Service", key.namespace, key.name)]["metadata"]
        if key.kind == "Endpoints":
            assert metadata["labels"] == service["labels"]
            assert metadata["annotations"][FQ] == service["annotations"][FQ]
            for subset in manifest["subsets"]:
                for address in subset.get("addresses", []) + subset.get("notReadyAddresses", []):
                    if "hostname" in address:
                        pod = (key.namespace, f"{address['hostname']}-east")
                        assert address["ip"] == cluster_ips[pod]
                        pod_labels = desired.objects[ObjectKey("Service", *pod)]["metadata"][
                            "labels"
                        ]
                        assert pod_labels[HEADLESS_OF] == key.name
        elif HEADLESS_OF in metadata["labels"]:
            root = desired.objects[
                ObjectKey("Service", key.namespace, metadata["labels"][HEADLESS_OF])
            ]
            assert root["spec"]["clusterIP"] == "None"
            assert HEADLESS_OF not in root["metadata"]["labels"]
            assert metadata["annotations"][FQ].endswith("." + root["metadata"]["annotations"][FQ])
    # Kept whole: the mirror of a Service that has no ports (it may have had some).
    portless = {
        ObjectKey(kind, c.remote.namespace, f"{c.remote.name}-east")
        for c in desired.mirror_conditions
        if c.message == "object spec has no exposed ports"
        for kind in ("Service", "Endpoints")
    }
    assert all(key.kind == "Endpoints" or key in portless for key in desired.keep)
    if ips:
        assert desired.keep <= portless

    # One condition per handled Service; a Mirrored one names a desired Service.
    handled = [
        ref
        for ref, s in sorted(remote.services.items())
        if link.selector.matches(s.label_map())
        or link.remote_discovery_selector.matches(s.label_map())
    ]
    assert [c.remote for c in desired.mirror_conditions] == handled
    for condition in desired.mirror_conditions:
        if condition.mirrored:
            assert condition.local is not None
            assert ObjectKey("Service", *condition.local) in desired.objects
            root = desired.objects[ObjectKey("Service", *condition.local)]
            if root["spec"].get("clusterIP") == "None":  # Mirrored: every per-pod mirror written
                for endpoint in remote.headless_endpoints(condition.remote):
                    pod = ObjectKey(
                        "Service", condition.local.namespace, f"{endpoint.hostname}-east"
                    )
                    if len(pod.name) <= 63:
                        pod_labels = desired.objects[pod]["metadata"]["labels"]
                        assert pod_labels[HEADLESS_OF] == condition.local.name
        else:
            assert condition.local is None
    federated = [
        ref
        for ref, s in sorted(remote.services.items())
        if link.federated_selector.matches(s.label_map())
    ]
    assert [c.remote for c in desired.federated_conditions] == federated
    assert [m.service for m in desired.members] == [
        c.remote for c in desired.federated_conditions if c.mirrored
    ]


# -- hostile names -----------------------------------------------------------------------------


def test_remote_names_that_are_not_dns_labels_are_ignored() -> None:
    """Regression: any string was taken as a Service's name or namespace, and became a local
    object name and an API path (`a/../../x-east`)."""
    for name, namespace in [
        ("a/../../endpoints/x", NS),
        ("Web", NS),
        ("web.v2", NS),
        ("-web", NS),
        ("w" * 64, NS),
        ("web", "kube/../system"),
        ("web", "NS"),
        ("web", ""),
        ("", NS),
    ]:
        raw = builders.service("x", labels=EXPORTED)
        raw["metadata"]["name"], raw["metadata"]["namespace"] = name, namespace
        assert project_remote_service(raw) is None, (name, namespace)


def test_endpoint_hostnames_that_are_not_dns_labels_get_no_per_pod_mirror() -> None:
    """Regression: a hostname became a per-pod mirror's name as it was."""
    bad = remote_slice(
        "db",
        builders.endpoint("10.1.0.1", hostname="DB_0"),
        builders.endpoint("10.1.0.2", hostname="a.b"),
        ports=(("pg", 5432),),
    )
    desired = desired_state(situation(view(remote_service("db", **DB), bad), headless=True))
    # No usable hostname: an ordinary gateway mirror (§3.8, like a Deployment's pods).
    assert set(desired.objects) == {service_key("db-east"), endpoints_key("db-east")}
    assert "clusterIP" not in desired.objects[service_key("db-east")]["spec"]
    mixed = view(remote_service("db", **DB), bad, stateful_set("db-0"))
    desired = desired_state(situation(mixed, headless=True))
    assert {key.name for key in desired.objects} == {"db-east", "db-0-east"}


def test_an_existing_headless_mirror_stays_headless_when_the_remote_scales_to_zero() -> None:
    """Changing the form means deleting and re-creating the mirror: a StatefulSet scaled
    to zero for a while keeps its headless mirror (without endpoints)."""
    remote = view(remote_service("db", **DB))  # no slices: scaled to zero
    fresh = desired_state(situation(remote, headless=True))
    assert "clusterIP" not in fresh.objects[service_key("db-east")]["spec"]  # new: ordinary
    kept = desired_state(
        situation(remote, headless=True, headless_mirrors=frozenset({(NS, "db-east")}))
    )
    assert kept.objects[service_key("db-east")]["spec"]["clusterIP"] == "None"
    assert kept.objects[endpoints_key("db-east")]["subsets"] == []


def test_a_remote_view_keeps_at_most_its_limit_of_each_kind() -> None:
    """Regression: `--remote-max-objects-per-kind` was accepted and never applied, so a
    target inventing Services grew the controller's memory without bound."""
    remote = RemoteView(limit=2)
    services = [remote_service(name) for name in ("a", "b", "c")]
    remote.replace_services(services)
    assert sorted(ref.name for ref in remote.services) == ["a", "b"]
    remote.put_service(remote_service("d"))
    assert "d" not in {ref.name for ref in remote.services}
    updated = remote_service("a", labels={"team": "x"})
    remote.put_service(updated)  # one already held is always updated
    assert remote.services[updated.service] is updated
    remote.replace_slices([remote_slice(name) for name in ("a", "b", "c")])
    assert len(remote.slices) == 2
    assert remote.refused == 3
