"""gRPC's own floor: what a bare server-streaming gRPC server costs per stream.

Our server encodes each update once and hands the same bytes to every stream
(grpc.aio, `response_serializer=None`), so what is left per stream is gRPC's
own write. This tool measures that floor, with nothing of a destination server
around it, for the two stacks of issue 12's side-by-side comparison:

* `py`: grpc.aio (grpcio), as `destination serve` uses it: our SERVER_OPTIONS,
  a generic handler without serializers, one asyncio.Queue per stream that the
  handler's async generator drains and yields (bench/grpc_floor.py `serve-py`);
* `go`: grpc-go, the version Linkerd's Go controller is built with
  (bench/grpc_floor_go: a hand-written grpc.ServiceDesc and a codec that
  passes bytes through, a buffered channel per stream; built on first use).

Both serve `/floor.Floor/Stream` (request ignored; one 5-byte message when the
stream opens, then whatever a tick hands it) and `/floor.Floor/Tick` (request:
a size S in ASCII; the server builds one message of S bytes and hands that
same object to every open stream). The driver starts one server, then
`--client-procs` client processes (grpc.aio, `--channels` connections each)
that open `--streams` streams in all and count what they receive, and reads
the server's /proc:

* RSS idle (no stream) and with every stream open: bytes per open stream;
* CPU (utime+stime, all threads) from the first stream asked to the last
  opened: CPU per stream open;
* per size S, `--ticks` ticks, each sent once every stream has received the
  previous one: CPU per stream-write = CPU of the ticks / (streams * ticks).

The server's idle CPU rate with the streams open (keepalive timers, pollers)
is measured over `--idle-s` and subtracted from each phase (the raw numbers
are in the JSON too). The tick handler's own fan-out (a put or channel send
per stream) is inside the per-write figure; it is what our broadcast's offer
costs, small next to a write.

    nice -n 19 python -m bench.grpc_floor --server py go --streams 2000 --out floor.json

Clients share the machine's cores with the server, so wall times (tick
drain) depend on them; the server's CPU seconds do not, beyond cache effects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import grpc

from . import procstat
from .server import _with_parent_death_signal

SERVICE = "floor.Floor"
STREAM_METHOD = f"/{SERVICE}/Stream"
TICK_METHOD = f"/{SERVICE}/Tick"
HELLO = b"hello"
MAX_SIZE = 4 << 20
REPO_ROOT = Path(__file__).resolve().parents[1]
GO_DIR = REPO_ROOT / "bench" / "grpc_floor_go"
GO_BINARY = "grpc-floor-go"
SERVERS = ("py", "go")


# --- the Python server (a process of its own: `python -m bench.grpc_floor serve-py`) ---


def parse_size(request: bytes) -> int:
    """A tick's message size; ValueError unless 0 <= size <= MAX_SIZE."""
    size = int(request.decode("ascii").strip())
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size out of range: {size}")
    return size


def message(size: int) -> bytes:
    """The tick's message: `size` bytes, the same content in both servers."""
    return bytes(i & 0xFF for i in range(size))


