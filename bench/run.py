"""The benchmark orchestrator: clusters, workloads, server, clients, measurements.

For each scenario, in this order, every wait with a deadline:

1. start fresh local clusters (`tests.kube.cluster.start_clusters`: one
   `east` control plane, plus `west` and `north` for the federated scenario,
   each with enough kwok nodes for the scenario's peak pods);
2. create the Deployments and Services in every cluster, wait until the
   EndpointSlices hold the initial ready count (the orchestrator's own
   EndpointSlice watch, one per cluster); for a federated scenario, create
   the federated Services on `east` and link the remotes (a credentials
   Secret per remote holding a reader kubeconfig, as an operator does);
3. start `python -m destination serve` as a subprocess, wait for `/ready`
   (and, with remotes, until `/clusters` shows every link synced);
4. start the client processes and wait until every stream holds its target's
   initial endpoint count ("connected");
5. hold (baseline) and/or run the steps: for each, record `time.time()` just
   before each PATCH, wait until the EndpointSlices show the final state,
   then until every stream holds it and nothing changed for a quiet period,
   and collect every stream's time of the update that made it right;
6. scrape `/metrics` and read /proc around each phase; stop clients, server
   and clusters, whatever happened.

A stream's *target* is the Service it asks for; its *members* are the
Services whose endpoints it streams: the target itself in one cluster, or,
for a federated target, the Service of the same name in every cluster. The
final state of a step is every member at the step's replica count, so a
stream expects the sum over its members.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.context
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tests.integration.links import (
    cluster_statuses,
    link_secret,
    put_link,
    reader_kubeconfig,
    wait_for_state,
)
from tests.kube.binaries import REPO_ROOT, pinned_versions
from tests.kube.cluster import LocalCluster, specs_for, start_clusters, stop_clusters
from tests.kube.workloads import Kube, new_api_client

from . import compare, procstat, promstats, snapshot
from .clients import (
    Assignment,
    HeldAddresses,
    LoopLag,
    Status,
    StreamReport,
    Target,
    client_main,
)
from .contenders import OURS, CompareSpec, Contender, prepare_cluster, start_second
from .profile_stream import ProfileReport, ProfileStatus, ProfileTag
from .scenarios import LOCAL, Scenario, Step
from .server import ServerProcess, SharedFlags, start_server, wait_ready
from .slices import SliceTracker, tracking
from .stats import summary

NAMESPACE = "bench"
CLUSTER = LOCAL
LOCAL_DISCOVERY = "multicluster.linkerd.io/local-discovery"
REMOTE_DISCOVERY = "multicluster.linkerd.io/remote-discovery"
QUIET_S = 2.0
STALL_S = 60.0  # no stream changed for this long after Kubernetes was done: give up
POLL_S = 0.25
EVENT_TO_ENQUEUE = "event_to_enqueue_seconds"
# The settings every server of a run gets (each in its own flags).
SHARED_FLAGS = SharedFlags()


@dataclass(frozen=True)
class Options:
    client_procs: int = 2
    channels_per_proc: int = 4
    client_nodes: int = 2
    open_batch: int = 250
    max_load: float = 1.0
    load_wait_s: float = 300.0
    work_dir: Path | None = None
    profile_server: bool = False
    server_args: tuple[str, ...] = ()
    # Side by side: the second server, run with ours on the same cluster (bench/contenders.py).
    compare: CompareSpec | None = None
    # Side by side: start the second server, and its clients, before ours (and
    # poll it first), to tell an order effect from a difference between servers.
    second_first: bool = False


# -- small helpers --------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def service_names(scenario: Scenario) -> list[str]:
    """The Deployments and Services of the scenario (in every one of its clusters)."""
    return [f"svc-{i:03d}" for i in range(scenario.services)]


def federated_name(service: str) -> str:
    return f"{service}-federated"


@dataclass(frozen=True)
class Member:
    """A Service (and its Deployment of the same name) in one cluster, behind a target."""

    cluster: str
    service: str

    @property
    def label(self) -> str:
        return f"{self.cluster}/{self.service}"


# target (the Service a stream asks for, in the local cluster) -> its members
Plan = dict[str, tuple[Member, ...]]


def plan_for(scenario: Scenario) -> Plan:
    if not scenario.federated:
        return {name: (Member(CLUSTER, name),) for name in service_names(scenario)}
    return {
        federated_name(name): tuple(Member(cluster, name) for cluster in scenario.clusters)
        for name in service_names(scenario)
    }


def combined_target(members: tuple[Member, ...], targets: dict[Member, Target]) -> Target:
    """A stream's target: the sum of its members' endpoints (one template hash at most)."""
    hashes = {targets[m].template_hash for m in members}
    if len(hashes) > 1:
        raise ValueError(f"members of one target with different template hashes: {hashes}")
    return Target(sum(targets[m].count for m in members), hashes.pop())


def authority(service: str, port: int = 80) -> str:
    return f"{service}.{NAMESPACE}.svc.cluster.local:{port}"


def wait_for_quiet_machine(options: Options) -> dict[str, Any]:
    """Wait (bounded) for the 1-minute load average to fall under `max_load`."""
    started = time.monotonic()
    before = os.getloadavg()
    while (
        os.getloadavg()[0] > options.max_load and time.monotonic() - started < options.load_wait_s
    ):
        time.sleep(10)
    after = os.getloadavg()
    return {
        "loadavg_first_seen": [round(v, 2) for v in before],
        "loadavg_at_start": [round(v, 2) for v in after],
        "waited_s": round(time.monotonic() - started, 1),
        "max_load": options.max_load,
        "still_above_max": after[0] > options.max_load,
    }


@contextlib.contextmanager
def local_clusters(
    names: tuple[str, ...], node_count: int, work_dir: Path
) -> Iterator[dict[str, LocalCluster]]:
    """The named clusters with `node_count` kwok nodes each, stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=work_dir))
    specs = [dataclasses.replace(spec, node_count=node_count) for spec in specs_for(names)]
    clusters = start_clusters(specs, base_dir=base)
    try:
        yield {cluster.name: cluster for cluster in clusters}
    finally:
        stop_clusters(clusters, remove_dir=base)


def cluster_pids(cluster: LocalCluster) -> dict[str, int]:
    return {name: p.pid for name, p in cluster._processes.items() if p.poll() is None}


# -- client processes -------------------------------------------------------------


