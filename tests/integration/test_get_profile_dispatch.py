"""GetProfile dispatch on a real API server: which flow answers, or which status (§6.1, §6.2).

Scope: every row of the reference's dispatch table against real objects:
unparsable paths; IP hosts (a dual-stack Service's IPv4 and IPv6 ClusterIPs
and an IPv4-mapped form of one run the service flow under the Service's name;
a pod IP and an unknown IP the endpoint flow); names outside the cluster
domain; pod DNS names of a StatefulSet behind a headless Service (and an
unknown hostname); ExternalName Services; unknown Services; ports a Service
does not declare; and the conflicts a real cluster can hold: two live pods at
one pod IP (pods whose status the test writes), two pods at one host port,
two ExternalWorkloads at one address. Two ClusterIPs cannot conflict on a
real API server (its allocator refuses a taken address), so that row is
covered in tests/server/test_get_profile_server.py over a fed cache.

Every rejection is checked against two witness streams opened at the start
(one per flow): they must stay open and receive nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from destination._proto import destination_pb2 as pb
from tests.integration.destination_client import (
    ProfileStream,
    Server,
    open_known_profile_stream,
    open_profile_stream,
)
from tests.integration.mesh_objects import (
    create_external_workload,
    create_running_pod,
    delete_pod_now,
    external_workload,
    fqn,
    pod_body,
    set_pod_status,
)
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

UNKNOWN_IP = "10.11.251.7"  # in east's pod range, far beyond what kwok hands out in a session
TWIN_IP = "10.11.250.21"
EW_IP = "192.168.70.1"
MIRROR_IP = "10.12.254.5"  # in west's pod range: a headless mirror's endpoint
HOST_PORT = 31_421  # both fake nodes have the address 127.0.0.1


@dataclass
class World:
    namespace: str
    cluster_ips: list[str]  # the dual-stack Service `web`: IPv4 first, then IPv6
    pod_ip: str  # web's one pod
    witnesses: list[ProfileStream]


@pytest.fixture(scope="module")
async def world(server: Server, east: Kube) -> AsyncIterator[World]:
    namespace = f"gp-dispatch-{secrets.token_hex(3)}"
    await east.create_namespace(namespace)
    await east.create_deployment(namespace, "web", replicas=1)
    await east.create_service(namespace, "web", extra_spec={"ipFamilyPolicy": "RequireDualStack"})
    await east.create_service(
        namespace, "ext", extra_spec={"type": "ExternalName", "externalName": "example.com"}
    )
    await east.create_service(namespace, "db", extra_spec={"clusterIP": "None"})
    await east.apps.create_namespaced_stateful_set(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_body("db")["spec"]},
            },
        },
    )
    (pod_ip,) = await east.wait_for_ready_endpoints(namespace, "web", 1)
    await east.wait_for_ready_endpoints(namespace, "db", 1)
    service = await east.core.read_namespaced_service("web", namespace)
    cluster_ips = list(service.spec.cluster_ips)
    assert len(cluster_ips) == 2 and ":" in cluster_ips[1], cluster_ips

    witnesses = [
        await open_known_profile_stream(server, f"{fqn('web', namespace)}:80"),
        open_profile_stream(server, f"{UNKNOWN_IP}:8080"),
    ]
    for witness in witnesses:
        await witness.count(1, what="the witness's first profile")
    yield World(namespace, cluster_ips, pod_ip, witnesses)
    for witness in witnesses:
        witness.cancel()
    await east.delete_namespace(namespace)


async def rejection(server: Server, path: str) -> grpc.aio.AioRpcError | None:
    """The status a GetProfile of `path` fails with; None if it streams a profile instead."""
    stream = open_profile_stream(server, path)
    assert stream.task is not None
    try:
        await stream.first_or_end()
    finally:
        stream.cancel()
    if stream.profiles:
        return None
    try:
        await stream.task
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError(f"{path}: the stream ended with OK and no profile")


async def assert_rejected(
    world: World,
    server: Server,
    path: str,
    code: grpc.StatusCode,
    message: str,
    *,
    prefix: bool = False,
) -> None:
    """`path` fails with exactly this status (or one starting with `message`), eventually
    (the server's cache may lag the API server by a moment); the witnesses are untouched."""
    error = await eventually(
        lambda: rejection(server, path),
        lambda err: err is not None and err.code() == code,
        what=f"{path} rejected with {code.name}",
        interval_s=0.1,
    )
    assert error is not None
    details = error.details() or ""
    assert details.startswith(message) if prefix else details == message, (path, details)
    for witness in world.witnesses:
        assert witness.open, f"a rejected {path} ended another stream"
        assert len(witness.profiles) == 1, f"a rejected {path} sent to another stream"


def profile_of(stream: ProfileStream) -> pb.DestinationProfile:
    assert stream.profiles, "no profile yet"
    return stream.profiles[0]


async def first_profile(server: Server, path: str) -> pb.DestinationProfile:
    stream = open_profile_stream(server, path)
    try:
        await stream.count(1, what=path)
        return stream.profiles[0]
    finally:
        stream.cancel()


# --------------------------------------------------------------------------
# step 1 and 3: what cannot name anything


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("web.ns.svc.cluster.local:0", "invalid port '0'"),
        ("web.ns.svc.cluster.local:65536", "invalid port '65536'"),
        ("web.ns.svc.cluster.local:http", "invalid port 'http'"),
        ("2001:db8::1", "address 2001:db8::1: too many colons in address"),
        ("[::1]", "address [::1]: missing port in address"),
    ],
)
async def test_an_unparsable_path_is_invalid_argument(
    world: World, server: Server, path: str, reason: str
) -> None:
    await assert_rejected(
        world,
        server,
        path,
        grpc.StatusCode.INVALID_ARGUMENT,
        f'invalid authority: "{path}": "{reason}"',
    )


