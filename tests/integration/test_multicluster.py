"""Remote discovery and federated services across three real clusters.

The session server runs on `east`; `west` and `north` are linked to it by
credentials Secrets holding the least-privileged reader kubeconfig of
deploy/remote-access.yaml. Scope: a remote-discovery mirror streams the pods
of a remote Deployment as it scales, with identities in the remote trust
domain, and its error codes; a federated service is the union of its local
and remote members, and members joining and leaving (annotation edits, a
member Service deleted and recreated, a link deleted and restored) produce
exactly the Adds and Removes needed; rotating a link's credentials under a
live stream sends nothing for unchanged endpoints; a broken kubeconfig, an
insecure one (insecure-skip-tls-verify, refused by default) and an
unauthorized token affect only their own cluster, as `/clusters`, the
metrics and `destination clusters` show.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
import yaml

from tests.integration.destination_client import Server, Stream, open_stream
from tests.integration.links import (
    LOCAL_DISCOVERY,
    REMOTE_DISCOVERY,
    REMOTE_SERVICE,
    cluster_statuses,
    converge,
    create_remote_mirror,
    delete_link,
    link_name,
    link_secret,
    metric,
    put_link,
    reader_kubeconfig,
    wait_for_state,
)
from tests.kube.credentials import service_account_kubeconfig
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def mc_namespace(
    request: pytest.FixtureRequest, east: Kube, west: Kube, north: Kube
) -> AsyncIterator[str]:
    """A fresh namespace in all three clusters (remote services live in the same one)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:36].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    for kube in (east, west, north):
        await kube.create_namespace(name)
    yield name
    for kube in (east, west, north):
        await kube.delete_namespace(name)


async def deploy(kube: Kube, namespace: str, name: str, replicas: int) -> list[str]:
    await kube.create_deployment(namespace, name, replicas=replicas, meshed_by="linkerd")
    await kube.create_service(namespace, name)
    return await kube.wait_for_ready_endpoints(namespace, name, replicas)


async def link(east: Kube, remote: Kube, *, trust_domain: str) -> str:
    name = link_name(remote.cluster)
    kubeconfig = await reader_kubeconfig(remote.cluster)
    await put_link(east, link_secret(name, kubeconfig=kubeconfig, trust_domain=trust_domain))
    return name


async def stream_remote_web(
    server: Server, east: Kube, west: Kube, ns: str, *, replicas: int
) -> tuple[str, str, Stream, list[str]]:
    """Link west, deploy `web` there, mirror it on east and stream it.

    Returns the link name, the mirror's authority, the converged stream and
    the remote pod IPs.
    """
    cluster = await link(east, west, trust_domain="west.example")
    ips = await deploy(west, ns, "web", replicas)
    path = await create_remote_mirror(east, ns, cluster=cluster)
    await wait_for_state(server.admin, cluster, "synced")
    stream = open_stream(server, path)
    await converge(stream, ips, "the remote pods")
    return cluster, path, stream, ips


def removed_ips(stream: Stream, since: int) -> set[str]:
    """Every IP named in a Remove after the first `since` updates."""
    from tests.integration.destination_client import _key

    return {
        _key(addr).rsplit(":", 1)[0]
        for update in stream.updates[since:]
        if update.HasField("remove")
        for addr in update.remove.addrs
    }


async def status_code(server: Server, path: str) -> grpc.StatusCode:
    stream = open_stream(server, path)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        assert stream.task is not None
        await stream.task
    return failure.value.code()


# --------------------------------------------------------------------------
# remote discovery


async def test_remote_discovery_follows_a_remote_deployment_with_remote_identities(
    server: Server, east: Kube, west: Kube, mc_namespace: str
) -> None:
    ns = mc_namespace
    cluster, _, stream, ips = await stream_remote_web(server, east, west, ns, replicas=2)
    assert all(ip.startswith("10.12.") for ip in ips)  # west's pod CIDR
    identities = {a.tls_identity.dns_like_identity.name for a in stream.addresses.values()}
    assert identities == {f"default.{ns}.serviceaccount.identity.linkerd.west.example"}
    assert stream.labels == {"service": "web", "namespace": ns}

    await west.scale(ns, "web", 4)
    await converge(stream, await west.wait_for_ready_endpoints(ns, "web", 4), "scaled to 4")
    await west.scale(ns, "web", 1)
    one = await west.wait_for_ready_endpoints(ns, "web", 1)
    await converge(stream, one, "scaled to 1")
    stream.call.cancel()

    # Per-cluster observability: fan-out latency, cache sizes and last sync of this link.
    admin = server.admin
    assert await metric(admin, "event_to_enqueue_seconds_count", cluster=cluster) >= 2
    assert await metric(admin, "cache_objects", cluster=cluster, kind="Pod") >= 1
    assert await metric(admin, "remote_cluster_last_synced_timestamp_seconds", cluster=cluster) > 0
    assert await metric(admin, "remote_cluster_state", cluster=cluster, state="synced") == 1


