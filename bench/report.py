"""Targets, and the results as a plain-text table (side by side: both servers and ratios)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .compare import cross_summary

Result = dict[str, Any]


@dataclass(frozen=True)
class TargetCheck:
    scenario: str
    source: str  # "linkerd plan" or "ours"
    what: str
    limit: float
    unit: str  # "s", "MB" or "" (a count)
    read: Callable[[Result], float | None]
    # True when the value is a histogram estimate capped at its last bucket (a p99 beyond it).
    capped: Callable[[Result], bool] | None = None
    # The goal holds at the plan's scale only: a scaled-down run is not judged against it.
    full_scale_only: bool = False


def _churn_capped(result: Result) -> bool:
    return _get(result, "churn", "event_to_enqueue", "p99_above_last_bucket") is True


def _truth(result: Result, key: str) -> float | None:
    """Soak: lost or phantom endpoints after the late window if there was one, else at the end."""
    truth = _get(result, "truth")
    if not isinstance(truth, dict):
        return None
    final = truth.get("after_late_window") or truth.get("at_end") or {}
    value = final.get(key)
    return None if value is None else float(value)


def _get(result: Result, *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _spike(result: Result) -> float | None:
    peak, before = result.get("server_peak_rss_churn_mb"), result.get("server_rss_before_churn_mb")
    return None if peak is None or before is None else float(peak) - float(before)


TARGETS = (
    TargetCheck(
        "baseline",
        "ours",
        "server peak RSS",
        150,
        "MB",
        lambda r: r.get("server_peak_rss_mb"),
    ),
    TargetCheck(
        "small-oscillation",
        "linkerd plan",
        "end-to-end p95",
        0.5,
        "s",
        lambda r: _get(r, "all_steps", "end_to_end_s", "p95"),
    ),
    TargetCheck(
        "small-oscillation",
        "linkerd plan",
        "end-to-end p99",
        2.0,
        "s",
        lambda r: _get(r, "all_steps", "end_to_end_s", "p99"),
    ),
    TargetCheck(
        "small-oscillation",
        "ours",
        "server event-to-last-enqueue p99",
        0.1,
        "s",
        lambda r: _get(r, "churn", "event_to_enqueue", "p99"),
        _churn_capped,
    ),
    TargetCheck(
        "large-rollout",
        "linkerd plan",
        "end-to-end p99",
        3.0,
        "s",
        lambda r: _get(r, "all_steps", "end_to_end_s", "p99"),
    ),
    TargetCheck(
        "large-rollout",
        "linkerd plan",
        "server memory spike (peak RSS during churn - RSS before)",
        2000,
        "MB",
        _spike,
    ),
    TargetCheck(
        "large-rollout",
        "ours",
        "server event-to-last-enqueue p99",
        0.5,
        "s",
        lambda r: _get(r, "churn", "event_to_enqueue", "p99"),
        _churn_capped,
    ),
    TargetCheck(
        "many-services",
        "ours",
        "server peak RSS with 10,000 streams",
        400,
        "MB",
        lambda r: r.get("server_peak_rss_mb"),
    ),
    TargetCheck(
        "soak",
        "hardening issue",
        "server RSS growth after warm-up (median of last window - median after warm-up)",
        5,
        "MB",
        lambda r: _get(r, "soak", "rss_growth", "growth_mb"),
    ),
    TargetCheck(
        "soak", "hardening issue", "lost endpoints at the end", 1, "", lambda r: _truth(r, "lost")
    ),
    TargetCheck(
        "soak",
        "hardening issue",
        "phantom endpoints at the end",
        1,
        "",
        lambda r: _truth(r, "phantom"),
    ),
    TargetCheck(
        "profile",
        "GetProfile issue",
        "event-to-enqueue p99 of profile changes",
        0.1,
        "s",
        lambda r: _get(r, "profile_changes", "event_to_enqueue", "p99"),
        lambda r: _get(r, "profile_changes", "event_to_enqueue", "p99_above_last_bucket") is True,
    ),
    TargetCheck(
        "profile",
        "GetProfile issue",
        "server peak RSS with 20,000 streams",
        600,
        "MB",
        lambda r: r.get("server_peak_rss_mb"),
        full_scale_only=True,
    ),
)


def check_targets(result: Result) -> list[dict[str, Any]]:
    out = []
    for target in TARGETS:
        if target.scenario != result.get("scenario"):
            continue
        value = target.read(result)
        above = target.capped is not None and target.capped(result)
        unit = f" {target.unit}" if target.unit else ""
        scaled_down = target.full_scale_only and bool(_get(result, "parameters", "notes"))
        out.append(
            {
                "source": target.source,
                "target": f"{target.what} < {target.limit:g}{unit}",
                "measured": value,
                "unit": target.unit,
                "met": None
                if value is None or scaled_down
                else (value < target.limit and not above),
                "scaled_down": scaled_down,
            }
        )
    return out


def _s(value: Any) -> str:
    if value is None:
        return "-"
    seconds = float(value)
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 10 else f"{seconds:.1f} s"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} MB"


def _trio(summary: Any) -> str:
    if not isinstance(summary, dict) or not summary.get("count"):
        return "-"
    return f"{_s(summary['p50'])} / {_s(summary['p95'])} / {_s(summary['p99'])}"


def _soak_rows(result: Result) -> list[tuple[str, str]]:
    soak = result.get("soak")
    if not isinstance(soak, dict):
        return []
    growth = soak["rss_growth"]
    ping = soak["server_loop_lag_from_ping"]
    lag = soak["client_loop_lag"]
    end = (result.get("truth") or {}).get("at_end") or {}
    rows = [
        (
            "soak: duration / scales / streams churned",
            f"{_s(soak['duration_s'])} / {soak['scales']} / {soak['streams_churned']}",
        ),
        (
            "soak: link rotations counted by the server",
            f"{soak['rotations_counted']}/{len(soak['rotations'])}",
        ),
        (
            "soak: RSS median after warm-up -> last window",
            f"{_mb(growth['baseline_median_mb'])} -> {_mb(growth['final_median_mb'])}"
            + (" (windows scaled to a short run)" if growth["windows_scaled_to_short_run"] else ""),
        ),
        (
            "soak: RSS fit slope",
            "-"
            if growth["fit_slope_mb_per_hour"] is None
            else f"{growth['fit_slope_mb_per_hour']:.1f} MB/h",
        ),
        (
            "soak: server /ping round trip p50/p99/max",
            f"{_s(ping['p50'])} / {_s(ping['p99'])} / {_s(ping['max'])}",
        ),
        ("soak: client loop lag p99 (worst window)", _s(lag["p99_s_worst_window"])),
        (
            "soak: at the end: lost / phantom / streams",
            f"{end.get('lost')} / {end.get('phantom')} / {end.get('streams')}",
        ),
    ]
    if soak.get("error_count"):
        rows.append(("soak: errors during the churn", str(soak["error_count"])))
    return rows


def _profile_rows(result: Result) -> list[tuple[str, str]]:
    changes = result.get("profile_changes")
    if not isinstance(changes, dict):
        return []
    e2q = changes["event_to_enqueue"]
    cpu = changes["server_cpu_ms_per_change"]
    return [
        ("profile: write -> stream p50/p95/p99", _trio(result.get("write_to_stream_s"))),
        ("profile: write -> stream max", _s((result.get("write_to_stream_s") or {}).get("max"))),
        (
            f"profile: {changes['histogram']} p50/p95/p99",
            f"{_s(e2q['p50'])} / {_s(e2q['p95'])} / {_s(e2q['p99'])}"
            + (" (p99 above last bucket)" if e2q["p99_above_last_bucket"] else ""),
        ),
        ("profile: server CPU per change", "-" if cpu is None else f"{cpu:.1f} ms"),
    ]


def _value(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return _s(value)
    if unit == "MB":
        return _mb(value)
    if unit == "ms":
        return f"{float(value):.2f} ms"
    if unit == "count":
        return f"{float(value):.0f}"
    return f"{float(value):.2f} s"  # CPU seconds


def _get_stream_ends(result: Result) -> Any:
    """Get streams the server ended (steps scenarios and profile keep it in two places)."""
    if "stream_ends_total" in result:
        return result["stream_ends_total"]
    return _get(result, "get_streams_at_end", "stream_ends")


def _compared_rows(result: Result) -> list[tuple[str, str]]:
    """Side by side: the second server's own numbers, the ratios, and the cross-check."""
    compared = result.get("compared")
    if not isinstance(compared, dict):
        return []
    name = str(compared.get("name"))
    theirs = compared.get("result") or {}
    connect = theirs.get("connect") or {}
    if "profile_streams" in connect:
        connected = (
            f"{connect.get('get_at_initial_count')}/{connect.get('get_streams')}, "
            f"{connect.get('profile_at_default')}/{connect.get('profile_streams')}"
        )
    else:
        connected = f"{connect.get('at_initial_count')}/{connect.get('streams')}"
    rows = [
        (f"side by side with {name}", str(compared.get("description"))),
        (f"{name}: streams connected", connected),
        (f"{name}: Get stream ends (reopened by the clients)", str(_get_stream_ends(theirs))),
    ]
    for entry in (compared.get("ratios") or {}).values():
        ratio = entry.get("ratio")
        names = [k for k in entry if k not in ("label", "unit", "ratio")]
        shown = " / ".join(_value(entry[n], entry["unit"]) for n in names)
        rows.append(
            (
                f"{entry['label']} ({'/'.join(names)})",
                f"{shown}: ratio {'-' if ratio is None else f'{ratio:.2f}'}",
            )
        )
    cross = compared.get("cross_check")
    if isinstance(cross, dict):
        rows.append(("cross-check of the final states", cross_summary(cross)))
    return rows


