"""Remote-discovery mirrors written by the mirror controller, streamed end to end (§3.6, §3.13).

Scope: a Service of west exported with the Link's `remoteDiscoverySelector`
becomes `<svc>-<cluster>` in east, labelled for the destination server's
remote discovery and without any Endpoints; the destination server (the
session's, with west linked for remote discovery under the same cluster
name) then streams west's pods for `Get <svc>-<cluster>.<ns>...`. Switching
the export between modes adds and removes the gateway Endpoints.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.destination_client import Server, open_stream
from tests.integration.links import (
    REMOTE_DISCOVERY,
    REMOTE_SERVICE,
    converge,
    delete_link,
    link_secret,
    put_link,
    reader_kubeconfig,
)
from tests.integration.mirror_controller import (
    CLUSTER_LABEL,
    EXPORTED,
    MIRRORED,
    REMOTE_DISCOVERY_EXPORT,
    Mirror,
    addresses,
    export,
    get_object,
    host_ip,
    labels_of,
    link,
    status_of,
    wait_gone,
    wait_object,
)
from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration


async def test_a_remote_discovery_mirror_streams_the_target_pods_end_to_end(
    server: Server, mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    await west.create_deployment(namespace, "web", replicas=2, meshed_by="linkerd")
    await west.create_service(namespace, "web", labels=REMOTE_DISCOVERY_EXPORT | {"team": "a"})
    pods = await west.wait_for_ready_endpoints(namespace, "web", 2)
    linked = await link(east, west, mirror.namespace)
    cluster = linked.name
    # The destination server's own link to west, under the Link's target cluster name.
    kubeconfig = await reader_kubeconfig(west.cluster)
    await put_link(east, link_secret(cluster, kubeconfig=kubeconfig, trust_domain="west.example"))
    name = f"web-{cluster}"

    service = await wait_object(east, "Service", namespace, name)
    assert labels_of(service) == {
        "team": "a",
        MIRRORED: "true",
        CLUSTER_LABEL: cluster,
        REMOTE_DISCOVERY: cluster,
        REMOTE_SERVICE: "web",
    }
    status = await status_of(east, linked, "mirrorServices", namespace, "web")
    assert status["status"] == "True"
    assert status["localRef"] == {
        "group": "core",
        "kind": "Service",
        "name": name,
        "namespace": namespace,
    }

    stream = open_stream(server, f"{name}.{namespace}.svc.cluster.local:80")
    await converge(stream, pods, "west's pods through remote discovery")
    assert stream.labels["namespace"] == namespace
    await asyncio.sleep(1)  # a repair period and more: still no Endpoints object
    assert await get_object(east, "Endpoints", namespace, name) is None

    # The export switches to gateway mode: the remote-discovery labels go, Endpoints come.
    await export(west, namespace, "web", EXPORTED)
    await wait_object(east, "Endpoints", namespace, name, lambda o: addresses(o) == [host_ip()])
    service = await wait_object(
        east, "Service", namespace, name, lambda o: REMOTE_DISCOVERY not in labels_of(o)
    )
    assert REMOTE_SERVICE not in labels_of(service)
    await converge(stream, [host_ip()], "the gateway instead of the pods")

    # And back: the Endpoints go, and the pods are streamed again.
    await export(west, namespace, "web", REMOTE_DISCOVERY_EXPORT)
    await wait_gone(east, "Endpoints", namespace, name)
    await converge(stream, pods, "the pods again")
    stream.call.cancel()
    await delete_link(east, cluster)
