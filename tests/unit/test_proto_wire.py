"""Wire compatibility of our destination API schema with linkerd2-proxy-api.

Scope: the ``.proto`` files in ``protos/`` and the committed modules generated
from them in ``destination._proto``. These tests pin what a Linkerd proxy sees
on the wire: gRPC method paths and streaming shape, every message's field
numbers, types, labels and oneofs, enum values, and the exact bytes of a few
small messages. Expected values are written out literally from the upstream
schema (linkerd2-proxy-api v0.18 ``proto/*.proto``), so an edit to our
``.proto`` files that would break compatibility fails here. They also check
that the committed generated code is what ``protos/generate.py`` produces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from destination._proto import destination_pb2, http_types_pb2, meta_pb2, net_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATE_SCRIPT = REPO_ROOT / "protos" / "generate.py"

DST = "io.linkerd.proxy.destination"
NET = "io.linkerd.proxy.net"
META = "io.linkerd.proxy.meta"
HTTP = "io.linkerd.proxy.http_types"

_SCALAR_TYPE_NAMES = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}

# (number, name, type, label, oneof) for one field.
FieldRow = tuple[int, str, str, str, str | None]


def _map_entry(field: FieldDescriptor) -> Descriptor | None:
    """The synthetic key/value message behind a map field, or None for other fields."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        return entry
    return None


def _type_name(field: FieldDescriptor) -> str:
    entry = _map_entry(field)
    if entry is not None:
        key = _type_name(entry.fields_by_name["key"])
        value = _type_name(entry.fields_by_name["value"])
        return f"map<{key}, {value}>"
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return _SCALAR_TYPE_NAMES[field.type]


def _describe(message: type[Message]) -> list[FieldRow]:
    """One row per field of ``message``, ordered by field number."""
    # types-protobuf types DESCRIPTOR as a union with the upb class; it is a Descriptor.
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    rows: list[FieldRow] = []
    for field in descriptor.fields:
        if _map_entry(field) is not None:
            label = "map"
        elif field.is_repeated:
            label = "repeated"
        else:
            label = "singular"
        oneof = field.containing_oneof.name if field.containing_oneof is not None else None
        rows.append((field.number, field.name, _type_name(field), label, oneof))
    return sorted(rows)


def _all_messages(file: FileDescriptor) -> set[str]:
    names: set[str] = set()

    def walk(message: Descriptor) -> None:
        if message.GetOptions().map_entry:
            return
        names.add(message.full_name)
        for nested in message.nested_types:
            walk(nested)

    for message in file.message_types_by_name.values():
        walk(message)
    return names


def test_committed_stubs_match_a_fresh_regeneration() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATE_SCRIPT), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("file", "package", "dependencies"),
    [
        pytest.param(
            destination_pb2.DESCRIPTOR,
            DST,
            ["google/protobuf/duration.proto", "http_types.proto", "meta.proto", "net.proto"],
            id="destination.proto",
        ),
        pytest.param(net_pb2.DESCRIPTOR, NET, [], id="net.proto"),
        pytest.param(http_types_pb2.DESCRIPTOR, HTTP, [], id="http_types.proto"),
        pytest.param(meta_pb2.DESCRIPTOR, META, [], id="meta.proto"),
    ],
)
def test_each_file_keeps_upstream_package_and_imports(
    file: FileDescriptor, package: str, dependencies: list[str]
) -> None:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)

    assert proto.package == package
    assert proto.syntax == "proto3"
    assert list(proto.dependency) == dependencies