def table(document: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    for result in document["scenarios"]:
        name = result["scenario"]
        if "error" in result:
            rows.append((name, "FAILED", result["error"]))
            continue
        params = result["parameters"]
        connect = result.get("connect", {})
        if "profile_streams" in connect:
            rows.append(
                (
                    name,
                    "streams connected (Get, GetProfile)",
                    f"{connect.get('get_at_initial_count')}/{connect.get('get_streams')}, "
                    f"{connect.get('profile_at_default')}/{connect.get('profile_streams')}",
                )
            )
        else:
            streams = connect.get("streams", params["streams"])
            rows.append((name, "streams connected", f"{connect.get('at_initial_count')}/{streams}"))
        rows.append((name, "load average before", str(result["load"]["loadavg_at_start"])))
        rows.append((name, "server peak RSS (whole run)", _mb(result.get("server_peak_rss_mb"))))
        hold = result.get("hold")
        if hold:
            usage = hold["usage"]
            rows.append(
                (
                    name,
                    f"hold {hold['seconds']:.0f}s: server CPU / RSS",
                    f"{usage['server_cpu_s']:.2f} s / {_mb(usage['server_rss_end_mb'])}",
                )
            )
        if "all_steps" in result:
            steps = result["all_steps"]
            rows.append((name, "end-to-end p50/p95/p99", _trio(steps["end_to_end_s"])))
            rows.append((name, "  time to full fan-out (max)", _s(steps["end_to_end_s"]["max"])))
            rows.append((name, "  Kubernetes share p50/p95/p99", _trio(steps["kubernetes_s"])))
            rows.append(
                (name, "  ours (slices final -> stream) p50/p95/p99", _trio(steps["ours_s"]))
            )
            by_cluster = result["churn"].get("event_to_enqueue_by_cluster") or {
                "": result["churn"]["event_to_enqueue"]
            }
            for cluster, e2q in by_cluster.items():
                rows.append(
                    (
                        name,
                        "server event-to-enqueue p50/p95/p99"
                        + (f" [{cluster}]" if cluster else ""),
                        f"{_s(e2q['p50'])} / {_s(e2q['p95'])} / {_s(e2q['p99'])}"
                        + (" (p99 above last bucket)" if e2q["p99_above_last_bucket"] else ""),
                    )
                )
            usage = result["churn"]["usage"]
            rows.append(
                (
                    name,
                    "churn: server CPU / peak RSS",
                    f"{usage['server_cpu_s']:.1f} s / {_mb(usage['server_peak_rss_mb'])}",
                )
            )
        rows += [(name, what, value) for what, value in _soak_rows(result)]
        rows += [(name, what, value) for what, value in _profile_rows(result)]
        rows += [(name, what, value) for what, value in _compared_rows(result)]
        for check in check_targets(result):
            verdict = {True: "met", False: "NOT met", None: "n/a"}[check["met"]]
            if check["scaled_down"]:
                verdict = "n/a (run scaled down)"
            value = check["measured"]
            if check["unit"] == "MB":
                shown = _mb(value)
            elif check["unit"] == "s":
                shown = _s(value)
            else:
                shown = "-" if value is None else f"{value:g}"
            rows.append(
                (name, f"target ({check['source']}): {check['target']}", f"{shown}: {verdict}")
            )
    widths = [max(len(r[i]) for r in rows) for i in range(2)] if rows else [0, 0]
    lines = [f"{'scenario':<{widths[0]}}  {'measure':<{widths[1]}}  value"]
    lines.append("-" * (widths[0] + widths[1] + 20))
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
