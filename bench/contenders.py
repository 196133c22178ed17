"""The servers one benchmark run measures: ours, and in side-by-side mode a second one.

A side-by-side run (`python -m bench --compare-with linkerd`, or
`--compare-with ours` for an A/A check of the harness, or
`--compare-command TEMPLATE` for any other destination server) starts both
servers on the same cluster at the same time, with the same settings
(bench/server.py `SharedFlags`). Each server gets its own client processes
that open the same streams; every step's API write is measured against both.

Each server is a `Contender`: a short name used in the results and ratios
("py" is always ours, listed first; "go" is Linkerd's Go controller, "py2"
a second copy of ours, "other" a command), and whether it exports our
`/metrics` names (only then are the server-side readings that come from our
metrics, such as event-to-enqueue and when the server read a slice event,
taken for it).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.kube.cluster import LocalCluster

from . import linkerd_go
from .server import ServerProcess, SharedFlags, free_port, start_process, start_server

OURS = "py"
KINDS = {"linkerd": "go", "ours": "py2", "command": "other"}
PLACEHOLDERS = (
    "grpc_address",
    "admin_address",
    "kubeconfig",
    "controller_namespace",
    "cluster_domain",
    "identity_trust_domain",
    "default_opaque_ports",
)


@dataclass(frozen=True)
class CompareSpec:
    """What the second server is.

    `linkerd`: Linkerd's Go destination controller (`binary`, default: the
    pinned build of deploy/local/build-linkerd-destination.sh); `ours`: our
    server again; `command`: `command`, an argv template (split like a shell
    would, never run by one) whose `{placeholders}` (`PLACEHOLDERS`) are filled
    in; it must serve the destination API on `{grpc_address}` and answer
    `/ready` on `{admin_address}`.
    """

    kind: str
    binary: str | None = None
    command: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown server to compare with {self.kind!r}: one of {list(KINDS)}")
        if (self.kind == "command") != (self.command is not None):
            raise ValueError("a command template goes with --compare-command, and only there")
        if self.command is not None:
            command_argv(self.command, dict.fromkeys(PLACEHOLDERS, "x"))  # fails early if bad

    @property
    def name(self) -> str:
        return KINDS[self.kind]


@dataclass
class Contender:
    name: str
    description: str
    server: ServerProcess
    our_metrics: bool


def command_argv(template: str, values: dict[str, str]) -> list[str]:
    """Split the template into words, then fill each word's {placeholders}."""
    words = shlex.split(template)
    if not words:
        raise ValueError("the command template is empty")
    try:
        return [word.format(**values) for word in words]
    except (KeyError, IndexError) as err:
        raise ValueError(
            f"unknown placeholder {err} in the command template; known: "
            + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        ) from None


def prepare_cluster(spec: CompareSpec | None, cluster: LocalCluster, shared: SharedFlags) -> None:
    """Before the servers start: what the second server needs on the cluster (blocking)."""
    if spec is not None and spec.kind == "linkerd":
        linkerd_go.prepare_cluster(cluster, shared)


def start_second(
    spec: CompareSpec,
    *,
    kubeconfig: Path,
    cluster_name: str,
    log_path: Path,
    shared: SharedFlags,
    extra_args: list[str],
) -> Contender:
    if spec.kind == "linkerd":
        binary = Path(spec.binary) if spec.binary else linkerd_go.default_binary()
        server = linkerd_go.start_destination(
            binary, kubeconfig=kubeconfig, log_path=log_path, shared=shared
        )
        return Contender(
            spec.name, f"Linkerd's Go destination controller ({binary})", server, False
        )
    if spec.kind == "ours":
        server = start_server(
            kubeconfig=kubeconfig,
            cluster_name=cluster_name,
            log_path=log_path,
            extra_args=extra_args,
            shared=shared,
        )
        return Contender(spec.name, "our server, a second copy (A/A check)", server, True)
    assert spec.command is not None  # CompareSpec checks it
    grpc_address, admin_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    values = {
        "grpc_address": grpc_address,
        "admin_address": admin_address,
        "kubeconfig": str(kubeconfig),
        "controller_namespace": shared.controller_namespace,
        "cluster_domain": shared.cluster_domain,
        "identity_trust_domain": shared.identity_trust_domain,
        "default_opaque_ports": shared.default_opaque_ports,
    }
    argv = command_argv(spec.command, values)
    process = start_process(argv, log_path=log_path)
    server = ServerProcess(process, grpc_address, admin_address, log_path)
    return Contender(spec.name, f"command: {shlex.join(argv)}", server, False)