@pytest.mark.parametrize(
    "host",
    [
        "web.{ns}.svc.example.org",
        "web.{ns}",
        "web.{ns}.svc",
        "web.{ns}.svc.cluster.local.",
        "a.db-0.db.{ns}.svc.cluster.local",
        "web.{ns}.SVC.cluster.local",
    ],
)
async def test_a_name_outside_the_cluster_domain_is_invalid_argument(
    world: World, server: Server, host: str
) -> None:
    name = host.format(ns=world.namespace)
    await assert_rejected(
        world,
        server,
        f"{name}:80",
        grpc.StatusCode.INVALID_ARGUMENT,
        f'invalid service "{name}": "',
        prefix=True,
    )


# --------------------------------------------------------------------------
# step 2: IP hosts


async def test_both_cluster_ips_of_a_dual_stack_service_run_the_service_flow(
    world: World, server: Server
) -> None:
    v4, v6 = world.cluster_ips
    mapped = f"::ffff:{v4}"  # normalized to the IPv4 address
    by_name = profile_of(world.witnesses[0])
    for path in (f"{v4}:80", f"[{v6}]:80", f"[{mapped}]:80"):
        profile = await first_profile(server, path)
        assert profile.fully_qualified_name == fqn("web", world.namespace), path
        assert profile.parent_ref.resource.name == "web"
        assert profile.parent_ref.resource.port == 80
        assert not profile.HasField("endpoint")
        assert profile == by_name, "the same profile as by name"


async def test_a_port_the_service_does_not_declare_gets_one_empty_profile_and_idles(
    world: World, server: Server
) -> None:
    v4, v6 = world.cluster_ips
    streams = [
        open_profile_stream(server, f"{fqn('web', world.namespace)}:81"),
        open_profile_stream(server, f"[{v6}]:81"),
        open_profile_stream(server, f"{v4}:81"),
    ]
    for stream in streams:
        await stream.count(1, what="the empty profile")
    await asyncio.sleep(0.5)
    for stream in streams:
        assert stream.payloads == [b""], "one DestinationProfile with every field unset"
        assert stream.open, "the stream idles until the client leaves"
        stream.cancel()


