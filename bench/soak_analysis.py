"""Pure reductions of the soak's raw records: RSS growth, and streams against the API.

Kept apart from the orchestration (bench/soak.py) so they can be checked
without clusters (bench/checks/).

RSS growth is read two ways, and the first is the headline:

* **window medians**: the median RSS of the last window (default the last 5
  minutes) minus the median RSS of the window right after the warm-up
  (default minutes 5-10). Medians ignore the short spikes of a relist or a
  burst of reopened streams, which a leak does not cause. A run too short for
  warm-up + two windows (a trial) uses quarters of the run instead: [1/4, 1/2)
  against [3/4, end], and says so (`windows_scaled_to_short_run`);
* **linear fit**: the least-squares slope of every sample from the start of
  the first window on, in MB per hour, and what it adds up to over that span.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .clients import HeldAddresses

RSS_GROWTH_GOAL_MB = 5.0


@dataclass(frozen=True, slots=True)
class RssSample:
    t_s: float  # seconds since the soak started
    rss_mb: float


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def linear_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def rss_growth(
    samples: Iterable[RssSample], *, duration_s: float, warmup_s: float, window_s: float
) -> dict[str, Any]:
    """Growth of the server's RSS after the warm-up (see the module docstring)."""
    ordered = sorted(samples, key=lambda s: s.t_s)
    scaled = duration_s < warmup_s + 2 * window_s
    if scaled:
        base = (duration_s / 4, duration_s / 2)
        final = (3 * duration_s / 4, duration_s)
    else:
        base = (warmup_s, warmup_s + window_s)
        final = (duration_s - window_s, duration_s)
    in_base = [s.rss_mb for s in ordered if base[0] <= s.t_s < base[1]]
    in_final = [s.rss_mb for s in ordered if final[0] <= s.t_s <= final[1]]
    base_median, final_median = _median(in_base), _median(in_final)
    growth = None if base_median is None or final_median is None else final_median - base_median
    fitted = [(s.t_s, s.rss_mb) for s in ordered if s.t_s >= base[0]]
    slope = linear_slope(fitted)
    span = fitted[-1][0] - fitted[0][0] if fitted else 0.0
    after_warmup = [s.rss_mb for s in ordered if s.t_s >= base[0]]
    return {
        "method": "median RSS of the final window minus median RSS of the window after warm-up",
        "windows_scaled_to_short_run": scaled,
        "baseline_window_s": [round(base[0], 1), round(base[1], 1)],
        "final_window_s": [round(final[0], 1), round(final[1], 1)],
        "baseline_samples": len(in_base),
        "final_samples": len(in_final),
        "baseline_median_mb": base_median,
        "final_median_mb": final_median,
        "growth_mb": growth,
        "goal_mb": RSS_GROWTH_GOAL_MB,
        "met": None if growth is None else growth < RSS_GROWTH_GOAL_MB,
        "fit_slope_mb_per_hour": None if slope is None else slope * 3600,
        "fit_growth_over_span_mb": None if slope is None else slope * span,
        "fit_span_s": round(span, 1),
        "min_after_warmup_mb": min(after_warmup) if after_warmup else None,
        "max_after_warmup_mb": max(after_warmup) if after_warmup else None,
        "max_mb": max((s.rss_mb for s in ordered), default=None),
    }


def compare_with_truth(
    held: Iterable[HeldAddresses],
    truth: Mapping[str, frozenset[str]],
    *,
    port: int,
    examples: int = 5,
) -> dict[str, Any]:
    """Every stream's IPs against the API's ready IPs of its target.

    *Lost*: an address the API has and the stream does not; *phantom*: one
    the stream holds and the API does not have; `wrong_port`: held addresses
    on another port than the Deployment's container port. A stream that never
    received a message counts as not connected (and its target's addresses
    as lost).
    """
    streams = lost = phantom = wrong_port = not_connected = expected_total = held_total = 0
    streams_lost = streams_phantom = 0
    shown: list[dict[str, Any]] = []
    for stream in held:
        streams += 1
        expected = truth.get(stream.service, frozenset())
        ips = {ip for ip, _ in stream.addresses}
        expected_total += len(expected)
        held_total += len(ips)
        wrong_port += sum(1 for _, p in stream.addresses if p != port)
        if not stream.connected:
            not_connected += 1
        missing, extra = expected - ips, ips - expected
        lost += len(missing)
        phantom += len(extra)
        streams_lost += bool(missing)
        streams_phantom += bool(extra)
        if (missing or extra) and len(shown) < examples:
            shown.append(
                {
                    "stream_id": stream.stream_id,
                    "service": stream.service,
                    "api": len(expected),
                    "held": len(ips),
                    "lost": sorted(missing)[:5],
                    "phantom": sorted(extra)[:5],
                }
            )
    return {
        "streams": streams,
        "addresses_in_api": expected_total,  # summed over streams: what was compared
        "addresses_held": held_total,
        "not_connected": not_connected,
        "lost": lost,
        "phantom": phantom,
        "wrong_port": wrong_port,
        "streams_with_lost": streams_lost,
        "streams_with_phantom": streams_phantom,
        "examples": shown,
    }


def lag_windows(p99s: list[float], maxima: list[float]) -> dict[str, Any]:
    """Client loop-lag windows (one p99 and one max per window and process) reduced."""
    return {
        "windows": len(p99s),
        "p99_s_median_window": _median(p99s),
        "p99_s_worst_window": max(p99s, default=None),
        "max_s": max(maxima, default=None),
    }
