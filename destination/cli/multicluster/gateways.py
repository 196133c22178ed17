"""``destination multicluster gateways``: each Link's gateway, alive or not, as the mirror sees it.

Reads the mirror controller's ``/links`` (``--mirror-admin``, default
``127.0.0.1:9997``, or ``DESTINATION_MIRROR_ADMIN``) and prints, per Link,
sorted by cluster::

    CLUSTER  ALIVE  NUM_SVC  LATENCY
    north    -      2        -
    west     True   4        3.1ms

ALIVE is the controller's liveness of the gateway (``True``/``False``; ``-``
for a pod-to-pod link without a gateway; ``unknown`` when this replica
does not run the Link), NUM_SVC the Services it mirrors for the Link,
LATENCY its last successful probe (``-`` when the gateway is not alive).
Unlike Linkerd's, this needs no port-forward to each controller pod and no
Prometheus: one admin address, one JSON document. A replica only knows the
Links it leads; the others are marked, with a note on stderr.

``--json`` prints an array of ``{"clusterName", "alive", "numberOfServices",
"latency"}`` (Linkerd's keys) plus ``link``, ``namespace``, ``gateway``,
``leader``, ``state`` and ``error``. Exit status: 0 when every gateway this
replica runs is alive; 4 when one is not; 1 when the admin server cannot be
read or no Link matches ``--cluster-name``; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from destination.cli.printable import printable

from .flags import EXIT_FAILURE, EXIT_OK, error, note, positive_seconds

__all__ = ["DEFAULT_MIRROR_ADMIN", "gateway_rows", "register", "table"]

DEFAULT_MIRROR_ADMIN = "127.0.0.1:9997"
ENV_MIRROR_ADMIN = "DESTINATION_MIRROR_ADMIN"
EXIT_DEAD = 4
COLUMNS = ("CLUSTER", "ALIVE", "NUM_SVC", "LATENCY")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateways",
        help="each Link's gateway: alive, mirrored services, probe latency",
        description=(
            "Ask the mirror controller (its admin address) about each Link it runs: whether the "
            "target's gateway is alive, how many Services it mirrors, the last probe latency."
        ),
        epilog=(
            "Exit status: 0 when every gateway is alive; 4 when one is not; 1 when the admin "
            "server cannot be read or no Link matches --cluster-name; 2 for a usage error."
        ),
    )
    parser.add_argument(
        "--mirror-admin",
        metavar="HOST:PORT",
        help=f"admin address of the mirror controller. Default: {DEFAULT_MIRROR_ADMIN}. "
        f"Env: {ENV_MIRROR_ADMIN}.",
    )
    parser.add_argument("--cluster-name", metavar="NAME", help="only this target cluster")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--timeout",
        dest="timeout_s",
        metavar="S",
        type=positive_seconds,
        default=5.0,
        help="seconds to wait for the admin server. Default: 5.",
    )
    parser.set_defaults(handler=_gateways)


def gateway_rows(document: Mapping[str, Any], cluster: str | None = None) -> list[dict[str, Any]]:
    """One row per Link of a `/links` document, sorted by cluster (then Link)."""
    rows = []
    links = document.get("links")
    for entry in links if isinstance(links, list) else []:
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("name") or "")
        target = entry.get("cluster")
        target = str(target) if isinstance(target, str) and target else name
        if cluster is not None and cluster not in (target, name):
            continue
        gateway = entry.get("gateway")
        leader = entry.get("leader") is True
        mirrored = entry.get("mirrored")
        count = mirrored.get("mirror") if isinstance(mirrored, Mapping) else None
        alive: bool | None = None
        latency: float | None = None
        if isinstance(gateway, Mapping):
            value = gateway.get("alive")
            alive = value if isinstance(value, bool) and leader else None
            raw_latency = gateway.get("latency_ms")
            if alive and isinstance(raw_latency, int | float) and not isinstance(raw_latency, bool):
                latency = float(raw_latency)
        error_text = entry.get("error")
        rows.append(
            {
                "clusterName": target,
                "alive": alive,
                "numberOfServices": count if isinstance(count, int) and leader else None,
                "latency": latency,
                "link": name,
                "namespace": str(entry.get("namespace") or ""),
                "gateway": isinstance(gateway, Mapping),
                "leader": leader,
                "state": str(entry.get("state") or ""),
                "error": str(error_text)[:500] if error_text else None,
            }
        )
    rows.sort(key=lambda row: (row["clusterName"], row["link"]))
    return rows


def _alive_text(row: Mapping[str, Any]) -> str:
    if not row["gateway"]:
        return "-"
    if row["alive"] is None:
        return "unknown"
    return "True" if row["alive"] else "False"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    cells = [COLUMNS]
    for row in rows:
        latency = row["latency"]
        cells.append(
            (
                printable(row["clusterName"]),
                _alive_text(row),
                "-" if row["numberOfServices"] is None else str(row["numberOfServices"]),
                f"{latency:g}ms" if latency is not None else "-",
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    return "".join(
        "  ".join(
            [*(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)), line[-1]]
        ).rstrip()
        + "\n"
        for line in cells
    )


def notes(rows: Sequence[Mapping[str, Any]], admin: str) -> list[str]:
    said = []
    for row in rows:
        if not row["leader"]:
            said.append(
                f"{row['clusterName']}: the replica at {admin} does not run Link "
                f"{row['namespace']}/{row['link']} (standby): ask the replica that leads it"
            )
        elif row["error"]:
            said.append(f"{row['clusterName']}: {row['state']}: {row['error']}")
    return said


async def _fetch(admin: str, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False
        ) as session,
        session.get(f"http://{admin}/links", allow_redirects=False) as response,
    ):
        response.raise_for_status()
        document = json.loads(await response.content.read(16 * 1024 * 1024))
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    return document


def _gateways(args: argparse.Namespace) -> int:
    import aiohttp

    admin: str = args.mirror_admin or os.environ.get(ENV_MIRROR_ADMIN) or DEFAULT_MIRROR_ADMIN
    try:
        document = asyncio.run(_fetch(admin, args.timeout_s))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
        error(
            f"cannot read http://{admin}/links: {err or type(err).__name__} (is `destination "
            "mirror` running, and --mirror-admin its admin address?)"
        )
        return EXIT_FAILURE
    rows = gateway_rows(document, args.cluster_name)
    if args.cluster_name is not None and not rows:
        error(f"the mirror controller at {admin} runs no Link for cluster {args.cluster_name}")
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        sys.stdout.write(table(rows))
    else:
        print("no Links")
    for text in notes(rows, admin):
        note(text)
    dead = [row for row in rows if row["gateway"] and row["alive"] is False]
    return EXIT_DEAD if dead else EXIT_OK