async def serve_py(address: str) -> None:
    """grpc.aio with our server's options; bytes in, bytes out, a Queue per stream."""
    from destination.api.server import SERVER_OPTIONS  # our options, our grpc

    queues: set[asyncio.Queue[bytes]] = set()

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queues.add(queue)
        try:
            yield HELLO
            while True:
                yield await queue.get()
        finally:
            queues.discard(queue)

    async def tick(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            size = parse_size(request)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        payload = message(size)  # built once, the same object in every queue
        for queue in queues:
            queue.put_nowait(payload)
        return f"{len(queues)} 0".encode()

    server = grpc.aio.server(options=SERVER_OPTIONS)
    handlers = {
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Tick": grpc.unary_unary_rpc_method_handler(tick),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    host = address.rsplit(":", 1)[0]
    port = server.add_insecure_port(address)
    await server.start()
    print(f"listening {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


# --- the Go server: built from bench/grpc_floor_go on first use ---


def go_source_hash(directory: Path = GO_DIR) -> str:
    """A digest of the Go sources, go.mod and go.sum: the binary's cache key."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def go_binary() -> Path:
    """The built Go server, built now (GOTOOLCHAIN=local, go.sum as committed) if missing."""
    from tests.kube.binaries import cache_dir

    target = cache_dir() / "bin" / f"{GO_BINARY}-{go_source_hash()}" / GO_BINARY
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise FileNotFoundError("`go` is not on PATH: it builds bench/grpc_floor_go")
    target.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOTOOLCHAIN="local")
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -mod=readonly".strip()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / GO_BINARY
        print(f"building {target} ...", file=sys.stderr, flush=True)
        subprocess.run([go, "build", "-o", str(built), "."], cwd=GO_DIR, env=env, check=True)
        built.replace(target)
    return target


def go_version() -> str | None:
    go = shutil.which("go")
    if go is None:
        return None
    env = dict(os.environ, GOTOOLCHAIN="local")
    out = subprocess.run([go, "version"], env=env, capture_output=True, text=True)
    return out.stdout.strip() or None


# --- client processes ---


@dataclass(frozen=True, slots=True)
class ClientStatus:
    opened: int  # streams that received their first message
    received: int  # tick messages received, over every stream
    received_bytes: int
    min_per_stream: int  # tick messages of the stream that received fewest
    ended: int  # streams that ended (any status): none should


def client_main(conn: Connection, address: str, streams: int, channels: int) -> None:
    """A client process: `streams` streams over `channels` connections, on command."""
    asyncio.run(_client(conn, address, streams, channels))


async def _client(conn: Connection, address: str, streams: int, channel_count: int) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_command() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            commands.put_nowait(("stop", None))

    loop.add_reader(conn.fileno(), on_command)
    channels = [
        grpc.aio.insecure_channel(
            address,
            # Each channel its own connection, as proxies on many hosts would have.
            options=[("grpc.use_local_subchannel_pool", 1), ("bench.floor.channel", index)],
        )
        for index in range(channel_count)
    ]
    counts = [-1] * streams  # -1: not open yet; then tick messages received
    received_bytes = 0
    ended = 0

    async def run_stream(index: int) -> None:
        nonlocal received_bytes, ended
        call = channels[index % channel_count].unary_stream(STREAM_METHOD)(b"")
        try:
            async for payload in call:
                counts[index] += 1
                received_bytes += len(payload)
        except grpc.aio.AioRpcError:
            pass
        ended += 1

    tasks: list[asyncio.Task[None]] = []
    while True:
        command, _ = await commands.get()
        if command == "open":
            tasks = [asyncio.create_task(run_stream(i)) for i in range(streams)]
            conn.send(True)
        elif command == "status":
            opened = sum(1 for c in counts if c >= 0)
            received = sum(c for c in counts if c > 0)
            conn.send(ClientStatus(opened, received, received_bytes, min(counts), ended))
        else:  # stop
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels:
                await channel.close()
            with contextlib.suppress(OSError):
                conn.send(True)
            return


def _ask(conn: Connection, command: str, timeout_s: float = 60.0) -> Any:
    conn.send((command, None))
    if not conn.poll(timeout_s):
        raise TimeoutError(f"client process did not answer {command!r}")
    return conn.recv()


# --- the arithmetic, kept apart so bench/checks can test it ---


def spread(streams: int, procs: int) -> list[int]:
    """Streams per client process, as even as they divide."""
    return [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]


def busy_cpu_s(cpu_s: float, idle_rate: float, seconds: float) -> float:
    """CPU of a phase less what the server burns idle over the same time, never < 0."""
    return max(0.0, cpu_s - idle_rate * seconds)


def per_stream_kb(rss_open_kib: int, rss_idle_kib: int, streams: int) -> float:
    """KB (10^3 bytes) of RSS per open stream."""
    return (rss_open_kib - rss_idle_kib) * 1024 / streams / 1e3


@dataclass
class SizeResult:
    size: int
    ticks: int
    writes: int  # streams * ticks (the clients check that each stream got each)
    cpu_s: float  # raw server CPU over the ticks
    main_thread_cpu_s: float  # of which the main thread's (py: the event loop)
    seconds: float
    busy_cpu_s: float  # less the idle rate
    us_per_write: float
    ms_per_tick: float
    tick_wall_ms: list[float]
    rss_after_kib: int | None
    hwm_kib: int | None
    dropped: int

    @classmethod
    def of(
        cls,
        *,
        size: int,
        writes: int,
        cpu_s: float,
        main_thread_cpu_s: float,
        seconds: float,
        idle_rate: float,
        tick_wall_ms: list[float],
        rss_after_kib: int | None = None,
        hwm_kib: int | None = None,
        dropped: int = 0,
    ) -> SizeResult:
        busy = busy_cpu_s(cpu_s, idle_rate, seconds)
        ticks = len(tick_wall_ms)
        return cls(
            size=size,
            ticks=ticks,
            writes=writes,
            cpu_s=cpu_s,
            main_thread_cpu_s=main_thread_cpu_s,
            seconds=seconds,
            busy_cpu_s=busy,
            us_per_write=busy / writes * 1e6 if writes else float("nan"),
            ms_per_tick=busy / ticks * 1e3 if ticks else float("nan"),
            tick_wall_ms=tick_wall_ms,
            rss_after_kib=rss_after_kib,
            hwm_kib=hwm_kib,
            dropped=dropped,
        )


@dataclass
class ServerResult:
    server: str
    streams: int
    opened: int
    rss_idle_kib: int
    rss_open_kib: int
    kb_per_stream: float
    open_cpu_s: float
    open_seconds: float
    us_per_open: float
    idle_cpu_rate: float  # CPU seconds per second with every stream open, no ticks
    load_before: tuple[float, float, float]
    client_cpu_s: float = 0.0
    sizes: list[SizeResult] = field(default_factory=list)
    ended_streams: int = 0


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def table(results: Sequence[ServerResult]) -> str:
    """The report: one line per server and size, then one per server for opening."""
    lines = [
        f"{'server':<6} {'streams':>7} {'size B':>6} {'ticks':>5} {'µs CPU/write':>12} "
        f"{'ms CPU/tick':>11} {'main thread %':>13} {'tick wall p50/max ms':>20}",
    ]
    for r in results:
        for s in r.sizes:
            main = s.main_thread_cpu_s / s.cpu_s * 100 if s.cpu_s > 0 else float("nan")
            wall = f"{_median(s.tick_wall_ms):.0f}/{max(s.tick_wall_ms, default=float('nan')):.0f}"
            lines.append(
                f"{r.server:<6} {r.streams:>7} {s.size:>6} {s.ticks:>5} {s.us_per_write:>12.2f} "
                f"{s.ms_per_tick:>11.1f} {main:>13.0f} {wall:>20}"
            )
    lines.append("")
    lines.append(
        f"{'server':<6} {'streams':>7} {'RSS idle MB':>11} {'RSS open MB':>11} "
        f"{'KB/stream':>9} {'µs CPU/open':>11} {'idle CPU %':>10}"
    )
    for r in results:
        lines.append(
            f"{r.server:<6} {r.streams:>7} {r.rss_idle_kib * 1024 / 1e6:>11.1f} "
            f"{r.rss_open_kib * 1024 / 1e6:>11.1f} {r.kb_per_stream:>9.2f} "
            f"{r.us_per_open:>11.1f} {r.idle_cpu_rate * 100:>10.2f}"
        )
    return "\n".join(lines)


# --- the driver ---


class Server:
    """A server process (py or go) whose first stdout line is `listening ADDR`."""

    def __init__(self, kind: str, log_path: Path) -> None:
        if kind == "py":
            argv = [sys.executable, "-m", "bench.grpc_floor", "serve-py"]
        elif kind == "go":
            argv = [str(go_binary())]
        else:
            raise ValueError(f"unknown server {kind!r}")
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                _with_parent_death_signal(argv),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "listening":
            self.stop()
            raise RuntimeError(f"{kind} server did not start; see {log_path}")
        self.address = line[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _cpu(pid: int) -> float:
    value = procstat.cpu_seconds(pid)
    if value is None:
        raise RuntimeError(f"server {pid} is gone")
    return value


def _main_thread_cpu(pid: int) -> float:
    return procstat.cpu_seconds(pid, thread=pid) or 0.0


def _rss_kib(pid: int) -> int:
    value = procstat.status_kib(pid, "VmRSS")
    if value is None:
        raise RuntimeError(f"server {pid} is gone")
    return value


def _wait_for(
    clients: list[Connection], done: Callable[[list[ClientStatus]], bool], timeout_s: float
) -> list[ClientStatus]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = [_ask(conn, "status") for conn in clients]
        if done(statuses):
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"clients not done after {timeout_s} s: {statuses}")
        time.sleep(0.02)


def _received_at_least(total: int) -> Callable[[list[ClientStatus]], bool]:
    return lambda statuses: sum(s.received for s in statuses) >= total


def _idle_rate(pid: int, seconds: float) -> float:
    cpu, start = _cpu(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu(pid) - cpu) / (time.monotonic() - start)


def run_server(kind: str, args: argparse.Namespace, work: Path) -> ServerResult:
    load_before = os.getloadavg()
    server = Server(kind, work / f"{kind}-server.log")
    context = multiprocessing.get_context("spawn")
    procs: list[tuple[SpawnProcess, Connection]] = []
    try:
        time.sleep(args.settle_s)
        rss_idle = _rss_kib(server.pid)
        for share in spread(args.streams, args.client_procs):
            parent, child = context.Pipe()
            process = context.Process(
                target=client_main,
                args=(child, server.address, share, args.channels),
                daemon=True,
            )
            process.start()
            procs.append((process, parent))
        clients = [conn for _, conn in procs]
        for conn in clients:  # wait until every client process is up
            _ask(conn, "status")
        cpu0, t0 = _cpu(server.pid), time.monotonic()
        for conn in clients:
            conn.send(("open", None))
        for conn in clients:
            if not conn.poll(60):
                raise TimeoutError("client process did not start its streams")
            conn.recv()
        statuses = _wait_for(
            clients, lambda ss: sum(s.opened for s in ss) == args.streams, args.timeout_s
        )
        t1 = time.monotonic()
        time.sleep(args.settle_s)  # let the server finish what the last opens started
        open_cpu = _cpu(server.pid) - cpu0
        open_seconds = time.monotonic() - t0
        rss_open = _rss_kib(server.pid)
        idle_rate = _idle_rate(server.pid, args.idle_s)
        open_busy = busy_cpu_s(open_cpu, idle_rate, open_seconds)
        result = ServerResult(
            server=kind,
            streams=args.streams,
            opened=sum(s.opened for s in statuses),
            rss_idle_kib=rss_idle,
            rss_open_kib=rss_open,
            kb_per_stream=per_stream_kb(rss_open, rss_idle, args.streams),
            open_cpu_s=open_cpu,
            open_seconds=t1 - t0,
            us_per_open=open_busy / args.streams * 1e6,
            idle_cpu_rate=idle_rate,
            load_before=load_before,
        )
        expected = 0
        tick_channel = grpc.insecure_channel(server.address)
        tick = tick_channel.unary_unary(TICK_METHOD)
        try:
            for size in args.sizes:
                procstat.reset_hwm(server.pid)
                walls: list[float] = []
                dropped = 0
                cpu_a, t_a = _cpu(server.pid), time.monotonic()
                main_a = _main_thread_cpu(server.pid)
                for _ in range(args.ticks):
                    started = time.monotonic()
                    reached, lost = (int(v) for v in tick(str(size).encode(), timeout=60).split())
                    dropped += lost
                    expected += args.streams
                    if reached != args.streams:
                        raise RuntimeError(f"tick reached {reached} of {args.streams} streams")
                    _wait_for(clients, _received_at_least(expected), args.timeout_s)
                    walls.append((time.monotonic() - started) * 1e3)
                time.sleep(args.settle_s)
                cpu_b, t_b = _cpu(server.pid), time.monotonic()
                result.sizes.append(
                    SizeResult.of(
                        size=size,
                        writes=args.streams * args.ticks,
                        cpu_s=cpu_b - cpu_a,
                        main_thread_cpu_s=_main_thread_cpu(server.pid) - main_a,
                        seconds=t_b - t_a,
                        idle_rate=idle_rate,
                        tick_wall_ms=walls,
                        rss_after_kib=_rss_kib(server.pid),
                        hwm_kib=procstat.status_kib(server.pid, "VmHWM"),
                        dropped=dropped,
                    )
                )
        finally:
            tick_channel.close()
        final = [_ask(conn, "status") for conn in clients]
        each = len(args.sizes) * args.ticks
        if sum(s.received for s in final) != expected or any(
            s.min_per_stream != each for s in final
        ):
            raise RuntimeError(f"a stream missed or repeated a message: {final}")
        result.ended_streams = sum(s.ended for s in final)
        result.client_cpu_s = procstat.total_cpu_seconds(
            [p.pid for p, _ in procs if p.pid is not None]
        )
        return result
    finally:
        for process, conn in procs:
            with contextlib.suppress(OSError, EOFError, TimeoutError):
                _ask(conn, "stop", timeout_s=30)
            process.join(10)
            if process.is_alive():
                process.kill()
        server.stop()


def machine() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def git(*argv: str) -> str | None:
        out = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    return {
        "nproc": os.cpu_count(),
        "model_name": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "go": go_version(),
        "commit": git("rev-parse", "HEAD"),
        "git_status": git("status", "--porcelain"),
        "command": [sys.executable, "-m", "bench.grpc_floor", *sys.argv[1:]],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.grpc_floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("mode", nargs="?", choices=["run", "serve-py"], default="run")
    parser.add_argument("--server", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--channels", type=int, default=4, help="connections per client process")
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[300, 2_000], help="message sizes (bytes)"
    )
    parser.add_argument("--settle-s", type=float, default=1.0)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--address", default="127.0.0.1:0", help="serve-py: listen address")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "serve-py":
        asyncio.run(serve_py(args.address))
        return 0
    if not all(0 <= s <= MAX_SIZE for s in args.sizes) or args.streams < args.client_procs:
        raise SystemExit("sizes must be in 0..4 MiB and streams >= client processes")
    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="grpc-floor-") as tmp:
        for kind in args.server:
            results.append(run_server(kind, args, Path(tmp)))
            print(f"{kind}: done", file=sys.stderr, flush=True)
    print(table(results))
    if args.out:
        document = {"machine": info, "results": [asdict(r) for r in results]}
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