@dataclass
class ClientProc:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    streams: int
    # One command at a time on the pipe: requests come from several threads
    # (asyncio.to_thread), and an answer must go to the thread that asked.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, command: str, argument: Any, timeout_s: float) -> Any:
        with self.lock:
            self.conn.send((command, argument))
            if not self.conn.poll(timeout_s):
                raise TimeoutError(f"client {self.process.pid} did not answer {command!r}")
            return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.request("stop", None, 15.0)
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class Clients:
    def __init__(self, procs: list[ClientProc]) -> None:
        self.procs = procs

    @property
    def pids(self) -> list[int]:
        return [p.process.pid for p in self.procs if p.process.pid is not None]

    async def status(self, targets: dict[str, Target]) -> Status:
        answers: list[Status] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "status", targets, 30.0) for p in self.procs)
        )
        return Status(
            streams=sum(a.streams for a in answers),
            connected=sum(a.connected for a in answers),
            at_target=sum(a.at_target for a in answers),
            ends=sum(a.ends for a in answers),
            streams_ended=sum(a.streams_ended for a in answers),
            last_set_change=max(a.last_set_change for a in answers),
        )

    async def loop_lag(self) -> dict[str, float]:
        """Worst 20 ms-timer lateness over the client processes since the last call."""
        answers: list[LoopLag] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "loop_lag", None, 30.0) for p in self.procs)
        )
        return {
            "p99_s": max(a.p99_s for a in answers),
            "max_s": max(a.max_s for a in answers),
        }

    async def reports(self) -> list[StreamReport]:
        answers: list[list[StreamReport]] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "report", None, 60.0) for p in self.procs)
        )
        return [r for answer in answers for r in answer]

    async def profile_status(self, targets: dict[str, ProfileTag]) -> ProfileStatus:
        """Over the GetProfile streams: how many hold their service's tag in `targets`."""
        answers: list[ProfileStatus] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "profile_status", targets, 30.0) for p in self.procs)
        )
        return ProfileStatus(
            streams=sum(a.streams for a in answers),
            connected=sum(a.connected for a in answers),
            at_target=sum(a.at_target for a in answers),
            ends=sum(a.ends for a in answers),
            messages=sum(a.messages for a in answers),
            last_change=max(a.last_change for a in answers),
        )

    async def profile_reports(self) -> list[ProfileReport]:
        answers: list[list[ProfileReport]] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "profile_report", None, 60.0) for p in self.procs)
        )
        return [r for answer in answers for r in answer]

    async def addresses(self) -> list[HeldAddresses]:
        """Every Get stream's address set."""
        answers: list[list[HeldAddresses]] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "addresses", None, 60.0) for p in self.procs)
        )
        return [r for answer in answers for r in answer]

    async def churn(self, stream_ids: list[int]) -> int:
        """Close and reopen these streams (each process takes the ids it holds)."""
        answers: list[int] = await asyncio.gather(
            *(asyncio.to_thread(p.request, "churn", stream_ids, 60.0) for p in self.procs)
        )
        return sum(answers)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@contextlib.contextmanager
def client_processes(
    server: ServerProcess,
    assignments: list[Assignment],
    options: Options,
    *,
    track_hash: bool,
) -> Iterator[Clients]:
    context = multiprocessing.get_context("spawn")
    per_proc: list[list[Assignment]] = [[] for _ in range(options.client_procs)]
    for assignment in assignments:
        per_proc[assignment.slot % options.client_procs].append(assignment)
    procs: list[ClientProc] = []
    try:
        for share in per_proc:
            parent, child = context.Pipe()
            process = context.Process(
                target=client_main,
                args=(
                    child,
                    server.grpc_address,
                    share,
                    options.channels_per_proc,
                    track_hash,
                    options.open_batch,
                ),
                daemon=True,
                name="bench-client",
            )
            process.start()
            child.close()
            procs.append(ClientProc(process=process, conn=parent, streams=len(share)))
        yield Clients(procs)
    finally:
        for proc in procs:
            proc.stop()


# -- resource sampling -------------------------------------------------------------


@dataclass
class Usage:
    """CPU and memory of one phase."""

    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    server_main_thread_cpu_s: float = 0.0  # the event loop's thread (gRPC core threads apart)
    clients_cpu_s: float = 0.0
    # Side by side: the other servers and their clients (part of the benchmark, not "other").
    peers_cpu_s: float = 0.0
    kubernetes_cpu_s: float = 0.0
    orchestrator_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    other_cpu_s: float = 0.0  # machine busy minus everything the benchmark started
    server_rss_start_mb: float | None = None
    server_rss_end_mb: float | None = None
    server_peak_rss_mb: float | None = None  # VmHWM since the phase started
    loadavg_end: list[float] = field(default_factory=list)


class Meter:
    """Measures a phase: `with meter.phase() as usage:` fills `usage` on exit."""

    def __init__(
        self,
        server_pid: int,
        client_pids: list[int],
        kube_pids: list[int],
        peer_pids: list[int] | None = None,
    ) -> None:
        self.server_pid = server_pid
        self.client_pids = client_pids
        self.kube_pids = kube_pids
        self.peer_pids = peer_pids or []
        self.overall_peak_mb = 0.0

    @contextlib.contextmanager
    def phase(self) -> Iterator[Usage]:
        usage = Usage()
        procstat.reset_hwm(self.server_pid)
        usage.server_rss_start_mb = procstat.rss_mb(self.server_pid)
        t0 = time.monotonic()
        server0 = procstat.cpu_seconds(self.server_pid) or 0.0
        main0 = procstat.cpu_seconds(self.server_pid, thread=self.server_pid) or 0.0
        clients0 = procstat.total_cpu_seconds(self.client_pids)
        peers0 = procstat.total_cpu_seconds(self.peer_pids)
        kube0 = procstat.total_cpu_seconds(self.kube_pids)
        own0 = procstat.own_cpu_seconds()
        machine0 = procstat.machine_cpu()
        try:
            yield usage
        finally:
            machine1 = procstat.machine_cpu()
            usage.wall_s = time.monotonic() - t0
            usage.server_cpu_s = (procstat.cpu_seconds(self.server_pid) or server0) - server0
            main1 = procstat.cpu_seconds(self.server_pid, thread=self.server_pid) or main0
            usage.server_main_thread_cpu_s = main1 - main0
            usage.clients_cpu_s = procstat.total_cpu_seconds(self.client_pids) - clients0
            usage.peers_cpu_s = procstat.total_cpu_seconds(self.peer_pids) - peers0
            usage.kubernetes_cpu_s = procstat.total_cpu_seconds(self.kube_pids) - kube0
            usage.orchestrator_cpu_s = procstat.own_cpu_seconds() - own0
            usage.machine_busy_s = machine1.busy_s - machine0.busy_s
            ours = (
                usage.server_cpu_s
                + usage.clients_cpu_s
                + usage.peers_cpu_s
                + usage.kubernetes_cpu_s
                + usage.orchestrator_cpu_s
            )
            usage.other_cpu_s = max(0.0, usage.machine_busy_s - ours)
            usage.server_rss_end_mb = procstat.rss_mb(self.server_pid)
            usage.server_peak_rss_mb = procstat.hwm_mb(self.server_pid)
            if usage.server_peak_rss_mb is not None:
                self.overall_peak_mb = max(self.overall_peak_mb, usage.server_peak_rss_mb)
            usage.loadavg_end = [round(v, 2) for v in os.getloadavg()]


