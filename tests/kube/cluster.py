"""Real Kubernetes clusters on loopback: etcd, kube-apiserver, controllers, kwok.

A `LocalCluster` is one independent control plane with its own CA, etcd data,
pod and service CIDRs and cluster domain. Nothing is faked: the API server,
its watch cache and RBAC, the EndpointSlice and Deployment controllers and the
scheduler are the upstream binaries. Only the kubelets are simulated, by kwok,
which gives scheduled pods a Running status and an IP from the cluster's pod
CIDR. Pod CIDRs never overlap between clusters (a flat network), so a pod IP
names one pod across the whole multicluster mesh.

Clusters start in phases (`start_clusters`) so that several of them boot in
parallel: most of the time goes into waiting for each API server to become
ready, and that waiting overlaps.

A cluster can run extra API servers on the same etcd (`add_apiserver`), as an
HA control plane does. The controllers, the scheduler and kwok keep using the
primary one, so a test can take away the API server that the code under test
talks to while the cluster goes on changing, then bring it back.

Every process runs in its own process group with a parent-death signal, so a
crashed test run does not leave control planes behind; `stop()` terminates the
groups and waits for them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .binaries import REPO_ROOT, Binaries
from .pki import ClusterPki, KeyPair, create_cluster_pki

CRD_DIR = REPO_ROOT / "deploy" / "crds"

# Well-known names keep fixed CIDRs, so a pod IP tells which cluster it is from
# (east 10.11.x.x, west 10.12.x.x, north 10.13.x.x). Other names take the next
# free index.
WELL_KNOWN_INDEXES = {"east": 1, "west": 2, "north": 3, "south": 4}

# Controllers that make a cluster behave like a real one for service discovery.
# The node lifecycle controller lifts the not-ready taint that admission puts on
# every new node (kwok keeps the node leases fresh, so it never evicts).
# Left out on purpose: IPAM (kwok assigns pod IPs), volumes and certificates.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
)

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
ZONE_LABEL = "topology.kubernetes.io/zone"

STARTUP_TIMEOUT_S = 90.0


class ClusterStartError(RuntimeError):
    """A component did not come up; the message carries the end of its log."""


@dataclass(frozen=True)
class ClusterSpec:
    """What makes one cluster distinct from its neighbours."""

    name: str
    index: int
    cluster_domain: str = "cluster.local"
    node_count: int = 2
    # Extra kube-apiserver flags for every API server of the cluster (primary
    # and extras); a flag given here overrides the default value of the same flag.
    apiserver_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.index <= 80:
            raise ValueError(f"cluster index must be within 1..80, got {self.index}")

    @property
    def pod_cidr(self) -> str:
        return f"10.{10 + self.index}.0.0/16"

    @property
    def service_cidr(self) -> str:
        return f"10.{100 + self.index}.0.0/16"

    @property
    def service_cidr_v6(self) -> str:
        """The IPv6 service range: Services are dual-stack capable, as in real clusters."""
        return f"fd00:10:{100 + self.index}::/112"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.{100 + self.index}.0.1"

    @property
    def zones(self) -> tuple[str, ...]:
        """One zone per node, named after the cluster (east-a, east-b, ...)."""
        return tuple(f"{self.name}-{chr(ord('a') + i)}" for i in range(self.node_count))

    def node_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-node-{i}" for i in range(self.node_count))


def specs_for(
    names: Sequence[str],
    *,
    cluster_domain: str = "cluster.local",
    apiserver_args: Sequence[str] = (),
) -> list[ClusterSpec]:
    """Specs with distinct indexes: well-known names keep theirs, others follow."""
    if len(set(names)) != len(names):
        raise ValueError(f"cluster names must be distinct: {list(names)}")
    taken = {WELL_KNOWN_INDEXES[n] for n in names if n in WELL_KNOWN_INDEXES}
    spare = (i for i in range(5, 81) if i not in taken)
    return [
        ClusterSpec(
            name=name,
            index=WELL_KNOWN_INDEXES.get(name) or next(spare),
            cluster_domain=cluster_domain,
            apiserver_args=tuple(apiserver_args),
        )
        for name in names
    ]


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports, all reserved at once so they cannot collide."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# util-linux's setpriv sets the parent-death signal and then execs the
# component, so no Python runs between fork and exec (a preexec_fn is unsafe
# in a process with other threads: gRPC's, the event loop's executor).
_SETPRIV = shutil.which("setpriv")


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """Kill the component when the process (thread) that started it dies.

    SIGKILL, not SIGTERM: this path only runs after a crash, and a kube-apiserver
    whose etcd died with it can hang in its graceful shutdown.
    """
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def kubeconfig_text(
    *, cluster: str, server: str, ca: Path, user: str, credentials: dict[str, str]
) -> str:
    """A single-context kubeconfig with everything embedded (portable as a Secret)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca.read_bytes())},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(
    path: Path, *, cluster: str, server: str, ca: Path, user: str, credentials: dict[str, str]
) -> None:
    """`kubeconfig_text` in a file only its owner can read (it holds credentials)."""
    path.write_text(
        kubeconfig_text(cluster=cluster, server=server, ca=ca, user=user, credentials=credentials)
    )
    path.chmod(0o600)


