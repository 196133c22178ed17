"""`destination multicluster` link-gen, check, gateways and unlink on real clusters.

`west` is the target, `east` the source (it runs the session's destination
server). The commands run as the operator would run them: as subprocesses
with the clusters' admin kubeconfigs, their output applied with the pinned
kubectl. Each test links west under a name of its own, with its Link in the
test's namespace and, where a check's verdict depends on what west exports,
selectors of its own, so tests never see each other's links or services.

Scope:
* link-gen's output, applied as it is (YAML, and JSON with
  --api-server-address), makes a working link: the Link validates (the API
  server's schema and the mirror's parser), the destination server syncs the
  cluster through the generated Secret and streams a remote-discovery
  mirror's endpoints; link-gen warns about the loopback address it copied;
* check fails, with the right message and hint, for an unreachable API
  address, a revoked token, a missing permission (and warns about an excess
  one), a dead gateway (probed from here, and as the mirror controller sees
  it, which `gateways` shows too) and a namespace missing on the source;
* unlink removes one link's Link, Secrets, mirrors, federated memberships,
  Lease and finalizer, and leaves another link's objects and unrelated
  Services alone; --dry-run changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from mirror.app import run as run_mirror
from mirror.config import MirrorConfig
from mirror.links import project_link
from tests.integration.destination_client import Server, open_stream
from tests.integration.links import (
    CONTROLLER_NAMESPACE,
    cluster_statuses,
    converge,
    create_remote_mirror,
    ensure_controller_namespace,
    link_name,
    wait_for_state,
)
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
READER_NAMESPACE = "multicluster-destination"
LINK_GROUP, LINK_VERSION = "multicluster.linkerd.io", "v1alpha3"
FINALIZER = "multicluster.linkerd.io/mirrors"


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def mc(*argv: str, timeout_s: float = 90) -> Ran:
    """`destination multicluster ARGV...` as a subprocess, from the worktree under test."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "destination",
        "multicluster",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def kubectl(kube: Kube, *args: str, input: str | None = None) -> str:
    return await asyncio.to_thread(kube.cluster.kubectl, *args, input=input)


async def link_gen(target: Kube, name: str, link_namespace: str, *extra: str) -> Ran:
    ran = await mc(
        "link-gen",
        "--kubeconfig",
        str(target.cluster.kubeconfig),
        "--cluster-name",
        name,
        "--link-namespace",
        link_namespace,
        *extra,
    )
    assert ran.code == 0, ran.err
    return ran


async def check(source: Kube, link_namespace: str, name: str, *extra: str) -> tuple[int, Any]:
    ran = await mc(
        "check",
        "--kubeconfig",
        str(source.cluster.kubeconfig),
        "--namespace",
        link_namespace,
        "--cluster-name",
        name,
        "-o",
        "json",
        *extra,
    )
    assert ran.err == "", ran.err
    return ran.code, json.loads(ran.out)


def found(report: Any, prefix: str) -> dict[str, Any]:
    """The one check whose description starts with `prefix`."""
    matches = [
        c
        for category in report["categories"]
        for c in category["checks"]
        if c["description"].startswith(prefix)
    ]
    assert len(matches) == 1, (prefix, report)
    result: dict[str, Any] = matches[0]
    return result


def own_selectors(tag: str) -> tuple[str, ...]:
    """Selectors no other test's Services match: a check's verdict is this test's alone."""
    return (
        "--remote-discovery-selector",
        f"mcd-test/export={tag}",
        "--federated-service-selector",
        f"mcd-test/member={tag}",
    )


