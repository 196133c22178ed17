"""Linkerd's Go destination controller as the second server of a side-by-side run.

`deploy/local/build-linkerd-destination.sh` builds Linkerd's controller binary
(`go build ./controller/cmd` of linkerd/linkerd2 at the commit pinned in
deploy/local/versions.env); its subcommand `destination` is the destination
server. What it needs to run against a benchmark cluster, found by reading
its `controller/cmd/destination` and trying it on tests/kube clusters:

* flags: `-addr` (gRPC) and `-metrics-addr` (admin: `/metrics`, `/ping`,
  `/ready`, 200 once its informers have synced, like ours), `-kubeconfig`,
  and the settings both servers share (bench/server.py `SharedFlags`):
  `-controller-namespace`, `-identity-trust-domain`, `-cluster-domain`,
  `-default-opaque-ports`, `-enable-h2-upgrade`, `-enable-ipv6`,
  `-outbound-transport-mode`; `-enable-endpoint-slices` is on (the default,
  and the only mode we have); `-log-level`;
* `HOSTNAME` in its environment (the identity of its ExternalWorkload
  EndpointSlice writer's Lease; it exits without it);
* at least one EndpointSlice in the cluster before it starts (it exits
  otherwise; the benchmark's workloads exist by then);
* the CRDs it checks in discovery and watches: ServiceProfile
  (linkerd.io/v1alpha2), Server (policy.linkerd.io/v1beta3) and
  ExternalWorkload, whose discovery check asks for workload.linkerd.io/v1alpha1
  while its informer watches v1beta1: `prepare_cluster` adds
  bench/crds/externalworkload-v1alpha1.yaml to our v1beta1 CRD;
* the controller namespace (`linkerd`) for that Lease, and list/watch of
  Pods, Services, Endpoints, EndpointSlices, Nodes, ReplicaSets, Jobs, the
  CRDs above and Secrets of its namespace (remote clusters): the benchmark
  gives it the cluster's admin kubeconfig. It reads no ConfigMap.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from tests.kube.binaries import REPO_ROOT, cache_dir, pinned_versions
from tests.kube.cluster import CRD_DIR, LocalCluster

from .server import ServerProcess, SharedFlags, free_port, start_process

BUILD_COMMAND = "deploy/local/build-linkerd-destination.sh"
BINARY_NAME = "linkerd2-controller"
EXTERNAL_WORKLOAD_CRD = CRD_DIR / "externalworkloads.workload.linkerd.io.yaml"
EXTRA_VERSION = REPO_ROOT / "bench" / "crds" / "externalworkload-v1alpha1.yaml"
DISCOVERY_CHECKED = "/apis/workload.linkerd.io/v1alpha1"
HOSTNAME = "bench-linkerd-destination"


def default_binary() -> Path:
    """Where build-linkerd-destination.sh puts the binary of the pinned commit."""
    commit = pinned_versions()["LINKERD2_COMMIT"]
    return cache_dir() / "bin" / f"{BINARY_NAME}-{commit}" / BINARY_NAME


def check_binary(binary: Path) -> Path:
    """The binary, or an error that says how to build it."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise FileNotFoundError(
            f"Linkerd's controller binary is not at {binary}; build it with "
            f"`{BUILD_COMMAND}` (LINKERD2_REPO=<a clone of linkerd/linkerd2> if GitHub is "
            "not reachable), or name one with --linkerd-controller PATH"
        )
    return binary


def destination_argv(
    binary: Path, *, grpc_address: str, admin_address: str, kubeconfig: Path, shared: SharedFlags
) -> list[str]:
    """The Go server's command line, with the settings our server gets too."""

    def flag(value: bool) -> str:
        return "true" if value else "false"

    return [
        str(binary),
        "destination",
        f"-addr={grpc_address}",
        f"-metrics-addr={admin_address}",
        f"-kubeconfig={kubeconfig}",
        f"-controller-namespace={shared.controller_namespace}",
        f"-identity-trust-domain={shared.identity_trust_domain}",
        f"-cluster-domain={shared.cluster_domain}",
        f"-default-opaque-ports={shared.default_opaque_ports}",
        f"-enable-h2-upgrade={flag(shared.enable_h2_upgrade)}",
        f"-enable-ipv6={flag(shared.enable_ipv6)}",
        f"-outbound-transport-mode={shared.outbound_transport_mode}",
        "-enable-endpoint-slices=true",
        "-log-level=warn",
    ]


def destination_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment it runs in: ours, plus the `HOSTNAME` it insists on."""
    env = dict(os.environ if base is None else base)
    env["HOSTNAME"] = HOSTNAME
    return env


def start_destination(
    binary: Path, *, kubeconfig: Path, log_path: Path, shared: SharedFlags
) -> ServerProcess:
    grpc_address = f"127.0.0.1:{free_port()}"
    admin_address = f"127.0.0.1:{free_port()}"
    argv = destination_argv(
        check_binary(binary),
        grpc_address=grpc_address,
        admin_address=admin_address,
        kubeconfig=kubeconfig,
        shared=shared,
    )
    return ServerProcess(
        process=start_process(argv, log_path=log_path, env=destination_env()),
        grpc_address=grpc_address,
        admin_address=admin_address,
        log_path=log_path,
    )


def crd_with_extra_version(crd: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    """Our CRD with one more served version (replacing one of the same name)."""
    if version.get("storage"):
        raise ValueError("the extra version must not be the storage version")
    out = copy.deepcopy(crd)
    versions = [v for v in out["spec"]["versions"] if v["name"] != version["name"]]
    out["spec"]["versions"] = [*versions, copy.deepcopy(version)]
    if sum(1 for v in out["spec"]["versions"] if v.get("storage")) != 1:
        raise ValueError("a CRD needs exactly one storage version")
    return out


def external_workload_crd() -> dict[str, Any]:
    """deploy/crds' ExternalWorkload CRD, also serving bench/crds' v1alpha1."""
    crd = yaml.safe_load(EXTERNAL_WORKLOAD_CRD.read_text())
    version = yaml.safe_load(EXTRA_VERSION.read_text())
    return crd_with_extra_version(crd, version)


def prepare_cluster(cluster: LocalCluster, shared: SharedFlags, timeout_s: float = 60.0) -> None:
    """What the Go server needs that a tests/kube cluster lacks (blocking: kubectl)."""
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=json.dumps(external_workload_crd()),
    )
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": shared.controller_namespace},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    deadline = time.monotonic() + timeout_s
    while True:  # until discovery serves the new version
        try:
            cluster.kubectl("get", "--raw", DISCOVERY_CHECKED)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
