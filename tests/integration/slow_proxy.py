"""A TCP proxy on loopback that slows down a real server's answers.

Put in front of a real kube-apiserver (TLS passes through untouched: the
serving certificate names 127.0.0.1, whatever the port), it forwards what the
client sends at once and what the server answers according to `mode`:

- `pass`: at once;
- `trickle`: one byte every `trickle_pause_s` (a congested or hostile server
  that answers, but barely);
- `freeze`: not at all until the mode changes (a server that accepts
  requests and never answers).

Changing the mode applies to connections already open, mid-answer included.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["pass", "trickle", "freeze"]


class SlowProxy:
    def __init__(self, upstream_port: int, *, trickle_pause_s: float = 0.05) -> None:
        self._upstream_port = upstream_port
        self._pause_s = trickle_pause_s
        self._mode: Mode = "pass"
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self._mode = mode
        self._changed.set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            client_out.close()
            return
        pumps = [
            asyncio.create_task(self._pump(client_in, server_out, slowed=False)),
            asyncio.create_task(self._pump(server_in, client_out, slowed=True)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)
            for writer in (client_out, server_out):
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slowed: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                while data:
                    if not slowed or self._mode == "pass":
                        writer.write(data)
                        data = b""
                    elif self._mode == "trickle":
                        writer.write(data[:1])
                        data = data[1:]
                        await asyncio.sleep(self._pause_s)
                    else:
                        await self._changed.wait()
                    await writer.drain()
