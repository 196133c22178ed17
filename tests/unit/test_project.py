"""Unit tests for discovery.project: raw Kubernetes JSON into slim records.

Scope: every field each projection reads, from objects built by
`tests.unit.builders` (shaped like API list/watch JSON). Services: ports,
ExternalName, internalTrafficPolicy, cluster IPs, the opaque-ports annotation
and the multicluster markers. EndpointSlices: which Service they belong to,
`ports: null` versus `[]`, readiness, hints, targetRefs and the mirror
annotations. Pods: IPs, owner, mesh membership, opaque and skip-inbound ports
(with named ports of init containers), the `linkerd-proxy` listen addresses
and termination. Nodes, ReplicaSets and Jobs. Malformed objects of every kind
give an `Invalid` and never raise.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from discovery.models import (
    ContainerPort,
    Kind,
    NodeInfo,
    ObjectRef,
    OwnerRef,
    PodInfo,
    ProxyPorts,
    ServiceInfo,
    ServicePort,
    ServiceRef,
    SliceInfo,
    SlicePort,
    TargetRef,
    WorkloadOwner,
)
from discovery.ports import PortSet
from discovery.project import (
    Invalid,
    object_key,
    parse_listen_port,
    project,
    project_node,
    project_pod,
    project_service,
    project_slice,
    project_workload_owner,
)
from tests.unit import builders as b


def _service(raw: dict[str, Any]) -> ServiceInfo:
    info = project_service(raw)
    assert isinstance(info, ServiceInfo), info
    return info


def _slice(raw: dict[str, Any]) -> SliceInfo:
    info = project_slice(raw)
    assert isinstance(info, SliceInfo), info
    return info


def _pod(raw: dict[str, Any], warnings: list[str] | None = None) -> PodInfo:
    info = project_pod(raw, on_warning=None if warnings is None else warnings.append)
    assert isinstance(info, PodInfo), info
    return info


# --------------------------------------------------------------------------
# Services


def test_a_service_keeps_its_ref_and_every_port_with_unnamed_ports_named_empty() -> None:
    info = _service(b.service("api", "shop", ports=[("http", 80), (None, 9000), ("grpc", 9090)]))

    assert info.ref == ServiceRef("shop", "api")
    assert info.ports == (ServicePort("http", 80), ServicePort("", 9000), ServicePort("grpc", 9090))


def test_a_service_without_ports_has_an_empty_port_tuple() -> None:
    assert _service(b.service(ports=())).ports == ()


@pytest.mark.parametrize(
    ("port", "name"),
    [
        pytest.param(80, "http", id="declared-named-port"),
        pytest.param(9000, "", id="declared-unnamed-port-is-empty-name"),
        pytest.param(8080, None, id="undeclared-port-is-none"),
    ],
)
def test_port_name_looks_a_service_port_up_by_number(port: int, name: str | None) -> None:
    info = _service(b.service(ports=[("http", 80), (None, 9000)]))
    assert info.port_name(port) == name


@pytest.mark.parametrize(
    ("service_type", "external"),
    [
        pytest.param("ClusterIP", False, id="cluster-ip"),
        pytest.param("NodePort", False, id="node-port"),
        pytest.param("LoadBalancer", False, id="load-balancer"),
        pytest.param("ExternalName", True, id="external-name"),
    ],
)
def test_only_an_external_name_service_is_marked_external(
    service_type: str, external: bool
) -> None:
    raw = b.service(type=service_type, external_name="db.example.com", cluster_ip=None)
    assert _service(raw).is_external_name is external


@pytest.mark.parametrize(
    ("policy", "local"),
    [
        pytest.param(None, False, id="absent"),
        pytest.param("Cluster", False, id="cluster"),
        pytest.param("Local", True, id="local"),
    ],
)
def test_internal_traffic_policy_local_is_the_only_local_policy(
    policy: str | None, local: bool
) -> None:
    assert _service(b.service(internal_traffic_policy=policy)).internal_traffic_local is local


@pytest.mark.parametrize(
    ("cluster_ip", "cluster_ips", "expected"),
    [
        pytest.param("10.96.0.10", None, ("10.96.0.10",), id="cluster-ip-only"),
        pytest.param(
            "10.96.0.10",
            ["10.96.0.10", "fd00::10"],
            ("10.96.0.10", "fd00::10"),
            id="cluster-ips-dual-stack-wins",
        ),
        pytest.param("None", ["None"], (), id="headless-none-is-dropped"),
        pytest.param("None", None, (), id="headless-cluster-ip-only"),
        pytest.param(None, None, (), id="no-ip-at-all"),
        pytest.param("", [], (), id="empty-values"),
    ],
)
def test_cluster_ips_prefer_the_list_and_drop_headless_none(
    cluster_ip: str | None, cluster_ips: list[str] | None, expected: tuple[str, ...]
) -> None:
    raw = b.service(cluster_ip=cluster_ip, cluster_ips=cluster_ips)
    assert _service(raw).cluster_ips == expected


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param(None, None, id="absent-is-none-so-defaults-apply"),
        pytest.param({"config.linkerd.io/opaque-ports": ""}, "", id="empty-is-kept-as-no-ports"),
        pytest.param(
            {"config.linkerd.io/opaque-ports": "3306,http"}, "3306,http", id="present-kept-raw"
        ),
    ],
)
def test_the_service_opaque_ports_annotation_is_kept_raw_and_absence_is_none(
    annotations: dict[str, str] | None, expected: str | None
) -> None:
    assert _service(b.service(annotations=annotations)).opaque_ports_annotation == expected


def test_a_plain_service_has_no_multicluster_markers() -> None:
    info = _service(b.service())
    assert info.remote_discovery_cluster is None
    assert info.remote_service is None
    assert info.federated_remote is None
    assert info.federated_local is None


def test_remote_discovery_is_read_from_labels() -> None:
    raw = b.service(
        "web-west",
        labels={
            "multicluster.linkerd.io/remote-discovery": "west",
            "multicluster.linkerd.io/remote-service": "web",
        },
    )
    info = _service(raw)
    assert info.remote_discovery_cluster == "west"
    assert info.remote_service == "web"
    assert info.federated_remote is None
    assert info.federated_local is None


def test_federation_is_read_from_annotations_not_labels() -> None:
    raw = b.service(
        "web-federated",
        annotations={
            "multicluster.linkerd.io/remote-discovery": "web@west,web@north",
            "multicluster.linkerd.io/local-discovery": "web",
        },
    )
    info = _service(raw)
    assert info.federated_remote == "web@west,web@north"
    assert info.federated_local == "web"
    assert info.remote_discovery_cluster is None


# --------------------------------------------------------------------------
# EndpointSlices


def test_a_slice_belongs_to_the_service_named_by_its_label_in_its_own_namespace() -> None:
    info = _slice(b.endpoint_slice("web-x1", "shop", service="web"))
    assert info.ref == ObjectRef("shop", "web-x1")
    assert info.service == ServiceRef("shop", "web")


def test_a_slice_without_the_label_belongs_to_its_service_owner() -> None:
    info = _slice(b.endpoint_slice(service=None, owner_service="legacy"))
    assert info.service == ServiceRef(b.NS, "legacy")


def test_the_service_label_wins_over_a_service_owner() -> None:
    info = _slice(b.endpoint_slice(service="by-label", owner_service="by-owner"))
    assert info.service.name == "by-label"


def test_a_slice_owned_by_something_else_than_a_service_is_invalid() -> None:
    raw = b.endpoint_slice(service=None)
    raw["metadata"]["ownerReferences"] = [b.owner_ref("Deployment", "web")]
    result = project_slice(raw)
    assert isinstance(result, Invalid)
    assert result.kind is Kind.ENDPOINT_SLICE


def test_a_slice_naming_no_service_is_invalid_with_the_reason() -> None:
    result = project_slice(b.endpoint_slice("orphan", service=None))
    assert result == Invalid(
        Kind.ENDPOINT_SLICE, f"{b.NS}/orphan", "EndpointSlice names no Service (label or owner)"
    )


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        pytest.param(None, None, id="null-ports-contribute-nothing"),
        pytest.param((), (), id="empty-list-is-not-null"),
        pytest.param(
            [("http", 8080), (None, 9000)],
            (SlicePort("http", 8080), SlicePort("", 9000)),
            id="named-and-unnamed",
        ),
    ],
)
def test_slice_ports_distinguish_null_from_empty(
    ports: list[b.PortSpec] | None, expected: tuple[SlicePort, ...] | None
) -> None:
    assert _slice(b.endpoint_slice(ports=ports)).ports == expected


def test_a_slice_port_without_a_number_is_left_out() -> None:
    raw = b.endpoint_slice(ports=[("http", 8080)])
    raw["ports"].append({"name": "all", "port": None, "protocol": "TCP"})
    assert _slice(raw).ports == (SlicePort("http", 8080),)


@pytest.mark.parametrize(
    ("ready", "expected"),
    [
        pytest.param(None, True, id="unset-counts-as-ready"),
        pytest.param(True, True, id="true"),
        pytest.param(False, False, id="false"),
    ],
)
def test_endpoint_readiness_treats_unset_as_ready(ready: bool | None, expected: bool) -> None:
    raw = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", ready=ready)])
    assert _slice(raw).endpoints[0].ready is expected


def test_an_endpoint_without_conditions_is_ready() -> None:
    raw = b.endpoint_slice(endpoints=[{"addresses": ["10.0.0.1"]}])
    assert _slice(raw).endpoints[0].ready is True


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        pytest.param(None, None, id="no-hints"),
        pytest.param([], None, id="empty-for-zones-is-no-hints"),
        pytest.param(["zone-a"], frozenset({"zone-a"}), id="one-zone"),
        pytest.param(["zone-b", "zone-a"], frozenset({"zone-a", "zone-b"}), id="two-zones"),
    ],
)
def test_zone_hints_become_a_frozenset_and_empty_means_none(
    hints: list[str] | None, expected: frozenset[str] | None
) -> None:
    raw = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", hints=hints)])
    assert _slice(raw).endpoints[0].zone_hints == expected


def test_an_endpoint_copies_addresses_hostname_node_zone_and_pod_target() -> None:
    raw = b.endpoint_slice(
        endpoints=[
            b.endpoint(
                "10.0.0.7", pod="db-0", hostname="db-0", node="node-b", zone="zone-b", ready=True
            )
        ]
    )
    (ep,) = _slice(raw).endpoints
    assert ep.addresses == ("10.0.0.7",)
    assert ep.hostname == "db-0"
    assert ep.node_name == "node-b"
    assert ep.zone == "zone-b"
    assert ep.target == TargetRef(kind="Pod", namespace=b.NS, name="db-0")


def test_an_endpoint_without_optional_fields_has_none_for_them() -> None:
    raw = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.7", node=None)])
    (ep,) = _slice(raw).endpoints
    assert (ep.hostname, ep.node_name, ep.zone, ep.zone_hints, ep.target) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_a_target_ref_without_namespace_has_an_empty_namespace() -> None:
    raw = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.7", pod="web-1", pod_namespace=None)])
    assert _slice(raw).endpoints[0].target == TargetRef("Pod", "", "web-1")


def test_a_target_ref_of_another_kind_is_kept_with_its_kind() -> None:
    raw = b.endpoint_slice(
        endpoints=[b.endpoint("10.0.0.7", pod="vm-1", target_kind="ExternalWorkload")]
    )
    assert _slice(raw).endpoints[0].target == TargetRef("ExternalWorkload", b.NS, "vm-1")


@pytest.mark.parametrize(
    ("address_type", "expected"),
    [
        pytest.param("IPv4", "IPv4", id="ipv4"),
        pytest.param("IPv6", "IPv6", id="ipv6"),
        pytest.param("FQDN", "FQDN", id="fqdn"),
        pytest.param(None, "IPv4", id="absent-is-ipv4"),
    ],
)
def test_the_address_type_is_kept(address_type: str | None, expected: str) -> None:
    raw = b.endpoint_slice()
    if address_type is None:
        del raw["addressType"]
    else:
        raw["addressType"] = address_type
    assert _slice(raw).address_type == expected


def test_null_endpoints_are_an_empty_tuple() -> None:
    raw = b.endpoint_slice()
    raw["endpoints"] = None
    assert _slice(raw).endpoints == ()


GATEWAY_IDENTITY = "gateway.linkerd-multicluster.serviceaccount.identity.linkerd.west.local"


def test_mirror_annotations_and_cluster_label_are_read_from_a_gateway_slice() -> None:
    raw = b.endpoint_slice(
        "web-west-gw",
        service="web-west",
        labels={"mirror.linkerd.io/cluster-name": "west"},
        annotations={
            "mirror.linkerd.io/remote-gateway-identity": GATEWAY_IDENTITY,
            "mirror.linkerd.io/remote-svc-fq-name": "web.ns.svc.west.local",
        },
        endpoints=[b.endpoint("172.18.0.5")],
    )
    info = _slice(raw)
    assert info.gateway_identity == GATEWAY_IDENTITY
    assert info.remote_fq_name == "web.ns.svc.west.local"
    assert info.mirror_cluster == "west"


def test_empty_mirror_annotations_are_none() -> None:
    raw = b.endpoint_slice(
        labels={"mirror.linkerd.io/cluster-name": ""},
        annotations={
            "mirror.linkerd.io/remote-gateway-identity": "",
            "mirror.linkerd.io/remote-svc-fq-name": "",
        },
    )
    info = _slice(raw)
    assert (info.gateway_identity, info.remote_fq_name, info.mirror_cluster) == (None, None, None)


# --------------------------------------------------------------------------
# Pods


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]},
            ("10.0.0.1", "fd00::1"),
            id="pod-ips-dual-stack",
        ),
        pytest.param({"podIP": "10.0.0.1"}, ("10.0.0.1",), id="pod-ip-only"),
        pytest.param(
            {"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.1"}]},
            ("10.0.0.1",),
            id="pod-ips-win-over-pod-ip",
        ),
        pytest.param({"podIP": "10.0.0.1", "podIPs": []}, ("10.0.0.1",), id="empty-list"),
        pytest.param({"podIPs": [{"ip": ""}, {}]}, (), id="entries-without-ip"),
        pytest.param({}, (), id="pending-pod-has-none"),
    ],
)
def test_pod_ips_come_from_pod_ips_else_pod_ip(
    status: dict[str, Any], expected: tuple[str, ...]
) -> None:
    raw = b.pod()
    raw["status"] = {"phase": "Running", **status}
    assert _pod(raw).ips == expected


def test_a_pod_keeps_ref_node_phase_and_service_account() -> None:
    info = _pod(b.pod("web-1", "shop", node="node-b", phase="Pending", service_account="api"))
    assert info.ref == ObjectRef("shop", "web-1")
    assert info.node_name == "node-b"
    assert info.phase == "Pending"
    assert info.service_account == "api"


def test_a_pod_without_service_account_or_node_gets_default_and_empty() -> None:
    info = _pod(b.pod(service_account=None, node=None))
    assert info.service_account == "default"
    assert info.node_name == ""


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        pytest.param([], None, id="no-owner"),
        pytest.param(
            [b.owner_ref("ReplicaSet", "web-5d8f")],
            OwnerRef("ReplicaSet", "web-5d8f"),
            id="single-owner",
        ),
        pytest.param(
            [b.owner_ref("ReplicaSet", "a"), b.owner_ref("Something", "b")],
            None,
            id="several-owners-are-none",
        ),
    ],
)
def test_only_a_single_owner_reference_is_kept(
    owners: list[dict[str, Any]], expected: OwnerRef | None
) -> None:
    assert _pod(b.pod(owners=owners)).owner == expected


@pytest.mark.parametrize(
    ("labels", "meshed", "control_plane_ns"),
    [
        pytest.param({}, False, "", id="no-label"),
        pytest.param({"linkerd.io/control-plane-ns": ""}, False, "", id="empty-label"),
        pytest.param({"linkerd.io/control-plane-ns": "linkerd"}, True, "linkerd", id="linkerd"),
        pytest.param({"linkerd.io/control-plane-ns": "other"}, True, "other", id="other-mesh"),
    ],
)
def test_a_pod_is_meshed_when_its_control_plane_label_is_non_empty(
    labels: dict[str, str], meshed: bool, control_plane_ns: str
) -> None:
    info = _pod(b.pod(labels=labels))
    assert info.meshed is meshed
    assert info.control_plane_ns == control_plane_ns


def test_pod_labels_are_kept_sorted_with_the_template_hash() -> None:
    info = _pod(b.pod(labels={"pod-template-hash": "5d8f", "app": "web"}))
    assert info.labels == (("app", "web"), ("pod-template-hash", "5d8f"))
    assert info.label_map() == {"app": "web", "pod-template-hash": "5d8f"}
    assert info.pod_template_hash == "5d8f"
    assert _pod(b.pod()).pod_template_hash is None


def test_container_ports_of_init_containers_come_first() -> None:
    sidecar = b.container("sidecar", ports=[("metrics", 9102)])
    info = _pod(b.pod(app_ports=[("http", 8080)], init_containers=[sidecar]))
    assert info.container_ports == (
        ContainerPort("metrics", 9102, 0),
        ContainerPort("http", 8080, 0),
    )


def test_a_host_port_is_kept_next_to_the_container_port() -> None:
    raw = b.pod()
    raw["spec"]["containers"][0]["ports"] = [{"name": "dns", "containerPort": 53, "hostPort": 53}]
    assert _pod(raw).container_ports == (ContainerPort("dns", 53, 53),)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(None, None, id="absent-is-none-so-defaults-apply"),
        pytest.param("", PortSet.EMPTY, id="empty-is-no-ports"),
        pytest.param("3306", PortSet.from_ports([3306]), id="number"),
        pytest.param("4000-4002", PortSet.from_ranges([(4000, 4002)]), id="range"),
        pytest.param("http", PortSet.from_ports([8080]), id="named-container-port"),
        pytest.param("metrics", PortSet.from_ports([9102]), id="named-init-container-port"),
        pytest.param("3306,http,metrics", PortSet.from_ports([3306, 8080, 9102]), id="mixed"),
    ],
)
def test_the_pod_opaque_ports_annotation_resolves_named_ports_of_all_containers(
    annotation: str | None, expected: PortSet | None
) -> None:
    annotations = None if annotation is None else {"config.linkerd.io/opaque-ports": annotation}
    raw = b.pod(
        app_ports=[("http", 8080)],
        init_containers=[b.container("sidecar", ports=[("metrics", 9102)])],
        annotations=annotations,
    )
    assert _pod(raw).opaque_ports == expected


def test_unknown_opaque_port_names_are_skipped_and_reported() -> None:
    warnings: list[str] = []
    raw = b.pod(annotations={"config.linkerd.io/opaque-ports": "3306,nosuchport"})
    assert _pod(raw, warnings).opaque_ports == PortSet.from_ports([3306])
    assert warnings == ["invalid opaque-ports items ['nosuchport']"]


@pytest.mark.parametrize(
    ("annotation", "expected", "warned"),
    [
        pytest.param(None, PortSet.EMPTY, False, id="absent-is-empty"),
        pytest.param("4190,4191", PortSet.from_ports([4190, 4191]), False, id="list"),
        pytest.param(
            "25,8000-8002", PortSet.from_ranges([(25, 25), (8000, 8002)]), False, id="rng"
        ),
        pytest.param("http", PortSet.EMPTY, True, id="names-are-not-resolved"),
        pytest.param("25,x", PortSet.from_ports([25]), True, id="garbage-skipped"),
    ],
)
def test_skip_inbound_ports_parse_numbers_and_ranges_only(
    annotation: str | None, expected: PortSet, warned: bool
) -> None:
    warnings: list[str] = []
    annotations = (
        None if annotation is None else {"config.linkerd.io/skip-inbound-ports": annotation}
    )
    assert _pod(b.pod(annotations=annotations), warnings).skip_inbound_ports == expected
    assert bool(warnings) is warned


def test_bad_annotations_without_a_warning_callback_still_project() -> None:
    raw = b.pod(
        annotations={
            "config.linkerd.io/opaque-ports": "bogus",
            "config.linkerd.io/skip-inbound-ports": "bogus",
        }
    )
    assert _pod(raw).opaque_ports == PortSet.EMPTY


def test_a_meshed_pod_reads_its_proxy_listen_ports() -> None:
    info = _pod(b.pod(meshed=True))
    assert info.proxy == ProxyPorts(inbound=4143, admin=4191, control=4190)


def test_an_unmeshed_pod_has_no_proxy() -> None:
    assert _pod(b.pod()).proxy is None


def test_a_native_sidecar_proxy_in_init_containers_is_found() -> None:
    assert _pod(b.pod(meshed=True, proxy_as_init=True)).proxy == ProxyPorts(4143, 4191, 4190)


def test_the_first_proxy_container_wins_and_init_containers_come_first() -> None:
    early = b.container(
        "linkerd-proxy",
        env={
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:5143",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:5191",
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "0.0.0.0:5190",
        },
    )
    raw = b.pod(meshed=True, init_containers=[early])
    assert _pod(raw).proxy == ProxyPorts(5143, 5191, 5190)


def test_ipv6_listen_addresses_are_parsed() -> None:
    raw = b.pod(
        meshed=True,
        proxy_env={
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "[::]:4143",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "[::]:4191",
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "[::1]:4190",
        },
    )
    assert _pod(raw).proxy == ProxyPorts(4143, 4191, 4190)


def test_missing_or_value_from_proxy_variables_are_none() -> None:
    raw = b.pod(
        meshed=True,
        proxy_env={
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:4191",
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": None,  # valueFrom, no value
        },
    )
    assert _pod(raw).proxy == ProxyPorts(inbound=None, admin=4191, control=None)


def test_a_proxy_container_without_env_has_all_ports_none() -> None:
    raw = b.pod(meshed=True)
    del raw["spec"]["containers"][1]["env"]
    assert _pod(raw).proxy == ProxyPorts(None, None, None)


@pytest.mark.parametrize(
    ("value", "port"),
    [
        pytest.param("0.0.0.0:4191", 4191, id="ipv4-any"),
        pytest.param("127.0.0.1:4190", 4190, id="ipv4-loopback"),
        pytest.param("[::]:4191", 4191, id="ipv6-any"),
        pytest.param("[::1]:4190", 4190, id="ipv6-loopback"),
        pytest.param("[::ffff:10.0.0.1]:4143", 4143, id="ipv4-mapped-ipv6"),
        pytest.param("0.0.0.0:65535", 65535, id="highest-port"),
        pytest.param("0.0.0.0:04191", 4191, id="leading-zero-port"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("4191", None, id="port-only"),
        pytest.param(":4191", None, id="no-host"),
        pytest.param("0.0.0.0:", None, id="no-port"),
        pytest.param("0.0.0.0:admin", None, id="named-port"),
        pytest.param("0.0.0.0:-1", None, id="negative-port"),
        pytest.param("0.0.0.0:0", None, id="port-zero"),
        pytest.param("0.0.0.0:65536", None, id="port-too-large"),
        pytest.param("localhost:4191", None, id="hostname-not-ip"),
        pytest.param("256.0.0.1:4191", None, id="bad-ipv4"),
        pytest.param("[::1:4191", None, id="unclosed-bracket"),
        pytest.param("::1:4191", None, id="ipv6-without-brackets"),
        pytest.param("[10.0.0.1]:4191", None, id="ipv4-in-brackets"),
        pytest.param("0.0.0.0: 4191", None, id="space-in-port"),
        pytest.param("0.0.0.0:\uff14\uff11\uff19\uff11", None, id="fullwidth-digits"),
        pytest.param("0.0.0.0:\u00b2", None, id="superscript-digit"),
    ],
)
def test_parse_listen_port_accepts_ip_port_and_bracketed_ipv6_only(
    value: str | None, port: int | None
) -> None:
    assert parse_listen_port(value) == port


def test_a_garbage_proxy_variable_does_not_make_the_pod_invalid() -> None:
    raw = b.pod(
        meshed=True,
        proxy_env={
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:\u00b2",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "garbage",
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "0.0.0.0:4190",
        },
    )
    assert _pod(raw).proxy == ProxyPorts(inbound=None, admin=None, control=4190)


def test_a_pod_with_a_deletion_timestamp_is_terminating() -> None:
    assert _pod(b.pod(deletion_timestamp="2026-01-01T00:00:00Z")).terminating is True
    assert _pod(b.pod()).terminating is False


def test_pods_differing_only_in_resource_version_compare_equal() -> None:
    first = _pod(b.pod(resource_version="10"))
    second = _pod(b.pod(resource_version="11"))
    assert first.resource_version == "10"
    assert second.resource_version == "11"
    assert first == second


def test_pods_differing_only_in_status_or_plain_labels_compare_equal() -> None:
    """Only what a proxy sees decides whether an address is re-sent."""
    assert _pod(b.pod(labels={"version": "1"})) == _pod(b.pod(labels={"version": "2"}))
    assert _pod(b.pod(phase="Pending")) == _pod(b.pod(phase="Running"))
    assert _pod(b.pod(deletion_timestamp="2026-01-01T00:00:00Z")) == _pod(b.pod())


def test_pods_differing_in_what_translation_reads_compare_unequal() -> None:
    assert _pod(b.pod(labels={"pod-template-hash": "a"})) != _pod(
        b.pod(labels={"pod-template-hash": "b"})
    )
    assert _pod(b.pod(meshed=True)) != _pod(b.pod())


# --------------------------------------------------------------------------
# Nodes, ReplicaSets, Jobs, dispatch


def test_a_node_keeps_its_zone_label_and_empty_when_unlabelled() -> None:
    assert project_node(b.node("node-a", zone="east-a")) == NodeInfo("node-a", "east-a")
    assert project_node(b.node("node-b", zone=None)) == NodeInfo("node-b", "")


@pytest.mark.parametrize(
    ("kind", "raw", "owner"),
    [
        pytest.param(
            Kind.REPLICA_SET,
            b.replica_set("web-5d8f", owner=("Deployment", "web")),
            OwnerRef("Deployment", "web"),
            id="replicaset-of-deployment",
        ),
        pytest.param(Kind.REPLICA_SET, b.replica_set("lonely"), None, id="standalone-replicaset"),
        pytest.param(
            Kind.JOB,
            b.job("nightly-123", owner=("CronJob", "nightly")),
            OwnerRef("CronJob", "nightly"),
            id="job-of-cronjob",
        ),
        pytest.param(Kind.JOB, b.job("once"), None, id="standalone-job"),
    ],
)
def test_workload_owners_keep_their_single_owner(
    kind: Kind, raw: dict[str, Any], owner: OwnerRef | None
) -> None:
    result = project_workload_owner(raw, kind)
    assert isinstance(result, WorkloadOwner)
    assert result.kind is kind
    assert result.ref == ObjectRef(b.NS, raw["metadata"]["name"])
    assert result.owner == owner


@pytest.mark.parametrize(
    ("kind", "raw", "record_type"),
    [
        pytest.param(Kind.SERVICE, b.service(), ServiceInfo, id="service"),
        pytest.param(Kind.ENDPOINT_SLICE, b.endpoint_slice(), SliceInfo, id="slice"),
        pytest.param(Kind.POD, b.pod(), PodInfo, id="pod"),
        pytest.param(Kind.NODE, b.node(), NodeInfo, id="node"),
        pytest.param(Kind.REPLICA_SET, b.replica_set(), WorkloadOwner, id="replicaset"),
        pytest.param(Kind.JOB, b.job(), WorkloadOwner, id="job"),
    ],
)
def test_project_dispatches_on_kind(kind: Kind, raw: dict[str, Any], record_type: type) -> None:
    assert isinstance(project(kind, raw), record_type)


# --------------------------------------------------------------------------
# malformed objects


def _with(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `raw` with the dotted `path` (digits index lists) set to `value`."""
    result = copy.deepcopy(raw)
    *parents, last = (int(k) if k.isdigit() else k for k in path.split("."))
    target: Any = result
    for key in parents:
        target = target[key]
    target[last] = value
    return result