@dataclass
class Lane:
    """One server of the run, with its own client processes and its own meter."""

    contender: Contender
    clients: Clients
    meter: Meter

    @property
    def name(self) -> str:
        return self.contender.name

    @property
    def server(self) -> ServerProcess:
        return self.contender.server

    def tag(self, lanes: list[Lane]) -> str:
        """A log prefix naming the server when there is more than one."""
        return f"[{self.name}] " if len(lanes) > 1 else ""


@contextlib.contextmanager
def lanes_for(
    contenders: list[Contender],
    assignments: list[Assignment],
    options: Options,
    *,
    track_hash: bool,
    kube_pids: list[int],
) -> Iterator[list[Lane]]:
    """Client processes for each server, all opening the same `assignments`."""
    with contextlib.ExitStack() as stack:
        groups = [
            stack.enter_context(
                client_processes(c.server, assignments, options, track_hash=track_hash)
            )
            for c in contenders
        ]
        lanes: list[Lane] = []
        for index, (contender, clients) in enumerate(zip(contenders, groups, strict=True)):
            peers = [
                pid
                for other, (peer, peer_clients) in enumerate(zip(contenders, groups, strict=True))
                if other != index
                for pid in (peer.server.pid, *peer_clients.pids)
            ]
            meter = Meter(contender.server.pid, clients.pids, kube_pids, peers)
            meter.overall_peak_mb = procstat.hwm_mb(contender.server.pid) or 0.0  # initial sync
            lanes.append(Lane(contender, clients, meter))
        yield lanes


@contextlib.contextmanager
def phases(lanes: list[Lane]) -> Iterator[list[Usage]]:
    """One phase measured for every server at once: a Usage per lane, in order."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(lane.meter.phase()) for lane in lanes]


# -- Kubernetes side -----------------------------------------------------------------


async def create_workloads(kube: Kube, scenario: Scenario) -> None:
    gate = asyncio.Semaphore(10)

    async def one(name: str) -> None:
        async with gate:
            await kube.create_deployment(NAMESPACE, name, replicas=scenario.initial)
            await kube.create_service(NAMESPACE, name)

    await asyncio.gather(*(one(name) for name in service_names(scenario)))


@dataclass
class Site:
    """One cluster as the orchestrator drives it: its control plane, a client, a slice watch."""

    name: str
    cluster: LocalCluster
    kube: Kube
    slices: SliceTracker


Sites = dict[str, Site]


async def create_federated(kube: Kube, scenario: Scenario) -> None:
    """On the local cluster, a federated Service per service over every cluster's one."""
    remotes = scenario.clusters[1:]
    for name in service_names(scenario):
        await kube.create_service(
            NAMESPACE,
            federated_name(name),
            selector={},
            annotations={
                LOCAL_DISCOVERY: name,
                REMOTE_DISCOVERY: ",".join(f"{name}@{remote}" for remote in remotes),
            },
        )


async def link_remotes(local: Site, remotes: list[Site]) -> None:
    """A credentials Secret per remote, named after it, with a reader kubeconfig.

    The reader is deploy/remote-access.yaml's least-privileged ServiceAccount
    (a token valid for an hour: longer than a federated run).
    """
    for site in remotes:
        kubeconfig = await reader_kubeconfig(site.cluster)
        body = link_secret(site.name, kubeconfig=kubeconfig, trust_domain=f"{site.name}.example")
        await put_link(local.kube, body)


async def wait_members(sites: Sites, targets: dict[Member, Target], *, timeout_s: float) -> bool:
    """Until every member's EndpointSlices satisfy its target, in every cluster at once."""
    per_cluster: dict[str, dict[str, Target]] = {}
    for member, target in targets.items():
        per_cluster.setdefault(member.cluster, {})[member.service] = target
    done = await asyncio.gather(
        *(sites[c].slices.wait_for(t, timeout_s=timeout_s) for c, t in per_cluster.items())
    )
    return all(done)


async def scale_all(sites: Sites, members: list[Member], replicas: int) -> dict[Member, float]:
    """PATCH every member's Deployment scale concurrently; t0 per member just before its PATCH."""
    started: dict[Member, float] = {}

    async def one(member: Member) -> None:
        started[member] = time.time()
        await sites[member.cluster].kube.scale(NAMESPACE, member.service, replicas)

    await asyncio.gather(*(one(member) for member in members))
    return started


async def restart_all(
    sites: Sites, members: list[Member]
) -> tuple[dict[Member, float], dict[Member, str]]:
    """`kubectl rollout restart` of every member's Deployment; t0 and the new template hash."""
    started: dict[Member, float] = {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S") + f".{time.time_ns() % 1_000_000_000:09d}"
    patch = {"spec": {"template": {"metadata": {"annotations": {"bench/restartedAt": stamp}}}}}

    async def one(member: Member) -> None:
        started[member] = time.time()
        apps = sites[member.cluster].kube.apps
        await apps.patch_namespaced_deployment(member.service, NAMESPACE, patch)

    await asyncio.gather(*(one(member) for member in members))
    hashes: dict[Member, str] = {}
    wanted = set(members)
    deadline = time.monotonic() + 60
    while len(hashes) < len(wanted):
        if time.monotonic() > deadline:
            raise TimeoutError("the new ReplicaSets of the rollout did not appear")
        for cluster in sorted({m.cluster for m in members}):
            replica_sets = await sites[cluster].kube.apps.list_namespaced_replica_set(NAMESPACE)
            for rs in replica_sets.items:
                annotations = rs.spec.template.metadata.annotations or {}
                if annotations.get("bench/restartedAt") == stamp:
                    member = Member(cluster, (rs.metadata.labels or {}).get("app", ""))
                    if member in wanted:
                        hashes[member] = (rs.metadata.labels or {}).get("pod-template-hash", "")
        await asyncio.sleep(0.2)
    return started, hashes


@dataclass
class Samples:
    """Raw seconds of one or more steps: per stream, per service, per stream."""

    end_to_end: list[float] = field(default_factory=list)
    kubernetes: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)

    def extend(self, other: Samples) -> None:
        self.end_to_end += other.end_to_end
        self.kubernetes += other.kubernetes
        self.ours += other.ours

    def summaries(self) -> dict[str, Any]:
        return {
            "end_to_end_s": summary(self.end_to_end),
            "kubernetes_s": summary(self.kubernetes),
            "ours_s": summary(self.ours),
        }


