"""Record a real scale event stream, then replay it in-process under cProfile.

`record` starts a local cluster, creates Deployments behind Services, lists
every kind the server watches (raw JSON, as the server's reflectors receive
it), then watches Pods, EndpointSlices and ReplicaSets while it scales every
Deployment down and back up, and saves lists and events to a JSON file.

`replay` feeds that file to the server's own discovery and fan-out code in
this process: a `ClusterCache` (no API client: events go straight to each
reflector's `_handle`), subscribed through `destination.streams.broadcast.Broadcasts`
with one queue per simulated stream and a task per stream draining it, as the
Get handlers do (without the gRPC write). It prints how long each event took
(from `_handle` to the end of the loop iteration after it, which runs
any refresh the server deferred) and, with `--profile`, the hottest functions.

    python -m bench.profile_events record --out /tmp/scale-events.json
    python -m bench.profile_events replay /tmp/scale-events.json --profile

It reaches into server internals (`Reflector._handle`, `ClusterCache`), so it
may need adjusting when those change; it is a diagnostic, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry

from destination.config import DEFAULT_OPAQUE_PORTS, parse_opaque_ports
from destination.ops.metrics import DestinationMetrics
from destination.streams.broadcast import Broadcasts
from destination.streams.members import Planner, StreamRequest
from destination.translate.endpoints import MeshSettings
from discovery.cluster import ClusterCache
from discovery.connection import LOCAL_KINDS, Connection
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ServiceRef
from discovery.reflector import LIST_PATHS, Listed, Reflector
from tests.kube.cluster import ClusterSpec, start_clusters, stop_clusters
from tests.kube.workloads import Kube, new_api_client

from .stats import summary

NAMESPACE = "bench"
WATCHED = (Kind.POD, Kind.ENDPOINT_SLICE, Kind.REPLICA_SET)


# -- record -------------------------------------------------------------------------


async def _list(api: ApiClient, kind: Kind) -> tuple[list[dict[str, Any]], str]:
    response = await api.call_api(
        LIST_PATHS[kind],
        "GET",
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=aiohttp.ClientTimeout(total=60),
    )
    async with response:
        body = await response.json()
    return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])


async def _watch(
    api: ApiClient, kind: Kind, version: str, sink: list[tuple[float, str, dict[str, Any]]]
) -> None:
    response = await api.call_api(
        LIST_PATHS[kind],
        "GET",
        query_params=[("watch", "true"), ("resourceVersion", version), ("timeoutSeconds", 600)],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=700),
    )
    async with response:
        async for line in response.content:
            if line.strip():
                sink.append((time.time(), kind.name, json.loads(line)))


async def _record(args: argparse.Namespace) -> None:
    nodes = max(2, -(-args.services * args.high // 750))
    base = Path(tempfile.mkdtemp(prefix="bench-record-"))
    clusters = start_clusters([ClusterSpec(name="east", index=1, node_count=nodes)], base_dir=base)
    try:
        api = await new_api_client(clusters[0].kubeconfig)
        kube = Kube(clusters[0], api)
        names = [f"svc-{i:03d}" for i in range(args.services)]
        await kube.create_namespace(NAMESPACE)
        for name in names:
            await kube.create_deployment(NAMESPACE, name, replicas=args.high)
            await kube.create_service(NAMESPACE, name)
        for name in names:
            await kube.wait_for_ready_endpoints(NAMESPACE, name, args.high, timeout_s=300)
        lists: dict[str, list[dict[str, Any]]] = {}
        versions: dict[Kind, str] = {}
        for kind in LIST_PATHS:
            lists[kind.name], versions[kind] = await _list(api, kind)
        events: list[tuple[float, str, dict[str, Any]]] = []
        watches = [asyncio.create_task(_watch(api, k, versions[k], events)) for k in WATCHED]
        phases = []
        for replicas in (args.low, args.high):
            started = time.time()
            await asyncio.gather(*(kube.scale(NAMESPACE, n, replicas) for n in names))
            for name in names:
                await kube.wait_for_ready_endpoints(NAMESPACE, name, replicas, timeout_s=300)
            quiet_since = len(events)
            await asyncio.sleep(5)
            while len(events) != quiet_since:  # until 5 s without an event (bounded below)
                quiet_since = len(events)
                await asyncio.sleep(5)
                if time.time() - started > 300:
                    break
            phases.append({"replicas": replicas, "started": started})
        for task in watches:
            task.cancel()
        for outcome in await asyncio.gather(*watches, return_exceptions=True):
            if isinstance(outcome, Exception):
                print(f"a watch failed during the recording: {outcome!r}", file=sys.stderr)
        await api.close()
        Path(args.out).write_text(  # noqa: ASYNC240 - the recording is over
            json.dumps(
                {
                    "services": names,
                    "namespace": NAMESPACE,
                    "lists": lists,
                    "phases": phases,
                    "events": sorted(events, key=lambda e: e[0]),
                }
            )
        )
        print(f"recorded {len(events)} events to {args.out}")
    finally:
        stop_clusters(clusters, remove_dir=base)


# -- replay -------------------------------------------------------------------------


async def _replay(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(Path(args.file).read_text())  # noqa: ASYNC240 - nothing else runs yet
    # Events go back to JSON lines, decoded one by one as the reflector does (and
    # timed with it); the recording is not part of a server's heap, so the
    # collector is kept off what remains of it.
    lines = [(kind, json.dumps(event)) for _, kind, event in data.pop("events")]
    gc.collect()
    gc.freeze()
    registry = CollectorRegistry()
    cache = ClusterCache(
        name=ClusterName("east"),
        metrics=DiscoveryMetrics(registry),
        default_opaque_ports=parse_opaque_ports(DEFAULT_OPAQUE_PORTS),
        enable_ipv6=False,
    )
    connection = Connection(
        cluster=cache.name,
        api=None,  # type: ignore[arg-type]  # never used: nothing runs the reflectors
        kinds=LOCAL_KINDS,
        sink=cache.apply,
        metrics=DiscoveryMetrics(CollectorRegistry()),
    )
    reflectors: dict[str, Reflector] = {r.kind.name: r for r in connection.reflectors}
    for kind_name, items in data["lists"].items():
        reflector = reflectors[kind_name]
        records = [r for r in (reflector._project(item) for item in items) if r is not None]
        cache.apply(Listed(reflector.kind, tuple(records)), time.perf_counter())
    metrics = DestinationMetrics(registry)
    mesh = MeshSettings(
        controller_namespace="linkerd",
        trust_domain="cluster.local",
        enable_h2_upgrade=True,
        force_opaque_transport=False,
    )
    broadcasts = Broadcasts(
        queue_capacity=100,
        stuck_deadline_s=30.0,
        metrics=metrics,
        planner=Planner(local=cache, store=None, mesh=mesh),
    )
    cache.add_service_listener(broadcasts.services_changed)
    nodes = [f"east-node-{i}" for i in range(args.nodes)]
    drained = 0

    async def drain(queue: Any) -> None:
        nonlocal drained
        while True:
            payloads = await queue.next()
            drained += len(payloads)

    tasks = []
    for name in data["services"]:
        for slot in range(args.streams_per_service):
            node = nodes[slot % len(nodes)]
            request = StreamRequest(
                service=ServiceRef(data["namespace"], name), port=80, hostname=None, node_name=node
            )
            _, queue, _ = broadcasts.open_stream(request=request, on_stuck=lambda: None)
            tasks.append(asyncio.create_task(drain(queue)))
    await asyncio.sleep(0)
    durations: dict[str, list[float]] = {}
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    cpu_started = time.process_time()
    if profiler:
        profiler.enable()
    # Each sample: from handing a burst of events over to the end of the next loop
    # iteration, which runs what the server deferred (call_soon: the batched topic
    # refresh) and wakes the stream tasks; attributed to the burst's last event.
    for start in range(0, len(lines), args.burst):
        t0 = time.perf_counter()
        for kind_name, line in lines[start : start + args.burst]:
            event = json.loads(line)
            reflectors[kind_name]._handle(event, time.perf_counter())
        await asyncio.sleep(0)  # deferred refreshes run, stream tasks drain
        durations.setdefault(f"{kind_name} {event.get('type')}", []).append(
            time.perf_counter() - t0
        )
    for _ in range(3):
        await asyncio.sleep(0)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out: dict[str, Any] = {
        "events": len(lines),
        "streams": len(tasks),
        "payloads_drained": drained,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "handle_s_total": sum(sum(v) for v in durations.values()),
        "per_event_type": {k: summary(v) | {"total": sum(v)} for k, v in durations.items()},
    }
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        out["profile"] = text.getvalue()
        if args.profile_out:
            stats.dump_stats(args.profile_out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_events")
    sub = parser.add_subparsers(dest="command", required=True)
    record = sub.add_parser("record", help="record lists and a scale-down/up event stream")
    record.add_argument("--services", type=int, default=10)
    record.add_argument("--high", type=int, default=200)
    record.add_argument("--low", type=int, default=10)
    record.add_argument("--out", default="scale-events.json")
    replay = sub.add_parser("replay", help="replay a recording through the server's code")
    replay.add_argument("file")
    replay.add_argument("--streams-per-service", type=int, default=100)
    replay.add_argument(
        "--nodes",
        type=int,
        default=2,
        help="distinct subscriber node names (separate views only through their zones, "
        "or per node for internalTrafficPolicy: Local services)",
    )
    replay.add_argument(
        "--burst",
        type=int,
        default=1,
        help="events handed over before the loop runs again, as when a watch has "
        "several buffered (default 1)",
    )
    replay.add_argument("--profile", action="store_true")
    replay.add_argument("--profile-out", default=None, help="also dump pstats here")
    replay.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.command == "record":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_record(args))
        return 0
    result = asyncio.run(_replay(args))
    profile = result.pop("profile", None)
    json.dump(result, sys.stdout, indent=2)
    print()
    if profile:
        print(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
