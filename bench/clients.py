"""Streaming Get clients, run in processes of their own (multiprocessing, spawn).

Each client process opens a few grpc.aio channels to the server (each its own
TCP connection: a local subchannel pool and a distinct channel argument) and
spreads its streams over them round-robin. Every stream keeps the state a
proxy keeps, the set of addresses by (ip, port), and records, in wall-clock
time (`time.time()`, comparable across processes):

* `t_set`: when an update last changed the address set (an Add of a new key
  or a Remove of a held one). Once the stream holds its final state, this is
  the time of the update that made it right;
* `t_last`: when any update last arrived (an Add that re-sends an address
  whose metadata changed counts here, not in `t_set`);
* the number of updates, and optionally the `pod_template_hash` label of
  every address (for the rollout, whose final state is "every address from
  the new ReplicaSet").

The orchestrator drives a process over a `multiprocessing` pipe with small
commands: `status` (how many streams are connected / at a target), `report`
(every stream's numbers) and `stop`. A process whose parent dies sees the
pipe close and exits; it also has a parent-death signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import grpc

from destination._proto import destination_pb2 as pb

GET = "/io.linkerd.proxy.destination.Destination/Get"
HASH_LABEL = "pod_template_hash"
LAG_TICK_S = 0.02
REOPEN_AFTER_S = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Assignment:
    """One stream to open: its id, the service it watches, the Get request."""

    stream_id: int
    service: str
    path: str
    context_token: str
    slot: int  # the stream's index among its service's streams


@dataclass(frozen=True, slots=True)
class Target:
    """The final state a service's streams should reach."""

    count: int
    template_hash: str | None = None  # every address must carry this pod_template_hash


@dataclass(frozen=True, slots=True)
class StreamReport:
    stream_id: int
    service: str
    connected: bool
    count: int
    t_connected: float | None
    t_set: float | None
    t_last: float | None
    updates: int
    hashes: tuple[str, ...]
    ends: int  # times the stream ended (the client then reconnected, as a proxy does)
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Status:
    streams: int
    connected: int
    at_target: int
    ends: int  # stream ends so far, summed over streams (each was reopened)
    streams_ended: int  # streams that ended at least once
    last_set_change: float  # latest t_set over all streams (0 if none)


@dataclass(frozen=True, slots=True)
class LoopLag:
    """Lateness of a 20 ms timer in a client's event loop since the last ask."""

    samples: int
    p99_s: float
    max_s: float

    @classmethod
    def of(cls, lags: list[float]) -> LoopLag:
        if not lags:
            return cls(0, 0.0, 0.0)
        ordered = sorted(lags)
        return cls(len(ordered), ordered[int(0.99 * (len(ordered) - 1))], ordered[-1])


@dataclass(eq=False)
class _Stream:
    assignment: Assignment
    track_hash: bool
    keys: set[tuple[int, int]] = field(default_factory=set)
    hash_of: dict[tuple[int, int], str] = field(default_factory=dict)
    hash_counts: Counter[str] = field(default_factory=Counter)
    connected: bool = False
    t_connected: float | None = None
    t_set: float | None = None
    t_last: float | None = None
    updates: int = 0
    ends: int = 0
    last_error: str | None = None
    fresh: bool = False  # reopened: the next message replaces what is held

    def apply(self, update: pb.Update, now: float) -> None:
        self.updates += 1
        self.t_last = now
        if not self.connected:
            self.connected, self.t_connected = True, now
        changed = False
        if self.fresh:
            # A new stream starts with the whole set: compare it with what was held.
            self.fresh = False
            held, t_set = self.keys, self.t_set
            self.keys, self.hash_of, self.hash_counts = set(), {}, Counter()
            self.apply(update, now)
            self.updates -= 1
            self.t_set = now if self.keys != held else t_set
            return
        if update.HasField("add"):
            for weighted in update.add.addrs:
                tcp = weighted.addr
                key = (tcp.ip.ipv4, tcp.port)
                if key not in self.keys:
                    self.keys.add(key)
                    changed = True
                if self.track_hash:
                    new = weighted.metric_labels.get(HASH_LABEL, "")
                    old = self.hash_of.get(key)
                    if old != new:
                        if old is not None:
                            self.hash_counts[old] -= 1
                            changed = True  # same ip:port, another pod (kwok reuses IPs)
                        self.hash_of[key] = new
                        self.hash_counts[new] += 1
        elif update.HasField("remove"):
            for tcp in update.remove.addrs:
                key = (tcp.ip.ipv4, tcp.port)
                if key in self.keys:
                    self.keys.discard(key)
                    changed = True
                    if self.track_hash:
                        old = self.hash_of.pop(key, None)
                        if old is not None:
                            self.hash_counts[old] -= 1
        if changed:
            self.t_set = now

    def hashes(self) -> tuple[str, ...]:
        return tuple(sorted(h for h, n in self.hash_counts.items() if n > 0))

    def at(self, target: Target | None) -> bool:
        if target is None or not self.connected or len(self.keys) != target.count:
            return False
        if target.template_hash is None:
            return True
        return self.hashes() == (target.template_hash,)

    def report(self) -> StreamReport:
        return StreamReport(
            stream_id=self.assignment.stream_id,
            service=self.assignment.service,
            connected=self.connected,
            count=len(self.keys),
            t_connected=self.t_connected,
            t_set=self.t_set,
            t_last=self.t_last,
            updates=self.updates,
            hashes=self.hashes() if self.track_hash else (),
            ends=self.ends,
            last_error=self.last_error,
        )


