"""A stand-in for a target cluster's multicluster gateway, for `make demo`.

The service mirror probes a Link's gateway over HTTP (`probeSpec`) and marks
the gateway-mode mirrors' Endpoints ready or not from the answers. The local
demo clusters have no gateway pod, so this process answers the probes: 200 on
the probe path while "up", 503 while "down". SIGUSR1 flips it, so the demo can
show a gateway outage reaching a live `Get` stream as Removes, then Adds.

It listens on this machine's non-loopback IPv4 address, because the API
server refuses loopback addresses in Endpoints, and prints that address and
its port on one line (`ADDRESS PORT`) once it listens.

    python deploy/local/demo_gateway.py [--path /ready] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import socket
import sys

from aiohttp import web


def host_ip() -> str:
    """This host's address towards the outside: not loopback, so Endpoints accept it."""
    for destination in ("192.0.2.1", "10.255.255.255", "203.0.113.1"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((destination, 9))  # UDP: nothing is sent, the kernel only picks a route
            address = str(s.getsockname()[0])
            if not ipaddress.ip_address(address).is_loopback:
                return address
    for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        address = str(info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    raise SystemExit("this host has no non-loopback IPv4 address for a gateway stand-in")


class Gateway:
    """The probe endpoint; `up` decides its answer."""

    def __init__(self) -> None:
        self.up = True

    async def ready(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text="ok\n") if self.up else web.Response(status=503, text="down\n")

    def flip(self) -> None:
        self.up = not self.up
        print(f"gateway stand-in: {'up' if self.up else 'down'}", file=sys.stderr, flush=True)


async def serve(path: str, port: int) -> None:
    gateway = Gateway()
    app = web.Application()
    app.router.add_get(path, gateway.ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    address = host_ip()
    site = web.TCPSite(runner, address, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(address, bound, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, gateway.flip)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/ready", help="probe path. Default: /ready")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    options = parser.parse_args()
    asyncio.run(serve(options.path, options.port))


if __name__ == "__main__":
    main()