@pytest.mark.parametrize(
    ("file", "messages"),
    [
        pytest.param(
            destination_pb2.DESCRIPTOR,
            {
                f"{DST}.GetDestination",
                f"{DST}.Update",
                f"{DST}.AddrSet",
                f"{DST}.WeightedAddrSet",
                f"{DST}.WeightedAddr",
                f"{DST}.TlsIdentity",
                f"{DST}.TlsIdentity.DnsLikeIdentity",
                f"{DST}.TlsIdentity.UriLikeIdentity",
                f"{DST}.AuthorityOverride",
                f"{DST}.NoEndpoints",
                f"{DST}.ProtocolHint",
                f"{DST}.ProtocolHint.H2",
                f"{DST}.ProtocolHint.Opaque",
                f"{DST}.ProtocolHint.OpaqueTransport",
                f"{DST}.Http2ClientParams",
                f"{DST}.Http2ClientParams.FlowControl",
                f"{DST}.Http2ClientParams.KeepAlive",
                f"{DST}.Http2ClientParams.Internals",
                f"{DST}.DestinationProfile",
                f"{DST}.Route",
                f"{DST}.RetryBudget",
                f"{DST}.ResponseClass",
                f"{DST}.RequestMatch",
                f"{DST}.RequestMatch.Seq",
                f"{DST}.PathMatch",
                f"{DST}.ResponseMatch",
                f"{DST}.ResponseMatch.Seq",
                f"{DST}.HttpStatusRange",
                f"{DST}.WeightedDst",
            },
            id="destination.proto",
        ),
        pytest.param(
            net_pb2.DESCRIPTOR,
            {f"{NET}.IPAddress", f"{NET}.IPNetwork", f"{NET}.IPv6", f"{NET}.TcpAddress"},
            id="net.proto",
        ),
        pytest.param(
            http_types_pb2.DESCRIPTOR,
            {f"{HTTP}.HttpMethod", f"{HTTP}.Scheme", f"{HTTP}.Headers", f"{HTTP}.Headers.Header"},
            id="http_types.proto",
        ),
        pytest.param(
            meta_pb2.DESCRIPTOR, {f"{META}.Metadata", f"{META}.Resource"}, id="meta.proto"
        ),
    ],
)
def test_each_file_defines_exactly_the_upstream_messages(
    file: FileDescriptor, messages: set[str]
) -> None:
    assert _all_messages(file) == messages


@pytest.mark.parametrize(
    ("method_name", "path", "input_type", "output_type"),
    [
        pytest.param(
            "Get",
            "/io.linkerd.proxy.destination.Destination/Get",
            f"{DST}.GetDestination",
            f"{DST}.Update",
            id="Get",
        ),
        pytest.param(
            "GetProfile",
            "/io.linkerd.proxy.destination.Destination/GetProfile",
            f"{DST}.GetDestination",
            f"{DST}.DestinationProfile",
            id="GetProfile",
        ),
    ],
)
def test_destination_service_methods_have_upstream_paths_and_server_streaming_shape(
    method_name: str, path: str, input_type: str, output_type: str
) -> None:
    service = destination_pb2.DESCRIPTOR.services_by_name["Destination"]
    method = service.methods_by_name[method_name]

    assert f"/{service.full_name}/{method.name}" == path
    assert method.server_streaming
    assert not method.client_streaming
    assert method.input_type.full_name == input_type
    assert method.output_type.full_name == output_type


def test_destination_service_has_only_get_and_get_profile() -> None:
    service = destination_pb2.DESCRIPTOR.services_by_name["Destination"]
    assert list(destination_pb2.DESCRIPTOR.services_by_name) == ["Destination"]
    assert [method.name for method in service.methods] == ["Get", "GetProfile"]


DURATION = "google.protobuf.Duration"
MAP_SS = "map<string, string>"