async def test_remote_discovery_errors(
    server: Server, east: Kube, west: Kube, mc_namespace: str
) -> None:
    ns = mc_namespace
    await east.create_service(ns, "nameless", selector={}, labels={REMOTE_DISCOVERY: "west"})
    await east.create_service(
        ns, "unlinked", selector={}, labels={REMOTE_DISCOVERY: "nowhere", REMOTE_SERVICE: "web"}
    )
    await asyncio.sleep(0.5)  # let the server's watch see both
    assert (
        await status_code(server, f"nameless.{ns}.svc.cluster.local:80")
        is grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (
        await status_code(server, f"unlinked.{ns}.svc.cluster.local:80")
        is grpc.StatusCode.NOT_FOUND
    )


# --------------------------------------------------------------------------
# federated services


async def test_federated_members_join_and_leave_on_a_live_stream(
    server: Server, east: Kube, west: Kube, north: Kube, mc_namespace: str
) -> None:
    ns = mc_namespace
    west_link = await link(east, west, trust_domain="west.example")
    north_link = await link(east, north, trust_domain="north.example")
    local_ips = await deploy(east, ns, "web", 1)
    west_ips = await deploy(west, ns, "web", 2)
    north_ips = await deploy(north, ns, "web", 2)
    everyone = f"web@{west_link},web@{north_link}"
    await east.create_service(
        ns,
        "web-federated",
        selector={},
        annotations={LOCAL_DISCOVERY: "web", REMOTE_DISCOVERY: everyone},
    )
    for name in (west_link, north_link):
        await wait_for_state(server.admin, name, "synced")
    stream = open_stream(server, f"web-federated.{ns}.svc.cluster.local:80")
    await converge(stream, local_ips + west_ips + north_ips, "the union of three members")
    by_ip = {ip: a.tls_identity.dns_like_identity.name for ip, a in _by_ip(stream).items()}
    assert {by_ip[ip].rsplit(".", 2)[-2] for ip in west_ips} == {"west"}
    assert {by_ip[ip].rsplit(".", 2)[-2] for ip in north_ips} == {"north"}

    async def annotate(annotations: dict[str, str | None]) -> None:
        await east.core.patch_namespaced_service(
            "web-federated", ns, {"metadata": {"annotations": annotations}}
        )

    # north leaves by an annotation edit: only its endpoints are removed.
    mark = len(stream.updates)
    await annotate({REMOTE_DISCOVERY: f"web@{west_link}"})
    await converge(stream, local_ips + west_ips, "north left")
    assert removed_ips(stream, mark) == set(north_ips)

    # the local member leaves, north comes back.
    mark = len(stream.updates)
    await annotate({LOCAL_DISCOVERY: None, REMOTE_DISCOVERY: everyone})
    await converge(stream, west_ips + north_ips, "local left, north back")
    assert removed_ips(stream, mark) == set(local_ips)

    # a member Service deleted in its cluster, then created again.
    mark = len(stream.updates)
    await west.core.delete_namespaced_service("web", ns)
    await converge(stream, north_ips, "west's Service deleted")
    assert removed_ips(stream, mark) == set(west_ips)
    await west.create_service(ns, "web")
    await converge(stream, west_ips + north_ips, "west's Service back")

    # a member cluster unlinked (its Secret deleted), then linked again.
    mark = len(stream.updates)
    await delete_link(east, north_link)
    await converge(stream, west_ips, "north unlinked")
    assert removed_ips(stream, mark) == set(north_ips)
    assert north_link not in await cluster_statuses(server.admin)
    kubeconfig = await reader_kubeconfig(north.cluster)
    await put_link(
        east, link_secret(north_link, kubeconfig=kubeconfig, trust_domain="north.example")
    )
    await converge(stream, west_ips + north_ips, "north linked again")
    stream.call.cancel()


def _by_ip(stream: Stream) -> dict[str, object]:
    return {key.rsplit(":", 1)[0]: addr for key, addr in stream.addresses.items()}


# --------------------------------------------------------------------------
# credentials


async def test_rotating_credentials_under_a_live_stream_removes_nothing(
    server: Server, east: Kube, west: Kube, mc_namespace: str
) -> None:
    ns = mc_namespace
    cluster, _, stream, _ = await stream_remote_web(server, east, west, ns, replicas=3)
    applied = await metric(
        server.admin,
        "remote_cluster_credential_rotations_total",
        cluster=cluster,
        result="applied",
    )

    # A new token for the same reader: the Secret changes, the endpoints do not.
    mark = len(stream.updates)
    rotated = await reader_kubeconfig(west.cluster)
    await put_link(east, link_secret(cluster, kubeconfig=rotated, trust_domain="west.example"))
    await eventually(
        lambda: metric(
            server.admin,
            "remote_cluster_credential_rotations_total",
            cluster=cluster,
            result="applied",
        ),
        lambda count: count == applied + 1,
        what="the rotation applied",
    )
    assert stream.updates[mark:] == [], "a rotation with nothing changed sends nothing"
    assert (await cluster_statuses(server.admin))[cluster]["state"] == "synced"

    # The new connection keeps following the remote cluster.
    await west.scale(ns, "web", 4)
    await converge(stream, await west.wait_for_ready_endpoints(ns, "web", 4), "scaled to 4")
    assert removed_ips(stream, mark) == set()
    stream.call.cancel()


async def test_broken_and_unauthorized_links_affect_only_their_cluster(
    server: Server, east: Kube, west: Kube, north: Kube, mc_namespace: str
) -> None:
    ns = mc_namespace
    good = await link(east, west, trust_domain="west.example")
    broken = f"broken-{secrets.token_hex(3)}"
    await put_link(
        east, link_secret(broken, kubeconfig="clusters: [oops", trust_domain="x.example")
    )
    denied = f"denied-{secrets.token_hex(3)}"
    # A real token of a ServiceAccount that no role grants anything.
    token_only = await asyncio.to_thread(
        service_account_kubeconfig, north.cluster, namespace=ns, service_account="nobody"
    )
    await put_link(east, link_secret(denied, kubeconfig=token_only, trust_domain="n.example"))
    insecure = f"insecure-{secrets.token_hex(3)}"
    unverified = yaml.safe_load(await reader_kubeconfig(north.cluster))
    cluster_entry = unverified["clusters"][0]["cluster"]
    del cluster_entry["certificate-authority-data"]
    cluster_entry["insecure-skip-tls-verify"] = True
    await put_link(
        east, link_secret(insecure, kubeconfig=yaml.safe_dump(unverified), trust_domain="i.example")
    )

    invalid = await wait_for_state(server.admin, broken, "invalid")
    assert "not valid YAML" in invalid["error"]
    refused = await wait_for_state(server.admin, insecure, "invalid")
    assert "insecure-skip-tls-verify: true turns certificate checks off" in refused["error"]
    failing = await wait_for_state(server.admin, denied, "failing")
    assert "403" in failing["error"] and "forbidden" in failing["error"]
    await wait_for_state(server.admin, good, "synced")

    # Everything else keeps working: readiness, and the good link's endpoints.
    ips = await deploy(west, ns, "web", 1)
    await east.create_service(
        ns, "web-west", selector={}, labels={REMOTE_DISCOVERY: good, REMOTE_SERVICE: "web"}
    )
    stream = open_stream(server, f"web-west.{ns}.svc.cluster.local:80")
    await converge(stream, ips, "the good link's endpoints")
    stream.call.cancel()
    assert await metric(server.admin, "remote_cluster_state", cluster=denied, state="failing") == 1
    assert await metric(server.admin, "remote_cluster_state", cluster=broken, state="invalid") == 1

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "destination",
        "clusters",
        "--admin",
        server.admin,
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 4  # some cluster is not synced
    listed = {c["name"]: c["state"] for c in json.loads(out)["clusters"]}
    assert (listed[good], listed[broken], listed[denied]) == ("synced", "invalid", "failing")
    assert listed[insecure] == "invalid"

    for name in (broken, denied, good):
        await delete_link(east, name)


async def test_deleting_a_link_removes_its_endpoints_and_later_gets_are_not_found(
    server: Server, east: Kube, west: Kube, mc_namespace: str
) -> None:
    ns = mc_namespace
    cluster, path, stream, _ = await stream_remote_web(server, east, west, ns, replicas=2)
    await delete_link(east, cluster)
    await converge(stream, [], "Removes after the link was deleted")
    assert stream.task is not None and not stream.task.done()  # the stream stays open
    assert await status_code(server, path) is grpc.StatusCode.NOT_FOUND
    stream.call.cancel()
