"""Builders of raw Kubernetes objects, shaped like the JSON a list or watch returns.

Scope: plain dicts for Services, EndpointSlices, Pods, Nodes, ReplicaSets and
Jobs, with keyword arguments for the fields discovery reads, so that unit tests
feed them through `discovery.project` and exercise the real projection rather
than hand-built records. `projected()` is the one bridge from a raw dict to
a record; it fails the test on an `Invalid`.

Defaults describe an ordinary cluster: namespace `ns`, a service `web` with
one port `http` 80, pods on `node-a`, a Linkerd control plane in `linkerd`
whose proxy listens on 4143 (inbound), 4191 (admin) and 4190 (control).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from discovery.models import Kind
from discovery.project import Invalid, Record, project

NS = "ns"
CNS = "linkerd"
INBOUND_PORT = 4143
ADMIN_PORT = 4191
CONTROL_PORT = 4190

DEFAULT_PROXY_ENV: Mapping[str, str] = {
    "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": f"0.0.0.0:{INBOUND_PORT}",
    "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": f"0.0.0.0:{ADMIN_PORT}",
    "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": f"0.0.0.0:{CONTROL_PORT}",
}

# A port given as (name, number); a name of None leaves the key out.
PortSpec = tuple[str | None, int]


def owner_ref(kind: str, name: str, *, api_version: str = "apps/v1") -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": f"uid-{kind.lower()}-{name}",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    name: str,
    namespace: str | None = NS,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owners: Sequence[Mapping[str, Any]] = (),
    resource_version: str = "1",
    deletion_timestamp: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "resourceVersion": resource_version}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owners:
        meta["ownerReferences"] = [dict(o) for o in owners]
    if deletion_timestamp is not None:
        meta["deletionTimestamp"] = deletion_timestamp
    return meta


def _port(spec: PortSpec, key: str) -> dict[str, Any]:
    name, number = spec
    port: dict[str, Any] = {key: number, "protocol": "TCP"}
    if name is not None:
        port["name"] = name
    return port


def service(
    name: str = "web",
    namespace: str = NS,
    *,
    ports: Sequence[PortSpec] = (("http", 80),),
    type: str = "ClusterIP",
    cluster_ip: str | None = "10.96.0.10",
    cluster_ips: Sequence[str] | None = None,
    internal_traffic_policy: str | None = None,
    external_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    resource_version: str = "1",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type}
    if ports:
        spec["ports"] = [_port(p, "port") | {"targetPort": p[1] + 8000} for p in ports]
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if cluster_ips is not None:
        spec["clusterIPs"] = list(cluster_ips)
    if internal_traffic_policy is not None:
        spec["internalTrafficPolicy"] = internal_traffic_policy
    if external_name is not None:
        spec["externalName"] = external_name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            name,
            namespace,
            labels=labels,
            annotations=annotations,
            resource_version=resource_version,
        ),
        "spec": spec,
    }


def endpoint(
    *addresses: str,
    pod: str | None = None,
    pod_namespace: str | None = NS,
    target_kind: str = "Pod",
    ready: bool | None = True,
    hostname: str | None = None,
    node: str | None = "node-a",
    zone: str | None = None,
    hints: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One entry of a slice's `endpoints`; `pod` sets a targetRef, `ready=None` leaves it unset."""
    raw: dict[str, Any] = {"addresses": list(addresses), "conditions": {}}
    if ready is not None:
        raw["conditions"]["ready"] = ready
    if hostname is not None:
        raw["hostname"] = hostname
    if node is not None:
        raw["nodeName"] = node
    if zone is not None:
        raw["zone"] = zone
    if hints is not None:
        raw["hints"] = {"forZones": [{"name": z} for z in hints]}
    if pod is not None:
        target: dict[str, Any] = {"kind": target_kind, "name": pod, "uid": f"uid-{pod}"}
        if pod_namespace is not None:
            target["namespace"] = pod_namespace
        raw["targetRef"] = target
    return raw


def endpoint_slice(
    name: str = "web-abc",
    namespace: str = NS,
    *,
    service: str | None = "web",
    owner_service: str | None = None,
    address_type: str = "IPv4",
    ports: Sequence[PortSpec] | None = (("http", 8080),),
    endpoints: Sequence[Mapping[str, Any]] = (),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    resource_version: str = "1",
) -> dict[str, Any]:
    """An EndpointSlice; `ports=None` is `ports: null`, `service=None` drops the label."""
    all_labels = dict(labels or {})
    if service is not None:
        all_labels["kubernetes.io/service-name"] = service
        all_labels.setdefault("endpointslice.kubernetes.io/managed-by", "endpointslice-controller")
    owners = [owner_ref("Service", owner_service, api_version="v1")] if owner_service else []
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata(
            name,
            namespace,
            labels=all_labels,
            annotations=annotations,
            owners=owners,
            resource_version=resource_version,
        ),
        "addressType": address_type,
        "ports": None if ports is None else [_port(p, "port") for p in ports],
        "endpoints": [dict(e) for e in endpoints],
    }