FIELD_TABLE = [
    pytest.param(
        destination_pb2.GetDestination,
        [
            (1, "scheme", "string", "singular", None),
            (2, "path", "string", "singular", None),
            (3, "context_token", "string", "singular", None),
        ],
        id="GetDestination",
    ),
    pytest.param(
        destination_pb2.Update,
        [
            (1, "add", f"{DST}.WeightedAddrSet", "singular", "update"),
            (2, "remove", f"{DST}.AddrSet", "singular", "update"),
            (3, "no_endpoints", f"{DST}.NoEndpoints", "singular", "update"),
        ],
        id="Update",
    ),
    pytest.param(
        destination_pb2.AddrSet,
        [(1, "addrs", f"{NET}.TcpAddress", "repeated", None)],
        id="AddrSet",
    ),
    pytest.param(
        destination_pb2.WeightedAddrSet,
        [
            (1, "addrs", f"{DST}.WeightedAddr", "repeated", None),
            (2, "metric_labels", MAP_SS, "map", None),
        ],
        id="WeightedAddrSet",
    ),
    pytest.param(
        destination_pb2.WeightedAddr,
        [
            (1, "addr", f"{NET}.TcpAddress", "singular", None),
            (3, "weight", "uint32", "singular", None),
            (4, "metric_labels", MAP_SS, "map", None),
            (5, "tls_identity", f"{DST}.TlsIdentity", "singular", None),
            (6, "protocol_hint", f"{DST}.ProtocolHint", "singular", None),
            (7, "authority_override", f"{DST}.AuthorityOverride", "singular", None),
            (8, "http2", f"{DST}.Http2ClientParams", "singular", None),
            (9, "resource_ref", f"{META}.Metadata", "singular", None),
        ],
        id="WeightedAddr",
    ),
    pytest.param(
        destination_pb2.TlsIdentity,
        [
            (1, "dns_like_identity", f"{DST}.TlsIdentity.DnsLikeIdentity", "singular", "strategy"),
            (3, "uri_like_identity", f"{DST}.TlsIdentity.UriLikeIdentity", "singular", "strategy"),
            (4, "server_name", f"{DST}.TlsIdentity.DnsLikeIdentity", "singular", None),
        ],
        id="TlsIdentity",
    ),
    pytest.param(
        destination_pb2.TlsIdentity.DnsLikeIdentity,
        [(1, "name", "string", "singular", None)],
        id="TlsIdentity.DnsLikeIdentity",
    ),
    pytest.param(
        destination_pb2.TlsIdentity.UriLikeIdentity,
        [(1, "uri", "string", "singular", None)],
        id="TlsIdentity.UriLikeIdentity",
    ),
    pytest.param(
        destination_pb2.AuthorityOverride,
        [(1, "authority_override", "string", "singular", None)],
        id="AuthorityOverride",
    ),
    pytest.param(
        destination_pb2.NoEndpoints,
        [(1, "exists", "bool", "singular", None)],
        id="NoEndpoints",
    ),
    pytest.param(
        destination_pb2.ProtocolHint,
        [
            (1, "h2", f"{DST}.ProtocolHint.H2", "singular", "protocol"),
            (2, "opaque_transport", f"{DST}.ProtocolHint.OpaqueTransport", "singular", None),
            (3, "opaque", f"{DST}.ProtocolHint.Opaque", "singular", "protocol"),
        ],
        id="ProtocolHint",
    ),
    pytest.param(destination_pb2.ProtocolHint.H2, [], id="ProtocolHint.H2"),
    pytest.param(destination_pb2.ProtocolHint.Opaque, [], id="ProtocolHint.Opaque"),
    pytest.param(
        destination_pb2.ProtocolHint.OpaqueTransport,
        [(1, "inbound_port", "uint32", "singular", None)],
        id="ProtocolHint.OpaqueTransport",
    ),
    pytest.param(
        destination_pb2.Http2ClientParams,
        [
            (1, "flow_control", f"{DST}.Http2ClientParams.FlowControl", "singular", None),
            (2, "keep_alive", f"{DST}.Http2ClientParams.KeepAlive", "singular", None),
            (3, "internals", f"{DST}.Http2ClientParams.Internals", "singular", None),
        ],
        id="Http2ClientParams",
    ),
    pytest.param(
        destination_pb2.Http2ClientParams.FlowControl,
        [
            (1, "initial_connection_window_size", "uint32", "singular", None),
            (2, "initial_stream_window_size", "uint32", "singular", None),
            (3, "adaptive_flow_control", "bool", "singular", None),
        ],
        id="Http2ClientParams.FlowControl",
    ),
    pytest.param(
        destination_pb2.Http2ClientParams.KeepAlive,
        [
            (1, "interval", DURATION, "singular", None),
            (2, "timeout", DURATION, "singular", None),
            (3, "while_idle", "bool", "singular", None),
        ],
        id="Http2ClientParams.KeepAlive",
    ),
    pytest.param(
        destination_pb2.Http2ClientParams.Internals,
        [
            (1, "max_concurrent_reset_streams", "uint32", "singular", None),
            (2, "max_frame_size", "uint32", "singular", None),
            (3, "max_send_buf_size", "uint32", "singular", None),
        ],
        id="Http2ClientParams.Internals",
    ),
    pytest.param(
        destination_pb2.DestinationProfile,
        [
            (1, "routes", f"{DST}.Route", "repeated", None),
            (2, "retry_budget", f"{DST}.RetryBudget", "singular", None),
            (3, "dst_overrides", f"{DST}.WeightedDst", "repeated", None),
            (4, "opaque_protocol", "bool", "singular", None),
            (5, "fully_qualified_name", "string", "singular", None),
            (6, "endpoint", f"{DST}.WeightedAddr", "singular", None),
            (7, "parent_ref", f"{META}.Metadata", "singular", None),
            (8, "profile_ref", f"{META}.Metadata", "singular", None),
        ],
        id="DestinationProfile",
    ),
    pytest.param(
        destination_pb2.Route,
        [
            (1, "condition", f"{DST}.RequestMatch", "singular", None),
            (2, "response_classes", f"{DST}.ResponseClass", "repeated", None),
            (3, "metrics_labels", MAP_SS, "map", None),
            (4, "is_retryable", "bool", "singular", None),
            (5, "timeout", DURATION, "singular", None),
        ],
        id="Route",
    ),
    pytest.param(
        destination_pb2.RetryBudget,
        [
            (1, "retry_ratio", "float", "singular", None),
            (2, "min_retries_per_second", "uint32", "singular", None),
            (3, "ttl", DURATION, "singular", None),
        ],
        id="RetryBudget",
    ),
    pytest.param(
        destination_pb2.ResponseClass,
        [
            (1, "condition", f"{DST}.ResponseMatch", "singular", None),
            (2, "is_failure", "bool", "singular", None),
        ],
        id="ResponseClass",
    ),
    pytest.param(
        destination_pb2.RequestMatch,
        [
            (1, "all", f"{DST}.RequestMatch.Seq", "singular", "match"),
            (2, "any", f"{DST}.RequestMatch.Seq", "singular", "match"),
            (3, "not", f"{DST}.RequestMatch", "singular", "match"),
            (4, "path", f"{DST}.PathMatch", "singular", "match"),
            (5, "method", f"{HTTP}.HttpMethod", "singular", "match"),
        ],
        id="RequestMatch",
    ),
    pytest.param(
        destination_pb2.RequestMatch.Seq,
        [(1, "matches", f"{DST}.RequestMatch", "repeated", None)],
        id="RequestMatch.Seq",
    ),
    pytest.param(
        destination_pb2.PathMatch,
        [(1, "regex", "string", "singular", None)],
        id="PathMatch",
    ),
    pytest.param(
        destination_pb2.ResponseMatch,
        [
            (1, "all", f"{DST}.ResponseMatch.Seq", "singular", "match"),
            (2, "any", f"{DST}.ResponseMatch.Seq", "singular", "match"),
            (3, "not", f"{DST}.ResponseMatch", "singular", "match"),
            (4, "status", f"{DST}.HttpStatusRange", "singular", "match"),
        ],
        id="ResponseMatch",
    ),
    pytest.param(
        destination_pb2.ResponseMatch.Seq,
        [(1, "matches", f"{DST}.ResponseMatch", "repeated", None)],
        id="ResponseMatch.Seq",
    ),
    pytest.param(
        destination_pb2.HttpStatusRange,
        [
            (1, "min", "uint32", "singular", None),
            (2, "max", "uint32", "singular", None),
        ],
        id="HttpStatusRange",
    ),
    pytest.param(
        destination_pb2.WeightedDst,
        [
            (1, "authority", "string", "singular", None),
            (2, "weight", "uint32", "singular", None),
            (3, "backend_ref", f"{META}.Metadata", "singular", None),
        ],
        id="WeightedDst",
    ),
    pytest.param(
        net_pb2.TcpAddress,
        [
            (1, "ip", f"{NET}.IPAddress", "singular", None),
            (2, "port", "uint32", "singular", None),
        ],
        id="net.TcpAddress",
    ),
    pytest.param(
        net_pb2.IPAddress,
        [
            (1, "ipv4", "fixed32", "singular", "ip"),
            (2, "ipv6", f"{NET}.IPv6", "singular", "ip"),
        ],
        id="net.IPAddress",
    ),
    pytest.param(
        net_pb2.IPv6,
        [
            (1, "first", "fixed64", "singular", None),
            (2, "last", "fixed64", "singular", None),
        ],
        id="net.IPv6",
    ),
    pytest.param(
        net_pb2.IPNetwork,
        [
            (1, "ip", f"{NET}.IPAddress", "singular", None),
            (2, "prefix_len", "uint32", "singular", None),
        ],
        id="net.IPNetwork",
    ),
    pytest.param(
        meta_pb2.Metadata,
        [
            (1, "default", "string", "singular", "kind"),
            (2, "resource", f"{META}.Resource", "singular", "kind"),
        ],
        id="meta.Metadata",
    ),
    pytest.param(
        meta_pb2.Resource,
        [
            (1, "group", "string", "singular", None),
            (2, "kind", "string", "singular", None),
            (3, "name", "string", "singular", None),
            (4, "namespace", "string", "singular", None),
            (5, "section", "string", "singular", None),
            (6, "port", "uint32", "singular", None),
        ],
        id="meta.Resource",
    ),
    pytest.param(
        http_types_pb2.HttpMethod,
        [
            (1, "registered", f"{HTTP}.HttpMethod.Registered", "singular", "type"),
            (2, "unregistered", "string", "singular", "type"),
        ],
        id="http_types.HttpMethod",
    ),
    pytest.param(
        http_types_pb2.Scheme,
        [
            (1, "registered", f"{HTTP}.Scheme.Registered", "singular", "type"),
            (2, "unregistered", "string", "singular", "type"),
        ],
        id="http_types.Scheme",
    ),
    pytest.param(
        http_types_pb2.Headers,
        [(1, "headers", f"{HTTP}.Headers.Header", "repeated", None)],
        id="http_types.Headers",
    ),
    pytest.param(
        http_types_pb2.Headers.Header,
        [
            (1, "name", "string", "singular", None),
            (2, "value", "bytes", "singular", None),
        ],
        id="http_types.Headers.Header",
    ),
]