async def _consume(open_call: Any, stream: _Stream) -> None:
    """Read the stream; when it ends, reopen it after a pause, as a proxy does."""
    while True:
        try:
            async for update in open_call():
                stream.apply(update, time.time())
            stream.last_error = "ended with OK by the server"
        except grpc.aio.AioRpcError as err:
            stream.last_error = f"{err.code().name}: {err.details()}"
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a client bug must show up in the report, not vanish
            stream.last_error = repr(err)
        stream.ends += 1
        stream.fresh = True
        await asyncio.sleep(REOPEN_AFTER_S)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def client_main(
    conn: Connection,
    server: str,
    assignments: list[Assignment],
    channels: int,
    track_hash: bool,
    open_batch: int,
) -> None:
    """Entry point of a client process (multiprocessing target)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops us
    asyncio.run(_run(conn, server, assignments, channels, track_hash, open_batch))


async def _run(
    conn: Connection,
    server: str,
    assignments: list[Assignment],
    channel_count: int,
    track_hash: bool,
    open_batch: int,
) -> None:
    if not server.startswith("127.0.0.1:"):
        raise ValueError(f"clients only talk to loopback, got {server}")
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def read_commands() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("stop", None)
            loop.call_soon_threadsafe(commands.put_nowait, message)
            if message[0] == "stop":
                return

    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    channels = [
        grpc.aio.insecure_channel(
            server,
            options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("bench.channel", index),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        for index in range(channel_count)
    ]
    streams = [_Stream(assignment=a, track_hash=track_hash) for a in assignments]
    tasks: list[asyncio.Task[None]] = []

    async def open_all() -> None:
        for index, stream in enumerate(streams):
            channel = channels[index % len(channels)]
            method = channel.unary_stream(
                GET,
                request_serializer=pb.GetDestination.SerializeToString,
                response_deserializer=pb.Update.FromString,
            )
            request = pb.GetDestination(
                scheme="k8s",
                path=stream.assignment.path,
                context_token=stream.assignment.context_token,
            )
            tasks.append(asyncio.create_task(_consume(partial(method, request), stream)))
            if open_batch and (index + 1) % open_batch == 0:
                await asyncio.sleep(0.05)  # let the server take the batch in

    lags: list[float] = []

    async def measure_loop_lag() -> None:
        # How late this process's event loop runs a 20 ms timer: a busy client shows
        # up here, so its share of a late update can be told from the server's.
        while True:
            planned = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            lags.append(max(0.0, loop.time() - planned))

    opener = asyncio.create_task(open_all())
    ticker = asyncio.create_task(measure_loop_lag())
    targets: dict[str, Target] = {}
    try:
        while True:
            command, argument = await commands.get()
            if command == "stop":
                break
            if command == "status":
                targets = argument or {}
                conn.send(_status(streams, targets))
            elif command == "report":
                conn.send([s.report() for s in streams])
            elif command == "loop_lag":
                conn.send(LoopLag.of(lags))
                lags.clear()
            else:
                conn.send(("error", f"unknown command {command!r}"))
    finally:
        opener.cancel()
        ticker.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(opener, ticker, *tasks, return_exceptions=True)
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)
        with contextlib.suppress(OSError):
            conn.send(("stopped", None))


def _status(streams: list[_Stream], targets: dict[str, Target]) -> Status:
    return Status(
        streams=len(streams),
        connected=sum(1 for s in streams if s.connected),
        at_target=sum(1 for s in streams if s.at(targets.get(s.assignment.service))),
        ends=sum(s.ends for s in streams),
        streams_ended=sum(1 for s in streams if s.ends),
        last_set_change=max((s.t_set or 0.0 for s in streams), default=0.0),
    )
