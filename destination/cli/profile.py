"""``destination profile``: watch what a proxy is told by GetProfile for one authority.

Our equivalent of ``linkerd diagnostics profile``, and the GetProfile twin of
``destination endpoints``: it opens one ``Destination/GetProfile`` stream as a
proxy does (plaintext gRPC, ``--server`` or ``DESTINATION_SERVER``) and shows
every profile the server sends: the routes (conditions, timeouts,
retryability, response classes), the retry budget, traffic-split overrides,
whether the port is opaque, the endpoint (for a pod or an IP), and which
Service and ServiceProfile it came from. ``--json`` prints each message as
its protobuf JSON mapping, one per line.

Exit status: 0 after Ctrl-C, after the stream ends with OK, or after the
first profile with ``--once``; 1 for a gRPC error or an unreachable server;
3 when ``--once`` got nothing within ``--timeout``; 2 for usage errors.

Every string shown came from the server (and, before it, from whoever wrote
the ServiceProfile), so text output is escaped (`printable`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from destination.cli.endpoints import (
    DEFAULT_SERVER,
    DEFAULT_TIMEOUT_S,
    ENV_SERVER,
    EXIT_FAILURE,
    EXIT_NO_UPDATE,
    EXIT_OK,
    Endpoint,
    Outcome,
    positive_seconds,
)
from destination.cli.printable import printable

if TYPE_CHECKING:
    from destination._proto import destination_pb2 as pb
    from destination._proto import meta_pb2
    from destination.cli.common import Subparsers

__all__ = ["ProfileOptions", "describe", "register", "render", "to_json", "watch"]

GET_PROFILE_METHOD = "/io.linkerd.proxy.destination.Destination/GetProfile"


# --------------------------------------------------------------------------
# rendering (pure)


def _duration(value: Any) -> str:
    """A protobuf Duration as Go would print it, roughly: ``1.5s``, ``250ms``."""
    nanos = value.seconds * 1_000_000_000 + value.nanos
    if nanos % 1_000_000_000 == 0:
        return f"{nanos // 1_000_000_000}s"
    if nanos % 1_000_000 == 0 and nanos < 1_000_000_000:
        return f"{nanos // 1_000_000}ms"
    return f"{nanos / 1e9:g}s"


def describe_request_match(match: pb.RequestMatch) -> str:
    kind = match.WhichOneof("match")
    if kind in ("all", "any"):
        parts = ", ".join(describe_request_match(m) for m in getattr(match, kind).matches)
        return f"{kind}({parts})"
    if kind == "not":
        return f"not({describe_request_match(getattr(match, 'not'))})"
    if kind == "path":
        return f"path~{match.path.regex}"
    if kind == "method":
        method = match.method
        if method.WhichOneof("type") == "unregistered":
            return method.unregistered
        return type(method).Registered.Name(method.registered)
    return "-"


def describe_response_match(match: pb.ResponseMatch) -> str:
    kind = match.WhichOneof("match")
    if kind in ("all", "any"):
        parts = ", ".join(describe_response_match(m) for m in getattr(match, kind).matches)
        return f"{kind}({parts})"
    if kind == "not":
        return f"not({describe_response_match(getattr(match, 'not'))})"
    if kind == "status":
        low, high = match.status.min, match.status.max
        return f"status {low or '*'}-{high or '*'}" if low != high else f"status {low}"
    return "-"


def _resource(metadata: meta_pb2.Metadata) -> str:
    kind = metadata.WhichOneof("kind")
    if kind == "default":
        return f"default:{metadata.default}"
    if kind != "resource":
        return "-"
    resource = metadata.resource
    name = f"{resource.namespace}/{resource.name}" if resource.name else "(none)"
    port = f":{resource.port}" if resource.port else ""
    group = f"{resource.group}/" if resource.group else ""
    return f"{group}{resource.kind or '?'} {name}{port}"


def describe(profile: pb.DestinationProfile) -> list[str]:
    """The profile as lines of text (not yet escaped)."""
    lines = []
    if profile.fully_qualified_name:
        lines.append(f"name        {profile.fully_qualified_name}")
    lines.append(f"opaque      {'yes' if profile.opaque_protocol else 'no'}")
    if profile.HasField("retry_budget"):
        budget = profile.retry_budget
        ttl = _duration(budget.ttl) if budget.HasField("ttl") else "-"
        lines.append(
            f"retries     ratio {budget.retry_ratio:g}, at least "
            f"{budget.min_retries_per_second}/s, over {ttl}"
        )
    if profile.HasField("parent_ref"):
        lines.append(f"parent      {_resource(profile.parent_ref)}")
    if profile.HasField("profile_ref"):
        lines.append(f"profile     {_resource(profile.profile_ref)}")
    for override in profile.dst_overrides:
        lines.append(f"split       {override.authority} weight {override.weight}")
    if profile.HasField("endpoint"):
        endpoint = Endpoint.from_proto(profile.endpoint)
        identity = endpoint.identity or "-"
        lines.append(
            f"endpoint    {endpoint.key} {endpoint.workload} identity {identity} "
            f"protocol {endpoint.protocol}"
        )
    lines.append(f"routes      {len(profile.routes)}")
    for route in profile.routes:
        name = route.metrics_labels.get("route", "")
        details = []
        if route.HasField("timeout"):
            details.append(f"timeout {_duration(route.timeout)}")
        if route.is_retryable:
            details.append("retryable")
        suffix = f"  [{', '.join(details)}]" if details else ""
        lines.append(f"  {name or '(unnamed)'}: {describe_request_match(route.condition)}{suffix}")
        for response_class in route.response_classes:
            verdict = "failure" if response_class.is_failure else "success"
            lines.append(f"    {describe_response_match(response_class.condition)} -> {verdict}")
    return lines


def render(authority: str, profile: pb.DestinationProfile, count: int) -> str:
    empty = profile.ByteSize() == 0
    header = f"{authority}  profile {count}" + (
        "  (empty: the Service does not declare this port)" if empty else ""
    )
    lines = [header] + ([] if empty else describe(profile))
    return "\n".join(printable(line) for line in lines) + "\n"


def to_json(profile: pb.DestinationProfile) -> dict[str, Any]:
    """The protobuf JSON mapping, with the proto's own field names."""
    from google.protobuf import json_format

    document: dict[str, Any] = json_format.MessageToDict(
        profile, preserving_proto_field_name=True, always_print_fields_with_no_presence=False
    )
    return document