def step_group(step: Step, before: int) -> str:
    if step.kind == "restart":
        return "restart"
    return "scale-up" if step.replicas > before else "scale-down"


# -- the phases ----------------------------------------------------------------------


async def wait_streams(
    clients: Clients,
    targets: dict[str, Target],
    *,
    timeout_s: float,
    require_quiet: bool,
    stall_s: float | None = None,
) -> tuple[Status, str]:
    """Until every stream holds its target (then, optionally, a quiet period without change).

    Returns the last status and "converged", "timeout", or "stalled" (no stream's
    address set changed for `stall_s` while some are still not at their target:
    they are not going to get there).
    """
    started = time.time()
    deadline = time.monotonic() + timeout_s
    status = await clients.status(targets)
    while True:
        if status.at_target == status.streams:
            if not require_quiet:
                return status, "converged"
            await asyncio.sleep(QUIET_S)
            again = await clients.status(targets)
            if again.at_target == again.streams and again.last_set_change == status.last_set_change:
                return again, "converged"
            status = again
            continue
        if time.monotonic() > deadline:
            return status, "timeout"
        if stall_s is not None and time.time() - max(status.last_set_change, started) > stall_s:
            return status, "stalled"
        await asyncio.sleep(POLL_S)
        status = await clients.status(targets)


@dataclass
class WatchProgress:
    """How far the server's EndpointSlice watch of each cluster has read, from its /metrics."""

    admin: str
    server_pid: int
    clusters: tuple[str, ...] = (CLUSTER,)
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (time, events)

    async def sample(self) -> dict[str, float] | None:
        try:
            scrape = await asyncio.to_thread(promstats.fetch, self.admin, 30.0)
        except OSError:  # a busy server may answer late; the next sample will tell
            return None
        values = {
            c: scrape.value("watch_events_total", cluster=c, kind="EndpointSlice")
            for c in self.clusters
        }
        self.samples.append((time.time(), values))  # after the answer: an upper bound
        return values

    async def run(self, interval_s: float = 0.25) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(interval_s)

    def caught_up_at(self, cluster: str, base: float, needed: int) -> float | None:
        """When the server had read `needed` slice events of `cluster` past `base`."""
        return next((t for t, v in self.samples if v.get(cluster, 0.0) - base >= needed), None)


async def scrape_for_parity(admin: str, interval_s: float = 0.25) -> None:
    """Fetch a server's /metrics at WatchProgress's rate, reading nothing from it."""
    while True:
        with contextlib.suppress(Exception):  # what it says does not matter, only its cost
            await asyncio.to_thread(promstats.fetch, admin, 30.0)
        await asyncio.sleep(interval_s)


async def run_step(
    step: Step,
    *,
    sites: Sites,
    plan: Plan,
    lanes: list[Lane],
    scenario: Scenario,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Samples]]]:
    """Run one step against every server at once.

    Returns what holds for all of them (the step, the Kubernetes share) and,
    per lane in order, that server's outcome and samples.
    """
    members = [m for group in plan.values() for m in group]
    before = {m.label: sites[m.cluster].slices.ready_count(m.service) for m in members}
    # Only our /metrics says when a server read a slice event.
    progress = {
        lane.name: WatchProgress(lane.server.admin_address, lane.server.pid, tuple(sites))
        for lane in lanes
        if lane.contender.our_metrics
    }
    server_base: dict[str, dict[str, float]] = {}
    for name, watch in progress.items():
        base = await watch.sample()
        server_base[name] = base if base is not None else (await watch.sample() or {})
    events_base = {name: site.slices.events for name, site in sites.items()}
    reuses_base = sum(site.slices.ip_reuses for site in sites.values())
    across_base = sum(site.slices.ip_reuses_across_services for site in sites.values())
    changes_base = sum(site.slices.pod_ip_changes for site in sites.values())
    ends_before: list[int] = []
    cpu0: list[tuple[float, float, float]] = []
    for lane in lanes:
        await lane.clients.loop_lag()  # start a fresh lag window
        ends_before.append((await lane.clients.status({})).ends)
        pid = lane.server.pid
        cpu0.append(
            (
                procstat.cpu_seconds(pid) or 0.0,
                procstat.cpu_seconds(pid, thread=pid) or 0.0,
                procstat.total_cpu_seconds(lane.clients.pids),
            )
        )
    wall0 = time.monotonic()
    pollers = [asyncio.create_task(watch.run()) for watch in progress.values()]
    # Scraping /metrics costs the scraped server CPU (our exposition of every
    # histogram: 6 % of our samples at this rate). Side by side, the other
    # server's /metrics is scraped at the same rate, so both pay alike.
    pollers += [
        asyncio.create_task(scrape_for_parity(lane.server.admin_address))
        for lane in lanes
        if not lane.contender.our_metrics
    ]
    try:
        shared, per_lane = await _run_step(
            step, sites=sites, plan=plan, lanes=lanes, scenario=scenario
        )
    finally:
        for poller in pollers:
            poller.cancel()
        for poller in pollers:
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    # The slice event that completed the last member's final state (in whichever
    # cluster changed last): when did the server's watch of that cluster read it,
    # compared with ours?
    last = max(members, key=lambda m: sites[m.cluster].slices.service(m.service).changed_at)
    last_state = sites[last.cluster].slices.service(last.service)
    wall = time.monotonic() - wall0
    needed = last_state.changed_by_event - events_base[last.cluster]
    shared["wall_s"] = wall
    shared["endpoints_before"] = before
    shared["slice_events"] = sum(site.slices.events - events_base[n] for n, site in sites.items())
    shared["last_slice_change_cluster"] = last.cluster
    shared["ip_reuses"] = sum(site.slices.ip_reuses for site in sites.values()) - reuses_base
    shared["ip_reuses_across_services"] = (
        sum(site.slices.ip_reuses_across_services for site in sites.values()) - across_base
    )
    shared["pod_ip_changes"] = (
        sum(site.slices.pod_ip_changes for site in sites.values()) - changes_base
    )
    for lane, (outcome, _), ends0, (server0, main0, clients0) in zip(
        lanes, per_lane, ends_before, cpu0, strict=True
    ):
        pid = lane.server.pid
        outcome["server_cpu_s"] = (procstat.cpu_seconds(pid) or server0) - server0
        main = (procstat.cpu_seconds(pid, thread=pid) or main0) - main0
        outcome["server_main_thread_cpu_s"] = main
        outcome["server_main_thread_busy"] = main / wall
        outcome["clients_cpu_s"] = procstat.total_cpu_seconds(lane.clients.pids) - clients0
        reader = progress.get(lane.name)
        caught_up = (
            reader.caught_up_at(last.cluster, server_base[lane.name].get(last.cluster, 0.0), needed)
            if reader is not None and needed > 0
            else None
        )
        outcome["server_read_final_slice_event_after_s"] = (
            None if caught_up is None else caught_up - last_state.changed_at
        )
        outcome["client_loop_lag"] = await lane.clients.loop_lag()
        outcome["stream_ends"] = (await lane.clients.status({})).ends - ends0
    return shared, per_lane


