"""Start local Kubernetes clusters for development: `python -m tests.kube up east west`.

Prints how to reach each cluster (kubeconfig paths, CIDRs, zones), keeps them
running until Ctrl-C or SIGTERM, then stops every process and removes the
state directory (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from .binaries import BinariesMissing
from .cluster import ClusterStartError, running_clusters


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube",
        description="Real Kubernetes control planes on loopback (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kwok) for tests and demos.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start clusters and keep them running until Ctrl-C")
    up.add_argument(
        "names",
        nargs="*",
        default=["east", "west"],
        help="cluster names (default: east west); east/west/north/south keep "
        "fixed pod CIDRs 10.11/10.12/10.13/10.14.0.0/16",
    )
    up.add_argument(
        "--cluster-domain",
        default="cluster.local",
        help="DNS suffix of services in every cluster (default: cluster.local)",
    )
    up.add_argument(
        "--keep",
        action="store_true",
        help="keep the state directory (certificates, etcd data, logs) on exit",
    )
    up.add_argument(
        "--env-file",
        type=Path,
        help="also write KUBECONFIG_<NAME>=path lines to this file once ready",
    )
    up.add_argument("--json", action="store_true", help="print the cluster details as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started = time.monotonic()
    try:
        with running_clusters(
            args.names, cluster_domain=args.cluster_domain, keep_dir=args.keep
        ) as clusters:
            took = time.monotonic() - started
            details = [cluster.describe() for cluster in clusters]
            if args.json:
                print(json.dumps({"started_in_s": round(took, 1), "clusters": details}))
            else:
                print(f"{len(clusters)} cluster(s) ready in {took:.1f}s")
                for d in details:
                    print(
                        f"  {d['name']:<8} {d['server']}  pods {d['pod_cidr']}  "
                        f"services {d['service_cidr']},{d['service_cidr_v6']}  "
                        f"zones {','.join(d['zones'])}"
                    )
                    print(f"           kubectl --kubeconfig {d['kubeconfig']} get nodes")
                print("Ctrl-C stops every cluster.")
            if args.env_file:
                args.env_file.write_text(
                    "".join(f"KUBECONFIG_{d['name'].upper()}={d['kubeconfig']}\n" for d in details)
                )
            sys.stdout.flush()
            while not stop.wait(1.0):
                for cluster in clusters:
                    if len(cluster.running_components()) < 5:
                        print(
                            f"{cluster.name}: a component stopped; see {cluster.log_dir}",
                            file=sys.stderr,
                        )
                        return 1
    except (BinariesMissing, ClusterStartError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
