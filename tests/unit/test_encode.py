"""Unit tests for destination.translate.endpoints: addresses into `WeightedAddr` and `Update` bytes.

Scope: reference §5.7 on addresses built from raw pods (through
discovery.project): IP encodings as exact integers; metric labels (pod,
owner kinds, service account, control plane, template hash, zone and
zone_locality, and the x10 weight of ext zone weights); mTLS identity and
server name for pods of this control plane only; protocol hints (h2, opaque,
opaque transport with forced mode, opaque ports and the admin/control meta
ports that never get it); addresses dropped when the proxy's listen ports are
unreadable; skip-inbound ports; unmeshed pods; gateway addresses from mirror
annotations; HTTP/2 client params from JSON with Go-style durations; and
`encode_diff` / `encode_initial` message order, emptiness and determinism.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import json_format

from destination._proto import destination_pb2 as pb
from destination.translate.endpoints import (
    DEFAULT_WEIGHT,
    EncodeContext,
    MeshSettings,
    encode_diff,
    encode_initial,
    http2_params_from_json,
    owner_label,
    tcp_address,
    weighted_addr,
)
from discovery.models import Address, IpFamily, OwnerRef, PodInfo
from discovery.topics import AddressDiff, AddressSnapshot
from tests.unit import builders as b

TD = "cluster.local"
MESH = MeshSettings(
    controller_namespace=b.CNS,
    trust_domain=TD,
    enable_h2_upgrade=True,
    force_opaque_transport=False,
)
APP_PORT = 8080
IDENTITY = f"web.{b.NS}.serviceaccount.identity.{b.CNS}.{TD}"


def context(
    mesh: MeshSettings = MESH,
    *,
    requested_port: int = 80,
    zone: str = "zone-a",
    trust_domain: str = TD,
) -> EncodeContext:
    return EncodeContext(
        mesh=mesh, requested_port=requested_port, subscriber_zone=zone, trust_domain=trust_domain
    )


def pod_info(raw: dict[str, Any]) -> PodInfo:
    info = b.projected(raw)
    assert isinstance(info, PodInfo)
    return info


def pod_address(
    raw: dict[str, Any] | None = None,
    *,
    port: int = APP_PORT,
    zone: str | None = "zone-a",
    owner: OwnerRef | None = None,
    opaque: bool = False,
) -> Address:
    pod = pod_info(raw if raw is not None else b.pod(meshed=True))
    ip = pod.ips[0]
    return Address(
        ip=ip,
        port=port,
        family=IpFamily.V6 if ":" in ip else IpFamily.V4,
        hostname=None,
        zone=zone,
        zone_hints=None,
        node_name=pod.node_name,
        pod=pod,
        owner=owner if owner is not None else pod.owner,
        opaque=opaque,
    )


def gateway_address(
    *, identity: str | None = "gw.identity", fq_name: str | None = "web.ns.svc.west.local"
) -> Address:
    return Address(
        ip="172.18.0.5",
        port=4143,
        family=IpFamily.V4,
        hostname=None,
        zone=None,
        zone_hints=None,
        node_name=None,
        pod=None,
        owner=None,
        opaque=False,
        gateway_identity=identity,
        remote_fq_name=fq_name,
    )


def encoded(address: Address, ctx: EncodeContext | None = None) -> pb.WeightedAddr:
    message = weighted_addr(address, ctx or context())
    assert message is not None, "the address was dropped"
    return message


def hint_kind(message: pb.WeightedAddr) -> str | None:
    kind: str | None = message.protocol_hint.WhichOneof("protocol")
    return kind


# --------------------------------------------------------------------------
# IP addresses


@pytest.mark.parametrize(
    ("ip", "ipv4"),
    [
        pytest.param("10.1.2.3", 0x0A010203, id="private"),
        pytest.param("0.0.0.1", 1, id="low"),
        pytest.param("255.255.255.255", 4294967295, id="broadcast"),
        pytest.param("192.168.0.1", 3232235521, id="class-c"),
    ],
)
def test_an_ipv4_address_is_one_big_endian_integer(ip: str, ipv4: int) -> None:
    address = tcp_address(ip, 8080)
    assert address.ip.WhichOneof("ip") == "ipv4"
    assert address.ip.ipv4 == ipv4
    assert address.port == 8080


@pytest.mark.parametrize(
    ("ip", "first", "last"),
    [
        pytest.param("::1", 0, 1, id="loopback"),
        pytest.param("2001:db8::1", 0x20010DB800000000, 1, id="documentation"),
        pytest.param("fd00::abcd:1", 0xFD00000000000000, 0xABCD0001, id="ula"),
        pytest.param(
            "2001:db8:1:2:3:4:5:6",
            0x20010DB800010002,
            0x0003000400050006,
            id="every-group",
        ),
        pytest.param("::ffff:10.1.2.3", 0, 0x0000FFFF0A010203, id="ipv4-mapped"),
        pytest.param(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            18446744073709551615,
            18446744073709551615,
            id="all-ones",
        ),
    ],
)
def test_an_ipv6_address_is_two_64_bit_halves(ip: str, first: int, last: int) -> None:
    address = tcp_address(ip, 443)
    assert address.ip.WhichOneof("ip") == "ipv6"
    assert (address.ip.ipv6.first, address.ip.ipv6.last) == (first, last)
    assert address.port == 443


def test_the_address_and_default_weight_are_set() -> None:
    message = encoded(pod_address(b.pod(ip="10.0.0.7")))
    assert message.addr == tcp_address("10.0.0.7", APP_PORT)
    assert message.weight == DEFAULT_WEIGHT == 10_000


# --------------------------------------------------------------------------
# identity and protocol hints of meshed pods


def test_a_meshed_pod_gets_identity_server_name_h2_and_labels() -> None:
    raw = b.pod(meshed=True, labels={"pod-template-hash": "5d8f"}, owner=("ReplicaSet", "web-5d"))
    message = encoded(pod_address(raw, owner=OwnerRef("Deployment", "web")))
    assert message.tls_identity.WhichOneof("strategy") == "dns_like_identity"
    assert message.tls_identity.dns_like_identity.name == IDENTITY
    assert message.tls_identity.server_name.name == IDENTITY
    assert hint_kind(message) == "h2"
    assert not message.protocol_hint.HasField("opaque_transport")
    assert not message.HasField("http2")
    assert not message.HasField("authority_override")
    assert dict(message.metric_labels) == {
        "pod": "web-1",
        "deployment": "web",
        "serviceaccount": "web",
        "control_plane_ns": b.CNS,
        "pod_template_hash": "5d8f",
        "zone": "zone-a",
        "zone_locality": "local",
    }


def test_the_identity_names_the_service_account_namespace_control_plane_and_trust_domain() -> None:
    raw = b.pod("api-1", "shop", meshed=True, service_account=None)
    message = encoded(pod_address(raw), context(trust_domain="east.example"))
    expected = "default.shop.serviceaccount.identity.linkerd.east.example"
    assert message.tls_identity.dns_like_identity.name == expected
    assert message.tls_identity.server_name.name == expected


def test_a_pod_of_another_control_plane_gets_hints_but_no_identity() -> None:
    message = encoded(pod_address(b.pod(meshed=True, control_plane_ns="other-linkerd")))
    assert not message.HasField("tls_identity")
    assert hint_kind(message) == "h2"
    assert message.metric_labels["control_plane_ns"] == "other-linkerd"


def test_without_a_trust_domain_there_is_no_identity() -> None:
    message = encoded(pod_address(), context(trust_domain=""))
    assert not message.HasField("tls_identity")
    assert hint_kind(message) == "h2"


def test_without_h2_upgrade_the_hint_is_present_but_empty() -> None:
    mesh = replace(MESH, enable_h2_upgrade=False)
    message = encoded(pod_address(), context(mesh))
    assert message.HasField("protocol_hint")
    assert hint_kind(message) is None
    assert not message.protocol_hint.HasField("opaque_transport")


@pytest.mark.parametrize(
    ("force", "h2_upgrade", "opaque", "protocol", "transport"),
    [
        pytest.param(False, True, False, "h2", None, id="plain-h2"),
        pytest.param(False, False, False, None, None, id="plain-no-upgrade"),
        pytest.param(False, True, True, "opaque", b.INBOUND_PORT, id="opaque-port"),
        pytest.param(False, False, True, "opaque", b.INBOUND_PORT, id="opaque-no-upgrade"),
        pytest.param(True, True, False, "h2", b.INBOUND_PORT, id="forced-transport-h2"),
        pytest.param(True, False, False, None, b.INBOUND_PORT, id="forced-transport-only"),
        pytest.param(True, True, True, "opaque", b.INBOUND_PORT, id="forced-and-opaque"),
    ],
)
def test_protocol_hint_follows_opacity_forced_transport_and_h2_upgrade(
    force: bool, h2_upgrade: bool, opaque: bool, protocol: str | None, transport: int | None
) -> None:
    mesh = replace(MESH, force_opaque_transport=force, enable_h2_upgrade=h2_upgrade)
    message = encoded(pod_address(opaque=opaque), context(mesh))
    assert hint_kind(message) == protocol
    if transport is None:
        assert not message.protocol_hint.HasField("opaque_transport")
    else:
        assert message.protocol_hint.opaque_transport.inbound_port == transport


@pytest.mark.parametrize(
    ("port", "opaque"),
    [
        pytest.param(b.ADMIN_PORT, False, id="admin"),
        pytest.param(b.CONTROL_PORT, False, id="control"),
        pytest.param(b.ADMIN_PORT, True, id="admin-opaque"),
        pytest.param(b.CONTROL_PORT, True, id="control-opaque"),
    ],
)
def test_meta_ports_never_get_opaque_transport_even_when_forced(port: int, opaque: bool) -> None:
    mesh = replace(MESH, force_opaque_transport=True)
    message = encoded(pod_address(port=port, opaque=opaque), context(mesh))
    assert not message.protocol_hint.HasField("opaque_transport")
    assert hint_kind(message) == ("opaque" if opaque else "h2")
    assert message.tls_identity.dns_like_identity.name == IDENTITY


def test_meta_ports_come_from_the_pods_own_proxy_environment() -> None:
    raw = b.pod(
        meshed=True,
        proxy_env={
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "[::]:5143",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "[::]:5191",
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "[::]:5190",
        },
    )
    mesh = replace(MESH, force_opaque_transport=True)
    on_default_admin = encoded(pod_address(raw, port=b.ADMIN_PORT), context(mesh))
    assert on_default_admin.protocol_hint.opaque_transport.inbound_port == 5143
    on_own_admin = encoded(pod_address(raw, port=5191), context(mesh))
    assert not on_own_admin.protocol_hint.HasField("opaque_transport")


@pytest.mark.parametrize(
    ("proxy_env", "force", "opaque", "dropped"),
    [
        pytest.param({}, False, False, True, id="no-variables"),
        pytest.param(
            {
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:4143",
                "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "0.0.0.0:4190",
            },
            False,
            False,
            True,
            id="admin-missing",
        ),
        pytest.param(
            {
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:4143",
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:4191",
                "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "garbage",
            },
            False,
            False,
            True,
            id="control-unparsable",
        ),
        pytest.param(
            {
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:4191",
                "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "0.0.0.0:4190",
            },
            False,
            False,
            False,
            id="inbound-missing-but-not-needed",
        ),
        pytest.param(
            {
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:4191",
                "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "0.0.0.0:4190",
            },
            False,
            True,
            True,
            id="inbound-missing-on-opaque-port",
        ),
        pytest.param(
            {
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "::4143",
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:4191",
                "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "0.0.0.0:4190",
            },
            True,
            False,
            True,
            id="inbound-unparsable-when-forced",
        ),
    ],
)
def test_a_meshed_pod_with_unreadable_proxy_ports_is_dropped(
    proxy_env: dict[str, str], force: bool, opaque: bool, dropped: bool
) -> None:
    mesh = replace(MESH, force_opaque_transport=force)
    address = pod_address(b.pod(meshed=True, proxy_env=proxy_env), opaque=opaque)
    assert (weighted_addr(address, context(mesh)) is None) is dropped


def test_a_meshed_pod_without_a_proxy_container_is_dropped() -> None:
    raw = b.pod(meshed=True)
    raw["spec"]["containers"] = [c for c in raw["spec"]["containers"] if c["name"] == "app"]
    assert weighted_addr(pod_address(raw), context()) is None


def test_a_skipped_inbound_port_gets_no_hint_no_identity_and_no_http2() -> None:
    raw = b.pod(meshed=True, annotations={"config.linkerd.io/skip-inbound-ports": "8080"})
    mesh = replace(MESH, http2_params=http2_params_from_json({"internals": {"max_frame_size": 1}}))
    message = encoded(pod_address(raw, port=APP_PORT, opaque=True), context(mesh))
    assert not message.HasField("protocol_hint")
    assert not message.HasField("tls_identity")
    assert not message.HasField("http2")
    assert message.metric_labels["pod"] == "web-1"
    assert message.metric_labels["control_plane_ns"] == b.CNS


def test_a_skipped_port_is_kept_even_without_readable_proxy_ports() -> None:
    raw = b.pod(
        meshed=True, proxy_env={}, annotations={"config.linkerd.io/skip-inbound-ports": "8080"}
    )
    assert weighted_addr(pod_address(raw), context()) is not None


def test_skip_inbound_applies_to_its_ports_only() -> None:
    raw = b.pod(meshed=True, annotations={"config.linkerd.io/skip-inbound-ports": "9000-9100"})
    message = encoded(pod_address(raw, port=APP_PORT))
    assert message.tls_identity.dns_like_identity.name == IDENTITY


def test_an_unmeshed_pod_gets_labels_only() -> None:
    mesh = replace(MESH, force_opaque_transport=True, http2_params=pb.Http2ClientParams())
    message = encoded(pod_address(b.pod(), opaque=True), context(mesh))
    assert not message.HasField("protocol_hint")
    assert not message.HasField("tls_identity")
    assert not message.HasField("http2")
    assert dict(message.metric_labels) == {
        "pod": "web-1",
        "serviceaccount": "web",
        "zone": "zone-a",
        "zone_locality": "local",
    }


# --------------------------------------------------------------------------
# labels and weights


@pytest.mark.parametrize(
    ("owner", "labels"),
    [
        pytest.param(OwnerRef("Deployment", "web"), {"deployment": "web"}, id="deployment"),
        pytest.param(OwnerRef("StatefulSet", "db"), {"statefulset": "db"}, id="statefulset"),
        pytest.param(OwnerRef("DaemonSet", "agent"), {"daemonset": "agent"}, id="daemonset"),
        pytest.param(OwnerRef("Job", "once"), {"k8s_job": "once"}, id="job-is-k8s-job"),
        pytest.param(OwnerRef("CronJob", "nightly"), {"cronjob": "nightly"}, id="cronjob"),
        pytest.param(OwnerRef("ReplicaSet", "web-5d"), {"replicaset": "web-5d"}, id="replicaset"),
        pytest.param(None, {}, id="none-gives-pod-only"),
    ],
)
def test_the_owner_label_is_the_lowercased_kind_and_job_is_k8s_job(
    owner: OwnerRef | None, labels: dict[str, str]
) -> None:
    address = replace(pod_address(b.pod()), owner=owner)
    message = encoded(address)
    owner_labels = {
        k: v
        for k, v in message.metric_labels.items()
        if k not in {"pod", "serviceaccount", "zone", "zone_locality"}
    }
    assert owner_labels == labels
    assert message.metric_labels["pod"] == "web-1"


def test_owner_label_lowercases_and_renames_job() -> None:
    assert owner_label("Job") == "k8s_job"
    assert owner_label("ReplicationController") == "replicationcontroller"


def test_get_labels_do_not_include_the_namespace() -> None:
    assert "namespace" not in encoded(pod_address()).metric_labels


@pytest.mark.parametrize(
    ("subscriber_zone", "address_zone", "locality"),
    [
        pytest.param("zone-a", "zone-a", "local", id="same-zone"),
        pytest.param("zone-a", "zone-b", "remote", id="other-zone"),
        pytest.param("zone-a", "", "remote", id="empty-address-zone-is-known"),
        pytest.param("zone-a", None, "unknown", id="address-without-zone"),
        pytest.param("", "zone-a", "unknown", id="subscriber-zone-unknown"),
        pytest.param("", None, "unknown", id="both-unknown"),
    ],
)
def test_zone_locality_compares_subscriber_and_address_zones(
    subscriber_zone: str, address_zone: str | None, locality: str
) -> None:
    message = encoded(pod_address(zone=address_zone), context(zone=subscriber_zone))
    assert message.metric_labels["zone_locality"] == locality
    assert message.metric_labels["zone"] == (address_zone or "")
    assert message.weight == DEFAULT_WEIGHT


@pytest.mark.parametrize(
    ("address_zone", "weight"),
    [
        pytest.param("zone-a", 100_000, id="local-times-ten"),
        pytest.param("zone-b", 10_000, id="remote-unchanged"),
        pytest.param(None, 10_000, id="unknown-unchanged"),
    ],
)
def test_ext_endpoint_zone_weights_multiply_local_addresses_by_ten(
    address_zone: str | None, weight: int
) -> None:
    mesh = replace(MESH, ext_endpoint_zone_weights=True)
    message = encoded(pod_address(zone=address_zone), context(mesh, zone="zone-a"))
    assert message.weight == weight


# --------------------------------------------------------------------------
# gateway addresses (no pod)


def test_a_gateway_address_gets_authority_override_dns_identity_without_server_name_and_h2() -> (
    None
):
    params = http2_params_from_json({"keep_alive": {"interval": {"seconds": 10}}})
    mesh = replace(MESH, force_opaque_transport=True, http2_params=params)
    message = encoded(gateway_address(), context(mesh, requested_port=8080, zone="zone-a"))
    assert message.authority_override.authority_override == "web.ns.svc.west.local:8080"
    assert message.tls_identity.WhichOneof("strategy") == "dns_like_identity"
    assert message.tls_identity.dns_like_identity.name == "gw.identity"
    assert not message.tls_identity.HasField("server_name")
    assert hint_kind(message) == "h2"
    assert not message.protocol_hint.HasField("opaque_transport")
    assert message.http2 == params
    assert dict(message.metric_labels) == {"zone_locality": "unknown"}
    assert message.addr == tcp_address("172.18.0.5", 4143)


def test_a_gateway_address_without_h2_upgrade_has_no_hint() -> None:
    message = encoded(gateway_address(), context(replace(MESH, enable_h2_upgrade=False)))
    assert not message.HasField("protocol_hint")
    assert message.tls_identity.dns_like_identity.name == "gw.identity"


def test_an_address_without_pod_or_identity_has_labels_and_override_only() -> None:
    mesh = replace(MESH, http2_params=pb.Http2ClientParams())
    message = encoded(gateway_address(identity=None), context(mesh, requested_port=9090))
    assert message.authority_override.authority_override == "web.ns.svc.west.local:9090"
    assert not message.HasField("tls_identity")
    assert not message.HasField("protocol_hint")
    assert not message.HasField("http2")
    assert dict(message.metric_labels) == {"zone_locality": "unknown"}


def test_a_selectorless_address_has_only_zone_locality() -> None:
    message = encoded(gateway_address(identity=None, fq_name=None))
    assert not message.HasField("authority_override")
    assert dict(message.metric_labels) == {"zone_locality": "unknown"}


# --------------------------------------------------------------------------
# HTTP/2 client params


def test_http2_params_absent_are_none_and_not_sent() -> None:
    assert http2_params_from_json(None) is None
    assert not encoded(pod_address()).HasField("http2")


def test_http2_params_parse_snake_case_json_with_go_style_durations() -> None:
    params = http2_params_from_json(
        {
            "flow_control": {
                "initial_connection_window_size": 1048576,
                "initial_stream_window_size": 65535,
                "adaptive_flow_control": True,
            },
            "keep_alive": {
                "interval": {"seconds": 10},
                "timeout": {"seconds": 3, "nanos": 500000000},
                "while_idle": True,
            },
            "internals": {"max_concurrent_reset_streams": 20, "max_frame_size": 16384},
        }
    )
    assert params is not None
    assert params.flow_control.initial_connection_window_size == 1048576
    assert params.flow_control.initial_stream_window_size == 65535
    assert params.flow_control.adaptive_flow_control is True
    assert (params.keep_alive.interval.seconds, params.keep_alive.interval.nanos) == (10, 0)
    assert (params.keep_alive.timeout.seconds, params.keep_alive.timeout.nanos) == (3, 500000000)
    assert params.keep_alive.while_idle is True
    assert params.internals.max_concurrent_reset_streams == 20
    assert params.internals.max_frame_size == 16384


@pytest.mark.parametrize(
    ("duration", "seconds", "nanos"),
    [
        pytest.param({"seconds": 10}, 10, 0, id="go-seconds"),
        pytest.param({"nanos": 250000000}, 0, 250000000, id="go-nanos-only"),
        pytest.param({"seconds": 1, "nanos": 1}, 1, 1, id="go-one-nanosecond"),
        pytest.param({"seconds": 0}, 0, 0, id="go-zero"),
        pytest.param("10s", 10, 0, id="protobuf-json-string"),
        pytest.param("0.5s", 0, 500000000, id="protobuf-json-fraction"),
    ],
)
def test_http2_durations_accept_go_structs_and_protobuf_strings(
    duration: Any, seconds: int, nanos: int
) -> None:
    params = http2_params_from_json({"keep_alive": {"timeout": duration}})
    assert params is not None
    assert (params.keep_alive.timeout.seconds, params.keep_alive.timeout.nanos) == (seconds, nanos)


def test_an_empty_sub_message_is_not_mistaken_for_a_duration() -> None:
    params = http2_params_from_json({"flow_control": {}})
    assert params is not None
    assert params.HasField("flow_control")


def test_an_unknown_http2_field_is_rejected() -> None:
    with pytest.raises(json_format.ParseError):
        http2_params_from_json({"keep_alive": {"every": 3}})


def test_meshed_http2_params_are_copied_onto_meshed_pods() -> None:
    params = http2_params_from_json({"flow_control": {"adaptive_flow_control": True}})
    message = encoded(pod_address(), context(replace(MESH, http2_params=params)))
    assert message.http2 == params


# --------------------------------------------------------------------------
# messages


def _diff(
    added: tuple[Address, ...] = (),
    removed: tuple[Address, ...] = (),
    labels: dict[str, str] | None = None,
) -> AddressDiff:
    return AddressDiff(
        added=added, removed=removed, labels=labels or {"service": "web", "namespace": b.NS}
    )


def _pods(*ips: str) -> tuple[Address, ...]:
    return tuple(pod_address(b.pod(f"web-{i}", ip=ip, meshed=True)) for i, ip in enumerate(ips))


def test_encode_diff_sends_the_add_first_then_the_remove() -> None:
    payloads = encode_diff(
        _diff(added=_pods("10.0.0.1", "10.0.0.2"), removed=_pods("10.0.0.9")), context()
    )
    assert len(payloads) == 2
    add, remove = (pb.Update.FromString(p) for p in payloads)
    assert add.WhichOneof("update") == "add"
    assert [a.addr for a in add.add.addrs] == [
        tcp_address("10.0.0.1", APP_PORT),
        tcp_address("10.0.0.2", APP_PORT),
    ]
    assert dict(add.add.metric_labels) == {"service": "web", "namespace": b.NS}
    assert remove.WhichOneof("update") == "remove"
    assert list(remove.remove.addrs) == [tcp_address("10.0.0.9", APP_PORT)]


@pytest.mark.parametrize(
    ("added", "removed", "kinds"),
    [
        pytest.param(1, 0, ["add"], id="add-only"),
        pytest.param(0, 1, ["remove"], id="remove-only"),
        pytest.param(0, 0, [], id="empty-sends-nothing"),
    ],
)
def test_encode_diff_leaves_out_empty_parts(added: int, removed: int, kinds: list[str]) -> None:
    diff = _diff(added=_pods("10.0.0.1")[:added], removed=_pods("10.0.0.2")[:removed])
    payloads = encode_diff(diff, context())
    assert [pb.Update.FromString(p).WhichOneof("update") for p in payloads] == kinds


def test_an_add_whose_every_address_is_dropped_is_not_sent() -> None:
    unreadable = pod_address(b.pod(meshed=True, proxy_env={}))
    payloads = encode_diff(_diff(added=(unreadable,), removed=_pods("10.0.0.2")), context())
    assert [pb.Update.FromString(p).WhichOneof("update") for p in payloads] == ["remove"]


def test_a_dropped_address_leaves_the_others_in_the_add() -> None:
    unreadable = pod_address(b.pod("bad", ip="10.0.0.66", meshed=True, proxy_env={}))
    (payload,) = encode_diff(_diff(added=(unreadable, *_pods("10.0.0.1"))), context())
    assert [a.addr for a in pb.Update.FromString(payload).add.addrs] == [
        tcp_address("10.0.0.1", APP_PORT)
    ]


def test_encode_initial_of_an_empty_snapshot_is_nothing() -> None:
    snapshot = AddressSnapshot(addresses={}, labels={"service": "web"})
    assert encode_initial(snapshot, context()) == ()


def test_encode_initial_is_one_add_of_the_whole_set() -> None:
    addresses = _pods("10.0.0.1", "10.0.0.2", "10.0.0.3")
    snapshot = AddressSnapshot(
        addresses={a.key: a for a in addresses}, labels={"service": "web", "namespace": b.NS}
    )
    (payload,) = encode_initial(snapshot, context())
    update = pb.Update.FromString(payload)
    assert update.WhichOneof("update") == "add"
    assert len(update.add.addrs) == 3
    assert dict(update.add.metric_labels) == {"service": "web", "namespace": b.NS}
    assert update.add.addrs[0].tls_identity.dns_like_identity.name == IDENTITY


def test_encoding_is_deterministic() -> None:
    diff = _diff(added=_pods("10.0.0.1", "10.0.0.2"), removed=_pods("10.0.0.9"))
    assert encode_diff(diff, context()) == encode_diff(diff, context())
