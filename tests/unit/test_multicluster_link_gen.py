"""`destination multicluster link-gen`, its pure parts: flags, gateway, documents, warnings.

Scope: flags are checked before any cluster is contacted (contradictions
with --no-gateway, selectors, URLs, durations, names; exit 2); the gateway
is read from the target's gateway Service with flags winning; the printed
documents are what the destination server and the mirror controller accept
(read back with their own parsers: `discovery.kubeconfig.parse_kubeconfig`,
`mirror.links.project_link`); the reader role in code is the one in
`deploy/`; an API server address pods cannot reach gets a warning naming
`--api-server-address`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from destination.cli.command import build_parser, main
from destination.cli.multicluster import access
from destination.cli.multicluster.addresses import Reach, api_server_hint, classify_server
from destination.cli.multicluster.documents import (
    Gateway,
    LinkInputs,
    ProbeSettings,
    credentials_secrets,
    link_document,
    link_kubeconfig,
    render,
)
from destination.cli.multicluster.link_gen import (
    LinkGenError,
    LinkGenOptions,
    UsageError,
    _address_warning,
    gateway_from_service,
    options_from_args,
)
from discovery.kubeconfig import parse_kubeconfig
from discovery.project import (
    CLUSTER_DOMAIN_ANNOTATION,
    CLUSTER_NAME_LABEL,
    CREDENTIALS_SECRET_TYPE,
    TRUST_DOMAIN_ANNOTATION,
)
from mirror.links import project_link
from mirror.selectors import parse_selector_text

REPO = Path(__file__).resolve().parents[2]
CA = b"-----BEGIN CERTIFICATE-----\nMIIBdGVzdA==\n-----END CERTIFICATE-----\n"
IDENTITY = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"


def options(*argv: str) -> LinkGenOptions:
    args = build_parser().parse_args(["multicluster", "link-gen", "--cluster-name", "west", *argv])
    return options_from_args(args)


# --------------------------------------------------------------------------
# flags


def test_defaults_follow_the_reference_and_deploy() -> None:
    got = options()
    assert (got.namespace, got.service_account) == (
        access.READER_NAMESPACE,
        access.READER_SERVICE_ACCOUNT,
    )
    assert (got.link_namespace, got.linkerd_namespace, got.target_linkerd_namespace) == (
        "linkerd-multicluster",
        "linkerd",
        "linkerd",
    )
    assert got.selector == parse_selector_text("mirror.linkerd.io/exported=true")
    assert got.remote_discovery_selector == parse_selector_text(
        "mirror.linkerd.io/exported=remote-discovery"
    )
    assert got.federated_selector == parse_selector_text("mirror.linkerd.io/federated=member")
    assert got.token_duration_s is None and got.gateway and got.create_access
    assert got.output == "yaml"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-gateway", "--gateway-port", "4143"], "--no-gateway and --gateway-port contradict"),
        (["--no-gateway", "--selector", "a=b"], "--no-gateway and --selector contradict"),
        (["--selector", "a in (b"], "--selector: unbalanced parentheses"),
        (["--remote-discovery-selector", "=x"], "--remote-discovery-selector:"),
        (["--api-server-address", "http://10.0.0.1:6443"], "must be an https://host[:port] URL"),
        (["--api-server-address", "https://u:p@10.0.0.1"], "must not have credentials"),
        (["--token-duration", "5m"], "shorter than 10m"),
        (["--token-duration", "soon"], "--token-duration: "),
        (["--gateway-port", "70000"], "--gateway-port '70000' is not a port number"),
        (["--probe-path", "ready"], "must be an absolute path"),
        (["--gateway-addresses", " , "], "--gateway-addresses is empty"),
        (["--trust-domain", "Not A Domain"], "--trust-domain 'Not A Domain' is not a DNS name"),
        (["--namespace", "Bad_NS"], "--namespace 'Bad_NS' must be a DNS label"),
    ],
)
def test_contradictory_or_malformed_flags_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=None) as raised:
        options(*argv)
    assert message in str(raised.value)


def test_usage_errors_exit_2_before_any_cluster_is_contacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No kubeconfig exists at this path: a usage error must come first, and say what is wrong.
    code = main(
        [
            "multicluster",
            "link-gen",
            "--cluster-name",
            "Bad.Name",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ]
    )
    assert code == 2
    assert "--cluster-name 'Bad.Name' must be a DNS label" in capsys.readouterr().err
    assert main(["multicluster", "link-gen"]) == 2  # --cluster-name is required


def test_a_missing_kubeconfig_is_a_failure_that_says_which_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["mc", "link-gen", "--cluster-name", "west", "--kubeconfig", "/nonexistent/kubeconfig"]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing to pipe into kubectl
    assert "no kubeconfig at /nonexistent/kubeconfig: pass --kubeconfig PATH" in captured.err


def test_flag_forms_are_normalized() -> None:
    got = options(
        "--probe-period",
        "5",
        "--gateway-addresses",
        "10.0.0.1, gw.example.com",
        "--excluded-labels",
        "argocd.argoproj.io/instance, team/*",
        "--token-duration",
        "720h",
        "--api-server-address",
        "https://west.example:6443/",
    )
    assert got.probe_period == "5s"
    assert got.gateway_addresses == ("10.0.0.1", "gw.example.com")
    assert got.excluded_labels == ("argocd.argoproj.io/instance", "team/*")
    assert got.token_duration_s == 720 * 3600
    assert got.api_server_address == "https://west.example:6443"
    assert options("--no-gateway").selector is None


# --------------------------------------------------------------------------
# the gateway


def gateway_service(**overrides: Any) -> dict[str, Any]:
    service: dict[str, Any] = {
        "metadata": {
            "name": "linkerd-gateway",
            "namespace": "linkerd-multicluster",
            "annotations": {
                "mirror.linkerd.io/gateway-identity": IDENTITY,
                "mirror.linkerd.io/probe-path": "/ready",
                "mirror.linkerd.io/probe-period": "3",
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "ports": [
                {"name": "mc-gateway", "port": 4143, "nodePort": 30143},
                {"name": "mc-probe", "port": 4191, "nodePort": 30191},
            ],
        },
        "status": {
            "loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "gw.example"}]}
        },
    }
    service.update(overrides)
    return service


def test_gateway_comes_from_the_gateway_service() -> None:
    gateway, warnings = gateway_from_service(gateway_service(), options())
    assert gateway == Gateway(
        addresses=("203.0.113.7", "gw.example"),
        port=4143,
        identity=IDENTITY,
        probe=ProbeSettings(path="/ready", port=4191, period="3s"),
    )
    assert warnings == []


def test_a_node_port_gateway_uses_its_node_ports_and_needs_addresses() -> None:
    service = gateway_service(
        spec={
            "type": "NodePort",
            "ports": [
                {"name": "mc-gateway", "port": 4143, "nodePort": 30143},
                {"name": "mc-probe", "port": 4191, "nodePort": 30191},
            ],
        },
        status={},
    )
    with pytest.raises(LinkGenError, match="has no load-balancer address \\(type NodePort\\)"):
        gateway_from_service(service, options())
    gateway, _ = gateway_from_service(service, options("--gateway-addresses", "192.0.2.10"))
    assert (gateway.addresses, gateway.port) == (("192.0.2.10",), 30143)
    assert gateway.probe is not None and gateway.probe.port == 30191


def test_flags_win_over_the_gateway_service() -> None:
    gateway, _ = gateway_from_service(
        gateway_service(),
        options(
            "--gateway-addresses",
            "198.51.100.1",
            "--gateway-port",
            "443",
            "--gateway-identity",
            "gw.id",
            "--probe-port",
            "8080",
            "--probe-path",
            "/live",
            "--probe-period",
            "10s",
        ),
    )
    assert gateway == Gateway(
        ("198.51.100.1",), 443, "gw.id", ProbeSettings(path="/live", port=8080, period="10s")
    )


def test_what_the_gateway_lacks_is_named_with_the_flag_that_gives_it() -> None:
    annotations = dict(gateway_service()["metadata"]["annotations"])
    del annotations["mirror.linkerd.io/gateway-identity"]
    without_identity = gateway_service(metadata={"annotations": annotations})
    with pytest.raises(LinkGenError, match="gateway-identity annotation: pass --gateway-identity"):
        gateway_from_service(without_identity, options())
    without_port = gateway_service(spec={"type": "LoadBalancer", "ports": []})
    with pytest.raises(LinkGenError, match="no port named mc-gateway: pass --gateway-port"):
        gateway_from_service(without_port, options())
    with pytest.raises(LinkGenError) as raised:
        gateway_from_service(None, options("--gateway-port", "4143"))
    message = str(raised.value)
    assert "does not exist on the target cluster" in message
    assert "--gateway-addresses, --gateway-identity" in message and "--no-gateway" in message


def test_without_a_probe_port_the_gateway_is_not_probed_and_link_gen_says_so() -> None:
    service = gateway_service(
        spec={"type": "LoadBalancer", "ports": [{"name": "mc-gateway", "port": 4143}]}
    )
    gateway, warnings = gateway_from_service(service, options())
    assert gateway.probe is None
    assert (
        len(warnings) == 1 and "will not be probed" in warnings[0] and "--probe-port" in warnings[0]
    )


def test_a_gateway_given_by_flags_alone_needs_no_service() -> None:
    gateway, _ = gateway_from_service(
        None,
        options(
            "--gateway-addresses",
            "192.0.2.1",
            "--gateway-port",
            "4143",
            "--gateway-identity",
            "gw.id",
            "--probe-port",
            "4191",
        ),
    )
    assert gateway.probe == ProbeSettings(path="/ready", port=4191, period="3s")


# --------------------------------------------------------------------------
# documents


def inputs(**overrides: Any) -> LinkInputs:
    values: dict[str, Any] = {
        "cluster_name": "west",
        "link_namespace": "linkerd-multicluster",
        "linkerd_namespace": "linkerd",
        "target_linkerd_namespace": "linkerd",
        "trust_domain": "west.example",
        "cluster_domain": "west.local",
        "gateway": Gateway(("203.0.113.7",), 4143, IDENTITY, ProbeSettings("/ready", 4191, "3s")),
        "selector": parse_selector_text("mirror.linkerd.io/exported=true"),
        "remote_discovery_selector": parse_selector_text(
            "mirror.linkerd.io/exported=remote-discovery"
        ),
        "federated_selector": parse_selector_text("mirror.linkerd.io/federated=member"),
        "excluded_labels": ("argocd.argoproj.io/instance",),
        "excluded_annotations": ("kubectl.kubernetes.io/last-applied-configuration",),
    }
    return LinkInputs(**(values | overrides))


def test_the_kubeconfig_embeds_everything_and_the_server_accepts_it() -> None:
    data = link_kubeconfig(
        cluster_name="west",
        server="https://west.example:6443",
        ca_pem=CA,
        tls_server_name="kubernetes.default",
        user="destination-remote-reader",
        token="tok.en-123",
    )
    config = parse_kubeconfig(data)
    assert (config.server, config.ca_pem, config.token, config.tls_server_name) == (
        "https://west.example:6443",
        CA,
        "tok.en-123",
        "kubernetes.default",
    )
    # No file paths, plugins or extra entries: one cluster, one user, one context.
    document = yaml.safe_load(data)
    assert [len(document[k]) for k in ("clusters", "users", "contexts")] == [1, 1, 1]
    assert set(document["users"][0]["user"]) == {"token"}


def test_two_secrets_the_mirrors_and_the_destination_servers_with_its_label_and_annotations() -> (
    None
):
    mirror_secret, destination_secret = credentials_secrets(inputs(), b"kubeconfig bytes")
    for secret in (mirror_secret, destination_secret):
        assert secret["type"] == CREDENTIALS_SECRET_TYPE
        assert secret["metadata"]["name"] == "cluster-credentials-west"
        assert base64.b64decode(secret["data"]["kubeconfig"]) == b"kubeconfig bytes"
    assert mirror_secret["metadata"] == {
        "name": "cluster-credentials-west",
        "namespace": "linkerd-multicluster",
    }
    assert destination_secret["metadata"] == {
        "name": "cluster-credentials-west",
        "namespace": "linkerd",
        "labels": {CLUSTER_NAME_LABEL: "west"},
        "annotations": {
            TRUST_DOMAIN_ANNOTATION: "west.example",
            CLUSTER_DOMAIN_ANNOTATION: "west.local",
        },
    }
    (single,) = credentials_secrets(inputs(link_namespace="linkerd"), b"k")
    assert single["metadata"]["labels"] == {CLUSTER_NAME_LABEL: "west"}


def test_the_link_reads_back_field_for_field() -> None:
    link = project_link(link_document(inputs()))
    assert link is not None and link.problem is None and link.spec is not None
    spec = link.spec
    assert link.ref.namespace == "linkerd-multicluster" and link.name == "west"
    assert spec.target_cluster_name == "west" and spec.target_cluster_domain == "west.local"
    assert spec.credentials_secret == "cluster-credentials-west"
    assert spec.gateway_addresses == ("203.0.113.7",) and spec.gateway_port == 4143
    assert spec.gateway_identity == IDENTITY
    assert spec.probe is not None and (spec.probe.path, spec.probe.port, spec.probe.period_s) == (
        "/ready",
        4191,
        3.0,
    )
    assert spec.selector.matches({"mirror.linkerd.io/exported": "true"})
    assert spec.remote_discovery_selector.matches(
        {"mirror.linkerd.io/exported": "remote-discovery"}
    )
    assert spec.federated_selector.matches({"mirror.linkerd.io/federated": "member"})
    assert spec.excluded_labels == ("argocd.argoproj.io/instance",)
    assert spec.excluded_annotations == ("kubectl.kubernetes.io/last-applied-configuration",)


def test_a_pod_to_pod_link_has_no_gateway_fields_and_no_selector() -> None:
    document = link_document(inputs(gateway=None, selector=None))
    assert not {"gatewayAddress", "gatewayPort", "gatewayIdentity", "probeSpec", "selector"} & set(
        document["spec"]
    )
    link = project_link(document)
    assert link is not None and link.spec is not None and not link.spec.gateway_enabled
    assert not link.spec.selector.matches({"mirror.linkerd.io/exported": "true"})


def test_yaml_and_json_output_hold_the_same_documents() -> None:
    documents = [*credentials_secrets(inputs(), b"k"), link_document(inputs())]
    as_yaml = [d for d in yaml.safe_load_all(render(documents, "yaml")) if d]
    as_json = json.loads(render(documents, "json"))
    assert as_yaml == documents
    assert as_json == {"apiVersion": "v1", "kind": "List", "items": documents}
    assert render(documents, "yaml").startswith("---\n")


_label = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    cluster=_label,
    namespace=_label,
    value=st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True),
    port=st.integers(1, 65535),
    period=st.integers(1, 3600),
)
def test_any_link_link_gen_can_write_is_valid(
    cluster: str, namespace: str, value: str, port: int, period: int
) -> None:
    selector = parse_selector_text(f"example.com/{namespace}={value},!{namespace}")
    document = link_document(
        inputs(
            cluster_name=cluster,
            link_namespace=namespace,
            gateway=Gateway(
                ("gw.example",), port, "id", ProbeSettings("/ready", port, f"{period}s")
            ),
            selector=selector,
            federated_selector=selector,
        )
    )
    link = project_link(document)
    assert link is not None and link.problem is None and link.spec is not None
    assert link.spec.target_cluster_name == cluster
    assert link.spec.selector.matches({f"example.com/{namespace}": value})
    assert not link.spec.selector.matches({f"example.com/{namespace}": value, namespace: ""})


# --------------------------------------------------------------------------
# the reader identity


def _deploy_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict):
                documents.append(document)
    return documents


def test_the_reader_role_in_code_is_the_one_deploy_grants() -> None:
    """Every manifest of deploy/ that grants the reader role grants exactly link-gen's."""
    documents = _deploy_documents()
    roles = [
        d
        for d in documents
        if d.get("kind") == "ClusterRole" and d["metadata"]["name"] == access.READER_CLUSTER_ROLE
    ]
    bindings = [
        d
        for d in documents
        if d.get("kind") == "ClusterRoleBinding"
        and d["roleRef"]["name"] == access.READER_CLUSTER_ROLE
    ]
    assert roles and bindings

    def normalize(rules: Any) -> list[tuple[tuple[str, ...], ...]]:
        return sorted(
            (tuple(r["apiGroups"]), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
            for r in rules
        )

    for role in roles:
        assert normalize(role["rules"]) == normalize(access.READER_RULES)
    for binding in bindings:
        assert binding["metadata"]["name"] == access.binding_name(
            access.READER_NAMESPACE, access.READER_SERVICE_ACCOUNT
        )
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": access.READER_SERVICE_ACCOUNT,
                "namespace": access.READER_NAMESPACE,
            }
        ]
    assert [str(p) for p in access.REQUIRED] == [
        "list services",
        "watch services",
        "list pods",
        "watch pods",
        "list endpointslices.discovery.k8s.io",
        "watch endpointslices.discovery.k8s.io",
    ]