# --------------------------------------------------------------------------
# arguments and I/O


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileOptions:
    authority: str
    server: str
    context_token: str = ""
    json: bool = False
    once: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S


def register(subparsers: Subparsers) -> None:
    """Add the ``profile`` subcommand."""
    parser = subparsers.add_parser(
        "profile",
        help="watch the profile a destination server gives a proxy for one authority",
        description=(
            "Connect to a running destination server as a proxy does (plaintext gRPC), open a "
            "Destination/GetProfile stream for AUTHORITY (a service name, a pod DNS name or an "
            "IP, with a port) and show every profile it sends: routes, retry budget, traffic "
            "split, opacity, the endpoint, and the Service and ServiceProfile it came from. "
            "The client namespace in --context-token selects a client-side ServiceProfile."
        ),
        epilog=(
            "Exit status: 0 after Ctrl-C, after the stream ends normally, or after the first "
            "profile with --once; 1 for a gRPC error (printed as 'error: CODE: details') or an "
            "unreachable server; 3 when --once received nothing within --timeout; 2 for a "
            "usage error."
        ),
    )
    parser.add_argument(
        "authority",
        metavar="AUTHORITY",
        help="what a proxy would ask for, e.g. web.default.svc.cluster.local:80 or 10.1.2.3:8080",
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
            'context token a proxy would send, e.g. \'{"ns":"client-ns"}\': its namespace '
            "is where a client-side ServiceProfile is looked up first. Default: none."
        ),
    )
    parser.add_argument("--json", action="store_true", help="one JSON document per profile")
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit after the first profile (exit 3 if none arrives within --timeout)",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        dest="timeout_s",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=(
            "seconds, from the start, to connect to the server and, with --once, to "
            f"receive the first profile. Default: {DEFAULT_TIMEOUT_S:g}."
        ),
    )
    parser.set_defaults(handler=_profile)


def options_from_args(args: argparse.Namespace, *, environ: Mapping[str, str]) -> ProfileOptions:
    return ProfileOptions(
        authority=args.authority,
        server=args.server or environ.get(ENV_SERVER) or DEFAULT_SERVER,
        context_token=args.context_token,
        json=args.json,
        once=args.once,
        timeout_s=args.timeout_s,
    )


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


async def watch(options: ProfileOptions, out: TextIO) -> Outcome:
    """Stream the authority's profiles and write one frame for each."""
    import grpc

    from destination._proto import destination_pb2 as pb

    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout_s
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
        get_profile = channel.unary_stream(
            GET_PROFILE_METHOD,
            request_serializer=pb.GetDestination.SerializeToString,
            response_deserializer=pb.DestinationProfile.FromString,
        )
        call = get_profile(
            pb.GetDestination(
                scheme="k8s", path=options.authority, context_token=options.context_token
            )
        )
        count = 0
        try:
            async with asyncio.timeout_at(deadline if options.once else None):
                async for profile in call:
                    count += 1
                    if options.json:
                        text = json.dumps(to_json(profile), separators=(",", ":")) + "\n"
                    else:
                        text = ("\n" if count > 1 else "") + render(
                            options.authority, profile, count
                        )
                    await asyncio.to_thread(_write, out, text)
                    if options.once:
                        return Outcome(EXIT_OK)
        except TimeoutError:
            return Outcome(EXIT_NO_UPDATE, f"no profile received within {options.timeout_s:g}s")
        except grpc.aio.AioRpcError as err:
            code = err.code()
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            return Outcome(EXIT_FAILURE, f"error: {name}: {printable(err.details() or '')}")
        except BrokenPipeError:
            return Outcome(EXIT_OK)
        finally:
            call.cancel()
    if options.once:
        return Outcome(EXIT_NO_UPDATE, "the server ended the stream before any profile")
    return Outcome(EXIT_OK, "the server ended the stream")


def _profile(args: argparse.Namespace) -> int:
    options = options_from_args(args, environ=os.environ)
    try:
        outcome = asyncio.run(watch(options, sys.stdout))
    except KeyboardInterrupt:
        return EXIT_OK
    if outcome.message:
        print(outcome.message, file=sys.stderr)
    return outcome.status