_SLICE = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1", hints=["zone-a"])])
_POD = b.pod(meshed=True)
_NOT_OBJECTS: list[tuple[str, Any]] = [
    ("none", None),
    ("list", []),
    ("empty", {}),
    ("no-metadata", {"kind": "X"}),
    ("metadata-not-a-map", {"metadata": "web"}),
    ("no-name", {"metadata": {"namespace": "ns"}}),
    ("name-not-a-string", {"metadata": {"name": 5}}),
]

MALFORMED = [
    *(
        pytest.param(kind, raw, id=f"{kind.value}-{name}")
        for kind in Kind
        for name, raw in _NOT_OBJECTS
    ),
    pytest.param(Kind.SERVICE, _with(b.service(), "spec.ports", ["80"]), id="svc-port-str"),
    pytest.param(Kind.SERVICE, _with(b.service(), "spec", "x"), id="svc-spec-str"),
    pytest.param(Kind.ENDPOINT_SLICE, _with(_SLICE, "ports", 7), id="slice-ports-int"),
    pytest.param(Kind.ENDPOINT_SLICE, _with(_SLICE, "endpoints", ["x"]), id="slice-endpoint-str"),
    pytest.param(
        Kind.ENDPOINT_SLICE, _with(_SLICE, "endpoints.0.conditions", "x"), id="slice-conditions"
    ),
    pytest.param(
        Kind.ENDPOINT_SLICE,
        _with(b.endpoint_slice(service=None), "metadata.ownerReferences", ["x"]),
        id="slice-owner-str",
    ),
    pytest.param(Kind.POD, _with(_POD, "spec.containers", ["x"]), id="pod-container-str"),
    pytest.param(Kind.POD, _with(_POD, "status.podIPs", ["10.0.0.1"]), id="pod-ips-str"),
    pytest.param(Kind.POD, _with(_POD, "spec.containers.1.env", [5]), id="pod-env-int"),
    pytest.param(Kind.POD, _with(_POD, "spec", "x"), id="pod-spec-str"),
]


