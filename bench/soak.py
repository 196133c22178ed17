"""The soak scenario: minutes of churn, the server's RSS over time, streams against the API.

Setup (on fresh clusters `east`, and `west` when there are federated
services): `local_services` Deployments and Services `svc-NNN` in `east`;
`federated_services` more, `svc-NNN` in both clusters, each behind a
federated Service `svc-NNN-federated` on `east` (local discovery of its own
`svc-NNN`, remote discovery of `svc-NNN@west`); `west` linked by a Secret
holding a token of deploy/remote-access.yaml's reader, as an operator links
it (tests/integration/links.py). The server runs on `east`; every target gets
`streams_per_target` Get streams.

Then, for `minutes`, all at once (bench/scenarios.py `SoakSettings`):

* each Deployment is scaled to a random size in [low, high] every
  `scale_interval_s` ±50 % (its own seeded generator, so a run repeats);
* every `churn_interval_s`, `churn_fraction` of all streams, drawn from the
  ones not marked steady, are closed by their client (the call is cancelled)
  and opened again with an empty state; the steady ones stay open throughout;
* every `rotate_interval_s`, the link Secret of `west` is replaced by one
  holding a new token of the same ServiceAccount; the harness waits until the
  server's `remote_cluster_credential_rotations_total{cluster="west"}` counts
  it (applied or rejected) and records how long that took;
* every `rss_interval_s`: the server's RSS (`/proc/<pid>/status` VmRSS), CPU
  seconds, and from `/metrics` its active Get streams, the objects its cache
  holds per cluster (`cache_objects`) and its endpoint views with subscribers;
* every `ping_interval_s`: the round trip of the server's admin `/ping`, from
  a thread of the orchestrator. The server exposes no event-loop lag of its
  own; `/ping` is answered on its event loop, so the round trip is an upper
  bound of how late that loop runs (plus an HTTP exchange on loopback);
* every 30 s: the client processes' own loop lag (`LoopLag`, a 20 ms timer),
  which says when the clients, not the server, were the slow side.

At the end the churn stops; once every Deployment's EndpointSlices hold its
last size and no slice event came for 5 s, and 5 s more have passed, every
stream's address set is compared with the orchestrator's own EndpointSlice
watch of each cluster (the API's truth): `lost` (in the API, not in the
stream) and `phantom` (in the stream, not in the API) must both be 0. If
they are not, the comparison is repeated for up to a minute, to tell late
from lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from tests.integration.links import cluster_statuses, link_secret, put_link, wait_for_state
from tests.kube.cluster import LocalCluster
from tests.kube.credentials import remote_reader, service_account_kubeconfig

from . import procstat, promstats
from .clients import Assignment, Target
from .run import (
    CLUSTER,
    LOCAL_DISCOVERY,
    NAMESPACE,
    REMOTE_DISCOVERY,
    Clients,
    Member,
    Meter,
    Options,
    Plan,
    Site,
    Sites,
    authority,
    cache_objects,
    client_processes,
    cluster_pids,
    counters,
    counters_by_cluster,
    federated_name,
    histogram_summary,
    kube_client,
    link_remotes,
    log,
    wait_members,
    wait_streams,
)
from .scenarios import Scenario, SoakSettings
from .server import ServerProcess, start_server, wait_ready
from .slices import tracking
from .soak_analysis import RssSample, compare_with_truth, lag_windows, rss_growth
from .stats import summary

REMOTE = "west"
CONTAINER_PORT = 8080  # tests/kube/workloads.py's default `http` container port
SETTLE_QUIET_S = 5.0  # no slice event for this long: Kubernetes is done
SETTLE_GRACE_S = 5.0  # then this long for the server and streams to follow
LATE_WINDOW_S = 60.0  # a mismatch still there after this long is lost, not late
CLIENT_LAG_EVERY_S = 30.0
ROTATION_WAIT_S = 45.0
MAX_ERRORS_KEPT = 20


def soak_plan(settings: SoakSettings, remote: str | None) -> Plan:
    """Targets: local `svc-NNN`, then federated `svc-NNN-federated` over east and the remote."""
    plan: Plan = {}
    for i in range(settings.local_services):
        name = f"svc-{i:03d}"
        plan[name] = (Member(CLUSTER, name),)
    for j in range(settings.federated_services):
        name = f"svc-{settings.local_services + j:03d}"
        if remote is None:
            raise ValueError("federated soak services need a remote cluster")
        plan[federated_name(name)] = (Member(CLUSTER, name), Member(remote, name))
    return plan


def soak_assignments(plan: Plan, settings: SoakSettings, nodes: int) -> list[Assignment]:
    """`streams_per_target` per target; the first `steady_fraction` of each never churn."""
    per_target = settings.streams_per_target
    steady = round(settings.steady_fraction * per_target)
    out: list[Assignment] = []
    for slot in range(per_target):
        for target in plan:
            stream_id = len(out)
            token = json.dumps(
                {
                    "ns": NAMESPACE,
                    "nodeName": f"{CLUSTER}-node-{slot % nodes}",
                    "pod": f"c{stream_id}",
                }
            )
            out.append(
                Assignment(stream_id, target, authority(target), token, slot, steady=slot < steady)
            )
    return out


def churn_picks(
    assignments: list[Assignment], settings: SoakSettings, rng: random.Random
) -> list[int]:
    """One round's streams to close and reopen: a share of all streams, none of the steady."""
    churnable = [a.stream_id for a in assignments if not a.steady]
    wanted = min(len(churnable), round(settings.churn_fraction * len(assignments)))
    return sorted(rng.sample(churnable, wanted))


