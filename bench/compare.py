"""Side by side: the ratios of our numbers to the second server's, and the cross-check.

Pure functions over results (the dicts bench/run.py and bench/profiles.py
write) and over the address sets the client processes hold, so that
bench/checks can test them without clusters.

* `ratios`: for each measure of `MEASURES` both values and ours / theirs
  (CPU during the churn and per change, CPU while the streams open, RSS idle,
  with the streams open and at its peak, latency from the API write to the
  stream, and the share beyond the API's own watch). Below 1 means ours is
  lower (less CPU, less memory, faster). A ratio is left out (None) when a
  value is missing or the second one is not positive: "beyond the watch" can
  be zero or slightly negative (both watches read the same API server), and
  a ratio to it says nothing.
* `cross_check`: every stream's final address set against the API's ready
  addresses of its target and against the other server's streams of the same
  target. Two correct servers hold exactly the API's set on every stream.
  `fresh_check` does the same for one new stream per target and server
  (bench/snapshot.py): right there but wrong on the old streams means the
  updates did not add up to the server's own state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .clients import HeldAddresses

Result = Mapping[str, Any]
EXAMPLES = 5


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str  # "s", "MB", "ms" (CPU per change), "cpu_s" or "count"
    path: tuple[str, ...]


MEASURES = (
    # How many stream measurements the latencies below stand on: a server whose
    # streams did not reach the API's state is timed on fewer (the rest are counted
    # under each step's wrong_states).
    Measure(
        "timed_streams",
        "stream measurements at the target (all steps)",
        "count",
        ("all_steps", "end_to_end_s", "count"),
    ),
    Measure(
        "profile_timed_streams",
        "profile: stream measurements at the target",
        "count",
        ("write_to_stream_s", "count"),
    ),
    Measure("churn_cpu_s", "churn: server CPU", "cpu_s", ("churn", "usage", "server_cpu_s")),
    Measure(
        "churn_cpu_ms_per_event",
        "churn: server CPU per slice event",
        "ms",
        ("churn", "server_cpu_ms_per_slice_event"),
    ),
    Measure(
        "profile_cpu_ms_per_change",
        "profile changes: server CPU per change",
        "ms",
        ("profile_changes", "server_cpu_ms_per_change"),
    ),
    Measure(
        "connect_cpu_s",
        "opening the streams: server CPU",
        "cpu_s",
        ("connect", "usage", "server_cpu_s"),
    ),
    Measure("rss_idle_mb", "RSS after the initial sync", "MB", ("server_rss_after_sync_mb",)),
    Measure("rss_streams_mb", "RSS with the streams open", "MB", ("connect", "server_rss_mb")),
    Measure("rss_peak_mb", "peak RSS (whole run)", "MB", ("server_peak_rss_mb",)),
    *(
        Measure(
            f"end_to_end_{q}", f"API write -> stream {q}", "s", ("all_steps", "end_to_end_s", q)
        )
        for q in ("p50", "p95", "p99")
    ),
    *(
        Measure(
            f"beyond_watch_{q}",
            f"share beyond the API's own watch {q}",
            "s",
            ("all_steps", "ours_s", q),
        )
        for q in ("p50", "p95", "p99")
    ),
    *(
        Measure(
            f"profile_write_to_stream_{q}",
            f"profile: API write -> stream {q}",
            "s",
            ("write_to_stream_s", q),
        )
        for q in ("p50", "p95", "p99")
    ),
)


def read(result: Result, path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when it would say nothing (missing, or theirs <= 0)."""
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def ratios(ours: Result, theirs: Result, names: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """Every measure both results have: {names[0]: ours, names[1]: theirs, "ratio": ours/theirs}."""
    out: dict[str, dict[str, Any]] = {}
    for measure in MEASURES:
        a, b = read(ours, measure.path), read(theirs, measure.path)
        if a is None and b is None:
            continue
        out[measure.key] = {
            "label": measure.label,
            "unit": measure.unit,
            names[0]: a,
            names[1]: b,
            "ratio": ratio(a, b),
        }
    return out


def add_ratios(result: dict[str, Any], ours_name: str) -> None:
    """Fill `result["compared"]["ratios"]` (ours over the second server's), if compared."""
    compared = result.get("compared")
    if not isinstance(compared, dict) or not isinstance(compared.get("result"), dict):
        return
    compared["ratios"] = ratios(result, compared["result"], (ours_name, str(compared["name"])))


# -- the cross-check of final states ---------------------------------------------------


def _lane_check(
    held: Iterable[HeldAddresses], truth: Mapping[str, frozenset[str]]
) -> tuple[dict[str, Any], dict[str, Counter[frozenset[tuple[str, int]]]]]:
    owner = {ip: target for target, ips in truth.items() for ip in ips}
    streams = not_connected = differing = lost = phantom = phantom_elsewhere = 0
    ports: Counter[int] = Counter()
    sets: dict[str, Counter[frozenset[tuple[str, int]]]] = {}
    for stream in held:
        streams += 1
        if not stream.connected:
            not_connected += 1
        addresses = frozenset(stream.addresses)
        sets.setdefault(stream.service, Counter())[addresses] += 1
        ports.update(port for _, port in addresses)
        want = truth.get(stream.service, frozenset())
        have = frozenset(ip for ip, _ in addresses)
        if have != want:
            differing += 1
            lost += len(want - have)
            extra = have - want
            phantom += len(extra)
            phantom_elsewhere += sum(1 for ip in extra if ip in owner)
    summary = {
        "streams": streams,
        "not_connected": not_connected,
        "streams_differing_from_api": differing,
        "lost": lost,
        "phantom": phantom,
        # Phantom addresses the API has under another target (an IP reused by another pod).
        "phantom_of_other_targets": phantom_elsewhere,
        "ports": sorted(ports),
    }
    return summary, sets


def _most_common(counter: Counter[frozenset[tuple[str, int]]] | None) -> frozenset[tuple[str, int]]:
    if not counter:
        return frozenset()
    return counter.most_common(1)[0][0]


def cross_check(
    held: Mapping[str, Iterable[HeldAddresses]], truth: Mapping[str, frozenset[str]]
) -> dict[str, Any]:
    """Each server's streams against the API's ready IPs, and the servers against each other.

    `held`: per server name, its streams' final address sets; `truth`: per
    target, the ready IPs the orchestrator's own EndpointSlice watch holds.
    Between servers, each target's most common set of (ip, port) is compared,
    and every set any stream holds: `targets_differing_between_servers`
    counts targets where either differs. Examples are bounded.
    """
    lanes: dict[str, dict[str, Any]] = {}
    sets: dict[str, dict[str, Counter[frozenset[tuple[str, int]]]]] = {}
    for name, streams in held.items():
        lanes[name], sets[name] = _lane_check(streams, truth)
    names = list(held)
    targets = sorted(set(truth).union(*(s.keys() for s in sets.values())))
    differing: list[str] = []
    examples: list[dict[str, Any]] = []
    for target in targets:
        consensus = {name: _most_common(sets[name].get(target)) for name in names}
        distinct = {name: frozenset((sets[name].get(target) or Counter()).keys()) for name in names}
        if len(set(consensus.values())) > 1 or len(set(distinct.values())) > 1:
            differing.append(target)
            if len(examples) < EXAMPLES:
                only = {
                    f"only_in_{n}": sorted(
                        consensus[n].difference(*(consensus[o] for o in names if o != n))
                    )[:EXAMPLES]
                    for n in names
                }
                examples.append(
                    {
                        "target": target,
                        "distinct_sets": {n: len(distinct[n]) for n in names},
                        **only,
                    }
                )
    agree = not differing and all(
        lane["streams_differing_from_api"] == 0 and lane["not_connected"] == 0
        for lane in lanes.values()
    )
    return {
        "targets": len(targets),
        "servers": lanes,
        "targets_differing_between_servers": len(differing),
        "examples": examples,
        "agree": agree,
    }


def fresh_check(
    fresh: Mapping[str, Mapping[str, frozenset[tuple[str, int]]]],
    truth: Mapping[str, frozenset[str]],
) -> dict[str, dict[str, Any]]:
    """Per server: the sets fresh streams read (bench/snapshot.py) against the API."""
    out: dict[str, dict[str, Any]] = {}
    for name, sets in fresh.items():
        differing: list[str] = []
        lost = phantom = 0
        for target, want in truth.items():
            have = frozenset(ip for ip, _ in sets.get(target, frozenset()))
            if have != want:
                differing.append(target)
                lost += len(want - have)
                phantom += len(have - want)
        out[name] = {
            "targets": len(truth),
            "targets_differing_from_api": len(differing),
            "lost": lost,
            "phantom": phantom,
            "examples": differing[:EXAMPLES],
        }
    return out


def cross_summary(cross: Mapping[str, Any]) -> str:
    """One line: whether every stream of every server held the API's state."""
    parts = [
        f"{name}: {lane['streams_differing_from_api']}/{lane['streams']} streams off the API "
        f"(lost {lane['lost']}, phantom {lane['phantom']})"
        for name, lane in cross["servers"].items()
    ]
    verdict = "all agree with the API and each other" if cross["agree"] else "DIFFERENCES"
    fresh = cross.get("fresh_streams") or {}
    fresh_parts = [
        f"{name} {entry['targets_differing_from_api']}/{entry['targets']}"
        for name, entry in fresh.items()
    ]
    return (
        f"{verdict}; {'; '.join(parts)}; "
        f"{cross['targets_differing_between_servers']}/{cross['targets']} targets differ "
        "between servers"
        + (f"; fresh streams off the API: {', '.join(fresh_parts)}" if fresh_parts else "")
    )