def host_address() -> str:
    """This machine's non-loopback address (Kubernetes refuses loopback gateway IPs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a route
        address: str = sock.getsockname()[0]
    if address.startswith("127."):
        pytest.fail("this machine has no non-loopback IPv4 address for a gateway stand-in")
    return address


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def unlink(source: Kube, link_namespace: str, name: str, *extra: str) -> Ran:
    return await mc(
        "unlink",
        "--kubeconfig",
        str(source.cluster.kubeconfig),
        "--namespace",
        link_namespace,
        "--cluster-name",
        name,
        *extra,
    )


@pytest.fixture
async def source(east: Kube) -> Kube:
    await ensure_controller_namespace(east)
    return east


async def read_link(kube: Kube, namespace: str, name: str) -> Any:
    return await k8s.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        LINK_GROUP, LINK_VERSION, namespace, "links", name
    )


async def exists(read: Any) -> bool:
    try:
        await read
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


# --------------------------------------------------------------------------
# link-gen


async def test_link_gen_output_applied_as_is_makes_a_working_link(
    source: Kube, west: Kube, server: Server, namespace: str
) -> None:
    name = link_name(west.cluster)
    ran = await link_gen(west, name, namespace, "--no-gateway", *own_selectors(name))
    # The test clusters' API servers are on 127.0.0.1: link-gen copied that, and says so.
    assert f"warning: the target's API server address {west.cluster.server} " in ran.err
    assert "is a loopback address" in ran.err and "--api-server-address https://<" in ran.err
    documents = [d for d in yaml.safe_load_all(ran.out) if d]
    assert [(d["kind"], d["metadata"]["namespace"]) for d in documents] == [
        ("Secret", namespace),
        ("Secret", CONTROLLER_NAMESPACE),
        ("Link", namespace),
    ]
    await kubectl(source, "apply", "-f", "-", input=ran.out)

    link = project_link(await read_link(source, namespace, name))
    assert link is not None and link.problem is None and link.spec is not None
    assert link.spec.target_cluster_name == name and not link.spec.gateway_enabled

    status = await wait_for_state(server.admin, name, "synced")
    assert status["server"] == west.cluster.server
    ips = await west.deploy_service(namespace, "web", replicas=2)
    path = await create_remote_mirror(source, namespace, cluster=name, name=f"web-{name}")
    stream = open_stream(server, path)
    try:
        await converge(stream, ips, "the remote pods, through link-gen's credentials")
    finally:
        stream.call.cancel()

    code, report = await check(source, namespace, name)
    assert code == 0, json.dumps(report, indent=2)
    assert found(report, "target API server address")["result"] == "warning"
    assert found(report, "the credentials may list and watch")["result"] == "success"
    assert found(report, "the destination server's copy")["result"] == "success"
    assert found(report, "the gateway is alive")["result"] == "skipped"

    assert (await unlink(source, namespace, name)).code == 0
    await eventually(
        lambda: cluster_statuses(server.admin),
        lambda clusters: name not in clusters,
        what=f"{name} unlinked from the destination server",
    )


async def test_link_gen_with_an_api_server_address_and_json_output(
    source: Kube, west: Kube, server: Server, namespace: str
) -> None:
    name = link_name(west.cluster)
    address = f"https://localhost:{urlsplit(west.cluster.server).port}"  # in the certificate
    ran = await link_gen(
        west, name, namespace, "--no-gateway", "--api-server-address", address, "-o", "json"
    )
    assert "from kubeconfig context" not in ran.err
    assert f"--api-server-address {address} is a loopback address" in ran.err
    listed = json.loads(ran.out)
    assert listed["kind"] == "List" and len(listed["items"]) == 3
    kubeconfig = yaml.safe_load(base64.b64decode(listed["items"][0]["data"]["kubeconfig"]))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == address
    assert "certificate-authority-data" in kubeconfig["clusters"][0]["cluster"]
    await kubectl(source, "apply", "-f", "-", input=ran.out)
    status = await wait_for_state(server.admin, name, "synced")
    assert status["server"] == address
    assert (await unlink(source, namespace, name)).code == 0


# --------------------------------------------------------------------------
# check


async def test_check_names_an_unreachable_api_server_address(
    source: Kube, west: Kube, namespace: str
) -> None:
    name = link_name(west.cluster)
    closed = free_port()
    address = f"https://127.0.0.1:{closed}"
    ran = await link_gen(
        west, name, namespace, "--no-gateway", "--api-server-address", address, *own_selectors(name)
    )
    await kubectl(source, "apply", "-f", "-", input=ran.out)

    code, report = await check(source, namespace, name)
    assert code == 1
    reach = found(report, f"target API server {address}")
    assert reach["result"] == "error"
    assert reach["error"] == f"cannot connect to {address}: connection refused"
    assert f"{address} is a loopback address" in reach["hint"]
    assert (
        "--api-server-address https://<address reachable from the source cluster>" in reach["hint"]
    )
    assert found(report, "the credentials' permissions")["result"] == "skipped"

    table = await mc(
        "check", "--kubeconfig", str(source.cluster.kubeconfig), "--namespace", namespace
    )
    assert table.code == 1
    assert f"\u00d7 target API server {address} answers the Link's credentials" in table.out
    assert f"    cannot connect to {address}: connection refused\n    hint: " in table.out
    assert table.out.endswith("Status check results are \u00d7\n")
    assert (await unlink(source, namespace, name)).code == 0


async def test_check_names_a_revoked_token(source: Kube, west: Kube, namespace: str) -> None:
    name = link_name(west.cluster)
    account = f"revoked-{secrets.token_hex(3)}"
    ran = await link_gen(
        west,
        name,
        namespace,
        "--no-gateway",
        "--service-account-name",
        account,
        *own_selectors(name),
    )
    assert f"note: created Secret {READER_NAMESPACE}/{account}-token" in ran.err
    await kubectl(source, "apply", "-f", "-", input=ran.out)
    code, report = await check(source, namespace, name)
    assert code == 0, report

    # Deleting the token Secret is how a long-lived link token is revoked.
    await kubectl(west, "-n", READER_NAMESPACE, "delete", "secret", f"{account}-token")

    async def reach() -> dict[str, Any]:
        return found((await check(source, namespace, name))[1], "target API server https://")

    failed = await eventually(reach, lambda c: c["result"] == "error", what="a 401")
    assert "rejected the credentials (HTTP 401)" in failed["error"]
    assert "link-gen --cluster-name" in failed["hint"]
    await kubectl(
        west,
        "delete",
        f"serviceaccount/{account}",
        "-n",
        READER_NAMESPACE,
    )
    await kubectl(
        west,
        "delete",
        "clusterrolebinding",
        f"multicluster-destination-remote-reader:{READER_NAMESPACE}:{account}",
    )
    assert (await unlink(source, namespace, name)).code == 0


async def test_check_names_a_missing_permission_and_an_excess_one(
    source: Kube, west: Kube, namespace: str
) -> None:
    name = link_name(west.cluster)
    account = f"partial-{secrets.token_hex(3)}"
    ran = await link_gen(
        west,
        name,
        namespace,
        "--no-gateway",
        "--service-account-name",
        account,
        *own_selectors(name),
    )
    await kubectl(source, "apply", "-f", "-", input=ran.out)
    # Take pods away and give Secrets instead: what a hand-made role might get wrong.
    role = f"mcd-test-{account}"
    subject = {"kind": "ServiceAccount", "name": account, "namespace": READER_NAMESPACE}
    rbac = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [
                    {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]},
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [subject],
            },
        ],
    }
    await kubectl(west, "apply", "-f", "-", input=json.dumps(rbac))
    await kubectl(
        west,
        "delete",
        "clusterrolebinding",
        f"multicluster-destination-remote-reader:{READER_NAMESPACE}:{account}",
    )
    try:

        async def permissions() -> dict[str, Any]:
            return found((await check(source, namespace, name))[1], "the credentials may list")

        failed = await eventually(
            permissions, lambda c: c["result"] == "error", what="pods permission missing"
        )
        user = f"system:serviceaccount:{READER_NAMESPACE}:{account}"
        assert failed["details"] == [
            f"* missing: list pods in every namespace ({user})",
            f"* missing: watch pods in every namespace ({user})",
        ]
        assert "deploy/remote-access.yaml" in failed["hint"]
        code, report = await check(source, namespace, name)
        assert code == 1
        excess = found(report, "the credentials grant nothing more")
        assert excess["result"] == "warning"
        assert excess["details"] == [f"* also allowed: get secrets ({user})"]
    finally:
        await kubectl(west, "delete", "clusterrolebinding,clusterrole", role)
        await kubectl(west, "delete", f"serviceaccount/{account}", "-n", READER_NAMESPACE)
        assert (await unlink(source, namespace, name)).code == 0


async def test_check_names_a_namespace_missing_on_the_source(
    source: Kube, west: Kube, namespace: str
) -> None:
    name = link_name(west.cluster)
    tag = secrets.token_hex(3)
    ran = await link_gen(west, name, namespace, "--no-gateway", *own_selectors(tag))
    await kubectl(source, "apply", "-f", "-", input=ran.out)
    only_west = f"only-west-{tag}"
    await west.create_namespace(only_west)
    try:
        await west.create_service(only_west, "web", labels={"mcd-test/export": tag})
        code, report = await check(source, namespace, name)
        assert code == 1
        missing = found(report, "namespaces of")
        assert missing["result"] == "error"
        assert missing["details"] == [f"* {only_west} does not exist here (web exported by {name})"]
        assert f"kubectl create namespace {only_west}" in missing["hint"]
        assert "--enable-namespace-creation" in missing["hint"]
        # The mirror check does not report it a second time.
        assert found(report, "every exported Service")["result"] == "success"
    finally:
        await west.delete_namespace(only_west)
        assert (await unlink(source, namespace, name)).code == 0


@contextlib.asynccontextmanager
async def gateway_stand_in(host: str) -> AsyncIterator[tuple[int, web.AppRunner]]:
    """An HTTP server answering 200 on /ready, as a gateway's probe port does."""

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(host)
    await web.TCPSite(runner, host, port).start()
    try:
        yield port, runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def mirror_controller(kube: Kube, link_namespace: str) -> AsyncIterator[str]:
    """`destination mirror` for the Links of one namespace, in this event loop; its admin.

    It must exit 0 when stopped, whatever the test did meanwhile (an unlink included).
    """
    admin = f"127.0.0.1:{free_port()}"
    config = MirrorConfig(
        namespace=link_namespace,
        kubeconfig=str(kube.cluster.kubeconfig),
        admin_address=admin,
        identity="mcd-test",
        log_format="console",  # type: ignore[arg-type]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_mirror(config, stop=stop))
    try:
        yield admin
    finally:
        stop.set()
        async with asyncio.timeout(30):
            status = await task
        assert status == 0


async def test_check_and_gateways_name_a_dead_gateway(
    source: Kube, west: Kube, namespace: str
) -> None:
    name = link_name(west.cluster)
    host = host_address()
    async with gateway_stand_in(host) as (probe_port, runner):
        ran = await link_gen(
            west,
            name,
            namespace,
            "--gateway-addresses",
            host,
            "--gateway-port",
            "4143",
            "--gateway-identity",
            "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            "--probe-port",
            str(probe_port),
            "--probe-period",
            "1s",
            *own_selectors(name),
        )
        assert "will not be probed" not in ran.err
        await kubectl(source, "apply", "-f", "-", input=ran.out)
        description = f"gateway {host}:4143 is alive"
        code, report = await check(source, namespace, name)
        assert found(report, description)["result"] == "success", report
        assert found(report, description)["details"][0].startswith("probed from here: ")
        assert code == 0

        async with mirror_controller(source, namespace) as admin:

            async def gateways(*extra: str) -> Ran:
                return await mc("gateways", "--mirror-admin", admin, "--cluster-name", name, *extra)

            listed = await eventually(
                gateways,
                lambda r: (
                    r.code == 0 and f"\n{name}  True " in r.out and r.out.rstrip().endswith("ms")
                ),
                what="the gateway alive in `gateways`",
            )
            assert listed.out.splitlines()[0].split() == ["CLUSTER", "ALIVE", "NUM_SVC", "LATENCY"]

            await runner.cleanup()  # the gateway dies

            dead = await eventually(
                gateways, lambda r: r.code == 4, what="the gateway dead in `gateways`", timeout_s=30
            )
            assert dead.out.splitlines()[1].split() == [name, "False", "0", "-"]
            as_json = json.loads((await gateways("--json")).out)
            assert [(r["clusterName"], r["alive"], r["latency"]) for r in as_json] == [
                (name, False, None)
            ]

            code, report = await check(source, namespace, name, "--mirror-admin", admin)
            assert code == 1
            seen = found(report, description)
            assert seen["result"] == "error"
            assert seen["error"] == (
                f"the mirror controller's probes of http://{host}:{probe_port}/ready fail: its "
                "gateway-mode mirrors are not ready"
            )
        code, report = await check(source, namespace, name)
        assert code == 1
        probed = found(report, description)
        assert probed["details"] == [f"* http://{host}:{probe_port}/ready: connection refused"]
        assert "--mirror-admin" in probed["hint"]
    # The controller put its finalizer on the Link; unlink releases it.
    link = await read_link(source, namespace, name)
    assert FINALIZER in link["metadata"]["finalizers"]
    assert (await unlink(source, namespace, name)).code == 0
    assert not await exists(read_link(source, namespace, name))


# --------------------------------------------------------------------------
# unlink


async def test_unlink_removes_exactly_what_the_link_made(
    source: Kube, west: Kube, server: Server, namespace: str
) -> None:
    gone, kept = link_name(west.cluster), link_name(west.cluster)
    for name in (gone, kept):
        ran = await link_gen(west, name, namespace, "--no-gateway", *own_selectors(name))
        await kubectl(source, "apply", "-f", "-", input=ran.out)
        await wait_for_state(server.admin, name, "synced")
    # What a mirror controller writes for each link, and what it must not touch.
    mirror = {"mirror.linkerd.io/mirrored-service": "true"}
    rd = "multicluster.linkerd.io/remote-discovery"
    objects: list[dict[str, Any]] = []
    for name in (gone, kept):
        labels = {**mirror, "mirror.linkerd.io/cluster-name": name}
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"web-{name}", "labels": labels},
                "spec": {"ports": [{"port": 80}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": f"web-{name}", "labels": labels},
                "subsets": [{"addresses": [{"ip": "10.12.0.9"}], "ports": [{"port": 80}]}],
            },
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": f"service-mirror-write-{name}"},
                "spec": {"holderIdentity": "someone"},
            },
        ]
    objects += [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web-federated",
                "labels": mirror,
                "annotations": {rd: f"web@{gone},web@{kept}"},
            },
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "db-federated",
                "labels": mirror,
                "annotations": {rd: f"db@{gone}"},
            },
            "spec": {"ports": [{"port": 80}]},
        },
        # Not ours: no mirrored-service label, or a plain Service.
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "lookalike", "labels": {"mirror.linkerd.io/cluster-name": gone}},
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]},
        },
    ]
    await kubectl(
        source,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    await kubectl(
        source,
        "patch",
        "link",
        gone,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"finalizers": [FINALIZER]}}),
    )

    def listing() -> list[str]:
        return [
            f"Link {namespace}/{gone}",
            f"Service {namespace}/web-{gone}",
            f"Endpoints {namespace}/web-{gone}",
            f"Service {namespace}/db-federated",
            f"Service {namespace}/web-federated",
            f"Secret {namespace}/cluster-credentials-{gone}",
            f"Secret {CONTROLLER_NAMESPACE}/cluster-credentials-{gone}",
            f"Lease {namespace}/service-mirror-write-{gone}",
            "the finalizer of Link",
        ]

    dry = await unlink(source, namespace, gone, "--dry-run")
    assert dry.code == 0, dry.err
    lines = dry.out.splitlines()
    assert len(lines) == len(listing()) and all(line.startswith("would ") for line in lines)
    for line, expected in zip(lines, listing(), strict=True):
        assert expected in line, (line, expected)
    assert await exists(source.core.read_namespaced_service(f"web-{gone}", namespace))

    started = asyncio.get_running_loop().time()
    ran = await unlink(source, namespace, gone)
    assert ran.code == 0, ran.err
    assert "removed the member from Service" in ran.out and "deleted: no member left" in ran.out
    assert asyncio.get_running_loop().time() - started < 15

    core = source.core
    coordination = k8s.CoordinationV1Api(source.api)
    assert not await exists(read_link(source, namespace, gone))
    assert not await exists(core.read_namespaced_service(f"web-{gone}", namespace))
    assert not await exists(core.read_namespaced_endpoints(f"web-{gone}", namespace))
    assert not await exists(core.read_namespaced_service("db-federated", namespace))
    federated = await core.read_namespaced_service("web-federated", namespace)
    assert federated.metadata.annotations[rd] == f"web@{kept}"
    for secret_namespace in (namespace, CONTROLLER_NAMESPACE):
        assert not await exists(
            core.read_namespaced_secret(f"cluster-credentials-{gone}", secret_namespace)
        )
        assert await exists(
            core.read_namespaced_secret(f"cluster-credentials-{kept}", secret_namespace)
        )
    assert not await exists(
        coordination.read_namespaced_lease(f"service-mirror-write-{gone}", namespace)
    )
    assert await exists(
        coordination.read_namespaced_lease(f"service-mirror-write-{kept}", namespace)
    )
    assert await exists(read_link(source, namespace, kept))
    for survivor in (f"web-{kept}", "lookalike", "web"):
        assert await exists(core.read_namespaced_service(survivor, namespace))
    assert await exists(core.read_namespaced_endpoints(f"web-{kept}", namespace))

    await eventually(
        lambda: cluster_statuses(server.admin),
        lambda clusters: gone not in clusters and clusters.get(kept, {}).get("state") == "synced",
        what=f"{gone} forgotten by the destination server, {kept} still synced",
    )
    again = await unlink(source, namespace, gone)
    assert again.code == 0 and again.out.startswith(f"nothing to remove for cluster {gone}")
    assert (await unlink(source, namespace, kept)).code == 0