def test_another_service_account_gets_its_own_binding() -> None:
    objects = access.access_objects("readers", "east-reader", created_by="test")
    binding = objects[-1]
    assert (
        binding["metadata"]["name"] == "multicluster-destination-remote-reader:readers:east-reader"
    )
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "east-reader", "namespace": "readers"}
    ]
    secret = access.token_secret("readers", "east-reader", created_by="test")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["name"] == "east-reader-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "east-reader"


# --------------------------------------------------------------------------
# addresses


@pytest.mark.parametrize(
    ("server", "reach"),
    [
        ("https://127.0.0.1:6443", Reach.LOOPBACK),
        ("https://127.9.9.9", Reach.LOOPBACK),
        ("https://localhost:6443", Reach.LOOPBACK),
        ("https://api.localhost", Reach.LOOPBACK),
        ("https://[::1]:6443", Reach.LOOPBACK),
        ("https://[::ffff:127.0.0.1]:6443", Reach.LOOPBACK),
        ("https://169.254.10.1", Reach.LINK_LOCAL),
        ("https://[fe80::1]:6443", Reach.LINK_LOCAL),
        ("https://0.0.0.0:6443", Reach.UNSPECIFIED),
        ("https://10.0.0.40:6443", Reach.PRIVATE),
        ("https://192.168.3.1", Reach.PRIVATE),
        ("https://100.64.0.1", Reach.PRIVATE),
        ("https://[fd00::1]", Reach.PRIVATE),
        ("https://203.0.113.5", Reach.PRIVATE),  # TEST-NET-3 is reserved, so "private" to Python
        ("https://8.8.8.8", Reach.PUBLIC),
        ("https://west.example.com:6443", Reach.NAME),
    ],
)
def test_addresses_are_classified(server: str, reach: Reach) -> None:
    assert classify_server(server) is reach


def test_an_unreachable_address_warns_and_names_the_flag() -> None:
    warning = _address_warning("https://127.0.0.1:6443", given=False, context="kind-west")
    assert warning is not None
    assert (
        "https://127.0.0.1:6443 (from kubeconfig context kind-west) is a loopback address"
        in warning
    )
    assert "--api-server-address https://<address reachable from the source cluster>" in warning
    given_warning = _address_warning("https://localhost:6443", given=True, context="kind-west")
    assert (
        given_warning is not None and "only a source cluster on this same machine" in given_warning
    )
    assert _address_warning("https://10.0.0.40:6443", given=False, context="x") is None
    assert _address_warning("https://west.example:6443", given=False, context="x") is None
    for server in ("https://127.0.0.1:6443", "https://10.0.0.40:6443", "https://8.8.8.8"):
        assert "--api-server-address" in api_server_hint(server, cluster="west")
