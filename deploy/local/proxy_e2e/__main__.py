"""End-to-end check of `destination serve` with a real linkerd2-proxy.

Run it through deploy/local/proxy-e2e.sh, which builds what it needs and starts
it in a private network namespace (see netns.py for why):

    deploy/local/proxy-e2e.sh [--keep] [--hold]

What it starts in that namespace, all torn down at the end:

* a local cluster (``east``, from tests/kube: real etcd, kube-apiserver,
  controllers and kwok), with a Service ``web.e2e`` (no selector) and an
  EndpointSlice listing two endpoints in the pod range, 10.11.250.1:8080 and
  10.11.250.2:8080, where two real HTTP servers listen (backend.py);
* ``destination serve`` on 127.0.0.1:8086, which is the proxy's destination
  *and* policy address (it answers UNIMPLEMENTED on the policy API, and the
  proxy then builds its routing from the profile, as with Linkerd 2.12);
* a test certificate signer on 127.0.0.1:8080 (identity_signer.py);
* linkerd2-proxy in ingress mode with Linkerd's default ports (outbound 4140,
  inbound 4143, admin 4191); an iptables rule sends TCP to the Service range to
  the outbound port, as proxy-init does in a meshed pod.

What it checks, printing PASS or FAIL for each (exit status 1 on any FAIL):
the proxy is certified and ready; a request with ``l5d-dst-override`` (ingress
mode: GetProfile by name) reaches a backend, and the proxy's balancer holds
both endpoints (so they came from our ``GetProfile`` + ``Get``: nothing else
knows them); an endpoint removed from the EndpointSlice leaves the balancer
and gets no more requests, and comes back when re-added (live ``Get``
updates); a request to the Service's ClusterIP (redirected: GetProfile by IP)
reaches a backend; without a ServiceProfile a slow request waits and a
failing one fails; once a ServiceProfile with a 500ms route timeout and a
retryable route is applied, the proxy answers the slow route with 504 in
about 500ms and turns the failing request into a success with a second
attempt; a changed timeout (1200ms) applies on the live stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.kube.binaries import BinariesMissing
from tests.kube.cluster import ClusterStartError, LocalCluster, running_clusters, specs_for

from . import netns
from .backend import SLOW_S, Backend
from .identity_signer import IdentityCa, IdentitySigner, start_signer, write_proxy_documents

REPO_ROOT = Path(__file__).resolve().parents[3]

NAMESPACE = "e2e"
SERVICE = "web"
SERVICE_PORT = 80
CLUSTER = "east"
CLUSTER_DOMAIN = "cluster.local"
AUTHORITY = f"{SERVICE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}:{SERVICE_PORT}"
PROXY_IDENTITY = f"ingress.{NAMESPACE}.serviceaccount.identity.linkerd.{CLUSTER_DOMAIN}"
ROUTE_TIMEOUT_MS = 500
UPDATED_TIMEOUT_MS = 1200
MANAGED_BY = "proxy-e2e.multicluster-destination"

# The namespace is private, so the well-known ports can be used as they are.
BACKENDS = {"web-a": "10.11.250.1", "web-b": "10.11.250.2"}  # in east's pod range
BACKEND_PORT = 8080
DESTINATION_ADDR = "127.0.0.1:8086"
DESTINATION_ADMIN_ADDR = "127.0.0.1:9996"
IDENTITY_ADDR = "127.0.0.1:8080"
PROXY_OUTBOUND_PORT = 4140
PROXY_INBOUND_PORT = 4143
PROXY_CONTROL_PORT = 4190
PROXY_ADMIN_PORT = 4191

# The proxy decides between a profile's routes and its default routing when it
# builds a target's stack, and keeps that stack while requests use it; an idle
# target is dropped after LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT (5 s by
# default) and rebuilt, with the routes, on the next request. Changes to a
# profile that already has routes apply at once.
PROXY_DISCOVERY_IDLE_S = 5.0

READY_TIMEOUT_S = 60.0
DISCOVERY_TIMEOUT_S = 30.0
PROFILE_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 10.0
SPREAD_REQUESTS = 30


@dataclass
class Report:
    """PASS/FAIL lines as the checks run, and the verdict at the end."""

    failures: list[str] = field(default_factory=list)
    passed: int = 0

    def check(self, name: str, ok: bool, detail: str) -> bool:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failures.append(name)
        return ok


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]
    seconds: float


@dataclass
class Process:
    """A child process with its log file; its process group is ended at the end."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)


