"""Unit tests for ``destination endpoints`` (destination.cli.endpoints).

Scope: :class:`EndpointTable` applying real ``pb.Update`` messages (Add
replaces by ip:port, Remove deletes, NoEndpoints clears; IPv4 and IPv6),
:class:`Endpoint` decoding every field a proxy reads, the rendered table
(columns, markers, removed rows shown once), the JSON documents and the three
frame modes, argument parsing (defaults, ``DESTINATION_SERVER``, usage
errors), and :func:`watch` against small in-process gRPC servers (no cluster)
for the outcomes that need no Kubernetes: unreachable server, error status,
stream end, no update within ``--once --timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import grpc
import pytest

from destination._proto import destination_pb2 as pb
from destination._proto import net_pb2
from destination.cli.command import build_parser, main
from destination.cli.endpoints import (
    CLEAR_SCREEN,
    DEFAULT_SERVER,
    Endpoint,
    EndpointTable,
    FrameMode,
    Outcome,
    WatchOptions,
    address_key,
    frame,
    options_from_args,
    watch,
)
from destination.translate.endpoints import tcp_address

AUTHORITY = "web.shop.svc.cluster.local:80"
SET_LABELS = {"service": "web", "namespace": "shop"}
IDENTITY = "default.shop.serviceaccount.identity.linkerd.cluster.local"


def pod_labels(pod: str, zone: str = "east-a", **extra: str) -> dict[str, str]:
    return {
        "pod": pod,
        "deployment": "web",
        "serviceaccount": "default",
        "pod_template_hash": "5f7d",
        "zone": zone,
        "zone_locality": "unknown",
        **extra,
    }


def addr(
    ip: str,
    port: int = 8080,
    *,
    labels: Mapping[str, str] | None = None,
    weight: int = 10_000,
    **fields: object,
) -> pb.WeightedAddr:
    return pb.WeightedAddr(
        addr=tcp_address(ip, port),
        weight=weight,
        metric_labels=dict(labels if labels is not None else pod_labels(f"web-{ip}")),
        **fields,  # type: ignore[arg-type]
    )


def add(*addrs: pb.WeightedAddr, labels: Mapping[str, str] = SET_LABELS) -> pb.Update:
    return pb.Update(add=pb.WeightedAddrSet(addrs=addrs, metric_labels=dict(labels)))


def remove(*targets: tuple[str, int]) -> pb.Update:
    return pb.Update(remove=pb.AddrSet(addrs=[tcp_address(ip, port) for ip, port in targets]))


def applied(*updates: pb.Update) -> EndpointTable:
    table = EndpointTable(AUTHORITY)
    for update in updates:
        table.apply(update)
    return table


def ips(endpoints: Iterable[Mapping[str, object]]) -> list[object]:
    return [e["ip"] for e in endpoints]


# --------------------------------------------------------------------------
# EndpointTable: applying updates


def test_a_first_add_is_the_whole_set_with_its_labels() -> None:
    table = applied(add(addr("10.11.0.7"), addr("10.11.0.5")))

    assert sorted(table.endpoints) == ["10.11.0.5:8080", "10.11.0.7:8080"]
    assert table.labels == SET_LABELS
    assert table.update_count == 1
    assert table.new_keys == {"10.11.0.5:8080", "10.11.0.7:8080"}
    assert table.changed_keys == set()
    assert table.removed == {}


def test_an_add_for_a_known_address_replaces_it() -> None:
    first = addr("10.11.0.5", labels=pod_labels("web-a", zone="east-a"))
    moved = addr("10.11.0.5", labels=pod_labels("web-a", zone="east-b"))
    table = applied(add(first, addr("10.11.0.6")), add(moved))

    assert len(table.endpoints) == 2
    assert table.endpoints["10.11.0.5:8080"].metric_labels["zone"] == "east-b"
    assert table.new_keys == set()
    assert table.changed_keys == {"10.11.0.5:8080"}
    assert [e.key for e in table.added] == ["10.11.0.5:8080"]


def test_an_identical_resend_is_neither_new_nor_changed() -> None:
    table = applied(add(addr("10.11.0.5")), add(addr("10.11.0.5")))

    assert table.new_keys == set()
    assert table.changed_keys == set()
    assert len(table.added) == 1


def test_the_same_ip_on_another_port_is_another_endpoint() -> None:
    table = applied(add(addr("10.11.0.5", 8080)), add(addr("10.11.0.5", 9090)))

    assert sorted(table.endpoints) == ["10.11.0.5:8080", "10.11.0.5:9090"]


def test_a_later_add_sets_the_labels_of_the_whole_set() -> None:
    table = applied(add(addr("10.11.0.5")), add(addr("10.11.0.6"), labels={"service": "web2"}))

    assert table.labels == {"service": "web2"}


def test_remove_deletes_by_ip_and_port_and_ignores_unknown_addresses() -> None:
    table = applied(
        add(addr("10.11.0.5"), addr("10.11.0.6")),
        remove(("10.11.0.5", 8080), ("10.11.0.5", 9999), ("10.11.0.99", 8080)),
    )

    assert list(table.endpoints) == ["10.11.0.6:8080"]
    assert list(table.removed) == ["10.11.0.5:8080"]
    assert table.removed_keys == ["10.11.0.5:8080", "10.11.0.5:9999", "10.11.0.99:8080"]
    assert table.labels == SET_LABELS, "a remove keeps the set labels"
    assert table.update_count == 2


def test_no_endpoints_clears_the_set_and_records_whether_the_service_exists() -> None:
    update = pb.Update(no_endpoints=pb.NoEndpoints(exists=True))
    table = applied(add(addr("10.11.0.5"), addr("10.11.0.6")), update)

    assert table.endpoints == {}
    assert sorted(table.removed) == ["10.11.0.5:8080", "10.11.0.6:8080"]
    assert table.exists is True
    table.apply(add(addr("10.11.0.7")))
    assert table.exists is None


def test_ipv6_addresses_are_keyed_in_brackets() -> None:
    table = applied(add(addr("fd00:11::5"), addr("10.11.0.5")))

    assert sorted(table.endpoints) == ["10.11.0.5:8080", "[fd00:11::5]:8080"]
    assert table.endpoints["[fd00:11::5]:8080"].ip == "fd00:11::5"
    table.apply(remove(("fd00:11::5", 8080)))
    assert list(table.endpoints) == ["10.11.0.5:8080"]
    assert list(table.removed) == ["[fd00:11::5]:8080"]


def test_ipv6_halves_decode_big_endian() -> None:
    tcp = net_pb2.TcpAddress(
        ip=net_pb2.IPAddress(ipv6=net_pb2.IPv6(first=0xFD00_0011_0000_0000, last=0x5)),
        port=80,
    )
    assert address_key(tcp) == "[fd00:11::5]:80"
    ipv4 = net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv4=0x0A0B0005), port=80)
    assert address_key(ipv4) == "10.11.0.5:80"


# --------------------------------------------------------------------------
# Endpoint: what a proxy reads from one WeightedAddr


def test_an_unmeshed_pod_has_no_identity_and_no_hint() -> None:
    endpoint = Endpoint.from_proto(addr("10.11.0.5", labels=pod_labels("web-a")))

    assert endpoint.to_json() == {
        "ip": "10.11.0.5",
        "port": 8080,
        "weight": 10_000,
        "metric_labels": {
            "deployment": "web",
            "pod": "web-a",
            "pod_template_hash": "5f7d",
            "serviceaccount": "default",
            "zone": "east-a",
            "zone_locality": "unknown",
        },
        "identity": None,
        "server_name": None,
        "protocol_hint": None,
        "opaque_transport_port": None,
        "authority_override": None,
        "http2": False,
    }
    assert endpoint.row() == (
        "10.11.0.5:8080",
        "web-a",
        "deployment=web",
        "-",
        "-",
        "east-a",
        "unknown",
    )


def test_a_meshed_opaque_pod_has_identity_and_transport() -> None:
    message = addr(
        "10.11.0.5",
        tls_identity=pb.TlsIdentity(
            dns_like_identity=pb.TlsIdentity.DnsLikeIdentity(name=IDENTITY),
            server_name=pb.TlsIdentity.DnsLikeIdentity(name=IDENTITY),
        ),
        protocol_hint=pb.ProtocolHint(
            opaque=pb.ProtocolHint.Opaque(),
            opaque_transport=pb.ProtocolHint.OpaqueTransport(inbound_port=4143),
        ),
        http2=pb.Http2ClientParams(keep_alive=pb.Http2ClientParams.KeepAlive(while_idle=True)),
    )
    endpoint = Endpoint.from_proto(message)

    assert endpoint.identity == IDENTITY
    assert endpoint.server_name == IDENTITY
    assert endpoint.protocol_hint == "opaque"
    assert endpoint.opaque_transport_port == 4143
    assert endpoint.protocol == "opaque+transport:4143"
    assert endpoint.http2 is True


@pytest.mark.parametrize(
    ("hint", "column", "json_hint"),
    [
        pytest.param(pb.ProtocolHint(h2=pb.ProtocolHint.H2()), "h2", "h2", id="h2"),
        pytest.param(
            pb.ProtocolHint(
                h2=pb.ProtocolHint.H2(),
                opaque_transport=pb.ProtocolHint.OpaqueTransport(inbound_port=4143),
            ),
            "h2+transport:4143",
            "h2",
            id="h2-forced-transport",
        ),
        pytest.param(pb.ProtocolHint(), "-", None, id="empty-hint"),
    ],
)
def test_protocol_column(hint: pb.ProtocolHint, column: str, json_hint: str | None) -> None:
    endpoint = Endpoint.from_proto(addr("10.11.0.5", protocol_hint=hint))

    assert endpoint.protocol == column
    assert endpoint.protocol_hint == json_hint


def test_a_gateway_address_has_an_authority_override_and_no_pod() -> None:
    message = addr(
        "172.18.0.4",
        4143,
        labels={"zone_locality": "unknown"},
        tls_identity=pb.TlsIdentity(
            uri_like_identity=pb.TlsIdentity.UriLikeIdentity(uri="spiffe://west/gateway")
        ),
        authority_override=pb.AuthorityOverride(authority_override="web.shop.svc.west.local:80"),
    )
    endpoint = Endpoint.from_proto(message)

    assert endpoint.identity == "spiffe://west/gateway"
    assert endpoint.server_name is None
    assert endpoint.authority_override == "web.shop.svc.west.local:80"
    assert endpoint.row() == (
        "172.18.0.4:4143",
        "-",
        "-",
        "spiffe://west/gateway",
        "-",
        "-",
        "unknown",
    )


@pytest.mark.parametrize(
    ("labels", "workload"),
    [
        pytest.param(pod_labels("p"), "deployment=web", id="deployment"),
        pytest.param({"pod": "db-0", "statefulset": "db"}, "statefulset=db", id="statefulset"),
        pytest.param({"pod": "j-x", "k8s_job": "j"}, "k8s_job=j", id="job"),
        pytest.param(
            {"pod": "p", "replicaset": "rs", "deployment": "d"}, "deployment=d", id="pref"
        ),
        pytest.param({"pod": "p", "rollout": "r"}, "rollout=r", id="unknown-kind"),
        pytest.param({"pod": "p", "serviceaccount": "sa"}, "-", id="no-owner"),
    ],
)
def test_workload_column_is_the_owner_label(labels: dict[str, str], workload: str) -> None:
    assert Endpoint.from_proto(addr("10.11.0.5", labels=labels)).workload == workload


# --------------------------------------------------------------------------
# rendering


def marked_rows(table: EndpointTable) -> list[tuple[str, str]]:
    """(marker, address) of each rendered row."""
    return [(line[0], line[3:].split()[0]) for line in table.render().splitlines()[2:]]


def test_render_marks_added_rows_and_aligns_columns() -> None:
    meshed = addr(
        "10.11.0.10",
        labels=pod_labels("web-b", zone="east-b"),
        tls_identity=pb.TlsIdentity(
            dns_like_identity=pb.TlsIdentity.DnsLikeIdentity(name=IDENTITY)
        ),
        protocol_hint=pb.ProtocolHint(h2=pb.ProtocolHint.H2()),
    )
    table = applied(add(addr("10.11.0.9", labels=pod_labels("web-a")), meshed))

    assert table.render() == (
        "web.shop.svc.cluster.local:80  update 1 (+2 ~0 -0)  2 endpoints"
        "  labels namespace=shop,service=web\n"
        "   ADDRESS          POD    WORKLOAD        IDENTITY"
        "                                                    PROTOCOL  ZONE    LOCALITY\n"
        "+  10.11.0.9:8080   web-a  deployment=web  -"
        "                                                           -         east-a  unknown\n"
        "+  10.11.0.10:8080  web-b  deployment=web  " + IDENTITY + "  h2        east-b  unknown\n"
    )


def test_render_shows_removed_rows_once_then_drops_them() -> None:
    table = applied(
        add(
            addr("10.11.0.5", labels=pod_labels("web-a")),
            addr("10.11.0.6", labels=pod_labels("web-b")),
        ),
        add(addr("10.11.0.7", labels=pod_labels("web-c"))),
    )
    assert marked_rows(table) == [
        (" ", "10.11.0.5:8080"),
        (" ", "10.11.0.6:8080"),
        ("+", "10.11.0.7:8080"),
    ]

    table.apply(remove(("10.11.0.5", 8080)))
    header = table.render().splitlines()[0]
    assert header.startswith(f"{AUTHORITY}  update 3 (+0 ~0 -1)  2 endpoints")
    assert marked_rows(table) == [
        ("-", "10.11.0.5:8080"),
        (" ", "10.11.0.6:8080"),
        (" ", "10.11.0.7:8080"),
    ]

    table.apply(add(addr("10.11.0.6", labels=pod_labels("web-b", zone="east-b"))))
    assert marked_rows(table) == [
        ("~", "10.11.0.6:8080"),
        (" ", "10.11.0.7:8080"),
    ]


def test_render_orders_rows_numerically_ipv4_before_ipv6() -> None:
    table = applied(add(addr("fd00::2"), addr("10.11.0.100"), addr("10.11.0.20"), addr("fd00::10")))
    assert [address for _, address in marked_rows(table)] == [
        "10.11.0.20:8080",
        "10.11.0.100:8080",
        "[fd00::2]:8080",
        "[fd00::10]:8080",
    ]


def test_render_of_an_empty_set() -> None:
    table = applied(add(addr("10.11.0.5")), pb.Update(no_endpoints=pb.NoEndpoints(exists=False)))
    table.apply(pb.Update(no_endpoints=pb.NoEndpoints(exists=False)))

    assert table.render() == (
        f"{AUTHORITY}  update 3 (+0 ~0 -0)  0 endpoints  no endpoints: service does not exist"
        "  labels namespace=shop,service=web\n"
        "   ADDRESS  POD  WORKLOAD  IDENTITY  PROTOCOL  ZONE  LOCALITY\n"
        "   (no endpoints)\n"
    )
    waiting = EndpointTable(AUTHORITY).render().splitlines()[0]
    assert waiting.startswith(f"{AUTHORITY}  waiting for the first update")


# --------------------------------------------------------------------------
# JSON documents and frames


def test_json_document_lists_the_change_and_the_current_set() -> None:
    table = applied(add(addr("10.11.0.5"), addr("10.11.0.6")))
    first = table.json_document()
    assert list(first) == ["update", "added", "removed", "endpoints", "labels"]
    assert first["update"] == 1
    assert ips(first["added"]) == ["10.11.0.5", "10.11.0.6"]
    assert first["removed"] == []
    assert first["endpoints"] == first["added"]
    assert first["labels"] == SET_LABELS

    table.apply(remove(("10.11.0.5", 8080)))
    second = table.json_document()
    assert second["update"] == 2
    assert second["added"] == []
    assert second["removed"] == ["10.11.0.5:8080"]
    assert ips(second["endpoints"]) == ["10.11.0.6"]

    table.apply(add(addr("fd00::7", 80)))
    third = table.json_document()
    assert [(e["ip"], e["port"]) for e in third["added"]] == [("fd00::7", 80)]
    assert ips(third["endpoints"]) == ["10.11.0.6", "fd00::7"]


def test_json_frames_are_one_compact_line_each() -> None:
    table = applied(add(addr("10.11.0.5")))
    text = frame(table, FrameMode.JSON)

    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert json.loads(text) == table.json_document()


def test_redraw_frames_clear_the_screen_and_snapshots_are_separated_by_a_blank_line() -> None:
    table = applied(add(addr("10.11.0.5")))
    assert frame(table, FrameMode.REDRAW) == CLEAR_SCREEN + table.render()
    assert frame(table, FrameMode.SNAPSHOTS) == table.render()

    table.apply(remove(("10.11.0.5", 8080)))
    assert frame(table, FrameMode.SNAPSHOTS) == "\n" + table.render()


# --------------------------------------------------------------------------
# arguments


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["endpoints", *argv])


def test_defaults() -> None:
    options = options_from_args(parse(AUTHORITY), environ={})

    assert options == WatchOptions(
        authority=AUTHORITY,
        server=DEFAULT_SERVER,
        context_token="",
        json=False,
        once=False,
        timeout_s=10.0,
    )
    assert DEFAULT_SERVER == "localhost:8086"


def test_every_flag() -> None:
    args = parse(
        AUTHORITY,
        "--server",
        "10.0.0.1:8086",
        "--context-token",
        '{"ns":"shop"}',
        "--json",
        "--once",
        "--timeout",
        "2.5",
    )
    options = options_from_args(args, environ={"DESTINATION_SERVER": "other:1"})

    assert options == WatchOptions(
        authority=AUTHORITY,
        server="10.0.0.1:8086",
        context_token='{"ns":"shop"}',
        json=True,
        once=True,
        timeout_s=2.5,
    )


def test_the_server_comes_from_the_environment_when_the_flag_is_absent() -> None:
    options = options_from_args(parse(AUTHORITY), environ={"DESTINATION_SERVER": "dst:8086"})

    assert options.server == "dst:8086"


def test_the_handler_is_the_endpoints_command() -> None:
    args = parse(AUTHORITY)
    assert args.command == "endpoints"
    assert callable(args.handler)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-authority"),
        pytest.param([AUTHORITY, "--timeout", "0"], id="zero-timeout"),
        pytest.param([AUTHORITY, "--timeout", "-1"], id="negative-timeout"),
        pytest.param([AUTHORITY, "--timeout", "soon"], id="word-timeout"),
        pytest.param([AUTHORITY, "--timeout", "nan"], id="nan-timeout"),
        pytest.param([AUTHORITY, "--server"], id="missing-server"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["endpoints", *argv]) == 2

    assert "error:" in capsys.readouterr().err


def test_top_level_help_lists_the_endpoints_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0

    assert "endpoints" in capsys.readouterr().out


def test_help_documents_the_environment_variable_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["endpoints", "--help"]) == 0

    out = " ".join(capsys.readouterr().out.split())
    assert "Env: DESTINATION_SERVER" in out
    assert "Default: localhost:8086" in out
    assert "3 when --once received no update within --timeout" in out


# --------------------------------------------------------------------------
# watch() against in-process gRPC servers (no cluster)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Behaviour = Callable[[pb.GetDestination, grpc.aio.ServicerContext], AsyncIterator[pb.Update]]


async def _serve(behaviour: Behaviour) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(
        behaviour,
        request_deserializer=pb.GetDestination.FromString,
        response_serializer=pb.Update.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "io.linkerd.proxy.destination.Destination", {"Get": handler}
            ),
        )
    )
    address = f"127.0.0.1:{_free_port()}"
    server.add_insecure_port(address)
    await server.start()
    return server, address


async def _watch_with(
    behaviour: Behaviour, mode: FrameMode = FrameMode.JSON, **options: object
) -> tuple[Outcome, str]:
    server, address = await _serve(behaviour)
    out = io.StringIO()
    try:
        settings: dict[str, object] = {"timeout_s": 5.0, **options}
        outcome = await watch(
            WatchOptions(authority=AUTHORITY, server=address, **settings),  # type: ignore[arg-type]
            out,
            mode,
        )
    finally:
        await server.stop(grace=None)
    return outcome, out.getvalue()


async def test_watch_writes_a_frame_per_update_until_the_stream_ends() -> None:
    requests: list[pb.GetDestination] = []

    async def two_updates(
        request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Update]:
        requests.append(request)
        yield add(addr("10.11.0.5"), addr("10.11.0.6"))
        yield remove(("10.11.0.5", 8080))

    outcome, text = await _watch_with(two_updates, context_token='{"ns":"shop"}')

    assert outcome == Outcome(0, "the server ended the stream")
    documents = [json.loads(line) for line in text.splitlines()]
    assert [d["update"] for d in documents] == [1, 2]
    assert ips(documents[1]["endpoints"]) == ["10.11.0.6"]
    assert requests == [
        pb.GetDestination(scheme="k8s", path=AUTHORITY, context_token='{"ns":"shop"}')
    ]


async def test_watch_once_stops_after_the_first_update() -> None:
    async def endless(
        request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Update]:
        yield add(addr("10.11.0.5"))
        await asyncio.Event().wait()

    outcome, text = await _watch_with(endless, FrameMode.SNAPSHOTS, once=True)

    assert outcome == Outcome(0)
    assert text.splitlines()[2].startswith("+  10.11.0.5:8080")


async def test_watch_redraw_starts_with_a_waiting_screen() -> None:
    async def one(
        request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Update]:
        yield add(addr("10.11.0.5"))

    outcome, text = await _watch_with(one, FrameMode.REDRAW)

    assert outcome.status == 0
    screens = text.split(CLEAR_SCREEN)
    assert screens[0] == ""
    assert "waiting for the first update" in screens[1]
    assert "+  10.11.0.5:8080" in screens[2]


async def test_watch_once_without_an_update_exits_3() -> None:
    async def silent(
        request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Update]:
        await asyncio.Event().wait()
        yield pb.Update()  # pragma: no cover - makes this an async generator

    outcome, text = await _watch_with(silent, once=True, timeout_s=0.5)

    assert outcome == Outcome(3, "no endpoints received within 0.5s")
    assert text == ""


async def test_watch_reports_the_status_code_and_details() -> None:
    async def not_found(
        request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Update]:
        await context.abort(grpc.StatusCode.NOT_FOUND, "service shop/web not found")
        yield pb.Update()  # pragma: no cover - makes this an async generator

    outcome, _ = await _watch_with(not_found)

    assert outcome == Outcome(1, "error: NOT_FOUND: service shop/web not found")


async def test_watch_gives_up_on_an_unreachable_server() -> None:
    options = WatchOptions(authority=AUTHORITY, server=f"127.0.0.1:{_free_port()}", timeout_s=0.3)

    outcome = await watch(options, io.StringIO(), FrameMode.JSON)

    assert outcome.status == 1
    assert outcome.message == (
        f"error: cannot reach the destination server at {options.server} within 0.3s"
    )


def test_escape_sequences_in_labels_and_identities_are_shown_not_executed() -> None:
    """Hardening #16: labels come from (remote) pods; they reached the terminal raw."""
    labels = pod_labels("web-\x1b[2J", zone="east\u202ea")
    identity = pb.TlsIdentity(
        dns_like_identity=pb.TlsIdentity.DnsLikeIdentity(name="evil\x1b]0;title\x07")
    )
    table = applied(
        add(addr("10.11.0.5", labels=labels, tls_identity=identity), labels={"svc": "a\nb"})
    )
    text = table.render()
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert len(text.splitlines()) == 3  # header, column titles, one row
    assert "web-\\x1b[2J" in text
