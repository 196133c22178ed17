"""Labels, annotations and ports a mirror copies from the Service it mirrors (reference §3.6).

Scope: `mirror.metadata`. Labels lose every key under the `mirror.linkerd.io`
prefix and the Link's exclusions, and gain `mirrored-service: "true"`;
annotations lose the topology ones, kubectl's last-applied-configuration and
the exclusions, but always keep `config.linkerd.io/opaque-ports`; exclusions
are exact, or `prefix/*` as a raw string prefix (the reference's quirk Q10).
Neither copies the keys that route a Service in the destination server
(remote-discovery labels, federated membership annotations). Ports come from
`mirror.remote.project_remote_service` of a raw Service, as in production.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.metadata import (
    NEVER_COPIED_ANNOTATIONS,
    endpoint_ports,
    excluded,
    mirror_annotations,
    mirror_labels,
    mirror_ports,
)
from mirror.naming import MIRRORED_SERVICE, OPAQUE_PORTS_ANNOTATION
from mirror.remote import RemoteService, project_remote_service
from tests.unit import builders

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def remote(raw: dict[str, Any]) -> RemoteService:
    service = project_remote_service(raw)
    assert service is not None
    return service


# -- exclusions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "exclusions", "expected"),
    [
        ("team", ["team"], True),
        ("team", ["tea"], False),
        ("team", ["team-a"], False),
        ("example.com/team", ["example.com/team"], True),
        ("example.com/team", ["example.com/*"], True),
        ("example.com/a/b", ["example.com/*"], True),
        ("example.com", ["example.com/*"], True),  # "example.com" starts with "example.com"
        # Q10: the prefix is raw text, not a DNS prefix.
        ("example.comX/team", ["example.com/*"], True),
        ("example.co/team", ["example.com/*"], False),
        ("example.com/team", ["*"], False),
        ("example.com/team", ["example.*"], False),
        ("anything/at-all", ["/*"], True),
        ("team", [], False),
        ("team", ["other", "team"], True),
    ],
)
def test_exclusions_are_exact_or_a_raw_prefix(
    key: str, exclusions: list[str], expected: bool
) -> None:
    assert excluded(key, exclusions) is expected


# -- labels ------------------------------------------------------------------------------------


def test_labels_drop_the_mirror_prefix_and_mark_the_mirror() -> None:
    labels = mirror_labels(
        {
            "app": "web",
            "app.kubernetes.io/name": "web",
            "mirror.linkerd.io/exported": "true",
            "mirror.linkerd.io/federated": "member",
            "mirror.linkerd.io/cluster-name": "forged",
            "mirror.linkerd.io/mirrored-service": "false",
            "mirror.linkerd.io.evil/x": "prefix is raw text",
            "linkerd.io/mirror": "kept",
        },
        (),
    )
    assert labels == {
        "app": "web",
        "app.kubernetes.io/name": "web",
        "linkerd.io/mirror": "kept",
        MIRRORED_SERVICE: "true",
    }


def test_labels_honour_exclusions() -> None:
    remote_labels = {
        "app": "web",
        "team": "a",
        "helm.sh/chart": "web-1",
        "helm.sh/chartX": "x",
        "helm.shard/x": "raw prefix",
        "kept.io/x": "y",
    }
    assert mirror_labels(remote_labels, ["team", "helm.sh/*"]) == {
        "app": "web",
        "kept.io/x": "y",
        MIRRORED_SERVICE: "true",
    }
    assert mirror_labels(remote_labels, ["helm.sh/chart"]) == {
        "app": "web",
        "team": "a",
        "helm.sh/chartX": "x",
        "helm.shard/x": "raw prefix",
        "kept.io/x": "y",
        MIRRORED_SERVICE: "true",
    }


def test_the_mirrored_service_label_cannot_be_excluded() -> None:
    assert mirror_labels({}, ["mirror.linkerd.io/*", MIRRORED_SERVICE]) == {
        MIRRORED_SERVICE: "true"
    }


def test_remote_discovery_routing_labels_are_never_copied() -> None:
    """Regression: a target's Service labelled `remote-discovery: west` made its mirror route
    through the cluster store entry of another Link."""
    labels = mirror_labels(
        {
            "app": "web",
            "multicluster.linkerd.io/remote-discovery": "west",
            "multicluster.linkerd.io/remote-service": "payments",
        },
        (),
    )
    assert labels == {"app": "web", MIRRORED_SERVICE: "true"}


# -- annotations -------------------------------------------------------------------------------


def test_annotations_drop_topology_and_last_applied_and_keep_mirror_keys() -> None:
    annotations = mirror_annotations(
        {
            "service.kubernetes.io/topology-aware-hints": "auto",
            "service.kubernetes.io/topology-mode": "Auto",
            LAST_APPLIED: '{"kind":"Service"}',
            "mirror.linkerd.io/anything": "kept: the prefix rule is for labels only",
            "prometheus.io/scrape": "true",
            "service.kubernetes.io/other": "kept",
        },
        (),
    )
    assert annotations == {
        "mirror.linkerd.io/anything": "kept: the prefix rule is for labels only",
        "prometheus.io/scrape": "true",
        "service.kubernetes.io/other": "kept",
    }
    assert MIRRORED_SERVICE not in annotations


def test_annotations_honour_exclusions_with_the_same_rules() -> None:
    remote_annotations = {"a.io/x": "1", "a.iox/y": "2", "b.io/z": "3", "c": "4"}
    assert mirror_annotations(remote_annotations, ["a.io/*", "c"]) == {"b.io/z": "3"}
    assert mirror_annotations(remote_annotations, ["a.io/x"]) == {
        "a.iox/y": "2",
        "b.io/z": "3",
        "c": "4",
    }


@pytest.mark.parametrize(
    ("exclusions", "others_kept"),
    [
        ([OPAQUE_PORTS_ANNOTATION], {"config.linkerd.io/other": "x", "z": "1"}),
        (["config.linkerd.io/*"], {"z": "1"}),
        (["config.linkerd.io/*", "z"], {}),
        (["/*"], {}),
    ],
)
def test_opaque_ports_are_always_copied(exclusions: list[str], others_kept: dict[str, str]) -> None:
    """#5650: the local side must know a port is opaque, whatever the Link excludes."""
    annotations = mirror_annotations(
        {OPAQUE_PORTS_ANNOTATION: "3306,5432", "config.linkerd.io/other": "x", "z": "1"},
        exclusions,
    )
    assert annotations == {OPAQUE_PORTS_ANNOTATION: "3306,5432"} | others_kept