_SETPRIV = shutil.which("setpriv")


def _spawn(name: str, argv: list[str], *, env: dict[str, str], log: Path) -> Process:
    """Start ``argv`` in its own process group, killed if this process dies first.

    The parent-death signal (util-linux setpriv) covers what ``finally`` cannot:
    a SIGKILL of the driver must not leave a proxy or a server running.
    """
    if _SETPRIV is not None:
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name=name, popen=popen, log=log)


async def _eventually(
    what: str, probe: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.2
) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if await probe():
            return True
        if time.monotonic() > deadline:
            print(f"      ... gave up waiting for {what} after {timeout_s:.0f}s", flush=True)
            return False
        await asyncio.sleep(interval_s)


async def _http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _endpoint_slice(backends: dict[str, str]) -> dict[str, object]:
    """The Service's one EndpointSlice, listing ``backends`` (name -> address)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{SERVICE}-backends",
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}} for address in backends.values()
        ],
        "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
    }


def _manifests() -> str:
    """The Service without a selector, and its EndpointSlice listing the backends."""
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP"}]},
        },
        _endpoint_slice(BACKENDS),
    ]
    return "\n---\n".join(json.dumps(doc) for doc in docs)


def _service_profile(timeout_ms: int) -> str:
    profile = {
        "apiVersion": "linkerd.io/v1alpha2",
        "kind": "ServiceProfile",
        "metadata": {"name": f"{SERVICE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}", "namespace": NAMESPACE},
        "spec": {
            "routes": [
                {
                    "name": "GET /slow",
                    "condition": {"method": "GET", "pathRegex": "/slow"},
                    "timeout": f"{timeout_ms}ms",
                },
                {
                    "name": "GET /flaky/{key}",
                    "condition": {"method": "GET", "pathRegex": "/flaky/[^/]*"},
                    "isRetryable": True,
                },
            ],
            "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
        },
    }
    return json.dumps(profile)


class Run:
    """Everything one end-to-end run started, and the checks."""

    def __init__(self, cluster: LocalCluster, proxy: Path, state: Path) -> None:
        self.cluster = cluster
        self.proxy_bin = proxy
        self.state = state
        self.report = Report()
        self.processes: list[Process] = []
        self.attempts: Counter[str] = Counter()
        self.backends = [
            Backend(name=name, host=address, port=BACKEND_PORT, attempts=self.attempts)
            for name, address in BACKENDS.items()
        ]

    async def kubectl(self, *args: str, input: str | None = None) -> str:
        return await asyncio.to_thread(self.cluster.kubectl, *args, input=input)

    # -- components -----------------------------------------------------------

    def start_destination(self) -> Process:
        argv = [
            sys.executable,
            "-m",
            "destination",
            "serve",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--cluster-name",
            self.cluster.name,
            "--cluster-domain",
            CLUSTER_DOMAIN,
            "--listen-address",
            DESTINATION_ADDR,
            "--admin-address",
            DESTINATION_ADMIN_ADDR,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATION_")}
        process = _spawn("destination", argv, env=env, log=self.state / "destination.log")
        self.processes.append(process)
        return process

    def proxy_environment(self, ca: IdentityCa, identity_dir: Path, token: Path) -> dict[str, str]:
        spec = self.cluster.spec
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LINKERD2_PROXY_LOG": os.environ.get("MCD_E2E_PROXY_LOG", "warn,linkerd=info"),
            "LINKERD2_PROXY_LOG_FORMAT": "plain",
            # Ingress mode: route by l5d-dst-override when a request has it, else by
            # the connection's original destination.
            "LINKERD2_PROXY_INGRESS_MODE": "true",
            # Control plane on loopback: plaintext, no server identity to check.
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": DESTINATION_ADDR,
            "LINKERD2_PROXY_POLICY_SVC_ADDR": DESTINATION_ADDR,
            "LINKERD2_PROXY_POLICY_WORKLOAD": json.dumps({"ns": NAMESPACE, "pod": "ingress-0"}),
            "LINKERD2_PROXY_DESTINATION_CONTEXT": json.dumps(
                {"ns": NAMESPACE, "nodeName": spec.node_names()[0], "pod": "ingress-0"}
            ),
            # Addresses the proxy asks GetProfile about (names under svc.cluster.local
            # always are): the cluster's pod and Service ranges.
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": ",".join(
                (spec.pod_cidr, spec.service_cidr, spec.service_cidr_v6)
            ),
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR": IDENTITY_ADDR,
            "LINKERD2_PROXY_IDENTITY_DIR": str(identity_dir),
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": str(token),
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": ca.trust_anchors_pem(),
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": PROXY_IDENTITY,
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR": f"127.0.0.1:{PROXY_OUTBOUND_PORT}",
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": f"127.0.0.1:{PROXY_INBOUND_PORT}",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": f"127.0.0.1:{PROXY_ADMIN_PORT}",
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": f"127.0.0.1:{PROXY_CONTROL_PORT}",
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY": "all-unauthenticated",
        }

    # -- requests through the proxy -------------------------------------------

    async def request(
        self, session: aiohttp.ClientSession, path: str, *, to_ip: str | None = None
    ) -> Reply:
        """GET ``path`` through the proxy: by name to its outbound port, or to a ClusterIP.

        A request to ``to_ip`` goes to that Service address, port 80; the NAT
        rule of the namespace hands the connection to the proxy.
        """
        started = time.monotonic()
        if to_ip is None:
            url = f"http://127.0.0.1:{PROXY_OUTBOUND_PORT}{path}"
            headers = {"l5d-dst-override": AUTHORITY}
        else:
            url = f"http://{to_ip}:{SERVICE_PORT}{path}"
            headers = {}
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        ) as response:
            body = await response.text()
            return Reply(
                status=response.status,
                body=body.strip(),
                headers={k.lower(): v for k, v in response.headers.items()},
                seconds=time.monotonic() - started,
            )

    async def _first_200(
        self, session: aiohttp.ClientSession, path: str, *, to_ip: str | None = None
    ) -> Reply | None:
        found: list[Reply] = []

        async def answered() -> bool:
            try:
                reply = await self.request(session, path, to_ip=to_ip)
            except (aiohttp.ClientError, TimeoutError):
                return False
            if reply.status == 200:
                found.append(reply)
            return bool(found)

        target = to_ip or AUTHORITY
        await _eventually(
            f"a 200 through the proxy for {target}", answered, timeout_s=DISCOVERY_TIMEOUT_S
        )
        return found[0] if found else None

    # -- the checks ------------------------------------------------------------

    async def run(self) -> int:
        report = self.report
        for backend in self.backends:
            await backend.start()
        print(
            "      backends "
            + ", ".join(f"{b.name}={b.host}:{b.port}" for b in self.backends)
            + f"; EndpointSlice {NAMESPACE}/{SERVICE}-backends lists both",
            flush=True,
        )
        await self.kubectl("apply", "-f", "-", input=_manifests())
        cluster_ip = (
            await self.kubectl(
                "-n", NAMESPACE, "get", "service", SERVICE, "-o", "jsonpath={.spec.clusterIP}"
            )
        ).strip()

        destination = self.start_destination()
        async with aiohttp.ClientSession() as session:
            ready = await _eventually(
                "destination serve /ready",
                lambda: _http_ok(session, f"http://{DESTINATION_ADMIN_ADDR}/ready"),
                timeout_s=READY_TIMEOUT_S,
            )
            if not report.check(
                "destination serve ready",
                ready and destination.alive(),
                f"gRPC on {DESTINATION_ADDR}, cache of cluster {CLUSTER} synced",
            ):
                return self.finish()

            ca = IdentityCa.create(CLUSTER_DOMAIN)
            token = secrets.token_urlsafe(32).encode()
            signer = IdentitySigner(ca, identity=PROXY_IDENTITY, token=token)
            signer_server, _ = await start_signer(signer, IDENTITY_ADDR)
            try:
                if not await self.start_proxy(session, ca, token, signer):
                    return self.finish()
                await self.check_discovery(session, cluster_ip)
                if self.report.failures:
                    return self.finish()
                await self.check_profile(session)
                return self.finish()
            finally:
                await signer_server.stop(grace=None)

    async def start_proxy(
        self,
        session: aiohttp.ClientSession,
        ca: IdentityCa,
        token: bytes,
        signer: IdentitySigner,
    ) -> bool:
        identity_dir = self.state / "identity"
        write_proxy_documents(identity_dir, PROXY_IDENTITY)
        token_file = self.state / "token"
        token_file.write_bytes(token)
        token_file.chmod(0o600)
        env = self.proxy_environment(ca, identity_dir, token_file)
        proxy = _spawn(
            "linkerd2-proxy", [str(self.proxy_bin)], env=env, log=self.state / "proxy.log"
        )
        self.processes.append(proxy)
        ready = await _eventually(
            "the proxy's /ready",
            lambda: _http_ok(session, f"http://127.0.0.1:{PROXY_ADMIN_PORT}/ready"),
            timeout_s=READY_TIMEOUT_S,
        )
        return self.report.check(
            "proxy certified and ready",
            ready and proxy.alive() and signer.certified >= 1,
            f"{signer.certified} certificate(s) issued for {PROXY_IDENTITY}; "
            f"admin 127.0.0.1:{PROXY_ADMIN_PORT}/ready is 200",
        )

    async def check_discovery(self, session: aiohttp.ClientSession, cluster_ip: str) -> None:
        report = self.report
        by_name = await self._first_200(session, "/")
        report.check(
            "ingress: request by name reaches an endpoint (GetProfile + Get)",
            by_name is not None,
            f"GET / with l5d-dst-override: {AUTHORITY} -> "
            + (f"200 '{by_name.body}'" if by_name else "no 200 (see the proxy log below)"),
        )
        if by_name is not None:
            await self.check_balancing(session)
        # Last, so that its target (a second balancer with the same metric labels)
        # is not counted in the balancer checks.
        by_ip = await self._first_200(session, "/", to_ip=cluster_ip)
        report.check(
            "redirected: request to the ClusterIP reaches an endpoint (GetProfile by IP + Get)",
            by_ip is not None,
            f"GET http://{cluster_ip}:{SERVICE_PORT}/ -> "
            + (f"200 '{by_ip.body}'" if by_ip else "no 200 (see the proxy log below)"),
        )

    async def check_balancing(self, session: aiohttp.ClientSession) -> None:
        report = self.report
        before = {b.name: b.served["/"] for b in self.backends}
        for _ in range(SPREAD_REQUESTS):
            await self.request(session, "/")
        spread = {b.name: b.served["/"] - before[b.name] for b in self.backends}
        # The balancer picks by latency (P2C, peak EWMA), so sequential requests may
        # all go to one endpoint; what the proxy holds is in its metrics.
        in_balancer = await self.balancer_endpoints(session)
        report.check(
            "the proxy balances over both endpoints of the Get answer",
            in_balancer == len(BACKENDS),
            f"outbound_http_balancer_endpoints ready={in_balancer}; {SPREAD_REQUESTS} "
            f"requests by name served per endpoint: {spread}",
        )

        # Get keeps streaming: an endpoint leaves the EndpointSlice, then comes back.
        remaining = {"web-b": BACKENDS["web-b"]}
        changed_at = time.monotonic()
        await self.kubectl("apply", "-f", "-", input=json.dumps(_endpoint_slice(remaining)))

        async def only_web_b() -> bool:
            await self.request(session, "/")
            return await self.balancer_endpoints(session) == 1

        removed = await _eventually(
            "the proxy to drop web-a", only_web_b, timeout_s=DISCOVERY_TIMEOUT_S, interval_s=0.1
        )
        took = time.monotonic() - changed_at
        served_before = {b.name: b.served["/"] for b in self.backends}
        for _ in range(10):
            await self.request(session, "/")
        served = {b.name: b.served["/"] - served_before[b.name] for b in self.backends}
        report.check(
            "Get update: a removed endpoint gets no more requests",
            removed and served["web-a"] == 0 and served["web-b"] == 10,
            f"web-a left the EndpointSlice; balancer at 1 endpoint {took:.1f}s after kubectl "
            f"apply; next 10 requests served per endpoint: {served}",
        )
        changed_at = time.monotonic()
        await self.kubectl("apply", "-f", "-", input=json.dumps(_endpoint_slice(BACKENDS)))

        async def both_back() -> bool:
            await self.request(session, "/")
            return await self.balancer_endpoints(session) == len(BACKENDS)

        added = await _eventually(
            "the proxy to add web-a", both_back, timeout_s=DISCOVERY_TIMEOUT_S, interval_s=0.1
        )
        report.check(
            "Get update: an endpoint added back is balanced over again",
            added,
            f"web-a back in the EndpointSlice; balancer at {len(BACKENDS)} endpoints "
            f"{time.monotonic() - changed_at:.1f}s after kubectl apply",
        )

    async def balancer_endpoints(self, session: aiohttp.ClientSession) -> int:
        """Ready endpoints in the proxy's outbound balancer for the Service (0 if none).

        Read right after a request: the proxy drops an idle target's balancer.
        Only one Service is in play, so the largest ready count is its.
        """
        url = f"http://127.0.0.1:{PROXY_ADMIN_PORT}/metrics"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            text = await response.text()
        ready = [
            int(sample.value)
            for family in text_string_to_metric_families(text)
            if family.name == "outbound_http_balancer_endpoints"
            for sample in family.samples
            if sample.labels.get("endpoint_state") == "ready"
        ]
        return max(ready, default=0)

    async def check_profile(self, session: aiohttp.ClientSession) -> None:
        report = self.report
        # Before any ServiceProfile: no timeout, no retry.
        slow = await self.request(session, "/slow")
        report.check(
            "no profile: slow route waits for the backend",
            slow.status == 200 and slow.seconds >= SLOW_S * 0.9,
            f"GET /slow -> {slow.status} in {slow.seconds:.2f}s",
        )
        flaky = await self.request(session, "/flaky/before-profile")
        report.check(
            "no profile: failing request not retried",
            flaky.status == 500 and self.attempts["/flaky/before-profile"] == 1,
            f"GET /flaky/before-profile -> {flaky.status} after "
            f"{self.attempts['/flaky/before-profile']} attempt(s) at the backends",
        )

        await self.kubectl("apply", "-f", "-", input=_service_profile(ROUTE_TIMEOUT_MS))
        print(
            f"      applied ServiceProfile {SERVICE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}: "
            f"GET /slow timeout {ROUTE_TIMEOUT_MS}ms, GET /flaky/[^/]* isRetryable; no traffic "
            f"for {PROXY_DISCOVERY_IDLE_S + 1:.0f}s so the proxy rebuilds the target with routes",
            flush=True,
        )
        applied_at = time.monotonic()
        timed_out: Reply | None = None
        while time.monotonic() - applied_at < PROFILE_TIMEOUT_S:
            await asyncio.sleep(PROXY_DISCOVERY_IDLE_S + 1)
            reply = await self.request(session, "/slow")
            if reply.status == 504:
                timed_out = reply
                break
        took = time.monotonic() - applied_at
        report.check(
            f"profile: route timeout {ROUTE_TIMEOUT_MS}ms applied",
            timed_out is not None and timed_out.seconds < ROUTE_TIMEOUT_MS / 1000 + 0.5,
            (
                f"GET /slow -> {timed_out.status} in {timed_out.seconds:.2f}s, the backend takes "
                f"{SLOW_S:.0f}s; first request after the apply and an idle pause"
                if timed_out is not None
                else f"GET /slow never answered 504 in {took:.0f}s after the profile"
            ),
        )
        if timed_out is None:
            return

        retried = await self.request(session, "/flaky/after-profile")
        attempts = self.attempts["/flaky/after-profile"]
        report.check(
            "profile: retryable route retried",
            retried.status == 200 and attempts == 2,
            f"GET /flaky/after-profile -> {retried.status} '{retried.body}' after "
            f"{attempts} attempts at the backends",
        )

        # A change to a profile the proxy already routes by: applied on the live stream.
        changed_at = time.monotonic()
        await self.kubectl("apply", "-f", "-", input=_service_profile(UPDATED_TIMEOUT_MS))
        updated: list[Reply] = []

        async def longer_timeout() -> bool:
            reply = await self.request(session, "/slow")
            if reply.status == 504 and reply.seconds >= UPDATED_TIMEOUT_MS / 1000 * 0.9:
                updated.append(reply)
            return bool(updated)

        await _eventually(
            "the changed timeout", longer_timeout, timeout_s=PROFILE_TIMEOUT_S, interval_s=0.1
        )
        report.check(
            f"profile: changed timeout ({UPDATED_TIMEOUT_MS}ms) applied while in use",
            bool(updated) and updated[0].seconds < UPDATED_TIMEOUT_MS / 1000 + 0.5,
            (
                f"GET /slow -> {updated[0].status} in {updated[0].seconds:.2f}s, "
                f"{time.monotonic() - changed_at:.1f}s after kubectl apply, with requests "
                "flowing all along"
                if updated
                else f"no 504 after about {UPDATED_TIMEOUT_MS}ms within {PROFILE_TIMEOUT_S:.0f}s"
            ),
        )

    def finish(self) -> int:
        if self.report.failures:
            for process in self.processes:
                print(f"\n--- last lines of {process.name} ({process.log}) ---")
                print(process.tail())
            failed = ", ".join(self.report.failures)
            print(f"\n{len(self.report.failures)} check(s) failed: {failed}")
            return 1
        print(f"\nall {self.report.passed} checks passed")
        return 0

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


async def _run(run: Run, hold: bool) -> int:
    # SIGTERM ends the run like Ctrl-C: everything started is stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        status = await run.run()
        if hold:
            print("holding everything up until Ctrl-C (--hold) ...", flush=True)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        return status
    finally:
        run.stop()
        for backend in run.backends:
            await backend.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy_e2e", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--proxy",
        type=Path,
        default=os.environ.get("LINKERD2_PROXY"),
        help="the linkerd2-proxy binary (build-proxy.sh builds it); env LINKERD2_PROXY",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and cluster state")
    parser.add_argument(
        "--hold", action="store_true", help="after the checks, keep everything running until Ctrl-C"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A shell starts background jobs with SIGINT ignored; --hold needs Ctrl-C/kill -INT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.proxy is None or not os.access(args.proxy, os.X_OK):
        print(
            f"error: no linkerd2-proxy binary at {args.proxy}; run deploy/local/build-proxy.sh "
            "and pass --proxy",
            file=sys.stderr,
        )
        return 2
    try:
        netns.check_private()
    except netns.NotPrivate as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Loopback must be up before the cluster starts; the cluster's ranges are
    # known from its spec.
    spec = specs_for([CLUSTER], cluster_domain=CLUSTER_DOMAIN)[0]
    netns.set_up(
        pod_addresses=BACKENDS.values(),
        service_cidr=spec.service_cidr,
        outbound_port=PROXY_OUTBOUND_PORT,
    )
    state = Path(tempfile.mkdtemp(prefix="mcd-proxy-e2e-"))
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    print(f"proxy end-to-end check, {started}: proxy {args.proxy}", flush=True)
    print(
        f"      private network namespace: {', '.join(BACKENDS.values())} on lo, "
        f"TCP to {spec.service_cidr} redirected to :{PROXY_OUTBOUND_PORT}",
        flush=True,
    )
    try:
        with running_clusters(
            [CLUSTER], cluster_domain=CLUSTER_DOMAIN, keep_dir=args.keep
        ) as clusters:
            cluster = clusters[0]
            print(f"      cluster {cluster.name} up ({cluster.server})", flush=True)
            run = Run(cluster, args.proxy, state)
            with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
                return asyncio.run(_run(run, args.hold))
            print("interrupted; everything started was stopped", flush=True)
            return 130
    except (BinariesMissing, ClusterStartError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept logs in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