async def test_unlink_while_the_mirror_controller_runs(
    source: Kube, west: Kube, namespace: str
) -> None:
    """The race Linkerd's unlink lost (#4707): a running controller must not keep mirrors alive.

    The controller serves the Link (its finalizer is on it) and has mirrored a
    gateway-mode export and a federated member when unlink starts; whatever
    the controller does meanwhile, nothing of the link is left afterwards.
    """
    name = link_name(west.cluster)
    host = host_address()
    async with gateway_stand_in(host) as (probe_port, _):
        ran = await link_gen(
            west,
            name,
            namespace,
            "--gateway-addresses",
            host,
            "--gateway-port",
            "4143",
            "--gateway-identity",
            "gw.id",
            "--probe-port",
            str(probe_port),
            "--selector",
            f"mcd-test/gateway={name}",
            *own_selectors(name),
        )
        await kubectl(source, "apply", "-f", "-", input=ran.out)
        await west.create_service(
            namespace,
            "web",
            labels={"mcd-test/gateway": name, "mcd-test/member": name},
        )
        # The controller must outlive an unlink (at f8856bf it ended: it iterated its Link
        # table while awaiting a Link's deletion).
        async with mirror_controller(source, namespace):

            async def mirrored() -> list[str]:
                services = await source.core.list_namespaced_service(namespace)
                return sorted(s.metadata.name for s in services.items)

            await eventually(
                mirrored,
                lambda names: f"web-{name}" in names and "web-federated" in names,
                what="the controller's mirror and federated Service",
            )
            link = await read_link(source, namespace, name)
            assert FINALIZER in link["metadata"]["finalizers"]
            ran = await unlink(source, namespace, name)
            assert ran.code == 0, ran.err
            assert await mirrored() == []
            assert not await exists(source.core.read_namespaced_endpoints(f"web-{name}", namespace))
            await eventually(
                lambda: exists(read_link(source, namespace, name)),
                lambda present: not present,
                what="the Link gone",
            )
            await asyncio.sleep(2)  # a controller that re-created something would have by now
            assert await mirrored() == []