@dataclass
class SoakRecord:
    """What the background loops of the soak write down."""

    started: float = 0.0  # time.monotonic() at the start of the churn
    rss: list[dict[str, Any]] = field(default_factory=list)
    pings_s: list[float] = field(default_factory=list)
    ping_failures: int = 0
    client_lag_p99s: list[float] = field(default_factory=list)
    client_lag_maxima: list[float] = field(default_factory=list)
    scales: int = 0
    churn_rounds: int = 0
    streams_churned: int = 0
    rotations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def since(self) -> float:
        return time.monotonic() - self.started

    def error(self, where: str, err: BaseException) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{self.since():.0f}s {where}: {type(err).__name__}: {err}")


async def _every(
    interval_s: float, record: SoakRecord, where: str, action: Callable[[], Awaitable[None]]
) -> None:
    """Run `action` every `interval_s` (from the start of one to the next) until cancelled."""
    next_at = time.monotonic()
    while True:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one failed round must not end the soak
            record.error(where, err)
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _scale_forever(
    site: Site, member: Member, settings: SoakSettings, rng: random.Random, record: SoakRecord
) -> None:
    while True:
        await asyncio.sleep(settings.scale_interval_s * rng.uniform(0.5, 1.5))
        replicas = rng.randint(settings.low, settings.high)
        try:
            await site.kube.scale(NAMESPACE, member.service, replicas)
            record.scales += 1
        except asyncio.CancelledError:
            raise
        except (ApiException, OSError, TimeoutError) as err:
            record.error(f"scale {member.label}", err)


def _rotation_count(admin: str) -> float:
    scrape = promstats.fetch(admin, 30.0)
    return scrape.value("remote_cluster_credential_rotations_total", cluster=REMOTE)


async def _rotate_once(local: Site, remote: Site, admin: str, record: SoakRecord) -> None:
    """A new token of the same reader in the link Secret; wait until the server counted it."""
    at = record.since()
    namespace, account = remote_reader()
    kubeconfig = await asyncio.to_thread(
        service_account_kubeconfig, remote.cluster, namespace=namespace, service_account=account
    )
    before = await asyncio.to_thread(_rotation_count, admin)
    body = link_secret(REMOTE, kubeconfig=kubeconfig, trust_domain=f"{REMOTE}.example")
    written = time.monotonic()
    await put_link(local.kube, body)
    entry: dict[str, Any] = {"at_s": round(at, 1), "counted_after_s": None}
    record.rotations.append(entry)
    deadline = written + ROTATION_WAIT_S
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if await asyncio.to_thread(_rotation_count, admin) > before:
            entry["counted_after_s"] = round(time.monotonic() - written, 2)
            break
    status = (await cluster_statuses(admin)).get(REMOTE) or {}
    entry["state"] = status.get("state")
    entry["rotation"] = status.get("rotation")
    entry["error"] = status.get("error")


class _Pinger:
    """Times the server's admin `/ping` from a thread of its own (blocking urllib).

    The thread is the only writer of `pings_s` and `ping_failures`; they are
    read once it has been joined.
    """

    def __init__(self, admin: str, interval_s: float, record: SoakRecord) -> None:
        if not admin.startswith("127.0.0.1:"):
            raise ValueError(f"refusing to ping a non-loopback address: {admin}")
        self._url = f"http://{admin}/ping"
        self._interval_s = interval_s
        self._record = record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-ping", daemon=True)

    def __enter__(self) -> _Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self._url, timeout=5) as response:
                    response.read()
                self._record.pings_s.append(time.perf_counter() - started)
            except (OSError, urllib.error.URLError):
                self._record.ping_failures += 1
            self._stop.wait(max(0.0, self._interval_s - (time.perf_counter() - started)))


