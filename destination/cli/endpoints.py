"""``destination endpoints``: watch one authority's endpoints the way a proxy sees them.

Our equivalent of ``linkerd diagnostics endpoints``. It connects to a running
destination server like a proxy does (plaintext gRPC, ``--server`` or
``DESTINATION_SERVER``, default ``localhost:8086``), opens one
``Destination/Get`` stream for the authority and shows every update: a table
redrawn after each one, or one JSON document per update with ``--json``.

Exit status: 0 after Ctrl-C, after the stream ends with OK, or after the first
update with ``--once``; 1 for a gRPC error (``error: NOT_FOUND: ...``) or a
server that cannot be reached within ``--timeout``; 3 when ``--once`` got no
update within ``--timeout`` (the server sends nothing at all while a service
has no endpoints); 2 for usage errors, through argparse.

Design choices
--------------
* **State is pure and separate from I/O.** :class:`EndpointTable` applies
  ``Update`` messages as a proxy does (an Add replaces by ``ip:port`` and sets
  the set-level labels, a Remove deletes, NoEndpoints clears) and records
  what the last update changed; :meth:`EndpointTable.render` and
  :meth:`EndpointTable.json_document` turn that into text. Neither touches
  gRPC, the clock or a stream, so unit tests feed them real ``pb.Update``
  messages and compare strings.
* **Heavy imports stay in the handler.** grpc and the generated protobuf
  modules are imported inside :func:`watch`, as ``serve`` does with
  ``destination.app``: ``destination --help`` never loads them. This module
  only needs them for type annotations.
* **One deadline for ``--timeout``.** It starts when the command starts:
  the channel must be ready before it (otherwise exit 1, "cannot reach"), and
  with ``--once`` the first update must arrive before it too (otherwise
  exit 3). Without ``--once`` the stream then runs for as long as it lives.
* **The event loop never blocks.** The gRPC stream is ``grpc.aio``; frames are
  written to stdout with :func:`asyncio.to_thread`, so a slow terminal or
  pipe holds back only this stream, never the loop. Errors travel back to
  the synchronous handler as an :class:`Outcome` and are printed there.
* **Three kinds of frames.** ``--json`` writes one compact document per line
  (flushed, for ``jq`` and scripts). A table on a terminal is redrawn in place
  with ANSI "cursor home, clear screen" (no curses); otherwise, and always
  with ``--once``, each snapshot is printed in turn, separated by a blank
  line, so logs and pipes keep the history.
* **Markers.** In a table, ``+`` marks a row added by the last update, ``~``
  a row the update re-sent with different contents, and ``-`` a row it
  removed; removed rows are shown once, then dropped. The header counts
  them, plus addresses an Add re-sent unchanged, so no update goes unseen.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import ipaddress
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from destination.cli.printable import printable

if TYPE_CHECKING:
    from destination._proto import destination_pb2 as pb
    from destination._proto import net_pb2
    from destination.cli.common import Subparsers

__all__ = [
    "DEFAULT_SERVER",
    "ENV_SERVER",
    "Endpoint",
    "EndpointTable",
    "FrameMode",
    "Outcome",
    "WatchOptions",
    "frame",
    "options_from_args",
    "register",
    "watch",
]

DEFAULT_SERVER = "localhost:8086"
ENV_SERVER = "DESTINATION_SERVER"
DEFAULT_TIMEOUT_S = 10.0
GET_METHOD = "/io.linkerd.proxy.destination.Destination/Get"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_NO_UPDATE = 3

CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, then erase the whole screen

# Metric labels of an address that are not its owner (see destination.translate.endpoints).
_NOT_OWNER_LABELS = frozenset(
    {"pod", "serviceaccount", "control_plane_ns", "pod_template_hash", "zone", "zone_locality"}
)
# Owner labels in the order a workload column prefers them.
_OWNER_LABELS = (
    "deployment",
    "statefulset",
    "daemonset",
    "k8s_job",
    "cronjob",
    "replicaset",
    "replicationcontroller",
    "external_workload",
)
_COLUMNS = ("ADDRESS", "POD", "WORKLOAD", "IDENTITY", "PROTOCOL", "ZONE", "LOCALITY")


# --------------------------------------------------------------------------
# state


def ip_text(ip: net_pb2.IPAddress) -> str:
    """An ``IPAddress`` message as text: ``10.11.0.5``, ``fd00::1`` (``0.0.0.0`` if unset)."""
    if ip.WhichOneof("ip") == "ipv6":
        return str(ipaddress.IPv6Address((ip.ipv6.first << 64) | ip.ipv6.last))
    return str(ipaddress.IPv4Address(ip.ipv4))


def address_key(tcp: net_pb2.TcpAddress) -> str:
    """``ip:port`` as proxies key endpoints; IPv6 in brackets: ``[fd00::1]:8080``."""
    return _join_host_port(ip_text(tcp.ip), tcp.port)


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _sort_key(key: str) -> tuple[int, int, int]:
    """Numeric order of ``ip:port`` keys: IPv4 before IPv6, then address, then port."""
    host, _, port = key.rpartition(":")
    parsed = ipaddress.ip_address(host.strip("[]"))
    return parsed.version, int(parsed), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One ``WeightedAddr`` as plain values."""

    ip: str
    port: int
    weight: int
    metric_labels: Mapping[str, str]
    identity: str | None
    server_name: str | None
    protocol_hint: str | None  # "h2", "opaque", or None
    opaque_transport_port: int | None
    authority_override: str | None
    http2: bool

    @classmethod
    def from_proto(cls, addr: pb.WeightedAddr) -> Endpoint:
        tls = addr.tls_identity
        strategy = tls.WhichOneof("strategy") if addr.HasField("tls_identity") else None
        identity = {
            "dns_like_identity": tls.dns_like_identity.name,
            "uri_like_identity": tls.uri_like_identity.uri,
        }.get(strategy or "")
        hint = addr.protocol_hint
        has_hint = addr.HasField("protocol_hint")
        transport = has_hint and hint.HasField("opaque_transport")
        override = addr.authority_override.authority_override
        return cls(
            ip=ip_text(addr.addr.ip),
            port=addr.addr.port,
            weight=addr.weight,
            metric_labels=dict(sorted(addr.metric_labels.items())),
            identity=identity or None,
            server_name=tls.server_name.name or None,
            protocol_hint=hint.WhichOneof("protocol") if has_hint else None,
            opaque_transport_port=hint.opaque_transport.inbound_port if transport else None,
            authority_override=override or None,
            http2=addr.HasField("http2"),
        )

    @property
    def key(self) -> str:
        return _join_host_port(self.ip, self.port)

    @property
    def workload(self) -> str:
        """The owner label, like ``deployment=web``; ``-`` for addresses without a pod."""
        owners = [k for k in self.metric_labels if k not in _NOT_OWNER_LABELS]
        if not owners:
            return "-"
        preferred = [k for k in _OWNER_LABELS if k in owners]
        name = preferred[0] if preferred else sorted(owners)[0]
        return f"{name}={self.metric_labels[name]}"

    @property
    def protocol(self) -> str:
        """``h2``, ``opaque``, ``opaque+transport:4143``, ``transport:4143`` or ``-``."""
        parts = [self.protocol_hint] if self.protocol_hint else []
        if self.opaque_transport_port is not None:
            parts.append(f"transport:{self.opaque_transport_port}")
        return "+".join(parts) or "-"

    def row(self) -> tuple[str, ...]:
        """The table cells, escaped: every string here came from the server."""
        labels = self.metric_labels
        cells = (
            self.key,
            labels.get("pod") or "-",
            self.workload,
            self.identity or "-",
            self.protocol,
            labels.get("zone") or "-",
            labels.get("zone_locality") or "-",
        )
        return tuple(printable(cell) for cell in cells)

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "weight": self.weight,
            "metric_labels": dict(self.metric_labels),
            "identity": self.identity,
            "server_name": self.server_name,
            "protocol_hint": self.protocol_hint,
            "opaque_transport_port": self.opaque_transport_port,
            "authority_override": self.authority_override,
            "http2": self.http2,
        }