@pytest.mark.parametrize(("kind", "raw"), MALFORMED)
def test_a_malformed_object_projects_to_invalid_and_never_raises(kind: Kind, raw: Any) -> None:
    result = project(kind, raw)
    assert isinstance(result, Invalid), result
    assert result.kind is kind
    assert result.reason


def test_an_invalid_carries_the_object_key_when_it_can_be_read() -> None:
    result = project(Kind.SERVICE, _with(b.service("api", "shop"), "spec.ports", ["x"]))
    assert isinstance(result, Invalid)
    assert result.ref == "shop/api"
    assert result.reason.startswith("malformed Service: TypeError")


# A part Kubernetes would never accept is skipped and reported; the rest of the
# object is kept, so one odd endpoint or port never hides its neighbours.
SKIPPED_PARTS = [
    pytest.param(Kind.SERVICE, "spec.ports", [{"name": "http"}], "service ports", id="svc-port"),
    pytest.param(Kind.SERVICE, "spec.ports", [{"port": "http"}], "service ports", id="svc-nan"),
    pytest.param(Kind.SERVICE, "spec.ports", [{"port": 0}], "service ports", id="svc-port-0"),
    pytest.param(Kind.SERVICE, "spec.ports", [{"port": 65536}], "service ports", id="svc-big"),
    pytest.param(Kind.SERVICE, "spec.ports", [{"port": True}], "service ports", id="svc-bool"),
    pytest.param(Kind.SERVICE, "spec.ports", [{"port": 80.5}], "service ports", id="svc-float"),
    pytest.param(Kind.ENDPOINT_SLICE, "ports", [{"port": "x"}], "slice ports", id="slice-nan"),
    pytest.param(Kind.ENDPOINT_SLICE, "ports", [{"port": -1}], "slice ports", id="slice-neg"),
    pytest.param(
        Kind.POD,
        "spec.containers.0.ports",
        [{"containerPort": "http"}],
        "container ports",
        id="pod-container-port-nan",
    ),
    pytest.param(
        Kind.POD,
        "spec.containers.0.ports",
        [{"containerPort": 80, "hostPort": 70000}],
        "container ports",
        id="pod-host-port-big",
    ),
    pytest.param(Kind.POD, "metadata.labels", {"app": "x" * 64}, "label values", id="pod-label"),
]


