"""`destination clusters`: the linked remote clusters of a running server, and their state.

Reads the admin server's `/clusters` (JSON) and prints one row per cluster:
its state (synced, connecting, failing, stale, withdrawn, invalid) and since
when, the API server it talks to, the trust domain its pod identities use,
the objects it caches, when it was last known to be up to date, and the last
error. This is the view an operator opens when a remote service has no
endpoints: it tells at once whether the link is missing, refused or down.

Everything printed from the server's answer goes through `printable`: errors
can quote what a remote API server said, and must not reach the terminal as
escape sequences. `--json` output is escaped by JSON itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from destination.cli.printable import printable

if TYPE_CHECKING:
    from destination.cli.common import Subparsers

DEFAULT_ADMIN = "127.0.0.1:9996"
ENV_ADMIN = "DESTINATION_ADMIN"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_UNHEALTHY = 4
HEALTHY_STATES = frozenset({"synced"})
COLUMNS = (
    "CLUSTER",
    "STATE",
    "FOR",
    "SERVER",
    "TRUST DOMAIN",
    "SVC/SLICES/PODS",
    "SYNCED",
    "ERROR",
)


def register(subparsers: Subparsers) -> None:
    """Add the ``clusters`` subcommand."""
    parser = subparsers.add_parser(
        "clusters",
        help="list the remote clusters a destination server links, and their state",
        description=(
            "Ask a running destination server (its admin address) which remote clusters "
            "it links through credentials Secrets, and print each one's state: synced, "
            "connecting, failing (never synced: unreachable or refused), stale (was "
            "synced, watches failing; last known endpoints still served), withdrawn "
            "(stale past --remote-withdraw-after-s) or invalid (the Secret or its "
            "kubeconfig cannot be used), with the error and when it last synced."
        ),
        epilog=(
            "Exit status: 0 when every cluster is synced (or none is linked); 4 when some "
            "cluster is not; 1 when the admin server cannot be reached; 2 for a usage error."
        ),
    )
    parser.add_argument(
        "--admin",
        metavar="HOST:PORT",
        default=None,
        help=f"admin address of the server. Default: {DEFAULT_ADMIN}. Env: {ENV_ADMIN}.",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON as is")
    parser.add_argument(
        "--timeout",
        metavar="S",
        dest="timeout_s",
        type=float,
        default=5.0,
        help="seconds to wait for the admin server. Default: 5.",
    )
    parser.set_defaults(handler=_clusters)


async def fetch(admin: str, *, timeout_s: float) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{admin}/clusters") as response,
    ):
        response.raise_for_status()
        body = await response.json()
    clusters: list[dict[str, Any]] = body["clusters"]
    return clusters


def _age(since: float | None, now: float) -> str:
    if since is None:
        return "never"
    seconds = max(0, int(now - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _synced_text(state: str, synced: float | None, now: float) -> str:
    if state == "synced":
        return "now"
    return "never" if synced is None else f"{_age(synced, now)} ago"


def table(clusters: Sequence[Mapping[str, Any]], *, now: float | None = None) -> str:
    """The clusters as aligned text columns."""
    now = time.time() if now is None else now
    rows: list[tuple[str, ...]] = [COLUMNS]
    for cluster in clusters:
        objects = cluster.get("objects") or {}
        error = cluster.get("error") or ""
        if cluster.get("rotation"):
            error = f"{error} (credentials {cluster['rotation']})".strip()
        synced = cluster.get("last_synced")
        rows.append(
            (
                str(cluster["name"]),
                str(cluster["state"]),
                _age(cluster.get("since"), now),
                str(cluster.get("server") or "-"),
                str(cluster.get("trust_domain") or "-"),
                "/".join(str(objects.get(kind, 0)) for kind in ("Service", "EndpointSlice", "Pod")),
                _synced_text(cluster["state"], synced, now),
                error or "-",
            )
        )
    rows = [tuple(printable(cell) for cell in row) for row in rows]  # the server's text
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        )
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _clusters(args: argparse.Namespace) -> int:
    return run(args, environ=os.environ)


def run(args: argparse.Namespace, *, environ: Mapping[str, str]) -> int:
    admin: str = args.admin or environ.get(ENV_ADMIN) or DEFAULT_ADMIN
    try:
        clusters = asyncio.run(fetch(admin, timeout_s=args.timeout_s))
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as err:
        print(
            printable(f"error: cannot read http://{admin}/clusters: {err or type(err).__name__}"),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if args.json:
        print(json.dumps({"clusters": clusters}, indent=2))
    elif clusters:
        sys.stdout.write(table(clusters))
    else:
        print("no remote clusters linked")
    unhealthy = [c for c in clusters if c.get("state") not in HEALTHY_STATES]
    return EXIT_UNHEALTHY if unhealthy else EXIT_OK