@dataclass
class EndpointTable:
    """The endpoint set of one Get stream, kept as a proxy keeps it, plus the last change."""

    authority: str
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    update_count: int = 0
    # What the last update did, for markers and JSON documents.
    added: list[Endpoint] = field(default_factory=list)  # every address of the last Add
    new_keys: set[str] = field(default_factory=set)  # keys that were not in the set
    changed_keys: set[str] = field(default_factory=set)  # keys re-sent with other contents
    removed_keys: list[str] = field(default_factory=list)  # as the update named them
    removed: dict[str, Endpoint] = field(default_factory=dict)  # rows the update took away
    # From a NoEndpoints update: whether the service exists; None otherwise.
    exists: bool | None = None

    def apply(self, update: pb.Update) -> None:
        """Apply one update: Add replaces by ``ip:port``, Remove deletes, NoEndpoints clears."""
        self.update_count += 1
        self.added, self.removed_keys, self.removed = [], [], {}
        self.new_keys, self.changed_keys = set(), set()
        kind = update.WhichOneof("update")
        if kind == "add":
            self.exists = None
            self.labels = dict(sorted(update.add.metric_labels.items()))
            for addr in update.add.addrs:
                endpoint = Endpoint.from_proto(addr)
                previous = self.endpoints.get(endpoint.key)
                if previous is None:
                    self.new_keys.add(endpoint.key)
                elif previous != endpoint:
                    self.changed_keys.add(endpoint.key)
                self.endpoints[endpoint.key] = endpoint
                self.added.append(endpoint)
        elif kind == "remove":
            self.exists = None
            for tcp in update.remove.addrs:
                key = address_key(tcp)
                self.removed_keys.append(key)
                gone = self.endpoints.pop(key, None)
                if gone is not None:
                    self.removed[key] = gone
        elif kind == "no_endpoints":
            self.exists = update.no_endpoints.exists
            self.removed = self.endpoints
            self.removed_keys = sorted(self.endpoints, key=_sort_key)
            self.endpoints = {}

    def _sorted(self, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        return sorted(endpoints, key=lambda e: _sort_key(e.key))

    def json_document(self) -> dict[str, Any]:
        """The last update as ``{"update", "added", "removed", "endpoints", "labels"}``."""
        return {
            "update": self.update_count,
            "added": [e.to_json() for e in self._sorted(self.added)],
            "removed": sorted(self.removed_keys, key=_sort_key),
            "endpoints": [e.to_json() for e in self._sorted(self.endpoints.values())],
            "labels": dict(self.labels),
        }

    def header(self) -> str:
        parts = [self.authority]
        if self.update_count == 0:
            parts.append("waiting for the first update (none comes while there are no endpoints)")
        else:
            changes = f"+{len(self.new_keys)} ~{len(self.changed_keys)} -{len(self.removed)}"
            unchanged = len(self.added) - len(self.new_keys) - len(self.changed_keys)
            if unchanged:
                changes += f", {unchanged} re-sent unchanged"
            parts.append(f"update {self.update_count} ({changes})")
            count = len(self.endpoints)
            parts.append(f"{count} endpoint{'' if count == 1 else 's'}")
            if self.exists is not None:
                state = "exists" if self.exists else "does not exist"
                parts.append(f"no endpoints: service {state}")
        labels = ",".join(f"{k}={v}" for k, v in self.labels.items())
        parts.append(f"labels {labels or '-'}")
        return printable("  ".join(parts))

    def render(self) -> str:
        """The header line and the table, rows in address order, with change markers."""
        rows: list[tuple[str, tuple[str, ...]]] = []
        shown = {**self.endpoints, **self.removed}
        for key in sorted(shown, key=_sort_key):
            if key in self.removed:
                marker = "-"
            elif key in self.new_keys:
                marker = "+"
            elif key in self.changed_keys:
                marker = "~"
            else:
                marker = " "
            rows.append((marker, shown[key].row()))
        widths = [len(title) for title in _COLUMNS]
        for _, cells in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]

        def line(marker: str, cells: Sequence[str]) -> str:
            padded = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            return f"{marker}  {padded}".rstrip()

        lines = [self.header(), line(" ", _COLUMNS)]
        lines += [line(marker, cells) for marker, cells in rows]
        if not rows:
            lines.append("   (no endpoints)")
        return "\n".join(lines) + "\n"