@pytest.mark.parametrize(("message", "expected"), FIELD_TABLE)
def test_message_fields_match_the_upstream_schema(
    message: type[Message], expected: list[FieldRow]
) -> None:
    assert _describe(message) == sorted(expected)


def test_every_message_is_covered_by_the_field_table() -> None:
    covered: set[str] = set()
    for param in FIELD_TABLE:
        message = param.values[0]
        assert isinstance(message, type)
        assert issubclass(message, Message)
        covered.add(message.DESCRIPTOR.full_name)
    defined = set().union(
        *(
            _all_messages(module.DESCRIPTOR)
            for module in (destination_pb2, net_pb2, http_types_pb2, meta_pb2)
        )
    )
    assert covered == defined


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        pytest.param(
            http_types_pb2.HttpMethod.Registered,
            {
                "GET": 0,
                "POST": 1,
                "PUT": 2,
                "DELETE": 3,
                "PATCH": 4,
                "OPTIONS": 5,
                "CONNECT": 6,
                "HEAD": 7,
                "TRACE": 8,
            },
            id="HttpMethod.Registered",
        ),
        pytest.param(
            http_types_pb2.Scheme.Registered, {"HTTP": 0, "HTTPS": 1}, id="Scheme.Registered"
        ),
    ],
)
def test_enums_keep_upstream_names_and_numbers(
    enum: EnumTypeWrapper, values: dict[str, int]
) -> None:
    assert {value.name: value.number for value in enum.DESCRIPTOR.values} == values


