"""The mirror controller through rotations, outages, restarts and several replicas.

Scope: a rotated credentials Secret restarts the Link's worker without
touching its mirrors, which are still kept in step after; a target API
server that goes away leaves the mirrors as they are, and changes made
meanwhile are mirrored once it is back; a controller started after remote
changes (unexported, deleted, newly exported Services, a federated member
deleted) repairs and garbage-collects on start; of two replicas exactly one
writes a Link's mirrors (its Lease), and the other takes over when it stops.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest
from kubernetes_asyncio import client as k8s

from tests.integration.links import REMOTE_DISCOVERY, reader_kubeconfig
from tests.integration.mirror_controller import (
    EXPORTED,
    MEMBER,
    Mirror,
    addresses,
    annotations_of,
    delete_link_object,
    export,
    get_object,
    host_ip,
    labels_of,
    link,
    read_link,
    rotate_credentials,
    running_mirror,
    stop_mirror,
    wait_gone,
    wait_object,
)
from tests.kube.cluster import ExtraApiServer
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration


async def test_rotated_credentials_restart_the_worker_and_leave_mirrors_alone(
    mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    linked = await link(east, west, mirror.namespace)
    name = f"web-{linked.name}"
    service = await wait_object(east, "Service", namespace, name)
    endpoints = await wait_object(east, "Endpoints", namespace, name)
    lists = await mirror.metric("watch_lists_total", cluster=linked.name)

    await rotate_credentials(east, linked, await reader_kubeconfig(west.cluster))
    await eventually(
        lambda: mirror.metric("watch_lists_total", cluster=linked.name),
        lambda n: n >= lists + 2,
        what="a new worker listing the target with the new token",
    )
    await asyncio.sleep(2.5)  # its first reconciles, and a repair
    for kind, before in (("Service", service), ("Endpoints", endpoints)):
        now = await get_object(east, kind, namespace, name)
        assert now is not None and before is not None
        assert now["metadata"]["uid"] == before["metadata"]["uid"]
        assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
            f"the mirror {kind} untouched by the rotation"
        )

    await export(west, namespace, "web", {"team": "rotated"})
    await wait_object(
        east, "Service", namespace, name, lambda o: labels_of(o).get("team") == "rotated"
    )
    await wait_object(
        east, "Endpoints", namespace, name, lambda o: labels_of(o).get("team") == "rotated"
    )


async def test_mirrors_outlive_a_target_api_server_outage_and_catch_up(
    mirror: Mirror, east: Kube, west: Kube, west_ha: ExtraApiServer, namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    linked = await link(east, west, mirror.namespace, server=west_ha.server)
    name = f"web-{linked.name}"
    await wait_object(east, "Endpoints", namespace, name)

    await asyncio.to_thread(west_ha.stop)
    await eventually(
        mirror.links,
        lambda links: links[linked.name]["state"] in ("stale", "failing"),
        what="the worker sees the target gone",
    )
    # Changes while it is away: web relabelled, api exported.
    await export(west, namespace, "web", {"team": "away"})
    await west.create_service(namespace, "api", labels=EXPORTED)
    await asyncio.sleep(4.5)  # two repair periods without the target
    assert await get_object(east, "Service", namespace, name) is not None, "mirrors are kept"
    assert addresses(await get_object(east, "Endpoints", namespace, name)) in ([], [host_ip()])
    assert await get_object(east, "Service", namespace, f"api-{linked.name}") is None

    await asyncio.to_thread(west_ha.start)
    await wait_object(east, "Endpoints", namespace, f"api-{linked.name}", timeout_s=60)
    await wait_object(
        east, "Service", namespace, name, lambda o: labels_of(o).get("team") == "away"
    )
    links = await mirror.links()
    assert links[linked.name]["state"] == "synced"


async def test_a_restarted_controller_repairs_and_collects_what_changed_meanwhile(
    east: Kube, west: Kube, namespace: str, controller_namespace: str
) -> None:
    for service in ("gone", "unexported", "kept"):
        await west.create_service(namespace, service, labels=EXPORTED)
    await west.create_service(namespace, "later", labels={})
    await west.create_service(namespace, "member", labels=MEMBER)
    async with running_mirror(east, controller_namespace) as mirror:
        linked = await link(east, west, mirror.namespace)
        c = linked.name
        for service in ("gone", "unexported", "kept"):
            await wait_object(east, "Endpoints", namespace, f"{service}-{c}")
        await wait_object(east, "Service", namespace, "member-federated")
        kept = await get_object(east, "Service", namespace, f"kept-{c}")

    # While no controller runs: deleted, unexported, exported, a federated member gone.
    await west.core.delete_namespaced_service("gone", namespace)
    await export(west, namespace, "unexported", {"mirror.linkerd.io/exported": None})
    await export(west, namespace, "later", EXPORTED)
    await west.core.delete_namespaced_service("member", namespace)
    await east.core.delete_namespaced_endpoints(f"kept-{c}", namespace)

    async with running_mirror(east, controller_namespace):
        await wait_object(east, "Endpoints", namespace, f"later-{c}")
        await wait_object(east, "Endpoints", namespace, f"kept-{c}")  # re-created
        for gone in (f"gone-{c}", f"unexported-{c}"):
            await wait_gone(east, "Service", namespace, gone)
            await wait_gone(east, "Endpoints", namespace, gone)
        await wait_gone(east, "Service", namespace, "member-federated")
        now = await get_object(east, "Service", namespace, f"kept-{c}")
        assert now is not None and kept is not None
        assert now["metadata"]["uid"] == kept["metadata"]["uid"], "an unchanged mirror is kept"
        assert REMOTE_DISCOVERY not in labels_of(now)
        assert annotations_of(now) == annotations_of(kept)

    # The Link deleted while no controller runs: its finalizer holds it until one does.
    await delete_link_object(east, linked)
    assert await read_link(east, linked) is not None
    async with running_mirror(east, controller_namespace):
        await eventually(lambda: read_link(east, linked), lambda o: o is None, what="Link gone")
        for service in ("kept", "later"):
            assert await get_object(east, "Service", namespace, f"{service}-{c}") is None


async def test_one_replica_writes_and_the_other_takes_over(
    east: Kube, west: Kube, namespace: str, controller_namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    async with (
        running_mirror(east, controller_namespace, identity="replica-a") as a,
        running_mirror(east, controller_namespace, identity="replica-b") as b,
    ):
        linked = await link(east, west, controller_namespace)
        name = f"web-{linked.name}"
        await wait_object(east, "Endpoints", namespace, name)
        await asyncio.sleep(1)
        writes = {
            m.identity: await m.writes(linked.name, "Service", "Endpoints", "Link") for m in (a, b)
        }
        leaders = {
            m.identity: await m.metric("mirror_link_leader", link=linked.name) for m in (a, b)
        }
        assert sorted(leaders.values()) == [0, 1], leaders
        leader, standby = (a, b) if leaders["replica-a"] == 1 else (b, a)
        assert writes[leader.identity] >= 2 and writes[standby.identity] == 0, writes
        assert (await standby.links())[linked.name]["state"] == "standby"

        await stop_mirror(leader)  # releases the Lease: no need to wait for it to expire
        await eventually(
            lambda: standby.metric("mirror_link_leader", link=linked.name),
            lambda v: v == 1,
            what="the standby takes the Lease",
            timeout_s=10,
        )
        await export(west, namespace, "web", {"team": "b"})
        await wait_object(
            east, "Service", namespace, name, lambda o: labels_of(o).get("team") == "b"
        )
        assert await standby.writes(linked.name) >= 1


async def test_a_hung_target_delays_only_its_own_link(
    mirror: Mirror, east: Kube, west: Kube, west_ha: ExtraApiServer, namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    hung = await link(east, west, mirror.namespace, server=west_ha.server)
    await wait_object(east, "Endpoints", namespace, f"web-{hung.name}")
    await asyncio.to_thread(west_ha.pause)  # open, silent connections: nothing answers
    try:
        healthy = await link(east, west, mirror.namespace)
        await wait_object(east, "Endpoints", namespace, f"web-{healthy.name}", timeout_s=10)
        await export(west, namespace, "web", {"team": "b"})
        await wait_object(
            east,
            "Service",
            namespace,
            f"web-{healthy.name}",
            lambda o: labels_of(o).get("team") == "b",
            timeout_s=5,
        )
        kept = await get_object(east, "Service", namespace, f"web-{hung.name}")
        assert kept is not None and "team" not in labels_of(kept), "kept as it was"
        async with asyncio.timeout(10):
            await stop_mirror(mirror)  # nor does it hold up a shutdown
    finally:
        await asyncio.to_thread(west_ha.resume)


async def test_a_lease_held_by_a_replica_that_died_is_taken_when_it_expires(
    east: Kube, west: Kube, namespace: str, controller_namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    linked = await link(east, west, controller_namespace)  # served once a controller runs
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"service-mirror-write-{linked.name}"},
        "spec": {
            "holderIdentity": "a-replica-that-died",
            "leaseDurationSeconds": 3,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 4,
        },
    }
    coordination = k8s.CoordinationV1Api(east.api)
    await coordination.create_namespaced_lease(controller_namespace, lease)
    started = asyncio.get_running_loop().time()
    async with running_mirror(east, controller_namespace) as mirror:
        await wait_object(east, "Endpoints", namespace, f"web-{linked.name}")
        waited = asyncio.get_running_loop().time() - started
        held = await coordination.read_namespaced_lease(lease["metadata"]["name"], mirror.namespace)
        assert held.spec.holder_identity == mirror.identity
        assert held.spec.lease_transitions == 5
        assert waited > 2.0, f"written {waited:.1f}s after the start: before the Lease expired"