class FrameMode(enum.Enum):
    JSON = "json"  # one JSON document per line
    REDRAW = "redraw"  # a table redrawn in place on a terminal
    SNAPSHOTS = "snapshots"  # tables one after another, separated by a blank line


def frame(table: EndpointTable, mode: FrameMode) -> str:
    """What to write to stdout after ``table`` applied an update."""
    if mode is FrameMode.JSON:
        return json.dumps(table.json_document(), separators=(",", ":")) + "\n"
    if mode is FrameMode.REDRAW:
        return CLEAR_SCREEN + table.render()
    separator = "\n" if table.update_count > 1 else ""
    return separator + table.render()


# --------------------------------------------------------------------------
# arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchOptions:
    authority: str
    server: str
    context_token: str = ""
    json: bool = False
    once: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {value!r}")
    return seconds


def register(subparsers: Subparsers) -> None:
    """Add the ``endpoints`` subcommand."""
    parser = subparsers.add_parser(
        "endpoints",
        help="watch the endpoints a destination server gives a proxy for one authority",
        description=(
            "Connect to a running destination server as a proxy does (plaintext gRPC), "
            "open a Destination/Get stream for AUTHORITY and show every update: a table "
            "of the current endpoints, redrawn after each update (+ added, ~ changed, "
            "- removed; the header counts them, and addresses re-sent unchanged), or one "
            "JSON document per update with --json."
        ),
        epilog=(
            "Exit status: 0 after Ctrl-C, after the stream ends normally, or after the first "
            "update with --once; 1 for a gRPC error (printed as 'error: CODE: details') or an "
            "unreachable server; 3 when --once received no update within --timeout (a server "
            "sends nothing while a service has no endpoints); 2 for a usage error."
        ),
    )
    parser.add_argument(
        "authority",
        metavar="AUTHORITY",
        help="the host:port a proxy would resolve, e.g. web.default.svc.cluster.local:80",
    )
    parser.add_argument(
        "--server",
        metavar="ADDR",
        default=None,
        help=f"destination server, host:port. Default: {DEFAULT_SERVER}. Env: {ENV_SERVER}.",
    )
    parser.add_argument(
        "--context-token",
        metavar="TOKEN",
        default="",
        help=(
            "context token a proxy would send, e.g. "
            '\'{"ns":"default","nodeName":"node-1"}\' (the node gives zone locality). '
            "Default: none."
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document per update, one per line, instead of a table",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit after the first update (exit 3 if none arrives within --timeout)",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        dest="timeout_s",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=(
            "seconds, from the start, to connect to the server and, with --once, "
            f"to receive the first update. Default: {DEFAULT_TIMEOUT_S:g}."
        ),
    )
    parser.set_defaults(handler=_endpoints)


def options_from_args(args: argparse.Namespace, *, environ: Mapping[str, str]) -> WatchOptions:
    """The parsed flags as options; the server from ``--server``, then ``environ``, then default."""
    server: str = args.server or environ.get(ENV_SERVER) or DEFAULT_SERVER
    return WatchOptions(
        authority=args.authority,
        server=server,
        context_token=args.context_token,
        json=args.json,
        once=args.once,
        timeout_s=args.timeout_s,
    )


# --------------------------------------------------------------------------
# I/O


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a watch ended: the exit status and what to print on stderr, if anything."""

    status: int
    message: str | None = None


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


async def watch(options: WatchOptions, out: TextIO, mode: FrameMode) -> Outcome:
    """Stream the authority's updates from the server and write a frame for each."""
    import grpc

    from destination._proto import destination_pb2 as pb

    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout_s
    table = EndpointTable(options.authority)
    async with grpc.aio.insecure_channel(options.server) as channel:
        try:
            async with asyncio.timeout_at(deadline):
                await channel.channel_ready()
        except TimeoutError:
            return Outcome(
                EXIT_FAILURE,
                f"error: cannot reach the destination server at {options.server} "
                f"within {options.timeout_s:g}s",
            )
        get = channel.unary_stream(
            GET_METHOD,
            request_serializer=pb.GetDestination.SerializeToString,
            response_deserializer=pb.Update.FromString,
        )
        request = pb.GetDestination(
            scheme="k8s", path=options.authority, context_token=options.context_token
        )
        call = get(request)
        try:
            if mode is FrameMode.REDRAW:
                await asyncio.to_thread(_write, out, CLEAR_SCREEN + table.render())
            async with asyncio.timeout_at(deadline if options.once else None):
                async for update in call:
                    table.apply(update)
                    await asyncio.to_thread(_write, out, frame(table, mode))
                    if options.once:
                        return Outcome(EXIT_OK)
        except TimeoutError:
            return Outcome(EXIT_NO_UPDATE, f"no endpoints received within {options.timeout_s:g}s")
        except grpc.aio.AioRpcError as err:
            code = err.code()
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            details = printable(err.details() or "")
            return Outcome(EXIT_FAILURE, f"error: {name}: {details}".rstrip())
        except BrokenPipeError:  # e.g. `| head -1`: the reader is gone, nothing more to do
            return Outcome(EXIT_OK)
        finally:
            call.cancel()
    if options.once:
        return Outcome(EXIT_NO_UPDATE, "the server ended the stream before any update")
    return Outcome(EXIT_OK, "the server ended the stream")


def _endpoints(args: argparse.Namespace) -> int:
    options = options_from_args(args, environ=os.environ)
    out = sys.stdout
    if options.json:
        mode = FrameMode.JSON
    elif out.isatty() and not options.once:
        mode = FrameMode.REDRAW
    else:
        mode = FrameMode.SNAPSHOTS
    try:
        outcome = asyncio.run(watch(options, out, mode))
    except KeyboardInterrupt:
        return EXIT_OK
    if outcome.message:
        print(outcome.message, file=sys.stderr)
    _silence_stdout_if_closed(out)
    return outcome.status


def _silence_stdout_if_closed(out: TextIO) -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    try:
        out.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
