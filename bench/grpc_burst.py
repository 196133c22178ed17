"""How many of a burst of new Get streams does a bare grpc.aio server cancel?

Opens `--streams` streams at once (bench client processes, as the benchmark
does) against a trivial grpc.aio server on loopback that answers each with one
small Update, then counts the streams that were ended with a status (and
reopened by the client) and the server's RSS with every stream open. With
`--server-option NAME=INT` (repeatable) the server gets those channel
arguments, e.g. the C-core limits on calls not yet accepted by the
application:

    python -m bench.grpc_burst --streams 10000
    python -m bench.grpc_burst --streams 10000 \\
        --server-option grpc.server.max_pending_requests=20000 \\
        --server-option grpc.server.max_pending_requests_hard_limit=40000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

from destination._proto import destination_pb2 as pb
from destination._proto import net_pb2

from . import procstat
from .clients import Assignment, StreamReport, client_main

SERVICE = "io.linkerd.proxy.destination.Destination"


def _update() -> bytes:
    addrs = [
        pb.WeightedAddr(
            addr=net_pb2.TcpAddress(ip=net_pb2.IPAddress(ipv4=0x0A0B0001 + i), port=8080),
            weight=10_000,
        )
        for i in range(10)
    ]
    return pb.Update(add=pb.WeightedAddrSet(addrs=addrs)).SerializeToString()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    payload = _update()
    opened = 0
    release = asyncio.Event()

    async def get(request: pb.GetDestination, context: Any) -> AsyncIterator[bytes]:
        nonlocal opened
        opened += 1
        yield payload
        await release.wait()

    options = [(k, int(v)) for k, v in (o.split("=", 1) for o in args.server_option)]
    server = grpc.aio.server(options=options)
    handler = grpc.unary_stream_rpc_method_handler(
        get, request_deserializer=pb.GetDestination.FromString, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Get": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rss_before = procstat.rss_mb(os.getpid())
    context = multiprocessing.get_context("spawn")
    assignments = [
        Assignment(i, "svc", "svc.ns.svc.cluster.local:80", "", i) for i in range(args.streams)
    ]
    procs = []
    for index in range(args.client_procs):
        parent, child = context.Pipe()
        process = context.Process(
            target=client_main,
            args=(
                child,
                f"127.0.0.1:{port}",
                assignments[index :: args.client_procs],
                4,
                False,
                250,
            ),
            daemon=True,
        )
        process.start()
        procs.append((process, parent))
    started = time.monotonic()
    reports: list[StreamReport] = []
    try:
        while time.monotonic() - started < args.timeout:
            await asyncio.sleep(1.0)
            statuses = [await asyncio.to_thread(_ask, conn, ("status", {})) for _, conn in procs]
            if sum(s.connected for s in statuses) == args.streams:
                break
        await asyncio.sleep(2.0)
        for _, conn in procs:
            reports += await asyncio.to_thread(_ask, conn, ("report", None))
        rss_open = procstat.rss_mb(os.getpid())
    finally:
        for process, conn in procs:
            conn.send(("stop", None))
            process.join(10)
            if process.is_alive():
                process.kill()
        release.set()
        await server.stop(0)
    return {
        "streams": args.streams,
        "server_options": dict(options),
        "connected": sum(r.connected for r in reports),
        "streams_ended_at_least_once": sum(1 for r in reports if r.ends),
        "end_reasons": dict(Counter(r.last_error for r in reports if r.ends).most_common(5)),
        "handler_calls": opened,
        "seconds": round(time.monotonic() - started, 1),
        "server_rss_mb_before": rss_before,
        "server_rss_mb_streams_open": rss_open,
    }


def _ask(conn: Any, message: tuple[str, Any]) -> Any:
    conn.send(message)
    if not conn.poll(60):
        raise TimeoutError("client process did not answer")
    return conn.recv()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_burst")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--server-option", action="append", default=[], metavar="NAME=INT")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    json.dump(asyncio.run(_run(args)), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