@dataclass
class StreamSamples:
    """One server's streams after a step: who got there, and when."""

    end_to_end: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)  # beyond the API's own watch
    missing: int = 0
    wrong: Counter[str] = field(default_factory=Counter)


def stream_samples(
    reports: list[StreamReport],
    targets: dict[str, Target],
    target_t0: dict[str, float],
    target_final: dict[str, float | None],
) -> StreamSamples:
    """Per stream at its target: end-to-end (from the first PATCH) and beyond the API's watch.

    A stream not at its target (count, and template hash when one is asked
    for) is counted in `missing` by what it held; "beyond the watch" needs the
    target's final time from the orchestrator's watch.
    """
    out = StreamSamples()
    for report in reports:
        target = targets[report.service]
        right = report.count == target.count and (
            target.template_hash is None or report.hashes == (target.template_hash,)
        )
        if not right or report.t_set is None:
            out.missing += 1
            seen = f" hashes={'+'.join(report.hashes)}" if target.template_hash else ""
            out.wrong[f"count={report.count}{seen}"] += 1
            continue
        out.end_to_end.append(max(0.0, report.t_set - target_t0[report.service]))
        final = target_final[report.service]
        if final is not None:
            out.ours.append(report.t_set - final)
    return out


async def _run_step(
    step: Step,
    *,
    sites: Sites,
    plan: Plan,
    lanes: list[Lane],
    scenario: Scenario,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Samples]]]:
    members = [m for group in plan.values() for m in group]
    if step.kind == "restart":
        t0, hashes = await restart_all(sites, members)
        member_targets = {m: Target(step.replicas, hashes[m]) for m in members}
    else:
        t0 = await scale_all(sites, members, step.replicas)
        member_targets = {m: Target(step.replicas) for m in members}
    targets = {key: combined_target(group, member_targets) for key, group in plan.items()}
    k8s_done = await wait_members(sites, member_targets, timeout_s=scenario.transition_timeout_s)
    remaining = scenario.transition_timeout_s - (time.time() - min(t0.values()))
    waits = await asyncio.gather(
        *(
            wait_streams(
                lane.clients,
                targets,
                timeout_s=max(remaining, 10.0),
                require_quiet=True,
                stall_s=STALL_S,
            )
            for lane in lanes
        )
    )
    reports = [await lane.clients.reports() for lane in lanes]
    # Per member: when its own cluster's EndpointSlices last changed into the final state.
    member_final: dict[Member, float | None] = {}
    for m in members:
        state = sites[m.cluster].slices.service(m.service)
        member_final[m] = state.changed_at if state.satisfies(member_targets[m]) else None
    member_share = {m: f - t0[m] for m, f in member_final.items() if f is not None}
    # Per target: from the first PATCH of its members to the last member being final.
    target_t0 = {key: min(t0[m] for m in group) for key, group in plan.items()}
    target_final: dict[str, float | None] = {}
    kube_s: list[float] = []
    for key, group in plan.items():
        finals = [member_final[m] for m in group]
        if all(f is not None for f in finals):
            target_final[key] = max(f for f in finals if f is not None)
            kube_s.append(max(member_share[m] for m in group))  # the slowest cluster's share
        else:
            target_final[key] = None
    counts = sorted({t.count for t in targets.values()})
    shared = {
        "step": step.label,
        "endpoints_target": step.replicas,
        "addresses_per_stream_target": counts[0] if len(counts) == 1 else counts,
        "kubernetes_converged": k8s_done,
        "kubernetes_s": summary(kube_s),
        "kubernetes_by_cluster_s": {
            name: summary(v for m, v in member_share.items() if m.cluster == name) for name in sites
        },
        "slice_changes": sum(sites[m.cluster].slices.service(m.service).changes for m in members),
    }
    per_lane: list[tuple[dict[str, Any], Samples]] = []
    for (_, converged), lane_reports in zip(waits, reports, strict=True):
        got = stream_samples(lane_reports, targets, target_t0, target_final)
        outcome = {
            "streams_converged": converged,
            "streams_at_target": len(got.end_to_end),
            "streams_not_at_target": got.missing,
            "wrong_states": dict(got.wrong.most_common(10)),
            "end_to_end_s": summary(got.end_to_end),
            "ours_s": summary(got.ours),
        }
        per_lane.append((outcome, Samples(got.end_to_end, kube_s, got.ours)))
    return shared, per_lane


def histogram_summary(
    before: promstats.Scrape,
    after: promstats.Scrape,
    cluster: str = CLUSTER,
    name: str = EVENT_TO_ENQUEUE,
) -> dict[str, Any]:
    delta = promstats.histogram_delta(before, after, name, cluster=cluster)
    out: dict[str, Any] = {"events": delta.count, "sum_s": delta.total_s}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value, above = delta.quantile(q)
        out[name] = value
        out[name + "_above_last_bucket"] = above
    out["max_bucket_le"] = next(
        (
            b
            for b, c in zip(delta.bounds, delta.cumulative, strict=False)
            if c >= delta.count and delta.count > 0
        ),
        None,
    )
    out["share_le_100ms"] = delta.share_at_most(0.1)
    out["share_le_500ms"] = delta.share_at_most(0.5)
    return out


def counters(before: promstats.Scrape, after: promstats.Scrape) -> dict[str, float]:
    names = (
        "destination_updates_sent_total",
        "destination_stream_queue_overflows_total",
        "destination_stuck_streams_ended_total",
        "watch_events_total",
        "watch_restarts_total",
        "watch_lists_total",
    )
    return {n: after.value(n) - before.value(n) for n in names}


def counters_by_cluster(
    before: promstats.Scrape, after: promstats.Scrape, clusters: list[str]
) -> dict[str, dict[str, float]]:
    names = ("watch_events_total", "watch_restarts_total", "watch_lists_total")
    return {
        c: {n: after.value(n, cluster=c) - before.value(n, cluster=c) for n in names}
        for c in clusters
    }


def cache_objects(scrape: promstats.Scrape) -> dict[str, dict[str, float]]:
    """The server's `cache_objects{cluster,kind}` gauges: what it holds per cluster."""
    out: dict[str, dict[str, float]] = {}
    for key, value in scrape.samples.get("cache_objects", {}).items():
        labels = dict(key)
        out.setdefault(labels.get("cluster", ""), {})[labels.get("kind", "")] = value
    return out