async def test_a_pod_ip_runs_the_endpoint_flow(world: World, server: Server) -> None:
    profile = await first_profile(server, f"{world.pod_ip}:8080")
    assert not profile.fully_qualified_name
    assert not profile.HasField("parent_ref") and not profile.HasField("profile_ref")
    assert not profile.routes
    endpoint = profile.endpoint
    assert endpoint.addr.port == 8080
    labels = dict(endpoint.metric_labels)
    assert labels.pop("pod").startswith("web-")
    assert labels.pop("pod_template_hash")
    assert labels == {
        "deployment": "web",
        "serviceaccount": "default",
        "namespace": world.namespace,
        "zone": "",
    }
    assert profile.retry_budget.retry_ratio == pytest.approx(0.2)


async def test_an_unknown_ip_is_a_bare_endpoint_opaque_on_default_opaque_ports(
    world: World, server: Server
) -> None:
    plain = await first_profile(server, f"{UNKNOWN_IP}:80")
    assert plain == pb.DestinationProfile(
        retry_budget=plain.retry_budget,
        endpoint=pb.WeightedAddr(addr=plain.endpoint.addr, weight=10_000),
    )
    assert plain.endpoint.addr.ip.ipv4 == 0x0A0BFB07
    assert plain.retry_budget.min_retries_per_second == 10
    assert plain.retry_budget.ttl.seconds == 10
    mysql = await first_profile(server, f"{UNKNOWN_IP}:3306")
    assert mysql.opaque_protocol, "3306 is among the default opaque ports"
    v6 = await first_profile(server, "[fd00:dead::7]:80")
    assert v6.endpoint.addr.ip.ipv6.first == 0xFD00DEAD00000000
    assert v6.endpoint.addr.ip.ipv6.last == 7


# --------------------------------------------------------------------------
# step 4: pod DNS names


async def test_a_pod_dns_name_runs_the_endpoint_flow_for_that_pod(
    world: World, server: Server, east: Kube
) -> None:
    pod = await east.core.read_namespaced_pod("db-0", world.namespace)
    profile = await first_profile(server, f"db-0.{fqn('db', world.namespace)}:8080")
    assert not profile.fully_qualified_name
    assert profile.endpoint.metric_labels["pod"] == "db-0"
    assert profile.endpoint.metric_labels["statefulset"] == "db"
    same = await first_profile(server, f"{pod.status.pod_ip}:8080")
    assert profile == same, "the same topic as the pod's IP"


async def test_a_hostname_without_a_pod_is_the_endpoint_profile_of_its_address(
    world: World, server: Server, east: Kube
) -> None:
    """A headless mirror's endpoints name no pod (the reference crashes on them, §6.5)."""
    ns = world.namespace
    await east.create_service(ns, "db-west", selector={}, extra_spec={"clusterIP": "None"})
    await east.discovery.create_namespaced_endpoint_slice(
        ns,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "db-west-1",
                "labels": {"kubernetes.io/service-name": "db-west"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [MIRROR_IP], "hostname": "db-0"}],
        },
    )

    async def by_hostname() -> str:
        error = await rejection(server, f"db-0.{fqn('db-west', ns)}:8080")
        if error is not None:
            return error.code().name
        profile = await first_profile(server, f"db-0.{fqn('db-west', ns)}:8080")
        return str(profile.endpoint.addr.ip.ipv4)

    await eventually(by_hostname, lambda got: got == str(0x0A0CFE05), what="the mirror's address")


async def test_an_unknown_hostname_is_not_found(world: World, server: Server) -> None:
    ns = world.namespace
    await assert_rejected(
        world,
        server,
        f"db-9.{fqn('db', ns)}:8080",
        grpc.StatusCode.NOT_FOUND,
        f"no pod found in EndpointSlices of Service {ns}/db for hostname db-9",
    )


# --------------------------------------------------------------------------
# step 5: services that cannot be profiled