def test_tls_identity_keeps_the_retired_strategy_reserved() -> None:
    proto = descriptor_pb2.DescriptorProto()
    destination_pb2.TlsIdentity.DESCRIPTOR.CopyToProto(proto)

    assert [(r.start, r.end) for r in proto.reserved_range] == [(2, 3)]
    assert list(proto.reserved_name) == ["k8s_pod_identity"]


def _endpoint() -> destination_pb2.WeightedAddr:
    return destination_pb2.WeightedAddr(
        addr=net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv4=0x0A_01_02_03), port=8080),
        weight=10_000,
        metric_labels={"pod": "web-0", "zone_locality": "local"},
        tls_identity=destination_pb2.TlsIdentity(
            dns_like_identity=destination_pb2.TlsIdentity.DnsLikeIdentity(
                name="web.ns.serviceaccount.identity.linkerd.cluster.local"
            ),
            server_name=destination_pb2.TlsIdentity.DnsLikeIdentity(
                name="web.ns.serviceaccount.identity.linkerd.cluster.local"
            ),
        ),
        protocol_hint=destination_pb2.ProtocolHint(
            h2=destination_pb2.ProtocolHint.H2(),
            opaque_transport=destination_pb2.ProtocolHint.OpaqueTransport(inbound_port=4143),
        ),
        resource_ref=meta_pb2.Metadata(
            resource=meta_pb2.Resource(kind="Pod", name="web-0", namespace="ns")
        ),
    )