@pytest.mark.parametrize(("kind", "path", "value", "what"), SKIPPED_PARTS)
def test_a_bad_part_is_skipped_and_reported_and_the_rest_is_kept(
    kind: Kind, path: str, value: Any, what: str
) -> None:
    raw = {Kind.SERVICE: b.service(), Kind.ENDPOINT_SLICE: _SLICE, Kind.POD: _POD}[kind]
    warnings: list[str] = []
    result = project(kind, _with(raw, path, value), on_warning=warnings.append)
    assert not isinstance(result, Invalid), result
    assert result.ref.name  # type: ignore[union-attr]
    assert len(warnings) == 1 and what in warnings[0], warnings


def test_owner_references_that_are_not_objects_mean_no_single_owner() -> None:
    pod = project(Kind.POD, _with(_POD, "metadata.ownerReferences", [5]))
    replica_set = project(Kind.REPLICA_SET, _with(b.replica_set(), "metadata.ownerReferences", [1]))
    assert isinstance(pod, PodInfo) and pod.owner is None
    assert isinstance(replica_set, WorkloadOwner) and replica_set.owner is None


def test_zone_hints_without_names_are_no_hints() -> None:
    info = _slice(_with(_SLICE, "endpoints.0.hints.forZones", [{}]))
    assert info.endpoints[0].zone_hints is None