async def _sample(server_pid: int, admin: str, record: SoakRecord) -> None:
    entry: dict[str, Any] = {
        "t_s": round(record.since(), 1),
        "rss_mb": procstat.rss_mb(server_pid),
        "cpu_s": procstat.cpu_seconds(server_pid),
    }
    try:
        scrape = await asyncio.to_thread(promstats.fetch, admin, 10.0)
        entry["active_streams"] = scrape.value("destination_active_streams", rpc="Get")
        entry["cache_objects"] = {c: sum(k.values()) for c, k in cache_objects(scrape).items()}
        # Views with subscribers (servers that set `endpoint_views`; 0 on those that do not).
        entry["endpoint_views"] = scrape.value("endpoint_views")
    except OSError as err:
        record.error("scrape", err)
    record.rss.append(entry)


async def _client_lag(clients: Clients, record: SoakRecord) -> None:
    lag = await clients.loop_lag()
    record.client_lag_p99s.append(lag["p99_s"])
    record.client_lag_maxima.append(lag["max_s"])


def truth_of(sites: Sites, plan: Plan) -> dict[str, frozenset[str]]:
    """Per target, the ready IPs of its members, from the orchestrator's slice watches."""
    return {
        target: frozenset(
            ip
            for member in members
            for ip, _pod in sites[member.cluster].slices.service(member.service).ready
        )
        for target, members in plan.items()
    }


async def current_sizes(sites: Sites, plan: Plan) -> dict[Member, int]:
    """Each member Deployment's replicas as the API has them (a scale cut short is not known)."""
    sizes: dict[Member, int] = {}
    for members in plan.values():
        for member in members:
            scale = await sites[member.cluster].kube.apps.read_namespaced_deployment_scale(
                member.service, NAMESPACE
            )
            sizes[member] = int(scale.spec.replicas)
    return sizes


async def settle_and_compare(sites: Sites, plan: Plan, clients: Clients) -> dict[str, Any]:
    """Wait for Kubernetes to finish, give the server a grace period, compare, and again if off."""
    started = time.monotonic()
    events_before = sum(site.slices.events for site in sites.values())
    last_event_age = time.time() - max(site.slices.last_event_at for site in sites.values())
    sizes = await current_sizes(sites, plan)
    targets = {member: Target(replicas) for member, replicas in sizes.items()}
    k8s_done = await wait_members(sites, targets, timeout_s=300)
    quiet_deadline = time.monotonic() + 120
    while time.monotonic() < quiet_deadline:
        last_event = max(site.slices.last_event_at for site in sites.values())
        if time.time() - last_event >= SETTLE_QUIET_S:
            break
        await asyncio.sleep(0.5)
    settled_after = time.monotonic() - started
    settle_events = sum(site.slices.events for site in sites.values()) - events_before
    await asyncio.sleep(SETTLE_GRACE_S)
    first = compare_with_truth(
        await clients.addresses(), truth_of(sites, plan), port=CONTAINER_PORT
    )
    out: dict[str, Any] = {
        "last_sizes": {member.label: size for member, size in sizes.items()},
        "kubernetes_reached_last_sizes": k8s_done,
        "last_slice_event_before_settling_s": round(last_event_age, 1),
        "kubernetes_settled_after_s": round(settled_after, 1),
        "slice_events_while_settling": settle_events,
        "grace_s": SETTLE_GRACE_S,
        "at_end": first,
    }
    if first["lost"] or first["phantom"] or first["not_connected"]:
        deadline = time.monotonic() + LATE_WINDOW_S
        again = first
        while time.monotonic() < deadline and (
            again["lost"] or again["phantom"] or again["not_connected"]
        ):
            await asyncio.sleep(2)
            again = compare_with_truth(
                await clients.addresses(), truth_of(sites, plan), port=CONTAINER_PORT
            )
        out["after_late_window"] = again
        out["late_window_s"] = LATE_WINDOW_S
    return out


