"""Headless Services and per-pod mirrors of a StatefulSet (reference §3.8, opt-in).

Scope: with `--enable-headless-services`, an exported headless Service whose
endpoints have hostnames (a StatefulSet's pods) becomes a headless root
mirror `<svc>-<cluster>`, one ClusterIP mirror `<pod>-<cluster>` per ready
pod with gateway Endpoints, and root Endpoints that point each hostname at
its per-pod mirror's ClusterIP with the remote ports as they are. Scaling
down removes the per-pod mirror of the pod that went; the status says
Mirrored (Q1). A pod named like another exported Service gets no per-pod
mirror: that Service's mirror keeps the name, and the status and an Event
say why.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.mirror_controller import (
    CLUSTER_LABEL,
    EXPORTED,
    FQ_NAME,
    GATEWAY_PORT,
    MIRRORED,
    addresses,
    annotations_of,
    get_object,
    host_ip,
    labels_of,
    link,
    link_events,
    ports_of,
    running_mirror,
    status_of,
    wait_gone,
    wait_object,
)
from tests.kube.workloads import FAKE_IMAGE, Kube, eventually

pytestmark = pytest.mark.integration

HEADLESS_OF = "mirror.linkerd.io/headless-mirror-svc-name"


async def statefulset(kube: Kube, namespace: str, name: str, replicas: int) -> None:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "db",
                            "image": FAKE_IMAGE,
                            "ports": [{"name": "tcp", "containerPort": 5432}],
                        }
                    ]
                },
            },
        },
    }
    await kube.apps.create_namespaced_stateful_set(namespace, body)


def root_addresses(endpoints: dict[str, Any] | None) -> dict[str, str]:
    return {
        a["hostname"]: a["ip"]
        for subset in (endpoints or {}).get("subsets") or []
        for a in subset.get("addresses") or []
    }


async def test_a_statefulset_gets_a_headless_root_and_a_mirror_per_pod(
    east: Kube, west: Kube, namespace: str, controller_namespace: str
) -> None:
    await west.create_service(
        namespace,
        "db",
        labels=EXPORTED,
        ports={"tcp": (5432, 5432)},
        extra_spec={"clusterIP": "None"},
    )
    await statefulset(west, namespace, "db", 2)
    await west.wait_for_ready_endpoints(namespace, "db", 2)
    async with running_mirror(east, controller_namespace, enable_headless_services=True) as mirror:
        linked = await link(east, west, mirror.namespace)
        c = linked.name
        root = f"db-{c}"
        pods = {f"db-{i}": f"db-{i}-{c}" for i in range(2)}

        service = await wait_object(east, "Service", namespace, root)
        assert service is not None and service["spec"]["clusterIP"] == "None"
        ips = {}
        for hostname, name in pods.items():
            pod_mirror = await wait_object(east, "Service", namespace, name)
            assert pod_mirror is not None and pod_mirror["spec"]["clusterIP"] not in ("", "None")
            ips[hostname] = pod_mirror["spec"]["clusterIP"]
            assert labels_of(pod_mirror) == {
                MIRRORED: "true",
                CLUSTER_LABEL: c,
                HEADLESS_OF: root,
            }
            assert annotations_of(pod_mirror)[FQ_NAME] == (
                f"{hostname}.db.{namespace}.svc.cluster.local"
            )
            pod_endpoints = await wait_object(
                east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()]
            )
            assert ports_of(pod_endpoints) == [("tcp", GATEWAY_PORT, "TCP")]
        endpoints = await wait_object(
            east,
            "Endpoints",
            namespace,
            root,
            lambda o: root_addresses(o) == ips,
            what="root Endpoints: each hostname at its per-pod mirror's ClusterIP",
        )
        assert ports_of(endpoints) == [("tcp", 5432, "TCP")], "the remote ports, as they are"
        status = await status_of(east, linked, "mirrorServices", namespace, "db")
        assert (status["status"], status["reason"]) == ("True", "Mirrored")

        # Scale down: the per-pod mirror of the pod that went goes, the root follows.
        await west.apps.patch_namespaced_stateful_set_scale(
            "db", namespace, {"spec": {"replicas": 1}}
        )
        await wait_gone(east, "Service", namespace, pods["db-1"])
        await wait_object(
            east,
            "Endpoints",
            namespace,
            root,
            lambda o: root_addresses(o) == {"db-0": ips["db-0"]},
        )
        # Scaled to zero and back: the root stays headless meanwhile, the pods come back.
        await west.apps.patch_namespaced_stateful_set_scale(
            "db", namespace, {"spec": {"replicas": 0}}
        )
        await wait_gone(east, "Service", namespace, pods["db-0"])
        await wait_object(east, "Endpoints", namespace, root, lambda o: root_addresses(o) == {})
        headless = await get_object(east, "Service", namespace, root)
        assert headless is not None and headless["spec"]["clusterIP"] == "None"
        assert headless["metadata"]["uid"] == service["metadata"]["uid"], "never re-created"
        await west.apps.patch_namespaced_stateful_set_scale(
            "db", namespace, {"spec": {"replicas": 2}}
        )
        await wait_object(
            east,
            "Endpoints",
            namespace,
            root,
            lambda o: set(root_addresses(o)) == {"db-0", "db-1"},
            what="both pods back in the root Endpoints",
        )


async def test_a_pod_named_like_a_mirrored_service_gets_no_per_pod_mirror(
    east: Kube, west: Kube, namespace: str, controller_namespace: str
) -> None:
    """Regression: a Service `db-0` next to pod `db-0` of StatefulSet `db` made two mirrors
    named `db-0-<cluster>`; the Service's won, and the root Endpoints of `db` sent hostname
    `db-0` to that Service's ClusterIP. Now its mirror keeps the name, `db` has no per-pod
    mirror for `db-0`, and `db`'s status and an Event on the Link say why."""
    await west.create_service(
        namespace,
        "db",
        labels=EXPORTED,
        ports={"tcp": (5432, 5432)},
        extra_spec={"clusterIP": "None"},
    )
    await west.create_service(
        namespace, "db-0", labels=EXPORTED, ports={"tcp": (5432, 5432)}, selector={"app": "none"}
    )
    await statefulset(west, namespace, "db", 2)
    await west.wait_for_ready_endpoints(namespace, "db", 2)
    async with running_mirror(east, controller_namespace, enable_headless_services=True) as mirror:
        linked = await link(east, west, mirror.namespace)
        c = linked.name
        pod_mirror = await wait_object(east, "Service", namespace, f"db-1-{c}")
        assert pod_mirror is not None
        await wait_object(
            east,
            "Endpoints",
            namespace,
            f"db-{c}",
            lambda o: root_addresses(o) == {"db-1": pod_mirror["spec"]["clusterIP"]},
            what="root Endpoints: only db-1, never db-0 at another Service's ClusterIP",
        )
        taken = await get_object(east, "Service", namespace, f"db-0-{c}")
        assert taken is not None and HEADLESS_OF not in labels_of(taken)
        assert annotations_of(taken)[FQ_NAME] == f"db-0.{namespace}.svc.cluster.local"
        status = await status_of(east, linked, "mirrorServices", namespace, "db-0")
        assert (status["status"], status["reason"]) == ("True", "Mirrored")
        why = (
            f"per-pod mirrors not written, their names are taken: db-0-{c} (hostname db-0) "
            "is the name of Service db-0's mirror"
        )
        status = await status_of(east, linked, "mirrorServices", namespace, "db")
        assert (status["status"], status["reason"], status["message"]) == (
            "False",
            "InvalidService",
            why,
        )
        await eventually(
            lambda: link_events(east, linked),
            lambda events: (
                ("Normal", "ServiceMirroringSkipped", f"{namespace}/db: {why}") in events
            ),
            what="an Event on the Link saying why db-0 has no per-pod mirror",
        )
