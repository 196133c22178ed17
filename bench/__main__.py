"""`python -m bench --scenario ...`: see bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from . import linkerd_go
from .compare import add_ratios
from .contenders import OURS, CompareSpec
from .profiles import run_profile
from .report import check_targets, table
from .run import Options, run_all
from .scenarios import DEFAULT_NAMES, GROUPS, NAMES, SHAPE_NAMES, SoakSettings, build, expand
from .soak import run_soak


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load benchmark of `destination serve` on local clusters (loopback only).",
    )
    p.add_argument(
        "--scenario",
        choices=[*NAMES, *GROUPS],
        default="all",
        help=f"all: {', '.join(DEFAULT_NAMES)} (the others run only when named); "
        f"shapes: {', '.join(SHAPE_NAMES)} (issue 12's side-by-side shapes)",
    )
    p.add_argument(
        "--cycles",
        type=int,
        default=None,
        help="up/down cycles (default: small-oscillation 3, large-rollout 2, many-services 2, "
        "federated 3); profile: cycles of its five ServiceProfile/Service steps (default 2)",
    )
    p.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    p.add_argument(
        "--channels-per-proc", type=int, default=4, help="gRPC connections per client process"
    )
    p.add_argument("--hold-seconds", type=float, default=60.0, help="baseline hold (default 60)")
    p.add_argument(
        "--rolling-restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="large-rollout: one rolling restart at 1,000 endpoints (default on)",
    )
    p.add_argument("--many-services", type=int, default=100, help="many-services: services")
    p.add_argument("--many-low", type=int, default=50, help="many-services: low endpoint count")
    p.add_argument("--many-high", type=int, default=100, help="many-services: high endpoint count")
    p.add_argument(
        "--soak-minutes", type=float, default=30.0, help="soak: minutes of churn (default 30)"
    )
    p.add_argument(
        "--soak-warmup-minutes",
        type=float,
        default=5.0,
        help="soak: RSS growth is read after this warm-up (default 5)",
    )
    p.add_argument(
        "--soak-streams-per-target",
        type=int,
        default=100,
        help="soak: Get streams per service (default 100)",
    )
    p.add_argument("--seed", type=int, default=1, help="soak: random seed (default 1)")
    p.add_argument(
        "--profile-services", type=int, default=100, help="profile: services (default 100)"
    )
    p.add_argument(
        "--profile-streams-per-service",
        type=int,
        default=100,
        help="profile: clients per service, each with a GetProfile and a Get stream (default 100)",
    )
    p.add_argument(
        "--profile-endpoints",
        type=int,
        default=10,
        help="profile: ready pods per service (default 10)",
    )
    p.add_argument(
        "--max-load",
        type=float,
        default=1.0,
        help="wait (up to --load-wait) for the 1-min load average to fall below this",
    )
    p.add_argument("--load-wait", type=float, default=300.0, help="seconds; default 300")
    p.add_argument("--work-dir", type=Path, default=None, help="logs and cluster state")
    p.add_argument(
        "--profile-server",
        action="store_true",
        help="run the server under cProfile (slow); writes <work-dir>/<scenario>-server.prof",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `destination serve` (repeat; e.g. "
        "--server-arg=--stream-stuck-deadline-s=3600)",
    )
    side = p.add_argument_group(
        "side by side",
        "run a second destination server on the same cluster at the same time, with the same "
        "settings and its own client processes opening the same streams, and report both and "
        "the ratios ours/theirs (bench/README.md, 'Side by side with Linkerd's Go controller')",
    )
    second = side.add_mutually_exclusive_group()
    second.add_argument(
        "--compare-with",
        choices=["linkerd", "ours"],
        default=None,
        help="linkerd: Linkerd's Go destination controller, built by "
        "deploy/local/build-linkerd-destination.sh (results named 'go'); ours: a second copy "
        "of our server, an A/A check of the harness ('py2')",
    )
    second.add_argument(
        "--compare-command",
        metavar="TEMPLATE",
        default=None,
        help="any other destination server: a command line (split like a shell would, run "
        "without one) with placeholders {grpc_address}, {admin_address}, {kubeconfig}, "
        "{controller_namespace}, {cluster_domain}, {identity_trust_domain}, "
        "{default_opaque_ports}; it must answer /ready on {admin_address} ('other')",
    )
    side.add_argument(
        "--linkerd-controller",
        metavar="PATH",
        default=None,
        help="with --compare-with linkerd: the controller binary (default: the pinned build "
        "in the cache)",
    )
    side.add_argument(
        "--second-first",
        action="store_true",
        help="start the second server and its clients before ours (and poll them first): "
        "run once each way to tell an order effect from a difference between the servers",
    )
    p.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON results")
    p.add_argument(
        "--note",
        default=None,
        help="a note kept in the JSON (e.g. 'trial run on a shared machine: numbers not final')",
    )
    return p


def compare_spec(args: argparse.Namespace) -> CompareSpec | None:
    """The second server of a side-by-side run, from the flags (None: ours alone)."""
    if args.second_first and args.compare_with is None and args.compare_command is None:
        raise ValueError("--second-first goes with --compare-with or --compare-command")
    if args.linkerd_controller and args.compare_with != "linkerd":
        raise ValueError("--linkerd-controller goes with --compare-with linkerd")
    if args.compare_command is not None:
        return CompareSpec("command", command=args.compare_command)
    if args.compare_with is not None:
        return CompareSpec(args.compare_with, binary=args.linkerd_controller)
    return None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM behaves like Ctrl-C: asyncio cancels the scenario, finally blocks clean up.
    os.kill(os.getpid(), signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if (
        args.client_procs < 1
        or args.channels_per_proc < 1
        or (args.cycles is not None and args.cycles < 1)
    ):
        print(
            "error: --client-procs, --channels-per-proc and --cycles must be >= 1", file=sys.stderr
        )
        return 2
    names = list(expand(args.scenario))
    try:
        compare = compare_spec(args)
        if compare is not None and "soak" in names:
            raise ValueError("the soak does not run side by side (it rotates our link Secrets)")
        soak = SoakSettings(
            minutes=args.soak_minutes,
            warmup_minutes=args.soak_warmup_minutes,
            streams_per_target=args.soak_streams_per_target,
            seed=args.seed,
        )
        scenarios = [
            build(
                name,
                cycles=args.cycles,
                hold_s=args.hold_seconds,
                rolling_restart=args.rolling_restart,
                many_low=args.many_low,
                many_high=args.many_high,
                many_services=args.many_services,
                soak=soak,
                profile_services=args.profile_services,
                profile_streams_per_service=args.profile_streams_per_service,
                profile_endpoints=args.profile_endpoints,
            )
            for name in names
        ]
        if compare is not None and compare.kind == "linkerd":
            linkerd_go.check_binary(
                Path(compare.binary) if compare.binary else linkerd_go.default_binary()
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    options = Options(
        client_procs=args.client_procs,
        channels_per_proc=args.channels_per_proc,
        max_load=args.max_load,
        load_wait_s=args.load_wait,
        work_dir=args.work_dir,
        profile_server=args.profile_server,
        server_args=tuple(args.server_arg),
        compare=compare,
        second_first=args.second_first,
    )
    # Ctrl-C and SIGTERM stop the run cleanly, even when started from a shell that
    # ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    document = run_all(scenarios, options, {"soak": run_soak, "profile": run_profile})
    if args.note:
        document["note"] = args.note
    document["command"] = " ".join(
        ["python -m bench", *(argv if argv is not None else sys.argv[1:])]
    )
    for result in document["scenarios"]:
        result["targets"] = check_targets(result)
        add_ratios(result, OURS)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    print(table(document))
    print(f"\nJSON written to {args.out}")
    if document.get("interrupted"):
        return 130
    return 1 if any("error" in r for r in document["scenarios"]) else 0


if __name__ == "__main__":
    sys.exit(main())
