"""What a server holds now: a fresh Get stream per target, read until it is quiet.

The cross-check of a side-by-side run (bench/compare.py) compares the long-
lived streams' address sets with the API. When they differ, a fresh stream
tells where: if a new stream gets the API's set, the server's state is right
and the updates it sent the old streams did not add up to it (or the client
read them wrongly); if the new stream is wrong too, the server's state is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Mapping

import grpc

from destination._proto import destination_pb2 as pb

from .clients import GET

Address = tuple[str, int]


def apply_update(held: set[Address], update: pb.Update) -> None:
    """An Update applied as a proxy keeps its set: by (IPv4, port)."""
    if update.HasField("add"):
        for weighted in update.add.addrs:
            held.add((str(ipaddress.IPv4Address(weighted.addr.ip.ipv4)), weighted.addr.port))
    elif update.HasField("remove"):
        for tcp in update.remove.addrs:
            held.discard((str(ipaddress.IPv4Address(tcp.ip.ipv4)), tcp.port))
    elif update.HasField("no_endpoints"):
        held.clear()


async def fresh_sets(
    grpc_address: str,
    paths: Mapping[str, str],
    *,
    node: str,
    namespace: str,
    quiet_s: float = 1.0,
    limit_s: float = 10.0,
) -> dict[str, frozenset[Address]]:
    """Per target (key of `paths`, value its authority): the set a new Get stream reads."""
    if not grpc_address.startswith("127.0.0.1:"):
        raise ValueError(f"only loopback servers, got {grpc_address}")
    token = json.dumps({"ns": namespace, "nodeName": node, "pod": "bench-snapshot"})
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        method = channel.unary_stream(
            GET,
            request_serializer=pb.GetDestination.SerializeToString,
            response_deserializer=pb.Update.FromString,
        )

        async def one(target: str, path: str) -> tuple[str, frozenset[Address]]:
            call = method(pb.GetDestination(scheme="k8s", path=path, context_token=token))
            held: set[Address] = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit_s
            try:
                while (left := deadline - loop.time()) > 0:
                    try:
                        update = await asyncio.wait_for(call.read(), min(quiet_s, left))
                    except TimeoutError:
                        break
                    if update is grpc.aio.EOF:
                        break
                    apply_update(held, update)
            except grpc.aio.AioRpcError:
                pass  # what it had sent is what it holds
            finally:
                call.cancel()
            return target, frozenset(held)

        return dict(await asyncio.gather(*(one(t, p) for t, p in paths.items())))
