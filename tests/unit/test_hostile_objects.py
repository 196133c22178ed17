"""Property tests: any JSON a remote API server could send projects safely (hardening #2).

Scope: `discovery.project.project(kind, raw)` for every kind, fed (a) arbitrary
JSON values, shaped like Kubernetes objects often enough to reach deep code
paths, and (b) valid objects from `tests.unit.builders` with one part replaced
by arbitrary JSON or removed. It must return a record or an `Invalid`, never
raise, never fall into the defensive catch-all, and every record must hold
only what later stages can trust: canonical IP addresses of the right family,
ports in range and bounded strings.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discovery.models import (
    ContainerPort,
    Kind,
    PodInfo,
    ServerInfo,
    ServiceInfo,
    ServicePort,
    SliceInfo,
    SlicePort,
)
from discovery.ports import PortSet
from discovery.project import (
    MAX_REASON_LENGTH,
    MAX_TEXT_LENGTH,
    UNEXPECTED,
    Invalid,
    canonical_ip,
    project,
)
from tests.unit import builders as b

# Keys Kubernetes objects use, so that generated objects reach past the first check.
KEYS = [
    "metadata", "name", "namespace", "labels", "annotations", "ownerReferences", "kind",
    "spec", "status", "ports", "port", "containerPort", "hostPort", "endpoints", "addresses",
    "addressType", "conditions", "ready", "hostname", "nodeName", "zone", "hints", "forZones",
    "targetRef", "podIP", "podIPs", "ip", "containers", "initContainers", "env", "value",
    "clusterIP", "clusterIPs", "type", "internalTrafficPolicy", "data", "kubeconfig",
    "podSelector", "matchLabels", "matchExpressions", "key", "operator", "values", "meshTLS",
    "identity", "serverName", "proxyProtocol", "deletionTimestamp", "resourceVersion",
    "kubernetes.io/service-name", "topology.kubernetes.io/zone",
]  # fmt: skip
ODD_TEXT = st.sampled_from(
    [
        "10.0.0.02", "010.1.1.1", "10.0.0.1", "1.2.3", "256.1.1.1", "fd00::1", "FD00::0:1",
        "fe80::1%eth0", "::ffff:10.0.0.1", "IPv4", "IPv6", "FQDN", "IPv5", "Local", "Pod",
        "", " ", "\x00", "\x1b[2J", "x" * 70, "n" * 5000, "80", "-1", "65536", "None",
    ]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, 80, 65535, 65536, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | ODD_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6)
KINDS = st.sampled_from(list(Kind))

VALID: dict[Kind, list[dict[str, Any]]] = {
    Kind.SERVICE: [
        b.service(internal_traffic_policy="Local", cluster_ips=["10.96.0.10", "fd00::10"]),
        b.service(annotations={"multicluster.linkerd.io/remote-discovery": "web@west"}),
    ],
    Kind.ENDPOINT_SLICE: [
        b.endpoint_slice(
            endpoints=[
                b.endpoint("10.0.0.1", pod="web-1", node="node-a", hints=["zone-a"]),
                b.endpoint("10.0.0.2", hostname="web-2"),
            ]
        ),
        b.endpoint_slice(address_type="IPv6", endpoints=[b.endpoint("fd00::1", pod="web-1")]),
    ],
    Kind.POD: [
        b.pod("web-1", ips=["10.0.0.1", "fd00::1"], meshed=True, node="node-a"),
        b.pod("web-2", annotations={"config.linkerd.io/opaque-ports": "8080,http"}),
    ],
    Kind.NODE: [b.node()],
    Kind.REPLICA_SET: [b.replica_set(owner=("Deployment", "web"))],
    Kind.JOB: [b.job()],
    Kind.EXTERNAL_WORKLOAD: [b.external_workload()],
    Kind.SERVER: [
        {
            "metadata": {"name": "web", "namespace": b.NS},
            "spec": {
                "port": "http",
                "proxyProtocol": "opaque",
                "podSelector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
                },
            },
        }
    ],
    Kind.SECRET: [
        {
            "type": "mirror.linkerd.io/remote-kubeconfig",
            "metadata": {
                "name": "cluster-credentials-west",
                "namespace": "linkerd",
                "labels": {"multicluster.linkerd.io/cluster-name": "west"},
                "annotations": {
                    "multicluster.linkerd.io/trust-domain": "west.local",
                    "multicluster.linkerd.io/cluster-domain": "cluster.local",
                },
            },
            "data": {"kubeconfig": "YXBpVmVyc2lvbjogdjEK"},
        }
    ],
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside decoded JSON."""
    yield prefix
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Kind, Any]:
    """A valid object of some kind with one part replaced by arbitrary JSON, or removed."""
    kind = draw(st.sampled_from(sorted(VALID, key=lambda k: k.value)))
    raw = copy.deepcopy(draw(st.sampled_from(VALID[kind])))
    path = draw(st.sampled_from(list(paths(raw))[1:]))
    parent = raw
    for step in path[:-1]:
        parent = parent[step]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON | ODD_TEXT)
    return kind, raw