async def test_an_external_name_service_is_invalid_argument_on_its_ports_only(
    world: World, server: Server
) -> None:
    path = f"{fqn('ext', world.namespace)}:80"
    await assert_rejected(
        world, server, path, grpc.StatusCode.INVALID_ARGUMENT, f"Invalid authority: {path}"
    )
    undeclared = await first_profile(server, f"{fqn('ext', world.namespace)}:81")
    assert undeclared.ByteSize() == 0, "port enforcement comes first (§6.3.1)"


async def test_an_unknown_service_is_unknown(world: World, server: Server) -> None:
    await assert_rejected(
        world,
        server,
        f"{fqn('nope', world.namespace)}:80",
        grpc.StatusCode.UNKNOWN,
        'service "nope" not found',
    )
    await assert_rejected(
        world,
        server,
        f"{fqn('web', 'no-such-namespace')}:80",
        grpc.StatusCode.UNKNOWN,
        'service "web" not found',
    )


# --------------------------------------------------------------------------
# conflicts


async def test_two_live_pods_at_one_ip_are_failed_precondition_until_one_goes(
    world: World, server: Server, east: Kube
) -> None:
    ns = world.namespace
    for name in ("twin-a", "twin-b"):
        await east.core.create_namespaced_pod(
            ns, pod_body(name, custom_status=True, node=east.cluster.spec.node_names()[0])
        )
        await set_pod_status(east, ns, name, phase="Running", ip=TWIN_IP)
    await assert_rejected(
        world,
        server,
        f"{TWIN_IP}:8080",
        grpc.StatusCode.FAILED_PRECONDITION,
        f"found 2 pods with a conflicting pod network IP {TWIN_IP}",
    )
    # A terminated pod no longer claims the address (§2.1).
    await set_pod_status(east, ns, "twin-b", phase="Succeeded")

    async def pod_at_twin_ip() -> str:
        error = await rejection(server, f"{TWIN_IP}:8080")
        if error is not None:
            return error.code().name
        profile = await first_profile(server, f"{TWIN_IP}:8080")
        return profile.endpoint.metric_labels.get("pod", "")

    await eventually(pod_at_twin_ip, lambda pod: pod == "twin-a", what="twin-a alone")
    for name in ("twin-a", "twin-b"):
        await delete_pod_now(east, ns, name)  # kwok leaves custom-status pods to the test


async def test_two_pods_on_one_host_port_are_failed_precondition(
    world: World, server: Server, east: Kube
) -> None:
    ns = world.namespace
    for index, node in enumerate(east.cluster.spec.node_names()):
        await create_running_pod(
            east, ns, pod_body(f"hostport-{index}", app="hostport", node=node, host_port=HOST_PORT)
        )
    await assert_rejected(
        world,
        server,
        f"127.0.0.1:{HOST_PORT}",
        grpc.StatusCode.FAILED_PRECONDITION,
        f"found 2 pods with a conflicting host network endpoint 127.0.0.1:{HOST_PORT}",
    )
    await delete_pod_now(east, ns, "hostport-1")

    async def pod_at_host_port() -> str:
        if await rejection(server, f"127.0.0.1:{HOST_PORT}") is not None:
            return "rejected"
        profile = await first_profile(server, f"127.0.0.1:{HOST_PORT}")
        return profile.endpoint.metric_labels.get("pod", "")

    await eventually(pod_at_host_port, lambda pod: pod == "hostport-0", what="one pod left")


async def test_two_external_workloads_at_one_address_are_failed_precondition(
    world: World, server: Server, east: Kube
) -> None:
    for name in ("vm-a", "vm-b"):
        await create_external_workload(
            east, world.namespace, external_workload(name, EW_IP, ports={"http": 8080})
        )
    await assert_rejected(
        world,
        server,
        f"{EW_IP}:8080",
        grpc.StatusCode.FAILED_PRECONDITION,
        f"found 2 externalworkloads with a conflicting ip {EW_IP}:8080",
    )
    other_port = await first_profile(server, f"{EW_IP}:9090")
    assert other_port.endpoint.metric_labels == {}, "no workload declares that port"
