"""A Link resource read as a validated record: every field, its bounds and its defaults.

Scope: `mirror.links.project_link`. The Link link-gen writes (reference §1.1)
reads back field for field; absent fields take the CRD's defaults (probe
timeout 30 s, failure threshold 3, cluster domain `cluster.local`); a bare
integer probe period means seconds; gateway addresses are lists of IPs and
DNS names. A value that cannot be used gives a Link whose `problem` names the
field (and no spec), never an exception: hypothesis feeds arbitrary JSON as
the whole Link and as each field of a valid one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.models import ObjectRef
from mirror.links import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_PROBE_TIMEOUT_S,
    Link,
    LinkSpec,
    ProbeSpec,
    project_link,
)
from mirror.selectors import LinkSelector

IDENTITY = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"


def raw_link(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    """The Link `link-gen --cluster-name east` writes (reference §1.1), with `spec` merged in."""
    full_spec: dict[str, Any] = {
        "targetClusterName": "east",
        "targetClusterDomain": "cluster.local",
        "targetClusterLinkerdNamespace": "linkerd",
        "clusterCredentialsSecret": "cluster-credentials-east",
        "gatewayAddress": "192.168.3.179",
        "gatewayPort": "4143",
        "gatewayIdentity": IDENTITY,
        "probeSpec": {"path": "/ready", "port": "4191", "period": "3s"},
        "selector": {"matchLabels": {"mirror.linkerd.io/exported": "true"}},
        "remoteDiscoverySelector": {
            "matchLabels": {"mirror.linkerd.io/exported": "remote-discovery"}
        },
        "federatedServiceSelector": {"matchLabels": {"mirror.linkerd.io/federated": "member"}},
    }
    full_spec.update(spec or {})
    meta = {
        "name": "east",
        "namespace": "linkerd-multicluster",
        "uid": "uid-east",
        "creationTimestamp": "2025-03-01T10:00:00Z",
        "generation": 2,
        "resourceVersion": "1234",
    }
    meta.update(metadata)
    return {
        "apiVersion": "multicluster.linkerd.io/v1alpha3",
        "kind": "Link",
        "metadata": meta,
        "spec": full_spec,
    }


def spec_of(spec: dict[str, Any]) -> LinkSpec:
    link = project_link(raw_link(spec))
    assert link is not None
    assert link.problem is None, link.problem
    assert link.spec is not None
    return link.spec


def problem_of(spec: dict[str, Any]) -> str:
    link = project_link(raw_link(spec))
    assert link is not None
    assert link.spec is None
    assert link.problem is not None
    return link.problem


def test_the_link_gen_link_reads_field_for_field() -> None:
    link = project_link(raw_link())
    assert link == Link(
        ref=ObjectRef("linkerd-multicluster", "east"),
        uid="uid-east",
        created="2025-03-01T10:00:00Z",
        spec=LinkSpec(
            target_cluster_name="east",
            target_cluster_domain="cluster.local",
            target_linkerd_namespace="linkerd",
            credentials_secret="cluster-credentials-east",
            gateway_addresses=("192.168.3.179",),
            gateway_port=4143,
            gateway_identity=IDENTITY,
            probe=ProbeSpec(
                path="/ready",
                port=4191,
                period_s=3.0,
                timeout_s=DEFAULT_PROBE_TIMEOUT_S,
                failure_threshold=DEFAULT_FAILURE_THRESHOLD,
            ),
            selector=LinkSelector.from_spec(
                {"matchLabels": {"mirror.linkerd.io/exported": "true"}}, "selector"
            ),
            remote_discovery_selector=LinkSelector.from_spec(
                {"matchLabels": {"mirror.linkerd.io/exported": "remote-discovery"}}, "x"
            ),
            federated_selector=LinkSelector.from_spec(
                {"matchLabels": {"mirror.linkerd.io/federated": "member"}}, "x"
            ),
        ),
        problem=None,
        generation=2,
    )
    assert link.name == "east"
    assert link.resource_version == "1234"
    assert link.spec is not None and link.spec.gateway_enabled
    assert link.spec.selector.matches({"mirror.linkerd.io/exported": "true"})
    assert not link.spec.selector.matches({"mirror.linkerd.io/exported": "remote-discovery"})


def test_defaults_are_the_crd_defaults() -> None:
    raw = {"targetClusterName": "east", "clusterCredentialsSecret": "creds"}
    link = project_link({"metadata": {"name": "east"}, "spec": raw})
    assert link is not None and link.spec is not None
    spec = link.spec
    assert spec.target_cluster_domain == "cluster.local"
    assert spec.target_linkerd_namespace == "linkerd"
    assert spec.gateway_addresses == ()
    assert spec.gateway_port is None
    assert spec.gateway_identity == ""
    assert spec.probe is None
    assert not spec.gateway_enabled
    for selector in (spec.selector, spec.remote_discovery_selector, spec.federated_selector):
        assert selector.selector is None
        assert not selector.matches({"mirror.linkerd.io/exported": "true"})
    assert spec.excluded_labels == ()
    assert spec.excluded_annotations == ()
    assert link.ref == ObjectRef("", "east")
    assert (link.uid, link.created, link.generation, link.resource_version) == ("", "", 0, "")


def test_a_gateway_false_link_has_no_gateway_and_no_probe() -> None:
    """link-gen --gateway=false: no gateway fields, `probeSpec: {}`, no `selector`."""
    raw = raw_link()
    for key in ("gatewayAddress", "gatewayPort", "gatewayIdentity", "selector"):
        del raw["spec"][key]
    raw["spec"]["probeSpec"] = {}
    link = project_link(raw)
    assert link is not None and link.spec is not None
    assert not link.spec.gateway_enabled
    assert link.spec.probe is None
    assert link.spec.selector.selector is None
    assert link.spec.remote_discovery_selector.matches(
        {"mirror.linkerd.io/exported": "remote-discovery"}
    )


def test_an_address_without_a_port_does_not_enable_the_gateway() -> None:
    spec = spec_of({"gatewayPort": None})
    assert spec.gateway_addresses == ("192.168.3.179",)
    assert not spec.gateway_enabled
    assert not spec_of({"gatewayAddress": ""}).gateway_enabled


@pytest.mark.parametrize(
    ("period", "seconds"),
    [("3", 3.0), (" 10 ", 10.0), ("3s", 3.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5s", 1.5)],
)
def test_probe_period_bare_integers_are_seconds(period: str, seconds: float) -> None:
    probe = spec_of({"probeSpec": {"path": "/ready", "port": "4191", "period": period}}).probe
    assert probe is not None and probe.period_s == seconds


def test_probe_fields_are_read_with_their_defaults() -> None:
    probe = spec_of(
        {
            "probeSpec": {
                "path": "/health?full=1",
                "port": "30101",
                "period": "2s",
                "timeout": "1500ms",
                "failureThreshold": "5",
            }
        }
    ).probe
    assert probe == ProbeSpec("/health?full=1", 30101, 2.0, 1.5, 5)
    defaults = spec_of(
        {"probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": ""}}
    ).probe
    assert defaults is not None
    assert (defaults.timeout_s, defaults.failure_threshold) == (30.0, 3)


@pytest.mark.parametrize(
    "probe", [None, {}, {"path": ""}, {"path": "  ", "port": "bad", "period": "never"}]
)
def test_without_a_probe_path_the_gateway_is_not_probed(probe: Any) -> None:
    """§4.2: a non-empty path is what enables probing; the other fields are then unused."""
    assert spec_of({"probeSpec": probe}).probe is None


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        ("192.168.3.179", ("192.168.3.179",)),
        ("1.2.3.4,5.6.7.8", ("1.2.3.4", "5.6.7.8")),
        (" 1.2.3.4 , 5.6.7.8 ", ("1.2.3.4", "5.6.7.8")),
        ("abc.elb.amazonaws.com", ("abc.elb.amazonaws.com",)),
        ("ABC.Example.COM.", ("abc.example.com",)),
        ("gateway", ("gateway",)),
        ("2001:DB8::1", ("2001:db8::1",)),
        (
            "10.0.0.1,gw.example.com,::ffff:1.2.3.4",
            ("10.0.0.1", "gw.example.com", "::ffff:102:304"),
        ),
        ("", ()),
        ("  ", ()),
    ],
)
def test_gateway_addresses_are_ips_or_dns_names(addresses: str, expected: tuple[str, ...]) -> None:
    assert spec_of({"gatewayAddress": addresses}).gateway_addresses == expected


# (spec fields to merge, text the problem must contain)
BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"targetClusterName": None}, "spec.targetClusterName"),
    ({"targetClusterName": ""}, "spec.targetClusterName"),
    ({"targetClusterName": "East"}, "spec.targetClusterName"),
    ({"targetClusterName": "east.west"}, "spec.targetClusterName"),
    ({"targetClusterName": "e" * 64}, "spec.targetClusterName"),
    ({"targetClusterName": 7}, "spec.targetClusterName must be a string"),
    ({"targetClusterDomain": "cluster_local"}, "spec.targetClusterDomain"),
    ({"targetClusterDomain": ["cluster.local"]}, "spec.targetClusterDomain"),
    ({"targetClusterLinkerdNamespace": "Linkerd"}, "spec.targetClusterLinkerdNamespace"),
    ({"targetClusterLinkerdNamespace": "../etc"}, "spec.targetClusterLinkerdNamespace"),
    ({"clusterCredentialsSecret": ""}, "spec.clusterCredentialsSecret"),
    ({"clusterCredentialsSecret": "../secret"}, "spec.clusterCredentialsSecret"),
    ({"clusterCredentialsSecret": {"name": "x"}}, "spec.clusterCredentialsSecret"),
    ({"gatewayAddress": "1.2.3.4,"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "1.2.3.4,,5.6.7.8"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "under_score.example.com"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "http://gw.example.com"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "1.2.3.4:4143"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "[2001:db8::1]"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "fe80::1%eth0"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "127.1"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "0x7f.0.0.1"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "01.2.3.4"}, "spec.gatewayAddress"),
    ({"gatewayAddress": "4294967295"}, "spec.gatewayAddress"),
    ({"gatewayAddress": ",".join(f"10.0.0.{i}" for i in range(17))}, "more than 16"),
    ({"gatewayAddress": ["1.2.3.4"]}, "spec.gatewayAddress must be a string"),
    ({"gatewayPort": "0"}, "spec.gatewayPort"),
    ({"gatewayPort": "65536"}, "spec.gatewayPort"),
    ({"gatewayPort": "-1"}, "spec.gatewayPort"),
    ({"gatewayPort": "41 43"}, "spec.gatewayPort"),
    ({"gatewayPort": "\u0664\u0661\u0664\u0663"}, "spec.gatewayPort"),
    ({"gatewayPort": "mc-gateway"}, "spec.gatewayPort"),
    ({"gatewayPort": 4143}, "spec.gatewayPort must be a string"),
    ({"gatewayIdentity": 1}, "spec.gatewayIdentity"),
    ({"gatewayIdentity": "x" * 254}, "spec.gatewayIdentity"),
    ({"probeSpec": "/ready"}, "spec.probeSpec must be an object"),
    ({"probeSpec": {"path": "ready", "port": "4191", "period": "3s"}}, "spec.probeSpec.path"),
    ({"probeSpec": {"path": "/re ady", "port": "4191", "period": "3s"}}, "spec.probeSpec.path"),
    ({"probeSpec": {"path": 1, "port": "4191", "period": "3s"}}, "spec.probeSpec.path"),
    ({"probeSpec": {"path": "/ready", "period": "3s"}}, "spec.probeSpec.port"),
    ({"probeSpec": {"path": "/ready", "port": "0", "period": "3s"}}, "spec.probeSpec.port"),
    ({"probeSpec": {"path": "/ready", "port": 4191, "period": "3s"}}, "spec.probeSpec.port"),
    ({"probeSpec": {"path": "/ready", "port": "4191"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": "3x"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": "-3s"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": "0"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": "1ns"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": "99ms"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": "25h"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"path": "/ready", "port": "4191", "period": 3}}, "spec.probeSpec.period"),
    (
        {"probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": "soon"}},
        "spec.probeSpec.timeout",
    ),
    (
        {"probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": "0s"}},
        "spec.probeSpec.timeout",
    ),
    (
        {"probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": "100000h"}},
        "spec.probeSpec.timeout",
    ),
]
BAD_THRESHOLDS = ["0", "1001", "-1", "three", "1.5", "\u00b3", "\u0661", "99999999999"]
BAD_SPECS += [
    (
        {
            "probeSpec": {
                "path": "/ready",
                "port": "4191",
                "period": "3s",
                "failureThreshold": threshold,
            }
        },
        "spec.probeSpec.failureThreshold",
    )
    for threshold in BAD_THRESHOLDS
]
BAD_SPECS += [
    ({"selector": "mirror.linkerd.io/exported=true"}, "spec.selector"),
    ({"selector": {"matchExpressions": "x"}}, "spec.selector"),
    ({"remoteDiscoverySelector": {"matchLabels": {"k": "x" * 64}}}, "spec.remoteDiscoverySelector"),
    (
        {"federatedServiceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}},
        "spec.federatedServiceSelector",
    ),
    ({"excludedLabels": "a,b"}, "spec.excludedLabels"),
    ({"excludedLabels": ["a", 1]}, "spec.excludedLabels"),
    ({"excludedLabels": ["k"] * 257}, "spec.excludedLabels"),
    ({"excludedAnnotations": [None]}, "spec.excludedAnnotations"),
    ({"excludedAnnotations": ["a" * 320]}, "spec.excludedAnnotations"),
]


@pytest.mark.parametrize(("fields", "names"), BAD_SPECS)
def test_an_unusable_value_is_a_problem_naming_its_field(
    fields: dict[str, Any], names: str
) -> None:
    problem = problem_of(fields)
    assert names in problem
    assert len(problem) < 400


def test_the_probe_fields_name_themselves_in_type_problems() -> None:
    """Regression: a non-string probe path, port or threshold was reported as `spec.path`."""
    base = {"path": "/ready", "port": "4191", "period": "3s"}
    for key in ("path", "port", "failureThreshold"):
        problem = problem_of({"probeSpec": base | {key: ["x"]}})
        assert problem == f"spec.probeSpec.{key} must be a string"


def test_a_non_ascii_threshold_is_a_problem_not_an_exception() -> None:
    """Regression: "³" passed str.isdigit() and then made int() raise out of project_link."""
    for threshold in ("\u00b3", "\u0661"):
        probe = {"path": "/ready", "port": "4191", "period": "3s", "failureThreshold": threshold}
        raw = raw_link({"probeSpec": probe})
        link = project_link(raw)
        assert link is not None and link.spec is None
        assert link.problem is not None and "failureThreshold" in link.problem


def test_numeric_gateway_names_and_zoned_ips_are_refused() -> None:
    """Regression: `127.1`, `0x7f.1` and `01.2.3.4` passed as DNS names (a resolver reads
    them as IPv4 addresses) and `fe80::1%eth0` as an IP no Endpoints object can hold."""
    for address in ("127.1", "0x7f.1", "01.2.3.4", "1.2.3", "2130706433", "fe80::1%eth0"):
        assert "spec.gatewayAddress" in problem_of({"gatewayAddress": address})
    assert spec_of({"gatewayAddress": "1a.example.com"}).gateway_addresses == ("1a.example.com",)


def test_probe_periods_are_bounded() -> None:
    """Regression: a `1ns` period was accepted (a probe loop with no pause)."""
    probe = {"path": "/ready", "port": "4191"}
    assert "spec.probeSpec.period" in problem_of({"probeSpec": probe | {"period": "1ns"}})
    assert "spec.probeSpec.period" in problem_of({"probeSpec": probe | {"period": "48h"}})
    accepted = spec_of({"probeSpec": probe | {"period": "100ms", "timeout": "24h"}}).probe
    assert accepted is not None and (accepted.period_s, accepted.timeout_s) == (0.1, 86400.0)


def test_the_linkerd_namespace_and_exclusion_lengths_are_checked() -> None:
    """Regression: these two fields were taken unchecked."""
    assert "spec.targetClusterLinkerdNamespace" in problem_of(
        {"targetClusterLinkerdNamespace": "linkerd/../x"}
    )
    assert "spec.excludedLabels" in problem_of({"excludedLabels": ["k" * 400]})


def test_exclusions_are_stripped_and_blank_entries_dropped() -> None:
    spec = spec_of(
        {
            "excludedLabels": [" app.kubernetes.io/* ", "", "  ", "team"],
            "excludedAnnotations": ["a" * 317 + "/*"],
        }
    )
    assert spec.excluded_labels == ("app.kubernetes.io/*", "team")
    assert spec.excluded_annotations == ("a" * 317 + "/*",)
    assert spec_of({"excludedLabels": None}).excluded_labels == ()


def test_spec_fields_are_stripped() -> None:
    spec = spec_of({"targetClusterName": " east ", "gatewayPort": " 443 "})
    assert (spec.target_cluster_name, spec.gateway_port) == ("east", 443)


@pytest.mark.parametrize("raw", [None, [], "link", {}, {"metadata": None}, {"metadata": {}}])
def test_without_a_name_there_is_no_link(raw: Any) -> None:
    assert project_link(raw) is None
    assert project_link({"metadata": {"name": 5}, "spec": {}}) is None


@pytest.mark.parametrize("spec", [None, [], "spec", 3])
def test_a_missing_spec_is_a_problem(spec: Any) -> None:
    link = project_link({"metadata": {"name": "east", "namespace": "mc"}, "spec": spec})
    assert link is not None
    assert (link.spec, link.problem) == (None, "spec is missing or not an object")
    assert link.ref == ObjectRef("mc", "east")


def test_metadata_is_kept_and_resource_version_is_not_compared() -> None:
    first = project_link(raw_link(resourceVersion="1"))
    second = project_link(raw_link(resourceVersion="2"))
    assert first == second
    assert first is not None and second is not None
    assert (first.resource_version, second.resource_version) == ("1", "2")
    odd = project_link(raw_link(uid="u" * 100, generation="7", creationTimestamp=7))
    assert odd is not None
    assert (odd.uid, odd.generation, odd.created) == ("u" * 64, 0, "")


# -- properties --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["3", "3s", "/ready", "4143", "1.2.3.4", "east", "\u00b3", "0x7f.1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "path",
                    "port",
                    "period",
                    "timeout",
                    "failureThreshold",
                    "matchLabels",
                    "matchExpressions",
                    "key",
                    "operator",
                    "values",
                    "name",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
SPEC_FIELDS = [*sorted(raw_link()["spec"]), "excludedLabels", "excludedAnnotations"]
PROBE_FIELDS = ["path", "port", "period", "timeout", "failureThreshold"]


def check_link(link: Link | None) -> None:
    if link is None:
        return
    assert (link.spec is None) != (link.problem is None)
    if link.problem is not None:
        assert len(link.problem) < 1000


@settings(max_examples=200)
@given(JSON)
def test_any_json_document_projects_without_raising(raw: Any) -> None:
    check_link(project_link(raw))
    check_link(project_link({"metadata": {"name": "east"}, "spec": raw}))


@settings(max_examples=200)
@given(st.sampled_from(SPEC_FIELDS), JSON)
def test_any_value_of_one_field_is_accepted_or_named(field: str, value: Any) -> None:
    raw = raw_link()
    raw["spec"][field] = value
    link = project_link(raw)
    assert link is not None
    check_link(link)
    if link.problem is not None:
        assert f"spec.{field}" in link.problem


@settings(max_examples=200)
@given(st.sampled_from(PROBE_FIELDS), JSON)
def test_any_value_of_one_probe_field_is_accepted_or_named(field: str, value: Any) -> None:
    raw = copy.deepcopy(raw_link())
    raw["spec"]["probeSpec"][field] = value
    link = project_link(raw)
    assert link is not None
    check_link(link)
    if link.problem is not None:
        assert f"spec.probeSpec.{field}" in link.problem
    else:
        assert link.spec is not None
        probe = link.spec.probe
        if probe is not None:
            assert 0.1 <= probe.period_s <= 86400
            assert 0 < probe.timeout_s <= 86400
            assert 1 <= probe.port <= 65535
            assert 1 <= probe.failure_threshold <= 1000


ADDRESS_PARTS = st.sampled_from(
    ["1.2.3.4", "::1", "gw.example.com", "GW.example.com.", "", " ", "0x7f", "a_b", "1.2.3"]
) | st.text(alphabet="0123456789abcdefx.:%-_ ", max_size=20)


@settings(max_examples=200)
@given(st.lists(ADDRESS_PARTS, min_size=1, max_size=20).map(",".join))
def test_gateway_addresses_are_ips_or_names_whatever_the_text(text: str) -> None:
    link = project_link(raw_link({"gatewayAddress": text}))
    assert link is not None
    check_link(link)
    if link.spec is None:
        assert link.problem is not None and "spec.gatewayAddress" in link.problem
        return
    assert len(link.spec.gateway_addresses) <= 16
    for address in link.spec.gateway_addresses:
        assert address == address.strip().lower()
        assert "%" not in address and " " not in address and "_" not in address