@contextlib.asynccontextmanager
async def kube_client(cluster: LocalCluster) -> AsyncIterator[Kube]:
    api = await new_api_client(cluster.kubeconfig)
    try:
        yield Kube(cluster, api)
    finally:
        await api.close()


@contextlib.asynccontextmanager
async def servers(
    scenario_name: str,
    kubeconfig: Path,
    options: Options,
    work_dir: Path,
    records: dict[str, dict[str, Any]],
) -> AsyncIterator[list[Contender]]:
    """Our server and, side by side, the second one; both ready; stopped on exit.

    They come in the order they were started, which is also the order their
    clients start and are polled in: ours first, unless `second_first`.
    `records` gets, per server name, its readiness and RSS after the initial
    sync, and on exit its exit code and the tail of its log.
    """
    contenders: list[Contender] = []
    try:
        if options.compare is not None and options.second_first:
            contenders.append(second_server(options, scenario_name, kubeconfig, work_dir))
        ours = start_server(
            kubeconfig=kubeconfig,
            cluster_name=CLUSTER,
            log_path=work_dir / f"{scenario_name}-server.log",
            extra_args=list(options.server_args),
            profile_to=work_dir / f"{scenario_name}-server.prof"
            if options.profile_server
            else None,
            shared=SHARED_FLAGS,
        )
        contenders.append(Contender(OURS, "our server (destination serve)", ours, True))
        if options.compare is not None and not options.second_first:
            contenders.append(second_server(options, scenario_name, kubeconfig, work_dir))
        ready = await asyncio.gather(
            *(asyncio.to_thread(wait_ready, c.server, 180) for c in contenders)
        )
        for contender, seconds in zip(contenders, ready, strict=True):
            records[contender.name] = {
                "server_ready_s": round(seconds, 2),
                "server_rss_after_sync_mb": procstat.rss_mb(contender.server.pid),
                "server_peak_rss_sync_mb": procstat.hwm_mb(contender.server.pid),
            }
        if len(contenders) > 1:
            log(
                f"{scenario_name}: ready: "
                + ", ".join(f"{n} {r['server_ready_s']}s" for n, r in records.items())
            )
        yield contenders
    finally:
        for contender in contenders:
            code = await asyncio.to_thread(contender.server.stop)
            record = records.setdefault(contender.name, {})
            record["server_exit_code"] = code
            record["server_log_tail"] = contender.server.tail(10)


def second_server(
    options: Options, scenario_name: str, kubeconfig: Path, work_dir: Path
) -> Contender:
    assert options.compare is not None
    return start_second(
        options.compare,
        kubeconfig=kubeconfig,
        cluster_name=CLUSTER,
        log_path=work_dir / f"{scenario_name}-{options.compare.name}-server.log",
        shared=SHARED_FLAGS,
        extra_args=list(options.server_args),
    )


def ours_of(contenders: list[Contender]) -> Contender:
    return next(c for c in contenders if c.name == OURS)