def anchors_pem(seed: bytes) -> str:
    body = base64.b64encode(seed * 24).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def linkerd_config(trust_domain: str, anchors: str) -> str:
    values = {
        "identityTrustDomain": trust_domain,
        "clusterDomain": "cluster.local",
        "identityTrustAnchorsPEM": anchors,
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "linkerd-config", "namespace": CONTROLLER_NAMESPACE},
            "data": {"values": yaml.safe_dump(values)},
        }
    )


async def test_link_gen_takes_the_targets_domains_and_check_compares_trust_anchors(
    source: Kube, west: Kube, namespace: str
) -> None:
    await ensure_controller_namespace(west)
    shared, other = anchors_pem(b"shared"), anchors_pem(b"other")
    await kubectl(west, "apply", "-f", "-", input=linkerd_config("west.example", shared))
    await kubectl(source, "apply", "-f", "-", input=linkerd_config("east.example", shared))
    name = link_name(west.cluster)
    account = f"anchors-{secrets.token_hex(3)}"
    try:
        ran = await link_gen(
            west,
            name,
            namespace,
            "--no-gateway",
            "--service-account-name",
            account,
            *own_selectors(name),
        )
        assert "no linkerd-config" not in ran.err
        destination_secret = [d for d in yaml.safe_load_all(ran.out) if d][1]
        assert destination_secret["metadata"]["annotations"] == {
            "multicluster.linkerd.io/trust-domain": "west.example",
            "multicluster.linkerd.io/cluster-domain": "cluster.local",
        }
        await kubectl(source, "apply", "-f", "-", input=ran.out)
        description = "the clusters share trust anchors"
        code, report = await check(source, namespace, name)
        skipped = found(report, description)
        assert skipped["result"] == "skipped" and code == 0
        assert "the reader role reads no ConfigMaps" in skipped["details"][0]

        # Let this link read west's linkerd-config, as Linkerd's remote role does.
        await kubectl(
            west,
            "-n",
            CONTROLLER_NAMESPACE,
            "create",
            "role",
            account,
            "--verb=get",
            "--resource=configmaps",
            "--resource-name=linkerd-config",
        )
        await kubectl(
            west,
            "-n",
            CONTROLLER_NAMESPACE,
            "create",
            "rolebinding",
            account,
            f"--role={account}",
            f"--serviceaccount={READER_NAMESPACE}:{account}",
        )

        async def anchors() -> dict[str, Any]:
            return found((await check(source, namespace, name))[1], description)

        same = await eventually(anchors, lambda c: c["result"] != "skipped", what="anchors read")
        assert same["result"] == "success" and same["details"] == ["1 anchor(s)"]

        await kubectl(source, "apply", "-f", "-", input=linkerd_config("east.example", other))
        code, report = await check(source, namespace, name)
        assert code == 1
        differ = found(report, description)
        assert differ["result"] == "error"
        assert differ["details"] == [f"this cluster has 1 anchor(s), {name} 1, 0 in common"]
        assert "same trust anchors" in differ["hint"]
    finally:
        await kubectl(source, "-n", CONTROLLER_NAMESPACE, "delete", "configmap", "linkerd-config")
        await kubectl(
            west,
            "-n",
            CONTROLLER_NAMESPACE,
            "delete",
            "configmap,role,rolebinding",
            "linkerd-config",
            account,
            "--ignore-not-found",
        )
        await kubectl(
            west,
            "delete",
            "clusterrolebinding",
            f"multicluster-destination-remote-reader:{READER_NAMESPACE}:{account}",
        )
        await kubectl(west, "delete", f"serviceaccount/{account}", "-n", READER_NAMESPACE)
        assert (await unlink(source, namespace, name)).code == 0