def test_an_update_with_one_endpoint_round_trips_through_the_wire_format() -> None:
    update = destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[_endpoint()], metric_labels={"service": "web", "namespace": "ns"}
        )
    )

    wire = update.SerializeToString(deterministic=True)
    decoded = destination_pb2.Update.FromString(wire)

    assert decoded == update
    assert decoded.WhichOneof("update") == "add"
    (endpoint,) = decoded.add.addrs
    assert endpoint.addr.ip.WhichOneof("ip") == "ipv4"
    assert endpoint.addr.ip.ipv4 == 0x0A010203
    assert endpoint.addr.port == 8080
    assert endpoint.weight == 10_000
    assert dict(endpoint.metric_labels) == {"pod": "web-0", "zone_locality": "local"}
    assert endpoint.tls_identity.WhichOneof("strategy") == "dns_like_identity"
    assert endpoint.protocol_hint.WhichOneof("protocol") == "h2"
    assert endpoint.protocol_hint.opaque_transport.inbound_port == 4143
    assert decoded.add.metric_labels["service"] == "web"
    # Serialising the decoded message again yields the same bytes.
    assert decoded.SerializeToString(deterministic=True) == wire


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        pytest.param(
            destination_pb2.GetDestination(scheme="k8s", path="web.ns.svc.cluster.local:8080"),
            # field 1 (scheme), wire type 2: tag 0x0a, length 3
            b"\x0a\x03k8s"
            # field 2 (path), wire type 2: tag 0x12, length 29
            b"\x12\x1dweb.ns.svc.cluster.local:8080",
            id="GetDestination",
        ),
        pytest.param(
            net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv4=0x0A000001), port=8080),
            # field 1 (ip), length 5: { field 1 (ipv4), fixed32 tag 0x0d, 10.0.0.1 little-endian }
            b"\x0a\x05\x0d\x01\x00\x00\x0a"
            # field 2 (port), varint tag 0x10, 8080 = 0x90 0x3f
            b"\x10\x90\x3f",
            id="TcpAddress-ipv4",
        ),
        pytest.param(
            net_pb2.IPAddress(ipv6=net_pb2.IPv6(first=0x20010DB8_00000000, last=1)),
            # field 2 (ipv6) tag 0x12, length 18:
            #   fixed64 tag 0x09, first (2001:db8::) little-endian
            #   fixed64 tag 0x11, last (::1) little-endian
            b"\x12\x12\x09\x00\x00\x00\x00\xb8\x0d\x01\x20\x11\x01\x00\x00\x00\x00\x00\x00\x00",
            id="IPAddress-ipv6",
        ),
        pytest.param(
            destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=True)),
            # field 3 (no_endpoints), length 2: { field 1 (exists) varint tag 0x08, true }
            b"\x1a\x02\x08\x01",
            id="Update-no_endpoints-exists",
        ),
        pytest.param(
            destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=False)),
            # A set oneof member is sent even when empty.
            b"\x1a\x00",
            id="Update-no_endpoints-unknown",
        ),
        pytest.param(
            destination_pb2.WeightedAddr(
                weight=1,
                protocol_hint=destination_pb2.ProtocolHint(
                    opaque=destination_pb2.ProtocolHint.Opaque(),
                    opaque_transport=destination_pb2.ProtocolHint.OpaqueTransport(
                        inbound_port=4143
                    ),
                ),
            ),
            # field 3 (weight) varint tag 0x18, 1
            b"\x18\x01"
            # field 6 (protocol_hint), length 7:
            #   field 2 (opaque_transport) tag 0x12, length 3: { tag 0x08, 4143 = 0xaf 0x20 }
            #   field 3 (opaque) tag 0x1a, empty
            b"\x32\x07\x12\x03\x08\xaf\x20\x1a\x00",
            id="WeightedAddr-opaque",
        ),
        pytest.param(
            destination_pb2.DestinationProfile(
                fully_qualified_name="web.ns.svc.cluster.local", opaque_protocol=True
            ),
            # field 4 (opaque_protocol) varint tag 0x20, true
            b"\x20\x01"
            # field 5 (fully_qualified_name) tag 0x2a, length 24
            b"\x2a\x18web.ns.svc.cluster.local",
            id="DestinationProfile",
        ),
    ],
)
def test_small_messages_encode_to_hand_computed_bytes(message: Message, wire: bytes) -> None:
    assert message.SerializeToString(deterministic=True) == wire
    assert type(message).FromString(wire) == message
