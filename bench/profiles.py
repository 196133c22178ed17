"""The profile scenario: GetProfile and Get streams while ServiceProfiles and Services change.

Setup (one fresh cluster, `east`): `services` Deployments (`endpoints` kwok
pods each) behind Services `svc-NNN`; the server; then, per service,
`streams_per_service` clients, each holding one `GetProfile` and one `Get`
stream on `svc-NNN.bench.svc.cluster.local:80` (the plan: 100 services x 100
clients, 10,000 streams of each kind, 20,000 in all).

Steps (bench/scenarios.py `ProfileSettings`; `cycles` times these five, each
applied to every service at once, one step after the other):

1. create the ServiceProfile `svc-NNN.bench.svc.cluster.local` (in the
   service's namespace) with one route `bench-v<N>` and a retry budget of
   `<N>` retries per second: every stream should get version vN;
2. update it to version N+1 (a JSON patch replacing its spec);
3. set the Service's `config.linkerd.io/opaque-ports` annotation to its port
   (80): the same version, now `opaque_protocol`;
4. remove the annotation: not opaque again;
5. delete the ServiceProfile: the default profile.

What is measured, per step:

* per GetProfile stream, from `t0` (`time.time()` just before the API write of
  its service) to the arrival of the first message carrying the step's tag
  (bench/profile_stream.py): p50/p95/p99/max over every stream; streams that
  never got it are counted, with the tags they held instead;
* messages received per stream (1 is ideal: no duplicates);
* the server's histogram `profile_event_to_enqueue_seconds{cluster="east"}`
  (watch event read -> last GetProfile subscriber's enqueue, observed for
  bursts that changed a profile topic) between scrapes around the step; on a
  server without it, `event_to_enqueue_seconds`, which covers every topic
  refresh (`PROFILE_HISTOGRAM_CANDIDATES`; the JSON names the one read). The
  server times a burst once, after refreshing its endpoint topics and then its
  profile topics, so the opaque-ports steps' Get refreshes are inside it;
* server CPU (utime+stime, all threads) over the step, per object changed
  (one per service) and per profile message delivered;
* the server's RSS, and its peak (VmHWM) with every stream open.

The Get streams only load the server (their answer does not change; that
they still hold every endpoint is checked at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from tests.kube.cluster import LocalCluster

from . import compare, procstat, promstats
from .clients import GET_RPC, PROFILE_RPC, Assignment, Status, Target
from .contenders import OURS, Contender, prepare_cluster
from .profile_stream import (
    DEFAULT,
    ProfileReport,
    ProfileStatus,
    ProfileTag,
    route_name,
    version_name,
)
from .run import (
    CLUSTER,
    NAMESPACE,
    POLL_S,
    QUIET_S,
    SHARED_FLAGS,
    STALL_S,
    Clients,
    Lane,
    Options,
    Site,
    authority,
    cache_objects,
    cluster_pids,
    compared_section,
    connect_lanes,
    counters,
    create_workloads,
    cross_check,
    histogram_summary,
    kube_client,
    lanes_for,
    log,
    phases,
    servers,
    service_names,
    wait_streams,
)
from .scenarios import ProfileSettings, Scenario
from .slices import tracking
from .stats import summary

GROUP, VERSION, PLURAL = "linkerd.io", "v1alpha2", "serviceprofiles"
OPAQUE_PORTS = "config.linkerd.io/opaque-ports"
SERVICE_PORT = 80  # tests/kube/workloads.py's default Service port
CLUSTER_DOMAIN = "cluster.local"
# A histogram of the server's that times profile refreshes alone, if it has one;
# otherwise `event_to_enqueue_seconds`, which times every topic refresh.
PROFILE_HISTOGRAM_CANDIDATES = ("profile_event_to_enqueue_seconds",)
EVENT_TO_ENQUEUE = "event_to_enqueue_seconds"
STEP_TIMEOUT_S = 300.0
WRITE_CONCURRENCY = 20
E2Q_GOAL_S = 0.1
PEAK_RSS_GOAL_MB = 600.0


@dataclass(frozen=True, slots=True)
class ProfileStep:
    """One change applied to every service, and the tag each stream should then hold."""

    kind: str  # "create", "update", "opaque-on", "opaque-off", "delete"
    version: int  # the ServiceProfile version written (create, update) or in place
    expect: ProfileTag

    @property
    def label(self) -> str:
        if self.kind in ("create", "update"):
            return f"sp-{self.kind}->{version_name(self.version)}"
        if self.kind == "delete":
            return f"sp-delete@{version_name(self.version)}"
        return f"{self.kind}@{version_name(self.version)}"


def profile_steps(cycles: int) -> list[ProfileStep]:
    """Five steps per cycle; versions never repeat, so a stale message cannot pass for new."""
    steps: list[ProfileStep] = []
    for cycle in range(cycles):
        first, second = 2 * cycle + 1, 2 * cycle + 2
        steps += [
            ProfileStep("create", first, ProfileTag(version_name(first), False)),
            ProfileStep("update", second, ProfileTag(version_name(second), False)),
            ProfileStep("opaque-on", second, ProfileTag(version_name(second), True)),
            ProfileStep("opaque-off", second, ProfileTag(version_name(second), False)),
            ProfileStep("delete", second, ProfileTag(DEFAULT, False)),
        ]
    return steps


INITIAL_TAG = ProfileTag(DEFAULT, False)


def profile_name(service: str) -> str:
    return f"{service}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"


def profile_spec(version: int) -> dict[str, Any]:
    """A ServiceProfile spec that names its version twice: route name and retry budget."""
    return {
        "routes": [
            {
                "name": route_name(version),
                "condition": {"method": "GET", "pathRegex": f"/{version_name(version)}/.*"},
                "isRetryable": True,
                "timeout": "250ms",
            }
        ],
        "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": version, "ttl": "10s"},
    }


def profile_body(service: str, version: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServiceProfile",
        "metadata": {"name": profile_name(service), "namespace": NAMESPACE},
        "spec": profile_spec(version),
    }


def profile_assignments(services: list[str], per_service: int, nodes: int) -> list[Assignment]:
    """Per client (slot) and service: a Get stream and a GetProfile stream, same token."""
    out: list[Assignment] = []
    for slot in range(per_service):
        for service in services:
            client = len(out) // 2
            node = f"{CLUSTER}-node-{slot % nodes}"
            token = json.dumps({"ns": NAMESPACE, "nodeName": node, "pod": f"c{client}"})
            path = authority(service, SERVICE_PORT)
            out.append(Assignment(len(out), service, path, token, slot, rpc=GET_RPC))
            out.append(Assignment(len(out), service, path, token, slot, rpc=PROFILE_RPC))
    return out


async def write_step(kube: Site, step: ProfileStep, services: list[str]) -> dict[str, float]:
    """Apply the step to every service; returns `time.time()` just before each write."""
    custom = k8s.CustomObjectsApi(kube.kube.api)
    core = kube.kube.core
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)
    t0: dict[str, float] = {}

    async def one(service: str) -> None:
        async with gate:
            name = profile_name(service)
            t0[service] = time.time()
            if step.kind == "create":
                await custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, profile_body(service, step.version)
                )
            elif step.kind == "update":
                # A JSON patch (a list body: the client then sends it as one).
                replace = [{"op": "replace", "path": "/spec", "value": profile_spec(step.version)}]
                await custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, name, replace
                )
            elif step.kind in ("opaque-on", "opaque-off"):
                value = str(SERVICE_PORT) if step.kind == "opaque-on" else None
                await core.patch_namespaced_service(
                    service, NAMESPACE, {"metadata": {"annotations": {OPAQUE_PORTS: value}}}
                )
            elif step.kind == "delete":
                await custom.delete_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, name
                )
            else:
                raise ValueError(f"unknown profile step {step.kind!r}")

    await asyncio.gather(*(one(service) for service in services))
    return t0


async def wait_profiles(
    clients: Clients,
    targets: dict[str, ProfileTag],
    *,
    timeout_s: float,
    require_quiet: bool,
    refused_is_final: bool = False,
) -> tuple[int, int, str]:
    """Until every GetProfile stream holds its service's tag (then a quiet period).

    Returns (at target, streams, "converged" | "timeout" | "stalled" | "refused");
    "refused" (with `refused_is_final`): no stream ever got a message and the
    server ended as many streams as there are, as a server without GetProfile does.
    """
    started = time.time()
    deadline = time.monotonic() + timeout_s
    status = await clients.profile_status(targets)
    while True:
        if status.at_target == status.streams:
            if not require_quiet:
                return status.at_target, status.streams, "converged"
            await asyncio.sleep(QUIET_S)
            again = await clients.profile_status(targets)
            if again.at_target == again.streams and again.last_change == status.last_change:
                return again.at_target, again.streams, "converged"
            status = again
            continue
        if time.monotonic() > deadline:
            return status.at_target, status.streams, "timeout"
        if refused_is_final and status.connected == 0 and status.ends >= status.streams > 0:
            return status.at_target, status.streams, "refused"
        if time.time() - max(status.last_change, started) > STALL_S:
            return status.at_target, status.streams, "stalled"
        await asyncio.sleep(POLL_S)
        status = await clients.profile_status(targets)


def step_latencies(
    reports: list[ProfileReport], expect: ProfileTag, t0: dict[str, float]
) -> tuple[list[float], Counter[str]]:
    """Per stream holding `expect`: its tag's arrival minus its service's write time.

    A stream holding another tag, or one that arrived before the write (it
    cannot be this step's message), is counted in the second value by what it held.
    """
    latencies: list[float] = []
    wrong: Counter[str] = Counter()
    for report in reports:
        start = t0.get(report.service)
        if report.tag != expect or report.t_tag is None or start is None:
            wrong[str(report.tag) if report.connected else "not connected"] += 1
        elif report.t_tag < start:
            wrong[f"{report.tag} (from before the write)"] += 1
        else:
            latencies.append(report.t_tag - start)
    return latencies, wrong


def profile_histogram(scrape: promstats.Scrape) -> str:
    """The histogram to read: a profile-specific one when the server exports it."""
    for name in PROFILE_HISTOGRAM_CANDIDATES:
        if name + "_count" in scrape.samples:
            return name
    return EVENT_TO_ENQUEUE


async def run_step(
    step: ProfileStep,
    *,
    site: Site,
    services: list[str],
    lanes: list[Lane],
) -> list[tuple[dict[str, Any], list[float]]]:
    """Write the step, wait for every server's streams; per lane, what it took and latencies."""
    before: dict[str, promstats.Scrape] = {}
    status0: list[ProfileStatus] = []
    get0: list[Status] = []
    cpu0: list[tuple[float, float]] = []
    for lane in lanes:
        if lane.contender.our_metrics:
            before[lane.name] = await asyncio.to_thread(
                promstats.fetch, lane.server.admin_address, 60.0
            )
        status0.append(await lane.clients.profile_status({}))
        get0.append(await lane.clients.status({}))
        await lane.clients.loop_lag()
        pid = lane.server.pid
        cpu0.append(
            (procstat.cpu_seconds(pid) or 0.0, procstat.cpu_seconds(pid, thread=pid) or 0.0)
        )
    wall0 = time.monotonic()
    t0 = await write_step(site, step, services)
    written_s = time.time() - min(t0.values())
    targets = dict.fromkeys(services, step.expect)
    waits = await asyncio.gather(
        *(
            wait_profiles(lane.clients, targets, timeout_s=STEP_TIMEOUT_S, require_quiet=True)
            for lane in lanes
        )
    )
    wall = time.monotonic() - wall0
    out: list[tuple[dict[str, Any], list[float]]] = []
    for lane, (at, streams, converged), s0, g0, (server0, main0) in zip(
        lanes, waits, status0, get0, cpu0, strict=True
    ):
        pid = lane.server.pid
        cpu = (procstat.cpu_seconds(pid) or server0) - server0
        main = (procstat.cpu_seconds(pid, thread=pid) or main0) - main0
        status1 = await lane.clients.profile_status({})
        get1 = await lane.clients.status({})
        reports = await lane.clients.profile_reports()
        latencies, wrong = step_latencies(reports, step.expect, t0)
        messages = status1.messages - s0.messages
        outcome: dict[str, Any] = {
            "step": step.label,
            "expect": str(step.expect),
            "objects_changed": len(services),
            "writes_took_s": written_s,
            "streams_converged": converged,
            "streams_at_target": at,
            "streams": streams,
            "wrong_states": dict(wrong.most_common(10)),
            "write_to_stream_s": summary(latencies),
            "profile_messages": messages,
            "profile_messages_per_stream": messages / streams if streams else None,
            "profile_stream_ends": status1.ends - s0.ends,
            "get_updates_ends": get1.ends - g0.ends,
            "wall_s": wall,
            "server_cpu_s": cpu,
            "server_main_thread_cpu_s": main,
            "server_main_thread_busy": main / wall if wall else None,
            "server_cpu_ms_per_change": 1000 * cpu / len(services) if services else None,
            "server_cpu_us_per_profile_message": 1e6 * cpu / messages if messages else None,
            "client_loop_lag": await lane.clients.loop_lag(),
        }
        if lane.name in before:
            after = await asyncio.to_thread(promstats.fetch, lane.server.admin_address, 60.0)
            histogram = profile_histogram(after)
            outcome["histogram"] = histogram
            outcome["event_to_enqueue"] = histogram_summary(
                before[lane.name], after, CLUSTER, histogram
            )
            outcome["counters"] = counters(before[lane.name], after)
        out.append((outcome, latencies))
    return out


def _active(scrape: promstats.Scrape | None) -> dict[str, float] | None:
    if scrape is None:
        return None
    return {
        rpc: scrape.value("destination_active_streams", rpc=rpc) for rpc in (GET_RPC, PROFILE_RPC)
    }


async def _profile_with_clients(
    scenario: Scenario,
    settings: ProfileSettings,
    site: Site,
    contenders: list[Contender],
    options: Options,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    results: dict[str, dict[str, Any]] = {c.name: {} for c in contenders}
    services = service_names(scenario)
    assignments = profile_assignments(services, scenario.streams_per_service, options.client_nodes)
    kube_pids = list(cluster_pids(site.cluster).values())
    cross: dict[str, Any] | None = None
    with lanes_for(
        contenders, assignments, options, track_hash=False, kube_pids=kube_pids
    ) as lanes:
        timeout = 60 + len(assignments) * len(lanes) / 50

        async def connect(lane: Lane) -> tuple[Status, str, int, int, str]:
            get_status, get_outcome = await wait_streams(
                lane.clients,
                dict.fromkeys(services, Target(settings.endpoints)),
                timeout_s=timeout,
                require_quiet=False,
            )
            at, streams, profile_outcome = await wait_profiles(
                lane.clients,
                dict.fromkeys(services, INITIAL_TAG),
                timeout_s=timeout,
                require_quiet=False,
                refused_is_final=True,
            )
            return get_status, get_outcome, at, streams, profile_outcome

        with phases(lanes) as connects:
            waited = await connect_lanes(lanes, connect)
        scrapes: dict[str, promstats.Scrape] = {}
        failed: list[str] = []
        for lane, usage, ((get_status, get_outcome, at, streams, profile_outcome), after_s) in zip(
            lanes, connects, waited, strict=True
        ):
            if lane.contender.our_metrics:
                scrapes[lane.name] = await asyncio.to_thread(
                    promstats.fetch, lane.server.admin_address, 60.0
                )
            result = results[lane.name]
            result["connect"] = {
                "get_streams": get_status.streams,
                "get_at_initial_count": get_status.at_target,
                "profile_streams": streams,
                "profile_at_default": at,
                "all_connected": get_outcome == "converged" and profile_outcome == "converged",
                "connected_after_s": after_s,
                "server_active_streams": _active(scrapes.get(lane.name)),
                "server_rss_mb": procstat.rss_mb(lane.server.pid),
                "usage": asdict(usage),
            }
            log(
                f"profile: {lane.tag(lanes)}{get_status.at_target}/{get_status.streams} Get and "
                f"{at}/{streams} GetProfile streams connected after {after_s:.1f}s, server RSS "
                f"{result['connect']['server_rss_mb']:.0f} MB"
            )
            if not result["connect"]["all_connected"]:
                reports = await lane.clients.profile_reports()
                why = Counter(r.last_error for r in reports if r.last_error)
                failed.append(
                    f"{lane.name}: Get {get_outcome}, GetProfile {profile_outcome}; "
                    f"GetProfile errors: {dict(why.most_common(3))}"
                )
        if failed:
            raise RuntimeError(f"streams did not connect ({'; '.join(failed)})")
        steps: dict[str, list[dict[str, Any]]] = {lane.name: [] for lane in lanes}
        by_kind: dict[str, dict[str, list[float]]] = {lane.name: {} for lane in lanes}
        every: dict[str, list[float]] = {lane.name: [] for lane in lanes}
        with phases(lanes) as churns:
            for step in profile_steps(settings.cycles):
                log(f"profile: {step.label} on {len(services)} services")
                per_lane = await run_step(step, site=site, services=services, lanes=lanes)
                for lane, (outcome, latencies) in zip(lanes, per_lane, strict=True):
                    steps[lane.name].append(outcome)
                    by_kind[lane.name].setdefault(step.kind, []).extend(latencies)
                    every[lane.name].extend(latencies)
                    took = outcome["write_to_stream_s"]
                    e2q = outcome.get("event_to_enqueue")
                    log(
                        f"  {lane.tag(lanes)}{outcome['streams_at_target']}/{outcome['streams']} "
                        f"streams right ({outcome['streams_converged']}); write->stream p50 "
                        f"{_ms(took['p50'])} p99 {_ms(took['p99'])} max {_ms(took['max'])}; "
                        + ("" if e2q is None else f"e2q p99 {_ms(e2q['p99'])}; ")
                        + f"server CPU {outcome['server_cpu_ms_per_change']:.1f} ms/change; "
                        f"{outcome['profile_messages_per_stream']:.2f} messages/stream"
                    )
        for lane, churn in zip(lanes, churns, strict=True):
            result = results[lane.name]
            lane_steps = steps[lane.name]
            changes = sum(o["objects_changed"] for o in lane_steps)
            messages = sum(o["profile_messages"] for o in lane_steps)
            result["steps"] = lane_steps
            result["write_to_stream_s"] = summary(every[lane.name])
            result["write_to_stream_by_kind_s"] = {
                k: summary(v) for k, v in by_kind[lane.name].items()
            }
            result["profile_changes"] = {
                "server_cpu_s": churn.server_cpu_s,
                "objects_changed": changes,
                "server_cpu_ms_per_change": 1000 * churn.server_cpu_s / changes
                if changes
                else None,
                "profile_messages": messages,
                "server_cpu_us_per_profile_message": (
                    1e6 * churn.server_cpu_s / messages if messages else None
                ),
                "usage": asdict(churn),
            }
            last: promstats.Scrape | None = None
            if lane.name in scrapes:
                first = scrapes[lane.name]
                last = await asyncio.to_thread(promstats.fetch, lane.server.admin_address, 60.0)
                histogram = profile_histogram(last)
                result["profile_changes"].update(
                    {
                        "histogram": histogram,
                        "event_to_enqueue": histogram_summary(first, last, CLUSTER, histogram),
                        "event_to_enqueue_goal_s": E2Q_GOAL_S,
                        # Every topic refresh of the same events (Get streams' too), to compare.
                        "event_to_enqueue_all_topics": histogram_summary(first, last, CLUSTER),
                        "counters": counters(first, last),
                    }
                )
            final = await lane.clients.status(dict.fromkeys(services, Target(settings.endpoints)))
            result["get_streams_at_end"] = {
                "streams": final.streams,
                "holding_every_endpoint": final.at_target,
                "stream_ends": final.ends,
            }
            if last is not None:
                result["server_active_streams_end"] = _active(last)
                result["server_cache_objects_end"] = cache_objects(last)
            result["server_peak_rss_mb"] = lane.meter.overall_peak_mb
            result["server_peak_rss_goal_mb"] = PEAK_RSS_GOAL_MB
        if len(lanes) > 1:
            truth = {
                service: frozenset(ip for ip, _ in site.slices.service(service).ready)
                for service in services
            }
            paths = {service: authority(service, SERVICE_PORT) for service in services}
            cross = await cross_check(lanes, truth, paths)
            tags: dict[str, dict[str, int]] = {}
            for lane in lanes:
                reports = await lane.clients.profile_reports()
                tags[lane.name] = dict(Counter(str(r.tag) for r in reports))
            cross["profile_tags_at_end"] = tags
            log(f"profile: cross-check of the final states: {compare.cross_summary(cross)}")
    return results, cross


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


async def run_profile(
    scenario: Scenario, clusters: dict[str, LocalCluster], options: Options, work_dir: Path
) -> dict[str, Any]:
    """The profile scenario on a fresh `east` (see the module docstring)."""
    settings = scenario.profile
    if settings is None:
        raise ValueError(f"{scenario.name} is not the profile scenario")
    result: dict[str, Any] = {"scenario": scenario.name}
    async with contextlib.AsyncExitStack() as stack:
        kube = await stack.enter_async_context(kube_client(clusters[CLUSTER]))
        await kube.create_namespace(NAMESPACE)
        slices = await stack.enter_async_context(tracking(kube.api, NAMESPACE))
        site = Site(CLUSTER, clusters[CLUSTER], kube, slices)
        started = time.monotonic()
        await create_workloads(kube, scenario)
        ready = await slices.wait_for(
            dict.fromkeys(service_names(scenario), Target(settings.endpoints)), timeout_s=600
        )
        if not ready:
            raise TimeoutError("the initial endpoints never became ready")
        if options.compare is not None:
            await asyncio.to_thread(
                prepare_cluster, options.compare, clusters[CLUSTER], SHARED_FLAGS
            )
        result["setup_s"] = round(time.monotonic() - started, 1)
        records: dict[str, dict[str, Any]] = {}
        async with servers(
            scenario.name, clusters[CLUSTER].kubeconfig, options, work_dir, records
        ) as contenders:
            measured, cross = await _profile_with_clients(
                scenario, settings, site, contenders, options
            )
        result.update(records[OURS])
        result.update(measured[OURS])
        if options.compare is not None:
            result["compared"] = compared_section(options.compare, contenders, records, measured)
            result["compared"]["cross_check"] = cross
    return result