def compared_section(
    spec: CompareSpec,
    contenders: list[Contender],
    records: dict[str, dict[str, Any]],
    measured: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The second server's results (same shape as ours), under `compared` in ours."""
    second = next(c for c in contenders if c.name != OURS)
    return {
        "with": spec.kind,
        "started_first": contenders[0].name,
        "name": second.name,
        "description": second.description,
        "result": {**records.get(second.name, {}), **measured.get(second.name, {})},
    }


async def run_scenario(
    scenario: Scenario, clusters: dict[str, LocalCluster], options: Options, work_dir: Path
) -> dict[str, Any]:
    result: dict[str, Any] = {"scenario": scenario.name}
    names = service_names(scenario)
    plan = plan_for(scenario)
    async with contextlib.AsyncExitStack() as stack:
        sites: Sites = {}
        for name in scenario.clusters:
            kube = await stack.enter_async_context(kube_client(clusters[name]))
            await kube.create_namespace(NAMESPACE)
            slices = await stack.enter_async_context(tracking(kube.api, NAMESPACE))
            sites[name] = Site(name, clusters[name], kube, slices)
        local, remotes = sites[CLUSTER], [sites[n] for n in scenario.clusters[1:]]
        started = time.monotonic()
        await asyncio.gather(*(create_workloads(site.kube, scenario) for site in sites.values()))
        if scenario.federated:
            await create_federated(local.kube, scenario)
        if remotes:
            await link_remotes(local, remotes)
        initial = {Member(c, n): Target(scenario.initial) for c in sites for n in names}
        if not await wait_members(sites, initial, timeout_s=900):
            raise TimeoutError("the initial endpoints never became ready")
        if options.compare is not None:
            await asyncio.to_thread(prepare_cluster, options.compare, local.cluster, SHARED_FLAGS)
        result["setup_s"] = round(time.monotonic() - started, 1)
        log(
            f"{scenario.name}: {scenario.services * scenario.initial} pods ready"
            + (f" in each of {', '.join(sites)}" if len(sites) > 1 else "")
        )

        records: dict[str, dict[str, Any]] = {}
        async with servers(
            scenario.name, local.cluster.kubeconfig, options, work_dir, records
        ) as contenders:
            server = ours_of(contenders).server
            if remotes:
                ready = time.monotonic()
                for site in remotes:
                    await wait_for_state(server.admin_address, site.name, "synced", timeout_s=180)
                result["links_synced_after_ready_s"] = round(time.monotonic() - ready, 2)
                result["links"] = list((await cluster_statuses(server.admin_address)).values())
                log(f"{scenario.name}: links {', '.join(s.name for s in remotes)} synced")
            synced = await asyncio.to_thread(promstats.fetch, server.admin_address, 60.0)
            result["server_cache_objects_after_sync"] = cache_objects(synced)
            measured, cross_check = await measure_with_clients(
                scenario, sites, plan, contenders, options
            )
        result.update(records[OURS])
        result.update(measured[OURS])
        if options.compare is not None:
            result["compared"] = compared_section(options.compare, contenders, records, measured)
            result["compared"]["cross_check"] = cross_check
    return result


def assignments_for(scenario: Scenario, targets: list[str], options: Options) -> list[Assignment]:
    """Streams slot by slot; slot k of every target goes to node k mod `client_nodes`."""
    nodes = [f"{CLUSTER}-node-{i}" for i in range(options.client_nodes)]
    out: list[Assignment] = []
    for slot in range(scenario.streams_per_service):
        for name in targets:
            stream_id = len(out)
            token = json.dumps(
                {"ns": NAMESPACE, "nodeName": nodes[slot % len(nodes)], "pod": f"c{stream_id}"}
            )
            out.append(Assignment(stream_id, name, authority(name), token, slot))
    return out


async def connect_lanes(
    lanes: list[Lane], check: Callable[[Lane], Coroutine[Any, Any, Any]]
) -> list[tuple[Any, float]]:
    """Run `check` (a wait for one lane's streams) for every lane at once.

    Returns, per lane, what it returned and how long after the start it did.
    """
    started = time.monotonic()

    async def one(lane: Lane) -> tuple[Any, float]:
        outcome = await check(lane)
        return outcome, time.monotonic() - started

    return list(await asyncio.gather(*(one(lane) for lane in lanes)))


def api_truth(sites: Sites, plan: Plan) -> dict[str, frozenset[str]]:
    """Per target: the ready IPs of its members in the orchestrator's own watches."""
    return {
        key: frozenset(
            ip for m in group for ip, _ in sites[m.cluster].slices.service(m.service).ready
        )
        for key, group in plan.items()
    }


async def cross_check(
    lanes: list[Lane], truth: dict[str, frozenset[str]], paths: dict[str, str]
) -> dict[str, Any]:
    """Every stream of every server against the API and each other, then fresh streams."""
    held = {lane.name: await lane.clients.addresses() for lane in lanes}
    cross = compare.cross_check(held, truth)
    fresh = {
        lane.name: await snapshot.fresh_sets(
            lane.server.grpc_address, paths, node=f"{CLUSTER}-node-0", namespace=NAMESPACE
        )
        for lane in lanes
    }
    cross["fresh_streams"] = compare.fresh_check(fresh, truth)
    return cross


async def measure_with_clients(
    scenario: Scenario,
    sites: Sites,
    plan: Plan,
    contenders: list[Contender],
    options: Options,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Clients for every server, then the phases; per server name, its results.

    Side by side, also the cross-check of the final states: every stream of
    every server compared with the API and with the other server's.
    """
    results: dict[str, dict[str, Any]] = {c.name: {} for c in contenders}
    assignments = assignments_for(scenario, list(plan), options)
    kube_pids = [pid for site in sites.values() for pid in cluster_pids(site.cluster).values()]
    cross: dict[str, Any] | None = None
    with lanes_for(
        contenders, assignments, options, track_hash=scenario.track_hash, kube_pids=kube_pids
    ) as lanes:
        initial = {key: Target(scenario.initial * len(group)) for key, group in plan.items()}
        timeout = 60 + scenario.streams * len(lanes) / 50
        with phases(lanes) as connects:
            waited = await connect_lanes(
                lanes,
                lambda lane: wait_streams(
                    lane.clients, initial, timeout_s=timeout, require_quiet=False
                ),
            )
        failed: list[str] = []
        scrapes: dict[str, promstats.Scrape] = {}
        for lane, connect, ((status, connected), after_s) in zip(
            lanes, connects, waited, strict=True
        ):
            ok = connected == "converged"
            active: float | None = None
            if lane.contender.our_metrics:
                scrape = await asyncio.to_thread(promstats.fetch, lane.server.admin_address, 60.0)
                scrapes[lane.name] = scrape
                active = scrape.value("destination_active_streams", rpc="Get")
            result = results[lane.name]
            result["connect"] = {
                "streams": status.streams,
                "connected": status.connected,
                "at_initial_count": status.at_target,
                "stream_ends": status.ends,
                "all_connected": ok,
                "connected_after_s": after_s,
                "server_active_streams": active,
                "server_rss_mb": procstat.rss_mb(lane.server.pid),
                "usage": asdict(connect),
            }
            log(
                f"{scenario.name}: {lane.tag(lanes)}{status.at_target}/{status.streams} streams "
                f"hold the initial state after {after_s:.1f}s"
                + ("" if active is None else f" (server says {active:.0f} active)")
            )
            if status.ends:
                reports = await lane.clients.reports()
                why = Counter(r.last_error for r in reports if r.ends)
                result["connect"]["stream_end_reasons"] = dict(why.most_common(5))
            if not ok:
                reports = await lane.clients.reports()
                errors = sorted({r.last_error for r in reports if r.last_error})[:5]
                failed.append(f"{lane.name}: {status}; errors: {errors}")
        if failed:
            raise RuntimeError(f"streams did not connect: {'; '.join(failed)}")
        if scenario.hold_s:
            with phases(lanes) as holds:
                await asyncio.sleep(scenario.hold_s)
            for lane, hold in zip(lanes, holds, strict=True):
                results[lane.name]["hold"] = {"seconds": scenario.hold_s, "usage": asdict(hold)}
                if lane.name in scrapes:
                    after = await asyncio.to_thread(
                        promstats.fetch, lane.server.admin_address, 60.0
                    )
                    results[lane.name]["hold"]["event_to_enqueue"] = histogram_summary(
                        scrapes[lane.name], after
                    )
                    results[lane.name]["hold"]["counters"] = counters(scrapes[lane.name], after)
                    scrapes[lane.name] = after
                log(
                    f"{scenario.name}: {lane.tag(lanes)}held {scenario.hold_s:.0f}s, server CPU "
                    f"{hold.server_cpu_s:.2f}s, RSS {hold.server_rss_end_mb:.0f} MB"
                )
        if scenario.steps:
            await run_steps(scenario, sites, plan, lanes, results, scrapes)
        for lane in lanes:
            result = results[lane.name]
            final = await lane.clients.status({})
            result["stream_ends_total"] = final.ends
            result["streams_ended_at_least_once"] = final.streams_ended
            if lane.contender.our_metrics:
                end = await asyncio.to_thread(promstats.fetch, lane.server.admin_address, 60.0)
                result["server_active_streams_end"] = end.value(
                    "destination_active_streams", rpc="Get"
                )
                result["server_cache_objects_end"] = cache_objects(end)
            result["server_peak_rss_mb"] = lane.meter.overall_peak_mb
        if len(lanes) > 1:
            cross = await cross_check(
                lanes, api_truth(sites, plan), {k: authority(k) for k in plan}
            )
            log(f"{scenario.name}: cross-check of the final states: {compare.cross_summary(cross)}")
    return results, cross


async def run_steps(
    scenario: Scenario,
    sites: Sites,
    plan: Plan,
    lanes: list[Lane],
    results: dict[str, dict[str, Any]],
    scrapes: dict[str, promstats.Scrape],
) -> None:
    """Every step of the scenario against every server; fills each one's results."""
    steps: dict[str, list[dict[str, Any]]] = {lane.name: [] for lane in lanes}
    overall = {lane.name: Samples() for lane in lanes}
    groups: dict[str, dict[str, Samples]] = {lane.name: {} for lane in lanes}
    replicas = scenario.initial
    with phases(lanes) as churns:
        for step in scenario.steps:
            where = f" in each of {', '.join(sites)}" if len(sites) > 1 else ""
            log(f"{scenario.name}: {step.label} of {scenario.services} service(s){where}")
            shared, per_lane = await run_step(
                step, sites=sites, plan=plan, lanes=lanes, scenario=scenario
            )
            for lane, (own, samples) in zip(lanes, per_lane, strict=True):
                outcome = {**shared, **own}
                steps[lane.name].append(outcome)
                overall[lane.name].extend(samples)
                group = groups[lane.name].setdefault(step_group(step, replicas), Samples())
                group.extend(samples)
                e2e = outcome["end_to_end_s"]
                server_lag = outcome["server_read_final_slice_event_after_s"]
                log(
                    f"  {lane.tag(lanes)}{outcome['streams_at_target']}/{scenario.streams} "
                    f"streams right; p50 {_ms(e2e['p50'])} p99 {_ms(e2e['p99'])} "
                    f"max {_ms(e2e['max'])}; kubernetes max "
                    f"{_ms(outcome['kubernetes_s']['max'])}"
                    f"{_by_cluster(outcome['kubernetes_by_cluster_s'])}; "
                    + (
                        ""
                        if not lane.contender.our_metrics
                        else f"server read the final slice event {_ms(server_lag)} after us; "
                    )
                    + f"client loop lag max {_ms(outcome['client_loop_lag']['max_s'])}; "
                    f"server CPU {outcome['server_cpu_s']:.2f}s, "
                    + (
                        f"main thread {outcome['server_main_thread_busy']:.0%} busy, "
                        if lane.contender.our_metrics
                        else ""
                    )
                    + f"{outcome['stream_ends']} stream ends"
                )
            replicas = step.replicas
    for lane, churn in zip(lanes, churns, strict=True):
        result = results[lane.name]
        result["steps"] = steps[lane.name]
        result["all_steps"] = overall[lane.name].summaries()
        result["by_kind"] = {kind: g.summaries() for kind, g in groups[lane.name].items()}
        result["server_rss_before_churn_mb"] = churn.server_rss_start_mb
        result["server_peak_rss_churn_mb"] = churn.server_peak_rss_mb
        slice_events = sum(o["slice_events"] for o in steps[lane.name])
        result["churn"] = {
            "usage": asdict(churn),
            "slice_events": slice_events,
            "server_cpu_ms_per_slice_event": (
                1000 * churn.server_cpu_s / slice_events if slice_events else None
            ),
        }
        before = scrapes.get(lane.name)
        if before is None:
            continue
        after = await asyncio.to_thread(promstats.fetch, lane.server.admin_address, 60.0)
        result["churn"]["event_to_enqueue"] = histogram_summary(before, after)
        result["churn"]["counters"] = counters(before, after)
        if len(sites) > 1:
            result["churn"]["event_to_enqueue_by_cluster"] = {
                name: histogram_summary(before, after, name) for name in sites
            }
            result["churn"]["counters_by_cluster"] = counters_by_cluster(before, after, list(sites))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


def _by_cluster(shares: dict[str, dict[str, Any]]) -> str:
    if len(shares) < 2:
        return ""
    return " (" + ", ".join(f"{c} {_ms(v['max'])}" for c, v in shares.items()) + ")"


# -- machine description ---------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    commit = ""
    dirty = None
    git = shutil.which("git")
    if git:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            commit = subprocess.run(
                [git, "rev-parse", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            dirty = bool(
                subprocess.run(
                    [git, "status", "--porcelain", "--untracked-files=no"],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            )
    modified: list[str] = []
    if git:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            modified = subprocess.run(
                [git, "status", "--porcelain"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.splitlines()
    versions = pinned_versions()
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "kubernetes": versions.get("KUBERNETES_VERSION"),
        "etcd": versions.get("ETCD_VERSION"),
        "kwok": versions.get("KWOK_VERSION"),
        "git_commit": commit,
        "git_dirty_tracked_files": dirty,
        "git_status": modified,  # the benchmark runs the working tree as it is
    }


ScenarioRunner = Callable[
    [Scenario, dict[str, LocalCluster], Options, Path], Coroutine[Any, Any, dict[str, Any]]
]


def run_all(
    scenarios: list[Scenario],
    options: Options,
    runners: Mapping[str, ScenarioRunner] | None = None,
) -> dict[str, Any]:
    """Run each scenario on its own fresh cluster; always stop what was started.

    `runners` maps a scenario's kind to what runs it on its clusters: the steps
    scenarios run here (`run_scenario`); the soak and profile runners live in
    modules of their own (bench/soak.py, bench/profiles.py) that import this one,
    so bench/__main__.py hands them in.
    """
    chosen: dict[str, ScenarioRunner] = {"steps": run_scenario, **(runners or {})}
    for scenario in scenarios:
        if scenario.kind not in chosen:
            raise ValueError(f"no runner for {scenario.name} ({scenario.kind})")
    work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "work_dir": str(work_dir),
        "scenarios": [],
    }
    try:
        for scenario in scenarios:
            load = wait_for_quiet_machine(options)
            log(
                f"{scenario.name}: load {load['loadavg_at_start']} (waited {load['waited_s']}s); "
                f"starting {', '.join(scenario.clusters)} with {scenario.node_count} kwok "
                "nodes each"
            )
            entry: dict[str, Any] = {
                "scenario": scenario.name,
                "parameters": {
                    "services": scenario.services,
                    "streams_per_service": scenario.streams_per_service,
                    "streams": scenario.streams,
                    "initial_endpoints": scenario.initial,
                    "clusters": list(scenario.clusters),
                    "federated": scenario.federated,
                    "members_per_stream": scenario.members,
                    "steps": [s.label for s in scenario.steps],
                    "hold_s": scenario.hold_s,
                    "kwok_nodes": scenario.node_count,
                    "peak_pods": scenario.peak_pods,  # per cluster
                    "notes": list(scenario.notes),
                    **({"soak": asdict(scenario.soak)} if scenario.soak else {}),
                    **({"profile": asdict(scenario.profile)} if scenario.profile else {}),
                },
                "load": load,
            }
            started = time.monotonic()
            try:
                with local_clusters(scenario.clusters, scenario.node_count, work_dir) as clusters:
                    runner = chosen[scenario.kind]
                    entry.update(asyncio.run(runner(scenario, clusters, options, work_dir)))
            except Exception as err:  # one failed scenario must not hide the others' results
                entry["error"] = f"{type(err).__name__}: {err}"
                log(f"{scenario.name}: FAILED: {entry['error']}")
            except KeyboardInterrupt:
                entry["error"] = "interrupted"
                entry["wall_s"] = round(time.monotonic() - started, 1)
                document["scenarios"].append(entry)
                raise
            entry["wall_s"] = round(time.monotonic() - started, 1)
            document["scenarios"].append(entry)
    except KeyboardInterrupt:
        document["interrupted"] = True
        log("interrupted: everything started was stopped; writing what was measured")
    document["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return document
