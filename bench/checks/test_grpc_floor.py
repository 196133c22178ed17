"""bench/grpc_floor.py: its arithmetic, its table, and a tiny real run of each server.

The real runs start the server (the Go one built from bench/grpc_floor_go on
first use, so `go` and the module cache or proxy are needed) with 20 streams
and 2 ticks, and check the harness's own accounting: every stream opened,
every stream got every tick exactly once (run_server raises otherwise), the
numbers are there and finite.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import grpc_floor
from bench.grpc_floor import (
    ServerResult,
    SizeResult,
    busy_cpu_s,
    go_source_hash,
    parse_size,
    per_stream_kb,
    run_server,
    spread,
    table,
)


def test_per_write_cpu_subtracts_the_idle_rate() -> None:
    # 1.0 s of CPU over 2 s, 0.05 s/s of it idle: 0.9 s for 2,000 streams x 10 ticks.
    result = SizeResult.of(
        size=300,
        writes=20_000,
        cpu_s=1.0,
        main_thread_cpu_s=0.7,
        seconds=2.0,
        idle_rate=0.05,
        tick_wall_ms=[10.0] * 10,
    )
    assert result.busy_cpu_s == pytest.approx(0.9)
    assert result.us_per_write == pytest.approx(45.0)
    assert result.ms_per_tick == pytest.approx(90.0)
    assert result.ticks == 10


def test_busy_cpu_is_never_negative() -> None:
    assert busy_cpu_s(0.01, 0.1, 1.0) == 0.0
    assert busy_cpu_s(0.5, 0.0, 9.0) == 0.5


def test_rss_per_stream_in_kb() -> None:
    # 50 MiB more with 2,000 streams open: 26.2 KB (10^3 bytes) each.
    assert per_stream_kb(100 * 1024 + 50 * 1024, 100 * 1024, 2_000) == pytest.approx(26.2144)


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_spread_gives_every_stream_once_and_evenly(streams: int, procs: int) -> None:
    shares = spread(streams, procs)
    assert len(shares) == procs
    assert sum(shares) == streams
    assert max(shares) - min(shares) <= 1


@pytest.mark.parametrize("text", [b"-1", b"x", b"", str(grpc_floor.MAX_SIZE + 1).encode()])
def test_parse_size_rejects(text: bytes) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_size_accepts() -> None:
    assert parse_size(b" 300\n") == 300
    assert len(grpc_floor.message(2_000)) == 2_000


def test_table_has_a_line_per_size_and_server() -> None:
    sizes = [
        SizeResult.of(
            size=size,
            writes=1_000,
            cpu_s=cpu,
            main_thread_cpu_s=cpu * 0.9,
            seconds=1.0,
            idle_rate=0.0,
            tick_wall_ms=[5.0, 7.0],
        )
        for size, cpu in ((300, 0.05), (2_000, 0.08))
    ]
    result = ServerResult(
        server="py",
        streams=500,
        opened=500,
        rss_idle_kib=10_000,
        rss_open_kib=22_000,
        kb_per_stream=per_stream_kb(22_000, 10_000, 500),
        open_cpu_s=0.1,
        open_seconds=1.0,
        us_per_open=200.0,
        idle_cpu_rate=0.001,
        load_before=(0.5, 0.5, 0.5),
        sizes=sizes,
    )
    lines = table([result]).splitlines()
    assert lines[1].split() == ["py", "500", "300", "2", "50.00", "25.0", "90", "6/7"]
    assert lines[2].split() == ["py", "500", "2000", "2", "80.00", "40.0", "90", "6/7"]
    assert lines[5].split() == ["py", "500", "10.2", "22.5", "24.58", "200.0", "0.10"]


def test_go_binary_key_follows_the_sources(tmp_path: Path) -> None:
    for name in ("main.go", "go.mod", "go.sum", "README"):
        (tmp_path / name).write_text(name)
    before = go_source_hash(tmp_path)
    (tmp_path / "README").write_text("changed")
    assert go_source_hash(tmp_path) == before
    (tmp_path / "main.go").write_text("package main // changed")
    assert go_source_hash(tmp_path) != before


@pytest.mark.parametrize("kind", ["py", "go"])
def test_a_tiny_real_run(kind: str, tmp_path: Path) -> None:
    if kind == "go":
        assert shutil.which("go"), "go builds the Go floor server"
    args = argparse.Namespace(
        streams=20,
        client_procs=2,
        channels=2,
        ticks=2,
        sizes=[10, 300],
        settle_s=0.2,
        idle_s=0.2,
        timeout_s=60.0,
    )
    result = run_server(kind, args, tmp_path)
    assert result.opened == 20
    assert result.ended_streams == 0
    assert [s.size for s in result.sizes] == [10, 300]
    assert all(s.writes == 40 and s.dropped == 0 for s in result.sizes)
    assert all(len(s.tick_wall_ms) == 2 for s in result.sizes)
    assert result.rss_open_kib > 0 and math.isfinite(result.kb_per_stream)