# --------------------------------------------------------------------------
# Addresses: canonical IPs of the slice's family, or skipped (hardening #2)


@pytest.mark.parametrize(
    ("address_type", "address", "kept"),
    [
        pytest.param("IPv4", "10.0.0.2", "10.0.0.2", id="v4"),
        pytest.param("IPv4", "10.0.0.02", None, id="v4-leading-zero"),
        pytest.param("IPv4", "010.0.0.2", None, id="v4-leading-zero-first"),
        pytest.param("IPv4", "10.0.0", None, id="v4-three-octets"),
        pytest.param("IPv4", "10.0.0.256", None, id="v4-octet-too-big"),
        pytest.param("IPv4", " 10.0.0.2", None, id="v4-space"),
        pytest.param("IPv4", "fd00::1", None, id="v6-in-v4-slice"),
        pytest.param("IPv6", "10.0.0.2", None, id="v4-in-v6-slice"),
        pytest.param("IPv6", "FD00:0:0::1", "fd00::1", id="v6-canonical-form"),
        pytest.param("IPv6", "fe80::1%eth0", None, id="v6-zone"),
        pytest.param("IPv6", "fd00::1", "fd00::1", id="v6"),
        pytest.param("IPv4", "web.example.com", None, id="name"),
        pytest.param("IPv4", 167772162, None, id="number"),
        pytest.param("IPv4", ["10.0.0.2"], None, id="list"),
        pytest.param("IPv4", "", None, id="empty"),
    ],
)
def test_endpoint_addresses_are_canonical_ips_of_the_slice_family(
    address_type: str, address: Any, kept: str | None
) -> None:
    raw = b.endpoint_slice(
        address_type=address_type,
        endpoints=[
            {"addresses": [address]},
            {"addresses": ["fd00::9" if "6" in address_type else "10.0.0.9"]},
        ],
    )
    warnings: list[str] = []
    info = project_slice(raw, on_warning=warnings.append)
    assert isinstance(info, SliceInfo), info
    assert info.endpoints[0].addresses == (() if kept is None else (kept,))
    assert len(info.endpoints[1].addresses) == 1  # the neighbour is kept
    assert bool(warnings) is (kept is None)
    if kept is None:
        assert "invalid IP addresses" in warnings[0]


