"""Gateway-mode mirrors written by the mirror controller, on real clusters (reference §3.6, §3.7,
§3.10, §4).

Scope: `destination mirror` (in-process, `mirror.app.run`) serving a Link from
east to west. An exported Service becomes `<svc>-<cluster>` and its Endpoints
with the exact labels, annotations and ports of §3.6 (exclusions, port
remapping to the gateway port, the opaque-ports annotation always kept);
follows the remote Service's labels, annotations and ports and its
emptiness; is repaired when deleted or edited; goes when unexported or
deleted. The gateway's probe (a stand-in HTTP server at this host's address)
moves the Endpoints' addresses to notReadyAddresses and back, which a live
destination `Get` sees as Removes and Adds; the gateway metrics of §4.3 say
it; every series of the Link goes with it.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tests.integration.destination_client import Server, open_stream, values
from tests.integration.mirror_controller import (
    CLUSTER_LABEL,
    EXPORTED,
    FQ_NAME,
    GATEWAY_IDENTITY,
    GATEWAY_IDENTITY_KEY,
    GATEWAY_PORT,
    MIRRORED,
    RESOURCE_VERSION,
    Mirror,
    addresses,
    annotations_of,
    delete_link_object,
    export,
    gateway_stand_in,
    get_object,
    host_ip,
    labels_of,
    link,
    link_spec,
    link_statuses,
    patch_link,
    ports_of,
    read_link,
    status_of,
    wait_gone,
    wait_object,
)
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration


async def test_an_exported_service_is_mirrored_kept_in_step_repaired_and_removed(
    mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=1)
    await west.create_service(
        namespace,
        "web",
        ports={"http": (80, "http"), "admin": (9090, 9090)},
        labels=EXPORTED | {"team": "a", "secret.io/key": "x", "secret.iox/key": "y"},
        annotations={
            "note": "n",
            "internal.io/a": "b",
            "config.linkerd.io/opaque-ports": "9090",
            "service.kubernetes.io/topology-mode": "Auto",
        },
    )
    await west.wait_for_ready_endpoints(namespace, "web", 1)
    cluster = f"west-{secrets.token_hex(3)}"
    # The exclusions of the Link (a "/*" entry is a plain prefix, as in the reference).
    spec = link_spec(cluster) | {
        "excludedLabels": ["secret.io/*"],
        "excludedAnnotations": ["internal.io/*", "config.linkerd.io/opaque-ports"],
    }
    linked = await link(east, west, mirror.namespace, name=cluster, spec=spec)
    name = f"web-{linked.name}"
    remote = await west.core.read_namespaced_service("web", namespace)

    def labelled(team: str) -> dict[str, str]:
        return {"team": team, MIRRORED: "true", CLUSTER_LABEL: linked.name}

    service = await wait_object(
        east,
        "Service",
        namespace,
        name,
        lambda o: labels_of(o) == labelled("a"),
        what="the mirror Service with the Link's exclusions applied",
    )
    assert annotations_of(service) == {
        "note": "n",
        "config.linkerd.io/opaque-ports": "9090",  # kept even though excluded
        FQ_NAME: f"web.{namespace}.svc.cluster.local",
        RESOURCE_VERSION: remote.metadata.resource_version,
    }
    assert service is not None
    assert service["spec"]["type"] == "ClusterIP"
    assert "selector" not in service["spec"]
    assert sorted((p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]) == [
        ("admin", 9090, 9090),
        ("http", 80, "http"),
    ]
    endpoints = await wait_object(
        east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()]
    )
    assert labels_of(endpoints) == labelled("a"), "Endpoints carry the Service's labels"
    assert annotations_of(endpoints) == {
        FQ_NAME: f"web.{namespace}.svc.cluster.local",
        GATEWAY_IDENTITY_KEY: GATEWAY_IDENTITY,
    }
    assert ports_of(endpoints) == [
        ("admin", GATEWAY_PORT, "TCP"),
        ("http", GATEWAY_PORT, "TCP"),
    ], "every port, by name, at the gateway port"
    status = await status_of(east, linked, "mirrorServices", namespace, "web")
    assert status["status"] == "True" and status["reason"] == "Mirrored"
    assert status["localRef"]["name"] == name

    # The remote Service changes: labels, annotations and ports follow (Service and Endpoints).
    await west.core.patch_namespaced_service(
        "web",
        namespace,
        {
            "metadata": {"labels": {"team": "b"}, "annotations": {"note": "m"}},
            "spec": {
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                    {"name": "grpc", "port": 9000, "targetPort": 9000, "protocol": "TCP"},
                ]
            },
        },
        _content_type="application/merge-patch+json",  # the whole list of ports replaced
    )
    service = await wait_object(
        east,
        "Service",
        namespace,
        name,
        lambda o: (
            ports_of(o) == [("grpc", 9000, "TCP"), ("http", 80, "TCP")]
            and annotations_of(o).get("note") == "m"
            and labels_of(o) == labelled("b")
        ),
        what="labels, annotations and ports updated",
    )
    await wait_object(
        east,
        "Endpoints",
        namespace,
        name,
        lambda o: (
            labels_of(o) == labelled("b")
            and ports_of(o) == [("grpc", GATEWAY_PORT, "TCP"), ("http", GATEWAY_PORT, "TCP")]
        ),
        what="Endpoints labels (Q22) and ports updated",
    )

    # An empty remote Service makes the mirror endpoint-less; its pods back bring the gateway.
    await west.scale(namespace, "web", 0)
    await wait_object(east, "Endpoints", namespace, name, lambda o: not (o or {}).get("subsets"))
    await west.scale(namespace, "web", 1)
    await wait_object(east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()])

    # Repairs: a deleted Endpoints and a deleted Service come back; drift is reverted.
    await east.core.delete_namespaced_endpoints(name, namespace)
    await wait_object(east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()])
    assert service is not None
    uid = service["metadata"]["uid"]
    await east.core.delete_namespaced_service(name, namespace)
    await wait_object(
        east,
        "Service",
        namespace,
        name,
        lambda o: o is not None and o["metadata"]["uid"] != uid,
        what="the deleted mirror Service re-created",
    )
    await wait_object(east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()])
    await east.core.patch_namespaced_service(
        name, namespace, {"metadata": {"labels": {"team": "edited", "extra": "1"}}}
    )
    await east.core.patch_namespaced_endpoints(
        name,
        namespace,
        {
            "subsets": [
                {
                    "addresses": [{"ip": "10.11.255.9"}],
                    "ports": [{"name": "http", "port": 1, "protocol": "TCP"}],
                }
            ]
        },
        _content_type="application/merge-patch+json",
    )
    await wait_object(east, "Service", namespace, name, lambda o: labels_of(o) == labelled("b"))
    await wait_object(east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()])

    # The Link's gateway moves (addresses, sorted as text, and port): the Endpoints follow.
    await patch_link(
        east, linked, {"spec": {"gatewayAddress": "192.0.2.77, 192.0.2.7", "gatewayPort": "4444"}}
    )
    await wait_object(
        east,
        "Endpoints",
        namespace,
        name,
        lambda o: (
            addresses(o) == ["192.0.2.7", "192.0.2.77"]
            and ports_of(o) == [("grpc", 4444, "TCP"), ("http", 4444, "TCP")]
        ),
        what="the new gateway addresses and port",
    )

    # Unexported: the mirror goes, and its status entry with it.
    await export(west, namespace, "web", {"mirror.linkerd.io/exported": None})
    await wait_gone(east, "Service", namespace, name)
    await wait_gone(east, "Endpoints", namespace, name)
    await eventually(
        lambda: link_statuses(east, linked, "mirrorServices", namespace),
        lambda s: "web" not in s,
        what="the status entry removed with the last mirror (Q21)",
    )

    # Exported again, then deleted on the target: the mirror goes.
    await export(west, namespace, "web", EXPORTED)
    await wait_object(
        east, "Endpoints", namespace, name, lambda o: addresses(o) == ["192.0.2.7", "192.0.2.77"]
    )
    await west.core.delete_namespaced_service("web", namespace)
    await wait_gone(east, "Service", namespace, name)
    await wait_gone(east, "Endpoints", namespace, name)


async def test_gateway_liveness_moves_addresses_and_live_streams_follow(
    server: Server, mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=1)
    await west.create_service(namespace, "web", labels=EXPORTED)
    await west.wait_for_ready_endpoints(namespace, "web", 1)
    async with gateway_stand_in() as gateway:
        linked = await link(east, west, mirror.namespace, gateway=gateway)
        cluster = linked.name
        name = f"web-{cluster}"
        await wait_object(
            east, "Endpoints", namespace, name, lambda o: addresses(o) == [gateway.ip]
        )
        stream = open_stream(server, f"{name}.{namespace}.svc.cluster.local:80")
        await eventually(
            lambda: values(stream.ips()), lambda got: got == [gateway.ip], what="the gateway"
        )
        (address,) = stream.addresses.values()
        assert address.addr.port == GATEWAY_PORT
        assert address.tls_identity.dns_like_identity.name == GATEWAY_IDENTITY
        await eventually(
            lambda: mirror.metric("gateway_alive", target_cluster_name=cluster),
            lambda v: v == 1,
            what="gateway_alive 1 after a successful probe",
        )
        assert await mirror.metric("gateway_enabled", target_cluster_name=cluster) == 1
        assert (
            await mirror.metric(
                "gateway_probes", target_cluster_name=cluster, probe_successful="true"
            )
            >= 1
        )
        assert await mirror.metric("gateway_latency", target_cluster_name=cluster) > 0
        assert await mirror.metric("gateway_probe_latency_ms_count", target_cluster_name=cluster)

        updates = len(stream.updates)
        gateway.up = False
        await wait_object(
            east,
            "Endpoints",
            namespace,
            name,
            lambda o: addresses(o) == [] and addresses(o, "notReadyAddresses") == [gateway.ip],
            what="the gateway's address not ready after failureThreshold failures",
        )
        await eventually(lambda: values(stream.ips()), lambda got: got == [], what="a Remove")
        assert any(u.HasField("remove") for u in stream.updates[updates:])
        assert await mirror.metric("gateway_alive", target_cluster_name=cluster) == 0
        assert (
            await mirror.metric(
                "gateway_probes", target_cluster_name=cluster, probe_successful="false"
            )
            >= 1
        )

        updates = len(stream.updates)
        gateway.up = True
        await wait_object(
            east, "Endpoints", namespace, name, lambda o: addresses(o) == [gateway.ip]
        )
        await eventually(
            lambda: values(stream.ips()), lambda got: got == [gateway.ip], what="an Add"
        )
        assert any(u.HasField("add") for u in stream.updates[updates:])
        assert await mirror.metric("gateway_alive", target_cluster_name=cluster) == 1
        stream.call.cancel()

        # The Link goes: its mirrors, then every series of it (§4.3, Q16).
        await delete_link_object(east, linked)
        await wait_gone(east, "Service", namespace, name)
        await eventually(
            lambda: read_link(east, linked), lambda o: o is None, what="the Link deleted"
        )

        async def leftovers() -> list[str]:
            text = await mirror.metrics_text()
            return [
                line
                for line in text.splitlines()
                if not line.startswith("#")
                and any(
                    f'{label}="{cluster}"' in line
                    for label in ("target_cluster_name", "link", "cluster")
                )
            ]

        await eventually(leftovers, lambda lines: lines == [], what="no series of the Link left")
        probes = gateway.probes
        await asyncio.sleep(1.5)
        assert gateway.probes == probes, "the gateway is no longer probed"
    assert await get_object(east, "Endpoints", namespace, name) is None