def walk(value: Any) -> Iterator[Any]:
    """Every value inside a record: dataclass fields, tuples, sets and mappings."""
    yield value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for spec in dataclasses.fields(value):
            yield from walk(getattr(value, spec.name))
    elif isinstance(value, tuple | list | frozenset | set):
        for item in value:
            yield from walk(item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk(key)
            yield from walk(item)


def check_record(kind: Kind, result: Any) -> None:
    if isinstance(result, Invalid):
        assert result.kind is kind
        assert not result.reason.startswith(UNEXPECTED), result.reason
        assert len(result.reason) <= MAX_REASON_LENGTH + 40
        assert len(result.ref) <= 350
        return
    for value in walk(result):
        if isinstance(value, str):
            assert len(value) <= MAX_TEXT_LENGTH, (type(result).__name__, len(value))
        if isinstance(value, ServicePort | SlicePort):
            assert isinstance(value.port, int) and 0 < value.port <= 65535
        if isinstance(value, ContainerPort):
            assert 0 < value.container_port <= 65535 and 0 <= value.host_port <= 65535
        if isinstance(value, PortSet):
            assert all(0 <= lo <= hi <= 65535 for lo, hi in value.ranges)
    if isinstance(result, SliceInfo):
        assert result.address_type in ("IPv4", "IPv6", "FQDN")
        version = {"IPv4": 4, "IPv6": 6}.get(result.address_type)
        for endpoint in result.endpoints:
            for ip in endpoint.addresses:
                assert canonical_ip(ip, version=version) == ip
                assert ipaddress.ip_address(ip).version == version
    if isinstance(result, PodInfo):
        assert all(canonical_ip(ip) == ip for ip in result.ips)
    if isinstance(result, ServiceInfo):
        assert all(canonical_ip(ip) == ip for ip in result.cluster_ips)
    if isinstance(result, ServerInfo):
        assert isinstance(result.port, str) or 0 < result.port <= 65535


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(kind=KINDS, raw=JSON)
def test_any_json_value_projects_to_a_record_or_invalid(kind: Kind, raw: Any) -> None:
    check_record(kind, project(kind, raw))


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(kind=KINDS, raw=OBJECTS)
def test_any_object_shaped_json_projects_to_a_record_or_invalid(kind: Kind, raw: Any) -> None:
    check_record(kind, project(kind, raw))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_valid_objects_with_one_part_mutated_project_safely(case: tuple[Kind, Any]) -> None:
    kind, raw = case
    warnings: list[str] = []
    check_record(kind, project(kind, raw, on_warning=warnings.append))
    assert all(len(w) <= MAX_REASON_LENGTH + 40 for w in warnings)


def test_the_valid_objects_are_valid() -> None:
    for kind, raws in VALID.items():
        for raw in raws:
            result = project(kind, raw)
            assert not isinstance(result, Invalid), result
            check_record(kind, result)