def container(
    name: str,
    *,
    ports: Sequence[PortSpec] = (),
    env: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """A container; an env value of None is an entry with `valueFrom` and no `value`."""
    raw: dict[str, Any] = {"name": name, "image": f"example/{name}:1"}
    if ports:
        raw["ports"] = [_port(p, "containerPort") for p in ports]
    if env is not None:
        raw["env"] = [
            {"name": k, "value": v}
            if v is not None
            else {"name": k, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
            for k, v in env.items()
        ]
    return raw


def pod(
    name: str = "web-1",
    namespace: str = NS,
    ip: str | None = "10.0.0.1",
    *,
    ips: Sequence[str] | None = None,
    meshed: bool = False,
    control_plane_ns: str = CNS,
    node: str | None = "node-a",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owners: Sequence[Mapping[str, Any]] = (),
    owner: tuple[str, str] | None = None,
    service_account: str | None = "web",
    app_ports: Sequence[PortSpec] = (("http", 8080),),
    proxy_env: Mapping[str, str | None] | None = None,
    proxy_as_init: bool = False,
    init_containers: Sequence[Mapping[str, Any]] = (),
    phase: str = "Running",
    resource_version: str = "1",
    deletion_timestamp: str | None = None,
) -> dict[str, Any]:
    """A Pod. `meshed` adds the control-plane label and a `linkerd-proxy` container.

    `proxy_env` replaces the proxy's default environment (so a key left out is
    missing); `ips` sets `status.podIPs` (and `podIP` to its first entry),
    else `ip` sets `podIP` alone. `owner=(kind, name)` is a shorthand for one
    ownerReference.
    """
    all_labels = dict(labels or {})
    if meshed:
        all_labels["linkerd.io/control-plane-ns"] = control_plane_ns
    all_owners = list(owners)
    if owner is not None:
        all_owners.append(owner_ref(*owner))
    containers = [container("app", ports=app_ports)]
    inits = [dict(c) for c in init_containers]
    if meshed:
        proxy = container(
            "linkerd-proxy",
            ports=(("linkerd-proxy", INBOUND_PORT), ("linkerd-admin", ADMIN_PORT)),
            env=DEFAULT_PROXY_ENV if proxy_env is None else proxy_env,
        )
        if proxy_as_init:
            inits.append(proxy | {"restartPolicy": "Always"})
        else:
            containers.append(proxy)
    spec: dict[str, Any] = {"containers": containers}
    if inits:
        spec["initContainers"] = inits
    if node is not None:
        spec["nodeName"] = node
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    status: dict[str, Any] = {"phase": phase}
    if ips is not None:
        status["podIPs"] = [{"ip": i} for i in ips]
        if ips:
            status["podIP"] = ips[0]
    elif ip is not None:
        status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(
            name,
            namespace,
            labels=all_labels,
            annotations=annotations,
            owners=all_owners,
            resource_version=resource_version,
            deletion_timestamp=deletion_timestamp,
        ),
        "spec": spec,
        "status": status,
    }


def node(name: str = "node-a", *, zone: str | None = "zone-a") -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if zone is not None:
        labels["topology.kubernetes.io/zone"] = zone
    return {"apiVersion": "v1", "kind": "Node", "metadata": metadata(name, None, labels=labels)}


def replica_set(
    name: str = "web-5d8f", namespace: str = NS, *, owner: tuple[str, str] | None = None
) -> dict[str, Any]:
    """ReplicaSet metadata (discovery asks for PartialObjectMetadata only)."""
    owners = [owner_ref(*owner)] if owner else []
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": metadata(name, namespace, owners=owners),
    }


def job(
    name: str = "batch-1", namespace: str = NS, *, owner: tuple[str, str] | None = None
) -> dict[str, Any]:
    owners = [owner_ref(*owner, api_version="batch/v1")] if owner else []
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": metadata(name, namespace, owners=owners),
    }


def external_workload(
    name: str = "vm-1",
    namespace: str = NS,
    *,
    identity: str = "spiffe://cluster.local/vm/vm-1",
    server_name: str = "vm-1.ns.external.cluster.local",
    ports: Sequence[PortSpec] = (("http", 8080), ("linkerd-proxy", 4143)),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    ips: Sequence[str] = ("10.0.9.1",),
) -> dict[str, Any]:
    """An ExternalWorkload (workload.linkerd.io/v1beta1): a meshed VM."""
    owners = [owner_ref(*owner, api_version="example.com/v1")] if owner else []
    return {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": metadata(
            name, namespace, labels=labels, annotations=annotations, owners=owners
        ),
        "spec": {
            "meshTLS": {"identity": identity, "serverName": server_name},
            "ports": [_port(p, "port") for p in ports],
            "workloadIPs": [{"ip": ip} for ip in ips],
        },
    }


_KIND_OF_BUILDER = {
    "Service": Kind.SERVICE,
    "EndpointSlice": Kind.ENDPOINT_SLICE,
    "Pod": Kind.POD,
    "Node": Kind.NODE,
    "ExternalWorkload": Kind.EXTERNAL_WORKLOAD,
}


def projected(raw: Mapping[str, Any], kind: Kind | None = None) -> Record:
    """The record of a raw object (kind from `raw["kind"]` unless given); fails on Invalid."""
    if kind is None:
        kind = _KIND_OF_BUILDER[raw["kind"]]
    record = project(kind, raw)
    assert not isinstance(record, Invalid), record
    return record
