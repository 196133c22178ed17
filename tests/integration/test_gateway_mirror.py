"""Gateway-mode mirror services, as a service mirror writes them.

Scope: a selector-less mirror Service with an Endpoints object pointing at a
remote gateway (the shape of multicluster-behaviour §3.6), mirrored into
EndpointSlices by the real EndpointSlice mirroring controller, streamed by Get
with the gateway identity, the remote authority and the target labels; a
gateway probe failure (addresses moved to notReadyAddresses) removes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.destination_client import Server, open_stream, values
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

GATEWAY_IP = "10.12.255.1"  # an address in west's pod CIDR, standing for its gateway
GATEWAY_IDENTITY = (
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
)


def mirror_endpoints(namespace: str, *, ready: bool) -> dict[str, Any]:
    addresses = [{"ip": GATEWAY_IP}]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "web-west",
            "namespace": namespace,
            "labels": {
                "mirror.linkerd.io/cluster-name": "west",
                "mirror.linkerd.io/mirrored-service": "true",
            },
            "annotations": {
                "mirror.linkerd.io/remote-gateway-identity": GATEWAY_IDENTITY,
                "mirror.linkerd.io/remote-svc-fq-name": f"web.{namespace}.svc.cluster.local",
            },
        },
        "subsets": [
            {
                ("addresses" if ready else "notReadyAddresses"): addresses,
                "ports": [{"name": "http", "port": 4143, "protocol": "TCP"}],
            }
        ],
    }


async def test_gateway_mirror_endpoints_carry_identity_authority_and_target_labels(
    server: Server, east: Kube, namespace: str
) -> None:
    await east.create_service(
        namespace,
        "web-west",
        selector={},
        labels={
            "mirror.linkerd.io/mirrored-service": "true",
            "mirror.linkerd.io/cluster-name": "west",
        },
        annotations={"mirror.linkerd.io/remote-svc-fq-name": f"web.{namespace}.svc.cluster.local"},
    )
    await east.core.create_namespaced_endpoints(namespace, mirror_endpoints(namespace, ready=True))
    stream = open_stream(server, f"web-west.{namespace}.svc.cluster.local:80")
    await eventually(
        lambda: values(stream.ips()), lambda got: got == [GATEWAY_IP], what="the gateway address"
    )
    (addr,) = stream.addresses.values()
    assert addr.addr.port == 4143
    assert addr.authority_override.authority_override == f"web.{namespace}.svc.cluster.local:80"
    assert addr.tls_identity.dns_like_identity.name == GATEWAY_IDENTITY
    assert not addr.tls_identity.HasField("server_name")
    assert addr.protocol_hint.WhichOneof("protocol") == "h2"
    assert not addr.protocol_hint.HasField("opaque_transport")
    assert stream.labels == {
        "service": "web-west",
        "namespace": namespace,
        "target_cluster": "west",
        "target_service": "web",
        "target_service_namespace": namespace,
    }

    await east.core.replace_namespaced_endpoints(
        "web-west", namespace, mirror_endpoints(namespace, ready=False)
    )
    await eventually(
        lambda: values(stream.ips()), lambda got: got == [], what="gateway down: removed"
    )
    await east.core.replace_namespaced_endpoints(
        "web-west", namespace, mirror_endpoints(namespace, ready=True)
    )
    await eventually(
        lambda: values(stream.ips()), lambda got: got == [GATEWAY_IP], what="gateway back: added"
    )
    stream.call.cancel()
