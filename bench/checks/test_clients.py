"""A client process's mechanics against a small grpc.aio server on loopback.

The server here is a stand-in for `destination serve` that answers each
stream with one fixed message and then holds it open, counting the streams
it opened and saw end. It checks the harness's client code (both RPCs,
`churn` really closing calls, `addresses`, the commands), not the product.
The client runs in this process: `clients._run` with one end of a pipe.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from bench.clients import GET_RPC, PROFILE_RPC, Assignment, HeldAddresses, Status, _run
from bench.profile_stream import ProfileStatus, ProfileTag
from bench.run import ClientProc
from destination._proto import destination_pb2 as pb
from destination._proto import meta_pb2, net_pb2

SERVICE = "io.linkerd.proxy.destination.Destination"
IPS = ("10.11.0.1", "10.11.0.2")


class StandIn:
    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()

    async def get(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Update]:
        self.opened[GET_RPC] += 1
        try:
            addrs = [
                pb.WeightedAddr(
                    addr=net_pb2.TcpAddress(
                        ip=net_pb2.IPAddress(ipv4=int(ipaddress.IPv4Address(ip))), port=8080
                    )
                )
                for ip in IPS
            ]
            yield pb.Update(add=pb.WeightedAddrSet(addrs=addrs))
            await asyncio.Event().wait()
        finally:
            self.closed[GET_RPC] += 1

    async def get_profile(
        self, request: pb.GetDestination, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DestinationProfile]:
        self.opened[PROFILE_RPC] += 1
        try:
            profile = pb.DestinationProfile(fully_qualified_name=request.path)
            profile.profile_ref.CopyFrom(
                meta_pb2.Metadata(resource=meta_pb2.Resource(group="linkerd.io"))
            )
            yield profile
            await asyncio.Event().wait()
        finally:
            self.closed[PROFILE_RPC] += 1


async def eventually(probe: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def test_both_rpcs_churn_and_addresses() -> None:
    stand_in = StandIn()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Get": grpc.unary_stream_rpc_method_handler(
                        stand_in.get,
                        request_deserializer=pb.GetDestination.FromString,
                        response_serializer=pb.Update.SerializeToString,
                    ),
                    "GetProfile": grpc.unary_stream_rpc_method_handler(
                        stand_in.get_profile,
                        request_deserializer=pb.GetDestination.FromString,
                        response_serializer=pb.DestinationProfile.SerializeToString,
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    parent, child = multiprocessing.Pipe()
    path = "svc-000.bench.svc.cluster.local:80"
    assignments = [
        Assignment(0, "svc-000", path, "{}", 0, rpc=GET_RPC, steady=True),
        Assignment(1, "svc-000", path, "{}", 0, rpc=PROFILE_RPC),
        Assignment(2, "svc-000", path, "{}", 1, rpc=GET_RPC),
        Assignment(3, "svc-000", path, "{}", 1, rpc=PROFILE_RPC),
    ]
    client = asyncio.create_task(_run(child, f"127.0.0.1:{port}", assignments, 2, False, 0))

    async def ask(command: str, argument: Any = None) -> Any:
        await asyncio.to_thread(parent.send, (command, argument))
        return await asyncio.to_thread(parent.recv)

    try:
        await eventually(lambda: sum(stand_in.opened.values()) == 4)
        get_status: Status = await ask("status", {})
        while get_status.connected < 2:
            await asyncio.sleep(0.05)
            get_status = await ask("status", {})
        default = ProfileTag("default", False)
        profiles: ProfileStatus = await ask("profile_status", {"svc-000": default})
        while profiles.at_target < 2:
            await asyncio.sleep(0.05)
            profiles = await ask("profile_status", {"svc-000": default})
        assert profiles.streams == 2 and profiles.messages == 2

        held: list[HeldAddresses] = await ask("addresses")
        assert sorted(h.stream_id for h in held) == [0, 2]
        assert all(h.addresses == tuple((ip, 8080) for ip in IPS) for h in held)

        # Close and reopen one stream of each kind, and name one the process does not hold.
        assert await ask("churn", [2, 3, 99]) == 2
        await eventually(lambda: stand_in.closed == Counter({GET_RPC: 1, PROFILE_RPC: 1}))
        await eventually(lambda: stand_in.opened == Counter({GET_RPC: 3, PROFILE_RPC: 3}))
        reports = await ask("profile_report")
        assert sorted(r.stream_id for r in reports) == [1, 3]
        get_status = await ask("status", {})
        assert get_status.ends == 0  # the client closed them: not server-ended streams

        lag = await ask("loop_lag")
        assert lag.samples > 0
        assert await ask("nonsense") == ("error", "unknown command 'nonsense'")
    finally:
        await asyncio.to_thread(parent.send, ("stop", None))
        await asyncio.wait_for(client, 20)
        assert parent.recv() == ("stopped", None)
        await server.stop(None)
    await eventually(lambda: stand_in.closed == stand_in.opened)


async def test_only_loopback() -> None:
    parent, child = multiprocessing.Pipe()
    with pytest.raises(ValueError, match="loopback"):
        await _run(child, "10.0.0.1:8086", [], 1, False, 0)
    parent.close()


def test_concurrent_requests_each_get_their_own_answer() -> None:
    """Several threads ask one client process at once (the soak's churn and lag loops)."""
    parent, child = multiprocessing.Pipe()

    def echo() -> None:
        while True:
            command, argument = child.recv()
            if command == "stop":
                return
            time.sleep(0.001)  # answer late enough for another request to come in
            child.send((command, argument))

    responder = threading.Thread(target=echo, daemon=True)
    responder.start()
    proc = ClientProc(process=multiprocessing.current_process(), conn=parent, streams=0)

    def ask_many(name: str) -> list[tuple[str, int]]:
        return [proc.request(name, i, 5.0) for i in range(40)]

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(ask_many, ["churn", "loop_lag", "status"]))
    parent.send(("stop", None))
    responder.join(5)
    for name, got in zip(["churn", "loop_lag", "status"], answers, strict=True):
        assert got == [(name, i) for i in range(40)]
