"""The soak's reductions and choices: RSS growth, the truth comparison, churn picks, plans."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from bench.clients import HeldAddresses
from bench.report import check_targets, table
from bench.run import CLUSTER, Member
from bench.scenarios import DEFAULT_NAMES, NAMES, SoakSettings, build
from bench.soak import churn_picks, soak_assignments, soak_plan
from bench.soak_analysis import (
    RssSample,
    compare_with_truth,
    lag_windows,
    linear_slope,
    rss_growth,
)


def series(
    rss_at: Callable[[float], float], minutes: float, every_s: float = 10.0
) -> list[RssSample]:
    count = int(minutes * 60 / every_s) + 1
    return [RssSample(i * every_s, rss_at(i * every_s)) for i in range(count)]


def test_a_flat_series_after_warm_up_has_no_growth() -> None:
    # A warm-up climb of 40 MB in the first 5 minutes, then flat with noise.
    noise = random.Random(3)
    samples = series(lambda t: 100 + min(t, 300) / 300 * 40 + noise.uniform(-0.5, 0.5), minutes=30)
    growth = rss_growth(samples, duration_s=1800, warmup_s=300, window_s=300)
    assert not growth["windows_scaled_to_short_run"]
    assert growth["baseline_window_s"] == [300, 600]
    assert growth["final_window_s"] == [1500, 1800]
    assert abs(growth["growth_mb"]) < 0.5
    assert growth["met"] is True
    assert abs(growth["fit_slope_mb_per_hour"]) < 2


def test_a_steady_leak_shows_in_both_readings() -> None:
    # 12 MB per hour from the start: 6 MB over the 30 minutes.
    samples = series(lambda t: 100 + t / 3600 * 12, minutes=30)
    growth = rss_growth(samples, duration_s=1800, warmup_s=300, window_s=300)
    # Medians of [300, 600) and [1500, 1800]: 1,200 s apart, 4 MB, and slightly more
    # because the final window includes its end.
    assert growth["growth_mb"] == pytest.approx(4.0, abs=0.1)
    assert growth["met"] is True  # under 5 MB: a leak this slow passes the median rule
    assert growth["fit_slope_mb_per_hour"] == pytest.approx(12.0, rel=1e-6)
    faster = rss_growth(
        series(lambda t: 100 + t / 3600 * 30, minutes=30),
        duration_s=1800,
        warmup_s=300,
        window_s=300,
    )
    assert faster["growth_mb"] == pytest.approx(10.0, abs=0.2)
    assert faster["met"] is False


def test_a_short_run_uses_quarters_and_says_so() -> None:
    samples = series(lambda t: 100 + (5 if t >= 180 else 0), minutes=4)
    growth = rss_growth(samples, duration_s=240, warmup_s=300, window_s=300)
    assert growth["windows_scaled_to_short_run"]
    assert growth["baseline_window_s"] == [60, 120]
    assert growth["final_window_s"] == [180, 240]
    assert growth["growth_mb"] == 5
    assert growth["met"] is False


def test_no_samples_no_verdict() -> None:
    growth = rss_growth([], duration_s=1800, warmup_s=300, window_s=300)
    assert growth["growth_mb"] is None and growth["met"] is None
    assert linear_slope([(1.0, 2.0)]) is None
    assert linear_slope([(1.0, 2.0), (1.0, 3.0)]) is None


def held(stream_id: int, service: str, *ips: str, port: int = 8080) -> HeldAddresses:
    return HeldAddresses(stream_id, service, True, tuple((ip, port) for ip in ips))


def test_lost_and_phantom_endpoints_are_counted_per_stream() -> None:
    truth = {"a": frozenset({"10.0.0.1", "10.0.0.2"}), "b": frozenset({"10.1.0.1"})}
    result = compare_with_truth(
        [
            held(1, "a", "10.0.0.1", "10.0.0.2"),  # right
            held(2, "a", "10.0.0.1"),  # lost .2
            held(3, "b", "10.1.0.1", "10.1.0.9"),  # phantom .9
            held(4, "b", "10.1.0.1", port=9999),  # right IPs, wrong port
            HeldAddresses(5, "a", False, ()),  # never connected: both lost
        ],
        truth,
        port=8080,
    )
    assert (result["streams"], result["lost"], result["phantom"]) == (5, 3, 1)
    assert (result["streams_with_lost"], result["streams_with_phantom"]) == (2, 1)
    assert (result["wrong_port"], result["not_connected"]) == (1, 1)
    assert (result["addresses_in_api"], result["addresses_held"]) == (8, 6)
    assert [e["stream_id"] for e in result["examples"]] == [2, 3, 5]
    assert compare_with_truth([held(1, "a", "10.0.0.1", "10.0.0.2")], truth, port=8080)["lost"] == 0


def test_lag_windows_reduce_to_worst_and_median() -> None:
    assert lag_windows([0.01, 0.03, 0.02], [0.05, 0.2, 0.1]) == {
        "windows": 3,
        "p99_s_median_window": 0.02,
        "p99_s_worst_window": 0.03,
        "max_s": 0.2,
    }
    assert lag_windows([], [])["p99_s_worst_window"] is None


def test_the_soak_plan_has_local_and_federated_targets() -> None:
    settings = SoakSettings(local_services=2, federated_services=2)
    plan = soak_plan(settings, "west")
    assert plan == {
        "svc-000": (Member(CLUSTER, "svc-000"),),
        "svc-001": (Member(CLUSTER, "svc-001"),),
        "svc-002-federated": (Member(CLUSTER, "svc-002"), Member("west", "svc-002")),
        "svc-003-federated": (Member(CLUSTER, "svc-003"), Member("west", "svc-003")),
    }
    with pytest.raises(ValueError, match="remote"):
        soak_plan(settings, None)


def test_churn_never_picks_steady_streams_and_repeats_with_the_seed() -> None:
    settings = SoakSettings(
        local_services=3, federated_services=1, streams_per_target=50, steady_fraction=0.2
    )
    assignments = soak_assignments(soak_plan(settings, "west"), settings, nodes=2)
    assert len(assignments) == 200
    assert len({a.stream_id for a in assignments}) == 200
    steady = {a.stream_id for a in assignments if a.steady}
    assert len(steady) == 40  # 10 per target
    for target in ("svc-000", "svc-003-federated"):
        assert sum(1 for a in assignments if a.service == target and a.steady) == 10
    first = churn_picks(assignments, settings, random.Random(7))
    assert len(first) == 20  # 10 % of all 200 streams
    assert not steady & set(first)
    assert first == churn_picks(assignments, settings, random.Random(7))
    rng = random.Random(7)
    rounds = [churn_picks(assignments, settings, rng) for _ in range(50)]
    assert not steady & {i for r in rounds for i in r}
    assert len({i for r in rounds for i in r}) == 160  # every churnable stream, in time


def test_soak_and_profile_are_named_but_not_in_all() -> None:
    assert {"soak", "profile"} <= set(NAMES)
    assert set(DEFAULT_NAMES) == {
        "baseline",
        "small-oscillation",
        "large-rollout",
        "many-services",
        "federated",
    }
    common: dict[str, Any] = dict(
        cycles=None,
        hold_s=60.0,
        rolling_restart=True,
        many_low=50,
        many_high=100,
        many_services=100,
    )
    soak = build("soak", **common, soak=SoakSettings(minutes=4))
    assert soak.kind == "soak" and soak.clusters == ("east", "west")
    assert soak.peak_pods == 6 * 40 and soak.streams == 600
    local_only = build(
        "soak",
        **common,
        soak=SoakSettings(local_services=3, federated_services=0),
    )
    assert local_only.clusters == ("east",)
    profile = build("profile", **common, profile_services=20, profile_streams_per_service=50)
    assert profile.kind == "profile" and profile.streams == 1000 and profile.notes
    assert profile.profile is not None and profile.profile.cycles == 2
    assert build("baseline", **common).kind == "steps"
    with pytest.raises(ValueError):
        SoakSettings(low=0)


def soak_result(lost: int, phantom: int, growth: float) -> dict[str, object]:
    return {
        "scenario": "soak",
        "parameters": {"streams": 600},
        "load": {"loadavg_at_start": [0.5, 0.5, 0.5]},
        "connect": {"streams": 600, "at_initial_count": 600},
        "server_peak_rss_mb": 150.0,
        "truth": {"at_end": {"lost": lost, "phantom": phantom, "streams": 600}},
        "soak": {
            "duration_s": 240.0,
            "scales": 80,
            "streams_churned": 420,
            "rotations": [{"counted_after_s": 1.0}],
            "rotations_counted": 1,
            "rss_growth": {
                "baseline_median_mb": 140.0,
                "final_median_mb": 140.0 + growth,
                "growth_mb": growth,
                "windows_scaled_to_short_run": True,
                "fit_slope_mb_per_hour": 1.0,
            },
            "server_loop_lag_from_ping": {"p50": 0.001, "p99": 0.01, "max": 0.02},
            "client_loop_lag": {"p99_s_worst_window": 0.03},
            "error_count": 0,
        },
    }


def test_soak_targets_and_table() -> None:
    good = {c["target"]: c["met"] for c in check_targets(soak_result(0, 0, 1.0))}
    assert list(good.values()) == [True, True, True]
    bad = {c["target"]: c["met"] for c in check_targets(soak_result(2, 1, 6.0))}
    assert list(bad.values()) == [False, False, False]
    text = table({"scenarios": [soak_result(0, 0, 1.0)]})
    assert "lost endpoints at the end < 1" in text and "soak: RSS fit slope" in text


def test_the_profile_rss_goal_is_not_judged_on_a_scaled_down_run() -> None:
    def result(notes: list[str], rss: float) -> dict[str, Any]:
        return {"scenario": "profile", "parameters": {"notes": notes}, "server_peak_rss_mb": rss}

    def rss_check(r: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in check_targets(r) if "RSS" in c["target"])

    assert rss_check(result([], 500.0))["met"] is True
    assert rss_check(result([], 700.0))["met"] is False
    scaled = rss_check(result(["scaled down from 100 services x 100 clients ..."], 120.0))
    assert scaled["met"] is None and scaled["scaled_down"] is True