def test_pod_ips_are_validated_and_canonical() -> None:
    raw = _with(_POD, "status.podIPs", [{"ip": "10.0.0.01"}, {"ip": "FD00::0:1"}, {"ip": "x"}])
    warnings: list[str] = []
    pod = _pod(raw, warnings)
    assert pod.ips == ("fd00::1",)
    assert warnings == ["skipped 2 invalid IP addresses: '10.0.0.01', 'x'"]


def test_service_cluster_ips_are_validated() -> None:
    raw = _with(b.service(), "spec.clusterIPs", ["10.96.0.010", "10.96.0.10"])
    assert _service(raw).cluster_ips == ("10.96.0.10",)


def test_an_unknown_address_type_keeps_the_slice_without_endpoints() -> None:
    warnings: list[str] = []
    info = project_slice(_with(_SLICE, "addressType", "IPv5"), on_warning=warnings.append)
    assert isinstance(info, SliceInfo)
    assert info.endpoints == ()
    assert warnings and "unknown addressType" in warnings[0]


def test_a_warning_names_at_most_three_examples_and_is_bounded() -> None:
    raw = b.endpoint_slice(
        endpoints=[{"addresses": [f"10.0.0.0{i}" + "x" * 5000]} for i in range(9)]
    )
    warnings: list[str] = []
    project_slice(raw, on_warning=warnings.append)
    assert len(warnings) == 1
    assert "skipped 9 invalid IP addresses" in warnings[0] and "and 6 more" in warnings[0]
    assert len(warnings[0]) < 400