async def _soak_with_clients(
    scenario: Scenario,
    settings: SoakSettings,
    sites: Sites,
    plan: Plan,
    server: ServerProcess,
    options: Options,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    assignments = soak_assignments(plan, settings, options.client_nodes)
    kube_pids = [pid for site in sites.values() for pid in cluster_pids(site.cluster).values()]
    record = SoakRecord()
    with client_processes(server, assignments, options, track_hash=False) as clients:
        meter = Meter(server.pid, clients.pids, kube_pids)
        meter.overall_peak_mb = procstat.hwm_mb(server.pid) or 0.0
        initial = {t: Target(settings.low * len(ms)) for t, ms in plan.items()}
        with meter.phase() as connect:
            status, connected = await wait_streams(
                clients, initial, timeout_s=60 + len(assignments) / 50, require_quiet=False
            )
        result["connect"] = {
            "streams": status.streams,
            "at_initial_count": status.at_target,
            "all_connected": connected == "converged",
            "usage": asdict(connect),
        }
        if connected != "converged":
            raise RuntimeError(f"soak streams did not connect: {status}")
        log(f"soak: {status.at_target}/{status.streams} streams connected; churning")
        before = await asyncio.to_thread(promstats.fetch, server.admin_address, 60.0)
        duration_s = settings.minutes * 60
        rng = random.Random(settings.seed)
        record.started = time.monotonic()
        background: list[asyncio.Task[None]] = []
        members = [m for ms in plan.values() for m in ms]
        for index, member in enumerate(members):
            member_rng = random.Random(settings.seed * 1000 + index)
            background.append(
                asyncio.create_task(
                    _scale_forever(sites[member.cluster], member, settings, member_rng, record)
                )
            )

        async def churn_round() -> None:
            if record.since() < settings.churn_interval_s / 2:
                return  # not at the very start: the streams just opened
            picked = churn_picks(assignments, settings, rng)
            record.streams_churned += await clients.churn(picked)
            record.churn_rounds += 1

        background.append(
            asyncio.create_task(_every(settings.churn_interval_s, record, "churn", churn_round))
        )
        remote = sites.get(REMOTE)
        if remote is not None:

            async def rotate() -> None:
                if record.since() >= settings.rotate_interval_s / 2:
                    await _rotate_once(sites[CLUSTER], remote, server.admin_address, record)

            background.append(
                asyncio.create_task(_every(settings.rotate_interval_s, record, "rotate", rotate))
            )
        background.append(
            asyncio.create_task(
                _every(
                    settings.rss_interval_s,
                    record,
                    "sample",
                    lambda: _sample(server.pid, server.admin_address, record),
                )
            )
        )
        background.append(
            asyncio.create_task(
                _every(
                    CLIENT_LAG_EVERY_S, record, "client lag", lambda: _client_lag(clients, record)
                )
            )
        )
        await clients.loop_lag()  # a fresh window
        with (
            meter.phase() as churn,
            _Pinger(server.admin_address, settings.ping_interval_s, record),
        ):
            try:
                last_note = 0.0
                while record.since() < duration_s:
                    if not server.alive():
                        raise RuntimeError(f"the server exited during the soak:\n{server.tail()}")
                    await asyncio.sleep(min(5.0, duration_s - record.since()))
                    if record.since() - last_note >= 60:
                        last_note = record.since()
                        rss = record.rss[-1]["rss_mb"] if record.rss else None
                        log(
                            f"soak: {record.since() / 60:.1f} min, RSS {rss or 0:.1f} MB, "
                            f"{record.scales} scales, {record.streams_churned} streams "
                            f"churned, {len(record.rotations)} rotations, "
                            f"{record.error_count} errors"
                        )
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            await _sample(server.pid, server.admin_address, record)  # the last one
        after = await asyncio.to_thread(promstats.fetch, server.admin_address, 60.0)
        log("soak: churn stopped; waiting for Kubernetes to settle, then comparing streams")
        result["truth"] = await settle_and_compare(sites, plan, clients)
        final = await clients.status({})
        end = await asyncio.to_thread(promstats.fetch, server.admin_address, 60.0)
        samples = [
            RssSample(float(s["t_s"]), float(s["rss_mb"]))
            for s in record.rss
            if s.get("rss_mb") is not None
        ]
        result["soak"] = {
            "duration_s": round(record.since(), 1),
            "rss_growth": rss_growth(
                samples,
                duration_s=duration_s,
                warmup_s=settings.warmup_minutes * 60,
                window_s=settings.window_minutes * 60,
            ),
            "rss_series": record.rss,
            "server_loop_lag_from_ping": {
                "source": "round trip of the server's admin /ping (served on its event loop), "
                "from a thread of the orchestrator; an upper bound of the loop's lag",
                **summary(record.pings_s),
                "failures": record.ping_failures,
            },
            "client_loop_lag": lag_windows(record.client_lag_p99s, record.client_lag_maxima),
            "scales": record.scales,
            "churn_rounds": record.churn_rounds,
            "streams_churned": record.streams_churned,
            "rotations": record.rotations,
            "rotations_counted": sum(1 for r in record.rotations if r["counted_after_s"]),
            "errors": record.errors,
            "error_count": record.error_count,
            "usage": asdict(churn),
            "event_to_enqueue_by_cluster": {
                name: histogram_summary(before, after, name) for name in sites
            },
            "counters": counters(before, after),
            "counters_by_cluster": counters_by_cluster(before, after, list(sites)),
            "credential_rotations": {
                result_label: after.value(
                    "remote_cluster_credential_rotations_total",
                    cluster=REMOTE,
                    result=result_label,
                )
                - before.value(
                    "remote_cluster_credential_rotations_total",
                    cluster=REMOTE,
                    result=result_label,
                )
                for result_label in ("applied", "rejected")
            },
            # Streams the server refused (it counts refusals only), over the churn.
            "server_streams_refused": after.value("destination_streams_total")
            - before.value("destination_streams_total"),
        }
        result["stream_ends_total"] = final.ends  # server-ended, since each stream last opened
        result["server_active_streams_end"] = end.value("destination_active_streams", rpc="Get")
        result["server_cache_objects_end"] = cache_objects(end)
        result["server_peak_rss_mb"] = meter.overall_peak_mb
    return result


async def run_soak(
    scenario: Scenario, clusters: dict[str, LocalCluster], options: Options, work_dir: Path
) -> dict[str, Any]:
    """The soak on fresh clusters (see the module docstring); stops the server on the way out."""
    settings = scenario.soak
    if settings is None:
        raise ValueError(f"{scenario.name} is not a soak")
    result: dict[str, Any] = {"scenario": scenario.name}
    remote_name = REMOTE if REMOTE in scenario.clusters else None
    plan = soak_plan(settings, remote_name)
    async with contextlib.AsyncExitStack() as stack:
        sites: Sites = {}
        for name in scenario.clusters:
            kube = await stack.enter_async_context(kube_client(clusters[name]))
            await kube.create_namespace(NAMESPACE)
            slices = await stack.enter_async_context(tracking(kube.api, NAMESPACE))
            sites[name] = Site(name, clusters[name], kube, slices)
        started = time.monotonic()
        gate = asyncio.Semaphore(10)

        async def deploy(member: Member) -> None:
            async with gate:
                kube = sites[member.cluster].kube
                await kube.create_deployment(NAMESPACE, member.service, replicas=settings.low)
                await kube.create_service(NAMESPACE, member.service)

        await asyncio.gather(*(deploy(m) for ms in plan.values() for m in ms))
        for target, members in plan.items():
            if len(members) > 1:
                local_name = members[0].service
                await sites[CLUSTER].kube.create_service(
                    NAMESPACE,
                    target,
                    selector={},
                    annotations={
                        LOCAL_DISCOVERY: local_name,
                        REMOTE_DISCOVERY: ",".join(f"{m.service}@{m.cluster}" for m in members[1:]),
                    },
                )
        if remote_name is not None:
            await link_remotes(sites[CLUSTER], [sites[remote_name]])
        initial = {m: Target(settings.low) for ms in plan.values() for m in ms}
        if not await wait_members(sites, initial, timeout_s=600):
            raise TimeoutError("the initial endpoints never became ready")
        result["setup_s"] = round(time.monotonic() - started, 1)
        server = start_server(
            kubeconfig=sites[CLUSTER].cluster.kubeconfig,
            cluster_name=CLUSTER,
            log_path=work_dir / f"{scenario.name}-server.log",
            extra_args=list(options.server_args),
            profile_to=work_dir / f"{scenario.name}-server.prof"
            if options.profile_server
            else None,
        )
        try:
            result["server_ready_s"] = round(await asyncio.to_thread(wait_ready, server, 180), 2)
            if remote_name is not None:
                await wait_for_state(server.admin_address, remote_name, "synced", timeout_s=180)
                log(f"soak: link {remote_name} synced")
            result["server_rss_after_sync_mb"] = procstat.rss_mb(server.pid)
            result.update(
                await _soak_with_clients(scenario, settings, sites, plan, server, options)
            )
        finally:
            code = await asyncio.to_thread(server.stop)
            result["server_exit_code"] = code
            result["server_log_tail"] = server.tail(10)
    return result