def _client_cert_credentials(pair: KeyPair) -> dict[str, str]:
    return {
        "client-certificate-data": base64.b64encode(pair.cert_pem()).decode(),
        "client-key-data": base64.b64encode(pair.key_pem()).decode(),
    }


@dataclass
class LocalCluster:
    """One running control plane. Create with `start_clusters`."""

    spec: ClusterSpec
    directory: Path
    binaries: Binaries
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    pki: ClusterPki | None = None
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _extra_apiservers: dict[str, ExtraApiServer] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (system:masters); `kubectl --kubeconfig` works with it."""
        return self.directory / "admin.kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

    def describe(self) -> dict[str, Any]:
        """What a person or a script needs to reach this cluster."""
        return {
            "name": self.name,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "cluster_domain": self.spec.cluster_domain,
            "pod_cidr": self.spec.pod_cidr,
            "service_cidr": self.spec.service_cidr,
            "service_cidr_v6": self.spec.service_cidr_v6,
            "zones": list(self.spec.zones),
            "logs": str(self.log_dir),
        }

    # -- processes ---------------------------------------------------------

    def _spawn(self, component: str, argv: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{component}.log", "ab") as log:
            self._processes[component] = subprocess.Popen(
                _with_parent_death_signal(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _check_alive(self, component: str) -> None:
        process = self._processes.get(component)
        if process is not None and process.poll() is not None:
            raise ClusterStartError(
                f"{self.name}: {component} exited with code {process.returncode}; "
                f"last lines of {self.log_dir / component}.log:\n"
                f"{_tail(self.log_dir / f'{component}.log')}"
            )

    def _stop_component(self, component: str, *, timeout_s: float = 15.0) -> None:
        process = self._processes.pop(component, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def _signal_component(self, component: str, signum: signal.Signals) -> None:
        process = self._processes.get(component)
        if process is None or process.poll() is not None:
            raise ClusterStartError(f"{self.name}: {component} is not running")
        os.killpg(process.pid, signum)

    def running_components(self) -> list[str]:
        return [name for name, p in self._processes.items() if p.poll() is None]

    # -- phases ------------------------------------------------------------

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pki = create_cluster_pki(
            self.directory / "pki",
            cluster=self.name,
            cluster_domain=self.spec.cluster_domain,
            service_ip=self.spec.kubernetes_service_ip,
        )
        for user, pair in (
            ("admin", self.pki.admin),
            ("controller-manager", self.pki.controller_manager),
            ("scheduler", self.pki.scheduler),
            ("kwok", self.pki.kwok),
        ):
            write_kubeconfig(
                self.directory / f"{user}.kubeconfig",
                cluster=self.name,
                server=self.server,
                ca=self.pki.ca.cert,
                user=user,
                credentials=_client_cert_credentials(pair),
            )
        (self.directory / "cluster.json").write_text(json.dumps(self.describe(), indent=2))

    def start_etcd(self) -> None:
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--name={self.name}",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster={self.name}=http://127.0.0.1:{self.etcd_peer_port}",
                # Test data is thrown away after the run: durability buys nothing.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def wait_etcd(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.etcd_port}/health"
        while True:
            self._check_alive("etcd")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if json.loads(response.read()).get("health") == "true":
                    return
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{self.name}: etcd not healthy at {url}")
            time.sleep(0.2)

    def _apiserver_argv(self, *, port: int, cert_dir: Path, extra: Sequence[str] = ()) -> list[str]:
        """Flags of every API server of this cluster; `extra` comes last, so it overrides.

        kube-apiserver keeps the last value of a repeated flag, which is what
        lets ClusterSpec.apiserver_args and an extra server's own flags replace
        a default here.
        """
        assert self.pki is not None, "prepare() first"
        issuer = f"https://kubernetes.default.svc.{self.spec.cluster_domain}"
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={self.pki.apiserver.cert}",
            f"--tls-private-key-file={self.pki.apiserver.key}",
            f"--client-ca-file={self.pki.ca.cert}",
            f"--service-cluster-ip-range={self.spec.service_cidr},{self.spec.service_cidr_v6}",
            f"--service-account-issuer={issuer}",
            f"--api-audiences={issuer}",
            f"--service-account-key-file={self.pki.service_account_pub}",
            f"--service-account-signing-key-file={self.pki.service_account_key}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.spec.apiserver_args,
            *extra,
        ]

    def start_apiserver(self) -> None:
        self._spawn(
            "kube-apiserver",
            self._apiserver_argv(
                port=self.apiserver_port, cert_dir=self.directory / "apiserver-certs"
            ),
        )

    def _https_get(self, path: str, *, server: str | None = None) -> tuple[int, bytes]:
        """GET as the admin, from the primary API server unless `server` names another."""
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        url = (server or self.server) + path
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _wait_ready(self, component: str, server: str, deadline: float) -> None:
        last = "no answer"
        while True:
            self._check_alive(component)
            try:
                status, body = self._https_get("/readyz", server=server)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[-500:].decode(errors='replace')}"
            except OSError as err:
                last = str(err)
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{self.name}: {component} not ready at {server}: {last}\n"
                    f"{_tail(self.log_dir / f'{component}.log')}"
                )
            time.sleep(0.25)

    def wait_apiserver(self, deadline: float) -> None:
        self._wait_ready("kube-apiserver", self.server, deadline)

    def add_apiserver(
        self,
        name: str = "kube-apiserver-2",
        *,
        args: Sequence[str] = (),
        timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> ExtraApiServer:
        """Start one more API server on this cluster's etcd and return once it is ready.

        It keeps one loopback port for its whole life (a restart reuses it, so
        clients reconnect to the same URL) and serves the primary's
        certificate, whose IP SAN 127.0.0.1 holds whatever the port. `args` are
        flags for this server only (they come after ClusterSpec.apiserver_args).
        """
        assert self.pki is not None, "prepare() first"
        reserved = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        if name in reserved or name in self._extra_apiservers:
            raise ValueError(f"{self.name}: component name {name!r} is already taken")
        (port,) = _free_ports(1)
        extra = ExtraApiServer(cluster=self, name=name, port=port, args=tuple(args))
        self._extra_apiservers[name] = extra
        write_kubeconfig(
            extra.kubeconfig,
            cluster=self.name,
            server=extra.server,
            ca=self.pki.ca.cert,
            user="admin",
            credentials=_client_cert_credentials(self.pki.admin),
        )
        extra.start(timeout_s=timeout_s)
        return extra

    @property
    def extra_apiservers(self) -> list[ExtraApiServer]:
        return list(self._extra_apiservers.values())

    def start_workers(self) -> None:
        """Controllers, scheduler and kwok: everything that needs a ready API server."""
        assert self.pki is not None
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.pki.service_account_key}",
                f"--root-ca-file={self.pki.ca.cert}",
                f"--cluster-name={self.name}",
                "--leader-elect=false",
                "--secure-port=0",
                # Each controller acts as its own ServiceAccount with its bootstrap role,
                # as in a kubeadm cluster; the manager's own user may do little else.
                "--use-service-account-credentials=true",
                # Scale tests create and delete pods in bursts; the defaults
                # (20 qps) would make the controllers the bottleneck.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-service-endpoint-syncs=10",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={self.directory / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={self.directory / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                # kwok hands out addresses from the one it is given: start at
                # the first host, not the network address.
                f"--cidr={self.spec.pod_cidr.replace('.0/', '.1/')}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )

    def bootstrap(self) -> None:
        """CRDs the destination service reads, and the fake nodes (one per zone)."""
        self.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        nodes = [
            self._node_manifest(name, zone)
            for name, zone in zip(self.spec.node_names(), self.spec.zones, strict=True)
        ]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )

    def _node_manifest(self, name: str, zone: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    ZONE_LABEL: zone,
                    "topology.kubernetes.io/region": self.name,
                },
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            },
        }

    def wait_workers(self, deadline: float) -> None:
        """Nodes Ready (kwok runs) and a default ServiceAccount (controllers run)."""
        while True:
            for component in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._check_alive(component)
            if self._nodes_ready() and self._default_service_account_exists():
                (self.directory / "ready").touch()
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{self.name}: nodes or controllers not ready; see logs in {self.log_dir}"
                )
            time.sleep(0.3)

    def _nodes_ready(self) -> bool:
        status, body = self._https_get("/api/v1/nodes")
        if status != 200:
            return False
        ready = 0
        for node in json.loads(body).get("items", []):
            conditions = node.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready += 1
        return ready >= self.spec.node_count

    def _default_service_account_exists(self) -> bool:
        status, _ = self._https_get("/api/v1/namespaces/default/serviceaccounts/default")
        return status == 200

    # -- operations used by tests and the CLI --------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run the pinned kubectl against this cluster; raise with its stderr on failure."""
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: kubectl {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()}"
            )
        return result.stdout

    def stop_apiserver(self, *, grace_s: float = 3.0) -> None:
        """Take the API server away (a remote-cluster outage); etcd keeps the data.

        SIGKILL after `grace_s`: with watches open it would take a minute to
        exit by itself (see ExtraApiServer.stop).
        """
        self._stop_component("kube-apiserver", timeout_s=grace_s)

    def restart_apiserver(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Bring the API server back on the same port with the same data."""
        self.start_apiserver()
        self.wait_apiserver(time.monotonic() + timeout_s)

    def stop(self) -> None:
        """Stop every component, workers first, then the API servers, etcd last."""
        for component in (
            "kwok",
            "kube-scheduler",
            "kube-controller-manager",
            *self._extra_apiservers,
            "kube-apiserver",
            "etcd",
        ):
            self._stop_component(component)


@dataclass
class ExtraApiServer:
    """One more kube-apiserver of a LocalCluster, on the same etcd (an HA control plane).

    Nothing else in the cluster uses it: controllers, scheduler and kwok talk
    to the primary, so stopping this one takes the API away from the code
    under test only, while the cluster goes on changing behind it. It stays
    out of the `kubernetes` Service's endpoint reconciliation: it advertises
    the primary's address, so it would share the primary's master lease (keyed
    by address) and delete it each time it stops. On loopback that Service has
    no endpoints anyway (the API refuses 127.0.0.1 as an endpoint address).
    """

    cluster: LocalCluster
    name: str
    port: int
    args: tuple[str, ...] = ()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig that talks to this server, not to the primary."""
        return self.cluster.directory / f"admin-{self.name}.kubeconfig"

    @property
    def running(self) -> bool:
        return self.name in self.cluster.running_components()

    def start(self, *, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Start it on its port (again) and wait until /readyz answers 200."""
        if self.running:
            return
        cluster = self.cluster
        cluster._spawn(
            self.name,
            cluster._apiserver_argv(
                port=self.port,
                cert_dir=cluster.directory / f"{self.name}-certs",
                # Before self.args, so a test can still ask for the lease reconciler.
                extra=("--endpoint-reconciler-type=none", *self.args),
            ),
        )
        cluster._wait_ready(self.name, self.server, time.monotonic() + timeout_s)

    def pause(self) -> None:
        """SIGSTOP: the process and its sockets stay, nothing answers (a hung server).

        The kernel still accepts connections and acknowledges data for it, so
        a client sees open, silent connections: no reset, no refusal.
        """
        self.cluster._signal_component(self.name, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`: it answers again, with everything queued meanwhile."""
        self.cluster._signal_component(self.name, signal.SIGCONT)

    def stop(self, *, grace_s: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; etcd keeps the data.

        kube-apiserver stops listening at once on SIGTERM, but with its default
        flags it leaves open watches alone and exits a minute later (measured
        with 1.34). A test should not wait that long, so a server with watchers
        is killed after `grace_s`, and they see their streams cut short, as when
        a kubelet kills an API server at the end of its pod's grace period.
        Start the server with `--shutdown-watch-termination-grace-period=<d>`
        to have it end watches cleanly instead. A paused server is resumed first
        (a stopped process would only act on SIGTERM once continued).
        """
        if self.running:
            self.resume()
        self.cluster._stop_component(self.name, timeout_s=grace_s)


def start_clusters(
    specs: Iterable[ClusterSpec],
    *,
    base_dir: Path | None = None,
    binaries: Binaries | None = None,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> list[LocalCluster]:
    """Start every cluster, phase by phase, and return them once all are ready.

    On any failure every process started so far is stopped before the error
    propagates, so a failed start leaves nothing behind.
    """
    binaries = binaries or Binaries.locate()
    specs = list(specs)
    base_dir = base_dir or Path(tempfile.mkdtemp(prefix="mcd-clusters-"))
    ports = iter(_free_ports(3 * len(specs)))
    clusters = [
        LocalCluster(
            spec=spec,
            directory=base_dir / spec.name,
            binaries=binaries,
            etcd_port=next(ports),
            etcd_peer_port=next(ports),
            apiserver_port=next(ports),
        )
        for spec in specs
    ]
    deadline = time.monotonic() + timeout_s
    try:
        for cluster in clusters:
            cluster.prepare()
            cluster.start_etcd()
        for cluster in clusters:
            cluster.wait_etcd(deadline)
            cluster.start_apiserver()
        for cluster in clusters:
            cluster.wait_apiserver(deadline)
            cluster.bootstrap()
            cluster.start_workers()
        for cluster in clusters:
            cluster.wait_workers(deadline)
    except BaseException:
        stop_clusters(clusters)
        raise
    return clusters


def stop_clusters(clusters: Iterable[LocalCluster], *, remove_dir: Path | None = None) -> None:
    for cluster in clusters:
        cluster.stop()
    if remove_dir is not None:
        shutil.rmtree(remove_dir, ignore_errors=True)


@contextlib.contextmanager
def running_clusters(
    names: Sequence[str], *, cluster_domain: str = "cluster.local", keep_dir: bool = False
) -> Iterator[list[LocalCluster]]:
    """Start the named clusters for the duration of a `with` block."""
    base_dir = Path(tempfile.mkdtemp(prefix="mcd-clusters-"))
    clusters = start_clusters(specs_for(names, cluster_domain=cluster_domain), base_dir=base_dir)
    try:
        yield clusters
    finally:
        stop_clusters(clusters, remove_dir=None if keep_dir else base_dir)