def test_federated_membership_annotations_are_never_copied() -> None:
    """Regression: a target could annotate its exported Service `local-discovery: db` and turn
    its mirror into a federated Service answering with a local Service's endpoints."""
    annotations = mirror_annotations(
        {
            "multicluster.linkerd.io/local-discovery": "db",
            "multicluster.linkerd.io/remote-discovery": "db@west",
            "keep": "me",
        },
        (),
    )
    assert annotations == {"keep": "me"}


# -- ports -------------------------------------------------------------------------------------


def test_mirror_ports_copy_name_protocol_port_target_port_and_app_protocol() -> None:
    raw = builders.service(ports=(("http", 80), (None, 9090)), type="NodePort")
    raw["spec"]["ports"][0]["nodePort"] = 30080
    raw["spec"]["ports"][0]["appProtocol"] = "linkerd.io/opaque"
    raw["spec"]["ports"][1]["protocol"] = "UDP"
    raw["spec"]["ports"][1]["targetPort"] = "dns"
    assert mirror_ports(remote(raw).ports) == [
        {
            "port": 80,
            "protocol": "TCP",
            "name": "http",
            "targetPort": 8080,
            "appProtocol": "linkerd.io/opaque",  # kept on purpose (Q12)
        },
        {"port": 9090, "protocol": "UDP", "targetPort": "dns"},
    ]


def test_mirror_ports_without_target_port_omit_it() -> None:
    raw = builders.service(ports=(("grpc", 9000),))
    del raw["spec"]["ports"][0]["targetPort"]
    assert mirror_ports(remote(raw).ports) == [{"port": 9000, "protocol": "TCP", "name": "grpc"}]


def test_endpoint_ports_send_every_service_port_to_the_gateway_port_by_name() -> None:
    raw = builders.service(ports=(("http", 80), ("admin", 9990), ("dns", 53)))
    raw["spec"]["ports"][2]["protocol"] = "UDP"
    assert endpoint_ports(remote(raw).ports, 4143) == [
        {"port": 4143, "protocol": "TCP", "name": "http"},
        {"port": 4143, "protocol": "TCP", "name": "admin"},
        {"port": 4143, "protocol": "UDP", "name": "dns"},
    ]
    unnamed = builders.service(ports=((None, 80),))
    assert endpoint_ports(remote(unnamed).ports, 30143) == [{"port": 30143, "protocol": "TCP"}]


# -- properties --------------------------------------------------------------------------------

PREFIXES = st.sampled_from(
    [
        "",
        "mirror.linkerd.io/",
        "mirror.linkerd.iox/",
        "multicluster.linkerd.io/",
        "config.linkerd.io/",
        "a.io/",
        "a.iox/",
        "service.kubernetes.io/",
    ]
)
NAMES = st.sampled_from(
    ["app", "x", "remote-discovery", "remote-service", "local-discovery", "opaque-ports"]
)
KEYS = st.builds(lambda p, n: p + n, PREFIXES, NAMES)
EXCLUSIONS = st.lists(
    KEYS | PREFIXES.filter(bool).map(lambda p: p + "*") | st.sampled_from(["/*", "a.i/*", "*"]),
    max_size=4,
)
METADATA = st.dictionaries(KEYS, st.text(max_size=5), max_size=10)
ROUTING_LABELS = {
    "multicluster.linkerd.io/remote-discovery",
    "multicluster.linkerd.io/remote-service",
}


@settings(max_examples=200)
@given(METADATA, EXCLUSIONS)
def test_labels_are_the_remote_ones_minus_the_rules(
    remote_labels: dict[str, str], exclusions: list[str]
) -> None:
    labels = mirror_labels(remote_labels, exclusions)
    assert labels[MIRRORED_SERVICE] == "true"
    expected = {
        key: value
        for key, value in remote_labels.items()
        if not key.startswith("mirror.linkerd.io")
        and key not in ROUTING_LABELS
        and not any(key == e or (e.endswith("/*") and key.startswith(e[:-2])) for e in exclusions)
    }
    assert labels == expected | {MIRRORED_SERVICE: "true"}


@settings(max_examples=200)
@given(METADATA, EXCLUSIONS)
def test_annotations_are_the_remote_ones_minus_the_rules(
    remote_annotations: dict[str, str], exclusions: list[str]
) -> None:
    annotations = mirror_annotations(remote_annotations, exclusions)
    for key, value in annotations.items():
        assert remote_annotations[key] == value
        assert key not in NEVER_COPIED_ANNOTATIONS
        assert key == OPAQUE_PORTS_ANNOTATION or not excluded(key, exclusions)
    for key, value in remote_annotations.items():
        copied = key not in NEVER_COPIED_ANNOTATIONS and not excluded(key, exclusions)
        if key == OPAQUE_PORTS_ANNOTATION or copied:
            assert annotations[key] == value
