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

A process may also hold `GetProfile` streams (an assignment's `rpc`), which
keep the tag of the profile they hold (bench/profile_stream.py).

The orchestrator drives a process over a `multiprocessing` pipe with small
commands: `status` (how many Get streams are connected / at a target),
`report` (every Get stream's numbers), `profile_status` and `profile_report`
(the same for GetProfile streams), `addresses` (every Get stream's address
set, to compare with the API), `churn` (close the named streams and open them
again, as a restarted proxy would), `loop_lag` and `stop`. A process whose
parent dies sees the pipe close and exits; it also has a parent-death signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Protocol

import grpc

from destination._proto import destination_pb2 as pb

from .profile_stream import GET_PROFILE, ProfileStream, profile_status

GET = "/io.linkerd.proxy.destination.Destination/Get"
GET_RPC = "Get"
PROFILE_RPC = "GetProfile"
HASH_LABEL = "pod_template_hash"
LAG_TICK_S = 0.02
REOPEN_AFTER_S = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Assignment:
    """One stream to open: its id, the service it watches, the request, and its RPC."""

    stream_id: int
    service: str
    path: str
    context_token: str
    slot: int  # the stream's index among its service's streams
    rpc: str = GET_RPC  # or PROFILE_RPC
    steady: bool = False  # the soak never closes it


@dataclass(frozen=True, slots=True)
class HeldAddresses:
    """A Get stream's address set, as (dotted IPv4, port) pairs."""

    stream_id: int
    service: str
    connected: bool
    addresses: tuple[tuple[str, int], ...]


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

    def ended(self, error: str) -> None:
        """The server ended the stream; the reopened one starts with the whole set."""
        self.ends += 1
        self.last_error = error
        self.fresh = True

    def held(self) -> HeldAddresses:
        return HeldAddresses(
            stream_id=self.assignment.stream_id,
            service=self.assignment.service,
            connected=self.connected,
            addresses=tuple(
                sorted((str(ipaddress.IPv4Address(ip)), port) for ip, port in self.keys)
            ),
        )

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


class _Consumer(Protocol):
    def apply(self, message: Any, now: float) -> None: ...

    def ended(self, error: str) -> None: ...


async def _consume(open_call: Any, stream: _Consumer) -> None:
    """Read the stream; when it ends, reopen it after a pause, as a proxy does.

    Cancelling the task cancels the call, so the server sees the stream end
    (the soak closes streams that way).
    """
    while True:
        call = open_call()
        try:
            async for message in call:
                stream.apply(message, time.time())
            error = "ended with OK by the server"
        except grpc.aio.AioRpcError as err:
            error = f"{err.code().name}: {err.details()}"
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as err:  # a client bug must show up in the report, not vanish
            error = repr(err)
        stream.ended(error)
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
    by_id = {a.stream_id: a for a in assignments}
    if len(by_id) != len(assignments):
        raise ValueError("stream ids must be unique within a client process")
    get_streams: dict[int, _Stream] = {}
    profile_streams: dict[int, ProfileStream] = {}
    openers: dict[int, Any] = {}  # stream id -> a callable that opens its call
    tasks: dict[int, asyncio.Task[None]] = {}

    def new_state(assignment: Assignment) -> _Consumer:
        if assignment.rpc == PROFILE_RPC:
            profile = ProfileStream(assignment.stream_id, assignment.service)
            profile_streams[assignment.stream_id] = profile
            return profile
        stream = _Stream(assignment=assignment, track_hash=track_hash)
        get_streams[assignment.stream_id] = stream
        return stream

    def opener(channel: grpc.aio.Channel, assignment: Assignment) -> Any:
        request = pb.GetDestination(
            scheme="k8s", path=assignment.path, context_token=assignment.context_token
        )
        if assignment.rpc == PROFILE_RPC:
            method = channel.unary_stream(
                GET_PROFILE,
                request_serializer=pb.GetDestination.SerializeToString,
                response_deserializer=pb.DestinationProfile.FromString,
            )
        elif assignment.rpc == GET_RPC:
            method = channel.unary_stream(
                GET,
                request_serializer=pb.GetDestination.SerializeToString,
                response_deserializer=pb.Update.FromString,
            )
        else:
            raise ValueError(f"unknown rpc {assignment.rpc!r}")
        return partial(method, request)

    def start(stream_id: int) -> None:
        state = new_state(by_id[stream_id])
        tasks[stream_id] = asyncio.create_task(_consume(openers[stream_id], state))

    async def open_all() -> None:
        for index, assignment in enumerate(assignments):
            openers[assignment.stream_id] = opener(channels[index % len(channels)], assignment)
            start(assignment.stream_id)
            if open_batch and (index + 1) % open_batch == 0:
                await asyncio.sleep(0.05)  # let the server take the batch in

    async def churn(stream_ids: list[int]) -> int:
        """Close these streams (cancel their calls) and open each again with a fresh state."""
        chosen = [i for i in stream_ids if i in tasks]
        closing = [tasks[i] for i in chosen]
        for task in closing:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        for stream_id in chosen:
            start(stream_id)
        return len(chosen)

    lags: list[float] = []

    async def measure_loop_lag() -> None:
        # How late this process's event loop runs a 20 ms timer: a busy client shows
        # up here, so its share of a late update can be told from the server's.
        while True:
            planned = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            lags.append(max(0.0, loop.time() - planned))

    opening = asyncio.create_task(open_all())
    ticker = asyncio.create_task(measure_loop_lag())
    try:
        while True:
            command, argument = await commands.get()
            if command == "stop":
                break
            if command == "status":
                conn.send(_status(list(get_streams.values()), argument or {}))
            elif command == "report":
                conn.send([s.report() for s in get_streams.values()])
            elif command == "profile_status":
                conn.send(profile_status(list(profile_streams.values()), argument or {}))
            elif command == "profile_report":
                conn.send([s.report() for s in profile_streams.values()])
            elif command == "addresses":
                conn.send([s.held() for s in get_streams.values()])
            elif command == "churn":
                conn.send(await churn(list(argument or [])))
            elif command == "loop_lag":
                conn.send(LoopLag.of(lags))
                lags.clear()
            else:
                conn.send(("error", f"unknown command {command!r}"))
    finally:
        opening.cancel()
        ticker.cancel()
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(opening, ticker, *tasks.values(), return_exceptions=True)
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
