"""Unit tests for ExternalWorkload endpoints (reference §5.3 and §5.7 b).

Scope: projecting an ExternalWorkload (meshTLS required, the `linkerd-proxy`
port, opaque ports by EW port name); translating its address: labels
`external_workload`, owner, zone and zone_locality; a URI-like identity with
the server name; `h2` whatever the H2-upgrade setting, `opaque` with opaque
transport to the EW's proxy port (4143 when it names none); and Servers with
an `externalWorkloadSelector` making EW ports opaque.
"""

from __future__ import annotations

from typing import Any

from destination._proto import destination_pb2 as pb
from destination.translate.endpoints import EncodeContext, MeshSettings, weighted_addr
from discovery.index import ClusterIndex
from discovery.models import Address, ExternalWorkloadInfo, Kind, ServiceRef
from discovery.ports import PortSet
from discovery.project import Invalid, project_external_workload
from discovery.topics import build_addresses
from tests.unit import builders as b

WEB = ServiceRef(b.NS, "web")


def mesh(*, h2: bool = False, force_opaque: bool = False) -> MeshSettings:
    return MeshSettings(
        controller_namespace=b.CNS,
        trust_domain="cluster.local",
        enable_h2_upgrade=h2,
        force_opaque_transport=force_opaque,
    )


def workload_address(*raws: dict[str, Any], workload: dict[str, Any] | None = None) -> Address:
    index = ClusterIndex()
    for raw in (
        b.service(),
        workload or b.external_workload(),
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.9.1", pod="vm-1", target_kind="ExternalWorkload", zone="z1")
            ]
        ),
        *raws,
    ):
        index.upsert(b.projected(raw))
    addresses, _ = build_addresses(index, WEB, 80, default_opaque_ports=PortSet.EMPTY)
    (address,) = addresses.values()
    return address


def encode(address: Address, settings: MeshSettings) -> pb.WeightedAddr:
    ctx = EncodeContext(
        mesh=settings, requested_port=80, subscriber_zone="z1", trust_domain="cluster.local"
    )
    message = weighted_addr(address, ctx)
    assert message is not None
    return message


def test_an_external_workload_is_projected() -> None:
    record = project_external_workload(b.external_workload(ports=(("http", 8080),)))
    assert isinstance(record, ExternalWorkloadInfo)
    assert record.proxy_inbound_port == 4143  # no port named linkerd-proxy
    named = project_external_workload(b.external_workload())
    assert isinstance(named, ExternalWorkloadInfo) and named.proxy_inbound_port == 4143
    other = project_external_workload(
        b.external_workload(ports=(("http", 8080), ("linkerd-proxy", 4999)))
    )
    assert isinstance(other, ExternalWorkloadInfo) and other.proxy_inbound_port == 4999


def test_an_external_workload_without_mesh_tls_is_invalid() -> None:
    raw = b.external_workload()
    raw["spec"]["meshTLS"] = {"identity": ""}
    assert isinstance(project_external_workload(raw), Invalid)


def test_an_external_workload_address_is_translated_as_the_reference_says() -> None:
    address = workload_address(workload=b.external_workload(owner=("VirtualMachine", "vm")))
    message = encode(address, mesh(h2=False))
    assert dict(message.metric_labels) == {
        "external_workload": "vm-1",
        "virtualmachine": "vm",
        "zone": "z1",
        "zone_locality": "local",
    }
    assert message.tls_identity.uri_like_identity.uri == "spiffe://cluster.local/vm/vm-1"
    assert message.tls_identity.server_name.name == "vm-1.ns.external.cluster.local"
    assert message.protocol_hint.WhichOneof("protocol") == "h2"  # whatever h2 upgrade says
    assert not message.protocol_hint.HasField("opaque_transport")


def test_an_opaque_external_workload_port_gets_opaque_transport_to_its_proxy() -> None:
    workload = b.external_workload(
        ports=(("http", 8080), ("linkerd-proxy", 4999)),
        annotations={"config.linkerd.io/opaque-ports": "http"},
    )
    message = encode(workload_address(workload=workload), mesh())
    assert message.protocol_hint.WhichOneof("protocol") == "opaque"
    assert message.protocol_hint.opaque_transport.inbound_port == 4999


def test_forced_opaque_transport_keeps_h2_for_a_non_opaque_port() -> None:
    message = encode(workload_address(), mesh(force_opaque=True))
    assert message.protocol_hint.WhichOneof("protocol") == "h2"
    assert message.protocol_hint.opaque_transport.inbound_port == 4143


def server(selector: dict[str, Any], port: int | str = "http") -> dict[str, Any]:
    return {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": {"name": "vm-http", "namespace": b.NS},
        "spec": {"externalWorkloadSelector": selector, "port": port, "proxyProtocol": "opaque"},
    }


def test_a_server_selecting_external_workloads_makes_their_port_opaque() -> None:
    workload = b.external_workload(labels={"app": "vm"})
    index = ClusterIndex()
    for raw in (
        b.service(),
        workload,
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.9.1", pod="vm-1", target_kind="ExternalWorkload")]
        ),
    ):
        index.upsert(b.projected(raw))
    index.upsert(b.projected(server({"matchLabels": {"app": "vm"}}), Kind.SERVER))
    addresses, _ = build_addresses(index, WEB, 80, default_opaque_ports=PortSet.EMPTY)
    assert [a.opaque for a in addresses.values()] == [True]
    index.upsert(b.projected(server({"matchLabels": {"app": "db"}}), Kind.SERVER))
    addresses, _ = build_addresses(index, WEB, 80, default_opaque_ports=PortSet.EMPTY)
    assert [a.opaque for a in addresses.values()] == [False]
