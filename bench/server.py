"""`python -m destination serve` as a subprocess of the benchmark, on loopback.

The server runs exactly as an operator would start it, in its own process
(own interpreter, own event loop, own gRPC threads), so its CPU and memory
are read from /proc without the clients or the orchestrator mixed in. A
second server of a side-by-side run (bench/contenders.py) is started the same
way (`start_process`) and is a `ServerProcess` too: anything that serves the
destination API on its gRPC address and answers `/ready` on its admin address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.kube.binaries import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# util-linux's setpriv sets the parent-death signal and then execs the server, so
# no Python runs between fork and exec (a preexec_fn is unsafe here: the
# orchestrator has other threads), as tests/kube/cluster.py does.
_SETPRIV = shutil.which("setpriv")


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """SIGTERM the server (a graceful stop) if the thread that started it dies."""
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    grpc_address: str
    admin_address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after the timeout."""
        if self.process.poll() is not None:
            return self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=5)


@dataclass(frozen=True)
class SharedFlags:
    """Settings every server of a run gets, each in its own flag syntax.

    In a side-by-side run (bench/contenders.py) our server and the second one
    must serve the same mesh: same controller namespace, domains, opaque
    ports and hints. The values are our server's defaults, which are those of
    Linkerd's Helm chart (the Go binary's own defaults differ: its outbound
    transport mode is `transparent`, its opaque ports empty), passed
    explicitly to both so that neither runs on a default the other lacks.
    """

    controller_namespace: str = "linkerd"
    cluster_domain: str = "cluster.local"
    identity_trust_domain: str = "cluster.local"
    default_opaque_ports: str = "25,587,3306,4444,5432,6379,9300,11211"
    enable_h2_upgrade: bool = True
    enable_ipv6: bool = True
    outbound_transport_mode: str = "transport-header"


def our_flags(shared: SharedFlags) -> list[str]:
    """`destination serve`'s spelling of the shared settings."""
    return [
        f"--controller-namespace={shared.controller_namespace}",
        f"--cluster-domain={shared.cluster_domain}",
        f"--identity-trust-domain={shared.identity_trust_domain}",
        f"--default-opaque-ports={shared.default_opaque_ports}",
        "--enable-h2-upgrade" if shared.enable_h2_upgrade else "--no-enable-h2-upgrade",
        "--enable-ipv6" if shared.enable_ipv6 else "--no-enable-ipv6",
        f"--outbound-transport-mode={shared.outbound_transport_mode}",
    ]


def start_process(
    argv: list[str], *, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A server process in a session of its own, its output in `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            _with_parent_death_signal(argv),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def start_server(
    *,
    kubeconfig: Path,
    cluster_name: str,
    log_path: Path,
    extra_args: list[str] | None = None,
    profile_to: Path | None = None,
    shared: SharedFlags | None = None,
) -> ServerProcess:
    """Start our server; with `profile_to`, under cProfile (main thread: the event loop)."""
    grpc_port, admin_port = free_port(), free_port()
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    argv = [
        sys.executable,
        *profiler,
        "-m",
        "destination",
        "serve",
        "--kubeconfig",
        str(kubeconfig),
        "--cluster-name",
        cluster_name,
        "--listen-address",
        f"127.0.0.1:{grpc_port}",
        "--admin-address",
        f"127.0.0.1:{admin_port}",
        "--log-level",
        "warning",
        *(our_flags(shared) if shared is not None else []),
        *(extra_args or []),
    ]
    return ServerProcess(
        process=start_process(argv, log_path=log_path),
        grpc_address=f"127.0.0.1:{grpc_port}",
        admin_address=f"127.0.0.1:{admin_port}",
        log_path=log_path,
    )


def wait_ready(server: ServerProcess, timeout_s: float) -> float:
    """Poll the admin /ready until 200 (cache synced); returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    url = f"http://{server.admin_address}/ready"
    while True:
        if not server.alive():
            raise RuntimeError(f"destination server exited early:\n{server.tail()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return time.monotonic() - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"destination server not ready after {timeout_s}s:\n{server.tail()}")
        time.sleep(0.1)
