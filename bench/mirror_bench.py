"""Benchmark of the service mirror: 1,000 exported Services with 10 ports each, labels flipped.

`python -m bench.mirror_bench [--services 1000] [--ports 10] [--rate 50] [--out FILE]`

Two fresh clusters on loopback (`tests.kube`): `west` is the target, `east`
the source. In `west`, N Services (no selector: their endpoints do not matter
here) with P ports each, labelled `mirror.linkerd.io/exported=true`. A Link in
`east` (reader credentials, as an operator writes them) and
`destination mirror` as a subprocess, exactly as an operator starts it. Then:

1. **initial sync**: time until every mirror Service and Endpoints exists;
2. **rolling label flip**: one label of every remote Service changed, one
   Service after another at `--rate` writes per second; for each, the time
   from the remote write to the local mirror carrying the new label (the
   orchestrator's own watch of `east`);
3. **idle resync**: a full reconcile with nothing changed (`repair_period_s`
   short): the writes it costs (goal: none).

Reported: change → mirror written p50/p95/p99, the controller's RSS and CPU,
and API writes per changed object, read from the controller's own
`mirror_writes_total{kind,verb}` (goal: exactly one per changed object, none
for unchanged ones). Not a test: `make test` does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.links import reader_kubeconfig
from tests.kube.cluster import specs_for, start_clusters, stop_clusters
from tests.kube.workloads import Kube, new_api_client

from . import procstat
from .server import free_port
from .stats import summary

NAMESPACE = "bench-mirror"
LINK_NAMESPACE = "linkerd-multicluster"
FLIP_LABEL = "bench/flip"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _service(name: str, ports: int, flip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"mirror.linkerd.io/exported": "true", FLIP_LABEL: flip},
            "annotations": {"bench/owner": "mirror-bench"},
        },
        "spec": {
            "ports": [
                {"name": f"p{i}", "port": 8000 + i, "targetPort": 9000 + i} for i in range(ports)
            ]
        },
    }


def _scrape(admin: str) -> dict[tuple[str, str], float]:
    """`mirror_writes_total` by (kind, verb), summed over Links."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    writes: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("mirror_writes_total{"):
            continue
        labels, value = line[len("mirror_writes_total{") :].split("} ")
        fields = dict(item.split("=", 1) for item in labels.split(","))
        key = (fields["kind"].strip('"'), fields["verb"].strip('"'))
        writes[key] = writes.get(key, 0.0) + float(value)
    return writes


def _delta(
    after: dict[tuple[str, str], float], before: dict[tuple[str, str], float]
) -> dict[str, float]:
    return {
        f"{kind}/{verb}": after[(kind, verb)] - before.get((kind, verb), 0.0)
        for kind, verb in sorted(after)
        if after[(kind, verb)] - before.get((kind, verb), 0.0)
    }


async def _watch_mirrors(
    east: Kube, seen: dict[str, tuple[float, str]], stop: asyncio.Event
) -> None:
    """Record, per mirror Service, when it last changed and its flip label (a raw watch)."""
    path = f"/api/v1/namespaces/{NAMESPACE}/services"
    version = ""
    while not stop.is_set():
        query = [("watch", "true"), ("allowWatchBookmarks", "true")]
        if version:
            query.append(("resourceVersion", version))
        response = await east.api.call_api(
            path, "GET", query_params=query, auth_settings=["BearerToken"],
            _preload_content=False, _request_timeout=None,
        )  # fmt: skip
        async with response:
            async for line in response.content:
                event = json.loads(line)
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                if event.get("type") in ("ADDED", "MODIFIED"):
                    labels = meta.get("labels") or {}
                    seen[meta["name"]] = (time.time(), labels.get(FLIP_LABEL, ""))
                if stop.is_set():
                    return


def _start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


async def _until(done: Any, *, timeout_s: float, alive: subprocess.Popen[bytes]) -> None:
    """Poll `done()` (state a watch task fills in) until true, the deadline, or the child died."""
    deadline = time.time() + timeout_s
    while not done():
        if alive.poll() is not None:
            raise RuntimeError("the controller exited; see its log")
        if time.time() > deadline:
            raise TimeoutError(f"not done after {timeout_s}s")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    specs = specs_for(("east", "west"))
    clusters = start_clusters(specs, base_dir=work)
    controller: subprocess.Popen[bytes] | None = None
    try:
        east_cluster, west_cluster = clusters
        east = Kube(cluster=east_cluster, api=await new_api_client(east_cluster.kubeconfig))
        west = Kube(cluster=west_cluster, api=await new_api_client(west_cluster.kubeconfig))
        for kube in (east, west):
            await kube.create_namespace(NAMESPACE)
        await east.create_namespace(LINK_NAMESPACE)
        log(f"creating {args.services} Services with {args.ports} ports in west")
        names = [f"svc-{i:04d}" for i in range(args.services)]
        semaphore = asyncio.Semaphore(16)

        async def create(name: str) -> None:
            async with semaphore:
                await west.core.create_namespaced_service(
                    NAMESPACE, _service(name, args.ports, "a")
                )

        await asyncio.gather(*(create(n) for n in names))
        kubeconfig = await reader_kubeconfig(west_cluster)
        await east.core.create_namespaced_secret(
            LINK_NAMESPACE,
            {
                "metadata": {"name": "cluster-credentials-west"},
                "type": "mirror.linkerd.io/remote-kubeconfig",
                "data": {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()},
            },
        )
        link = {
            "apiVersion": "multicluster.linkerd.io/v1alpha3",
            "kind": "Link",
            "metadata": {"name": "west", "namespace": LINK_NAMESPACE},
            "spec": {
                "targetClusterName": "west",
                "clusterCredentialsSecret": "cluster-credentials-west",
                "gatewayAddress": "192.0.2.10",
                "gatewayPort": "4143",
                "gatewayIdentity": "gateway.west",
                "selector": {"matchLabels": {"mirror.linkerd.io/exported": "true"}},
            },
        }
        east_cluster.kubectl("apply", "-f", "-", input=json.dumps(link))
        admin = f"127.0.0.1:{free_port()}"
        seen: dict[str, tuple[float, str]] = {}
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_mirrors(east, seen, stop))
        argv = [
            sys.executable, "-m", "destination", "mirror",
            "--kubeconfig", str(east_cluster.kubeconfig), "--admin-address", admin,
            "--identity", "bench", "--repair-period-s", str(args.repair_period),
            "--log-format", "json", "--log-level", "warning",
        ]  # fmt: skip
        started = time.time()
        controller = await asyncio.to_thread(_start, argv, work / "mirror.log")
        await _until(
            lambda: len([n for n in names if f"{n}-west" in seen]) == len(names),
            timeout_s=600,
            alive=controller,
        )
        initial_s = time.time() - started
        log(f"{len(names)} mirrors in {initial_s:.1f}s")
        await asyncio.sleep(args.repair_period + 2)  # a full reconcile with nothing new
        pid = controller.pid
        cpu_before = procstat.cpu_seconds(pid) or 0.0
        writes_before = _scrape(admin)
        await asyncio.sleep(args.repair_period + 2)  # an idle repair: should write nothing
        idle_writes = _delta(_scrape(admin), writes_before)
        log(f"idle resync writes: {idle_writes or 'none'}")
        # Rolling flip of one label on every remote Service.
        writes_before = _scrape(admin)
        cpu_before = procstat.cpu_seconds(pid) or 0.0
        written: dict[str, float] = {}
        interval = 1.0 / args.rate
        for name in names:
            at = time.time()
            await west.core.patch_namespaced_service(
                name, NAMESPACE, {"metadata": {"labels": {FLIP_LABEL: "b"}}}
            )
            written[name] = at
            await asyncio.sleep(max(0.0, interval - (time.time() - at)))
        await _until(
            lambda: all(seen.get(f"{n}-west", (0.0, ""))[1] == "b" for n in names),
            timeout_s=120,
            alive=controller,
        )
        await asyncio.sleep(args.repair_period + 2)
        flip_writes = _delta(_scrape(admin), writes_before)
        cpu_flip = (procstat.cpu_seconds(pid) or 0.0) - cpu_before
        latencies = [
            seen[f"{n}-west"][0] - written[n]
            for n in names
            if seen.get(f"{n}-west", (0.0, ""))[1] == "b"
        ]
        rss_mb = (procstat.status_kib(pid, "VmRSS") or 0) / 1024
        peak_mb = (procstat.status_kib(pid, "VmHWM") or 0) / 1024
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        for kube in (east, west):
            await kube.api.close()
        return {
            "services": args.services,
            "ports": args.ports,
            "rate_per_s": args.rate,
            "initial_sync_s": round(initial_s, 2),
            "flip": {
                "changed": len(names),
                "converged": len(latencies),
                "latency_s": summary(latencies),
                "writes": flip_writes,
                "writes_per_changed_object": round(sum(flip_writes.values()) / len(names), 3),
                "controller_cpu_s": round(cpu_flip, 2),
                "cpu_ms_per_change": round(1000 * cpu_flip / len(names), 2),
            },
            "idle_resync_writes": idle_writes,
            "controller_rss_mb": round(rss_mb, 1),
            "controller_peak_rss_mb": round(peak_mb, 1),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "commit": await asyncio.to_thread(_commit),
        }
    finally:
        if controller is not None:
            controller.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                controller.wait(10)
        stop_clusters(clusters, remove_dir=work)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mirror_bench", description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--ports", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="remote writes per second")
    parser.add_argument("--repair-period", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
