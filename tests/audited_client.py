"""Build link clients in a child process that watches every file and process it touches.

`python -m tests.audited_client` reads a job (JSON) on stdin: link
kubeconfigs, and optionally a path to list and watch through each client (the
report has the list's status and names, and the watch socket's options). For each
kubeconfig it builds the client the server builds (`remote_transport_from_kubeconfig`)
under a `sys.addaudithook` hook that records every file opened, every write
to the filesystem (open for writing, `os.open` with O_CREAT/O_WRONLY/O_RDWR,
`tempfile.mkstemp`, `mkdir`, ...) and every process started (`subprocess`,
`os.exec*`, `os.posix_spawn`, `fork`). With `deny_writes`, writes also fail
with EROFS, as on the shipped Deployment's read-only root filesystem, and
TMPDIR points at a directory that does not exist.

A child process because an audit hook can never be removed: the test
process stays as it was. The last stdout line is the JSON report.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITE_EVENTS = frozenset(
    {
        "tempfile.mkstemp",
        "tempfile.mkdtemp",
        "os.mkdir",
        "os.rename",
        "os.truncate",
        "os.symlink",
        "os.link",
        "shutil.copyfile",
    }
)
_PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "os.fork",
        "os.forkpty",
        "pty.spawn",
    }
)
SOCKET_OPTIONS = {
    "SO_KEEPALIVE": (socket.SOL_SOCKET, "SO_KEEPALIVE"),
    "TCP_KEEPIDLE": (socket.IPPROTO_TCP, "TCP_KEEPIDLE"),
    "TCP_KEEPINTVL": (socket.IPPROTO_TCP, "TCP_KEEPINTVL"),
    "TCP_KEEPCNT": (socket.IPPROTO_TCP, "TCP_KEEPCNT"),
    "TCP_USER_TIMEOUT": (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT"),
}


class Audit:
    def __init__(self, *, deny_writes: bool) -> None:
        self.deny_writes = deny_writes
        self.recording = False
        self.opened: list[str] = []
        self.writes: list[str] = []
        self.processes: list[str] = []

    def reset(self) -> None:
        self.opened, self.writes, self.processes = [], [], []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording:
            return
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            self.opened.append(str(path))
            writes = bool(flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writes:
                self._write(f"open {path} mode={mode} flags={flags:#o}")
        elif event in _WRITE_EVENTS:
            self._write(f"{event} {args!r}"[:200])
        elif event in _PROCESS_EVENTS:
            self.processes.append(f"{event} {args!r}"[:200])

    def _write(self, what: str) -> None:
        self.writes.append(what)
        if self.deny_writes:
            raise PermissionError(errno.EROFS, "Read-only file system (audit hook)")


async def _one(case: dict[str, Any], request: dict[str, Any] | None, audit: Audit) -> Any:
    # Imported before recording starts: module imports are not what is audited.
    from discovery.transport import remote_transport_from_kubeconfig

    result: dict[str, Any] = {"error": None, "status": None}
    audit.reset()
    audit.recording = True
    try:
        api = await remote_transport_from_kubeconfig(
            base64.b64decode(case["kubeconfig"]), allow_insecure=case.get("allow_insecure", False)
        )
        try:
            if request is not None:
                async with await api.request(
                    "GET",
                    request["path"],
                    query=[("limit", 500)],
                    headers={"Accept": "application/json"},
                    client_timeout=aiohttp.ClientTimeout(total=30),
                ) as response:
                    result["status"] = response.status
                    body = await response.json()
                    result["names"] = [item["metadata"]["name"] for item in body.get("items") or []]
                # A watch holds its connection while it streams: read its socket's options.
                async with await api.request(
                    "GET",
                    request["path"],
                    query=[("watch", "true"), ("timeoutSeconds", 1)],
                    client_timeout=aiohttp.ClientTimeout(total=30),
                ) as response:
                    result["socket_options"] = _socket_options(response)
                    await response.read()
        finally:
            await api.close()
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        audit.recording = False
    result.update(opened=audit.opened, writes=audit.writes, processes=audit.processes)
    return result


def _socket_options(response: aiohttp.ClientResponse) -> dict[str, int]:
    connection = response.connection
    transport = connection.transport if connection is not None else None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return {}
    return {
        name: sock.getsockopt(level, getattr(socket, option))
        for name, (level, option) in SOCKET_OPTIONS.items()
        if hasattr(socket, option)
    }


async def _main(job: dict[str, Any]) -> list[Any]:
    audit = Audit(deny_writes=job.get("deny_writes", False))
    sys.addaudithook(audit)
    return [await _one(case, job.get("request"), audit) for case in job["cases"]]


def run(job: dict[str, Any], *, cwd: Path, timeout_s: float = 120) -> list[dict[str, Any]]:
    """Run `job` in a child process (from the test process); one report per case."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if job.get("deny_writes"):
        env["TMPDIR"] = "/nonexistent-tmp-for-audit"
    completed = subprocess.run(
        [sys.executable, "-m", "tests.audited_client"],
        input=json.dumps(job).encode(),
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    lines = completed.stdout.decode().strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"audited client exited {completed.returncode}: {completed.stderr.decode()[-2000:]}"
        )
    results: list[dict[str, Any]] = json.loads(lines[-1])
    return results


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    report = asyncio.run(_main(json.load(sys.stdin)))
    print(json.dumps(report))