def test_hostile_strings_are_bounded_or_dropped() -> None:
    huge = "n" * 100_000
    raw = _with(_SLICE, "endpoints.0.nodeName", huge)
    raw = _with(raw, "endpoints.0.hostname", huge)
    raw = _with(raw, "endpoints.0.zone", 7)
    endpoint = _slice(raw).endpoints[0]
    assert (endpoint.node_name, endpoint.hostname, endpoint.zone) == (None, None, None)
    invalid = project(Kind.SERVICE, _with(b.service(), "metadata.name", huge))
    assert isinstance(invalid, Invalid) and len(invalid.reason) < 500 and len(invalid.ref) < 500


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        pytest.param(b.pod("web-1", "shop"), ObjectRef("shop", "web-1"), id="pod"),
        pytest.param(b.node("node-a"), ObjectRef("", "node-a"), id="cluster-scoped"),
        pytest.param(
            {"metadata": {"name": "x", "namespace": "ns"}, "spec": 5},
            ObjectRef("ns", "x"),
            id="bad-body",
        ),
        pytest.param({"metadata": {}}, None, id="no-name"),
        pytest.param(None, None, id="none"),
        pytest.param("garbage", None, id="string"),
    ],
)
def test_object_key_reads_the_key_of_any_object_or_gives_none(
    raw: Any, key: ObjectRef | None
) -> None:
    assert object_key(raw) == key
