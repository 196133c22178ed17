"""Unit tests for destination.authority: request path, host name and context token parsing.

Scope: the pure parsing rules of reference §4.1 (path to host and port), §4.2
(host name to service), §4.3 (context token) and steps 1-3 of the Get dispatch
table in §5.1, including the exact INVALID_ARGUMENT messages. No gRPC, no
Kubernetes.
"""

from __future__ import annotations

import pytest

from destination.authority import (
    Authority,
    ContextToken,
    InvalidAuthority,
    IpAuthorityNotSupported,
    LookupTarget,
    ServiceName,
    is_ip,
    parse_authority,
    parse_context_token,
    parse_get_target,
    parse_service_host,
)

CD = "cluster.local"

# --------------------------------------------------------------------------
# §4.1 path -> (host, port)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            "foo.ns.svc.cluster.local",
            Authority("foo.ns.svc.cluster.local", 80),
            id="no-colon-defaults-to-80",
        ),
        pytest.param(
            "foo.ns.svc.cluster.local:8080",
            Authority("foo.ns.svc.cluster.local", 8080),
            id="explicit-port",
        ),
        pytest.param("", Authority("", 80), id="empty-path-is-empty-host-port-80"),
        pytest.param("10.1.2.3:1", Authority("10.1.2.3", 1), id="lowest-port"),
        pytest.param("10.1.2.3:65535", Authority("10.1.2.3", 65535), id="highest-port"),
        pytest.param("foo:080", Authority("foo", 80), id="leading-zero-port"),
        pytest.param("foo:00000000000000000000080", Authority("foo", 80), id="many-leading-zeros"),
        pytest.param("[::1]:80", Authority("::1", 80), id="bracketed-ipv6"),
        pytest.param("[2001:db8::1]:443", Authority("2001:db8::1", 443), id="bracketed-ipv6-long"),
        pytest.param("[foo]:80", Authority("foo", 80), id="brackets-around-a-name-are-removed"),
        pytest.param(":80", Authority("", 80), id="empty-host-with-port"),
    ],
)
def test_a_parsable_path_gives_host_and_port(path: str, expected: Authority) -> None:
    assert parse_authority(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("2001:db8::1", id="unbracketed-ipv6-without-port"),
        pytest.param("2001:db8::1:80", id="unbracketed-ipv6-with-port"),
        pytest.param("[::1]", id="bracketed-ipv6-without-port"),
        pytest.param("[::1]80", id="bracket-not-followed-by-colon"),
        pytest.param("[::1]:80:90", id="two-colons-after-bracket"),
        pytest.param("[::1:80", id="missing-closing-bracket"),
        pytest.param("[[::1]]:80", id="nested-brackets"),
        pytest.param("foo]:80", id="stray-closing-bracket"),
        pytest.param("fo[o:80", id="stray-opening-bracket"),
        pytest.param("foo:bar:80", id="too-many-colons"),
        pytest.param("foo:0", id="port-zero"),
        pytest.param("foo:65536", id="port-over-65535"),
        pytest.param("foo:99999999999999999999", id="huge-port"),
        pytest.param("foo:", id="empty-port"),
        pytest.param("foo:http", id="non-numeric-port"),
        pytest.param("foo:+80", id="plus-sign"),
        pytest.param("foo:-80", id="minus-sign"),
        pytest.param("foo:8_0", id="underscore"),
        pytest.param("foo: 80", id="space-before-port"),
        pytest.param("foo:80 ", id="space-after-port"),
        pytest.param("foo:\u0668\u0660", id="non-ascii-digits"),
        pytest.param("foo:0x50", id="hex-port"),
    ],
)
def test_an_unparsable_path_raises_invalid_authority_naming_the_path(path: str) -> None:
    with pytest.raises(InvalidAuthority) as caught:
        parse_authority(path)
    assert caught.value.path == path
    assert str(caught.value) == f"Invalid authority: {path}"
    assert caught.value.reason
    assert type(caught.value) is InvalidAuthority


def test_an_authority_prints_ipv6_hosts_in_brackets() -> None:
    assert str(Authority("::1", 80)) == "[::1]:80"
    assert str(Authority("foo.ns", 80)) == "foo.ns:80"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("10.0.0.1", True, id="ipv4"),
        pytest.param("0.0.0.0", True, id="ipv4-unspecified"),
        pytest.param("2001:db8::1", True, id="ipv6"),
        pytest.param("::", True, id="ipv6-unspecified"),
        pytest.param("::ffff:1.2.3.4", True, id="ipv4-mapped-ipv6"),
        pytest.param("::1.2.3.4", True, id="ipv4-compatible-ipv6"),
        pytest.param("fe80::1%eth0", False, id="ipv6-with-zone"),
        pytest.param("[::1]", False, id="bracketed-ipv6"),
        pytest.param("1.2.3", False, id="three-octets"),
        pytest.param("01.2.3.4", False, id="leading-zero-octet"),
        pytest.param("256.1.1.1", False, id="octet-over-255"),
        pytest.param(" 1.2.3.4", False, id="leading-space"),
        pytest.param("foo.ns.svc.cluster.local", False, id="dns-name"),
        pytest.param("", False, id="empty"),
    ],
)
def test_ip_detection_follows_go_parse_ip(host: str, expected: bool) -> None:
    assert is_ip(host) is expected


# --------------------------------------------------------------------------
# §4.2 host -> service


@pytest.mark.parametrize(
    ("host", "cluster_domain", "expected"),
    [
        pytest.param(
            "web.emojivoto.svc.cluster.local",
            CD,
            ServiceName(namespace="emojivoto", name="web"),
            id="service-name",
        ),
        pytest.param(
            "web-0.web.emojivoto.svc.cluster.local",
            CD,
            ServiceName(namespace="emojivoto", name="web", hostname="web-0"),
            id="pod-dns-name",
        ),
        pytest.param(
            "web.emojivoto.svc.example",
            "example",
            ServiceName(namespace="emojivoto", name="web"),
            id="single-label-cluster-domain",
        ),
        pytest.param(
            "a.web.ns.svc.k8s.corp.example",
            "k8s.corp.example",
            ServiceName(namespace="ns", name="web", hostname="a"),
            id="three-label-cluster-domain",
        ),
        pytest.param(
            "Web.NS.svc.cluster.local",
            CD,
            ServiceName(namespace="NS", name="Web"),
            id="labels-before-the-suffix-keep-their-case",
        ),
    ],
)
def test_a_cluster_local_name_gives_the_service(
    host: str, cluster_domain: str, expected: ServiceName
) -> None:
    assert parse_service_host(host, cluster_domain=cluster_domain) == expected


@pytest.mark.parametrize(
    ("host", "cluster_domain"),
    [
        pytest.param("linkerd.io", CD, id="other-domain"),
        pytest.param("foo", CD, id="single-label"),
        pytest.param("foo.ns", CD, id="no-suffix"),
        pytest.param("foo.ns.svc", CD, id="svc-without-cluster-domain"),
        pytest.param("ns.svc.cluster.local", CD, id="one-label-before-suffix"),
        pytest.param("svc.cluster.local", CD, id="suffix-only"),
        pytest.param("a.b.web.ns.svc.cluster.local", CD, id="four-labels-before-suffix"),
        pytest.param("web.ns.svc.cluster.local.", CD, id="trailing-dot"),
        pytest.param("web.ns.SVC.cluster.local", CD, id="suffix-is-case-sensitive"),
        pytest.param("web.ns.svc.Cluster.Local", CD, id="cluster-domain-is-case-sensitive"),
        pytest.param("web.ns.svc.cluster.local", "example", id="different-cluster-domain"),
        pytest.param("web.ns.svc.example.local", "example", id="cluster-domain-must-be-last"),
        pytest.param("web.ns.svc.local", CD, id="partial-cluster-domain"),
        pytest.param(".ns.svc.cluster.local", CD, id="empty-service-label"),
        pytest.param("web..svc.cluster.local", CD, id="empty-namespace-label"),
        pytest.param(".web.ns.svc.cluster.local", CD, id="empty-hostname-label"),
        pytest.param("", CD, id="empty-host"),
    ],
)
def test_a_name_that_is_not_cluster_local_is_an_invalid_authority(
    host: str, cluster_domain: str
) -> None:
    with pytest.raises(InvalidAuthority) as caught:
        parse_service_host(host, cluster_domain=cluster_domain)
    assert caught.value.path == host
    assert caught.value.reason


@pytest.mark.parametrize(
    "cluster_domain",
    [
        pytest.param("", id="empty"),
        pytest.param("cluster.local.", id="trailing-dot"),
        pytest.param("cluster..local", id="empty-label"),
    ],
)
def test_a_malformed_cluster_domain_is_a_configuration_error(cluster_domain: str) -> None:
    with pytest.raises(ValueError, match="cluster domain") as caught:
        parse_service_host("web.ns.svc.cluster.local", cluster_domain=cluster_domain)
    assert not isinstance(caught.value, InvalidAuthority)


def test_a_service_name_prints_as_namespace_slash_name() -> None:
    assert str(ServiceName(namespace="ns", name="web", hostname="web-0")) == "ns/web"


# --------------------------------------------------------------------------
# §5.1 Get dispatch, steps 1-3


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            "web.ns.svc.cluster.local:8080",
            LookupTarget(ServiceName(namespace="ns", name="web"), 8080),
            id="service-with-port",
        ),
        pytest.param(
            "web.ns.svc.cluster.local",
            LookupTarget(ServiceName(namespace="ns", name="web"), 80),
            id="service-default-port",
        ),
        pytest.param(
            "web-0.web.ns.svc.cluster.local:7000",
            LookupTarget(ServiceName(namespace="ns", name="web", hostname="web-0"), 7000),
            id="pod-dns-name",
        ),
    ],
)
def test_get_accepts_cluster_local_names(path: str, expected: LookupTarget) -> None:
    assert parse_get_target(path, cluster_domain=CD) == expected


@pytest.mark.parametrize(
    ("path", "host"),
    [
        pytest.param("10.1.2.3:80", "10.1.2.3", id="ipv4-with-port"),
        pytest.param("10.1.2.3", "10.1.2.3", id="ipv4-default-port"),
        pytest.param("[2001:db8::1]:80", "2001:db8::1", id="bracketed-ipv6"),
        pytest.param("[::ffff:10.1.2.3]:80", "::ffff:10.1.2.3", id="ipv4-mapped-ipv6"),
    ],
)
def test_get_rejects_ip_hosts_with_the_reference_message(path: str, host: str) -> None:
    with pytest.raises(IpAuthorityNotSupported) as caught:
        parse_get_target(path, cluster_domain=CD)
    assert str(caught.value) == f"IP queries not supported by Get API: host={host}"
    assert caught.value.host == host
    assert caught.value.path == path
    assert isinstance(caught.value, InvalidAuthority)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("web.ns.svc.cluster.local:0", id="step-1-port-zero"),
        pytest.param("2001:db8::1", id="step-1-unbracketed-ipv6"),
        pytest.param("web.ns.svc.cluster.local:http", id="step-1-named-port"),
        pytest.param("linkerd.io:80", id="step-3-other-domain"),
        pytest.param("web.ns:80", id="step-3-short-name"),
        pytest.param("web.ns.svc.cluster.local.:80", id="step-3-trailing-dot"),
        pytest.param("a.b.web.ns.svc.cluster.local:80", id="step-3-too-many-labels"),
    ],
)
def test_get_rejects_bad_authorities_naming_the_whole_path(path: str) -> None:
    with pytest.raises(InvalidAuthority) as caught:
        parse_get_target(path, cluster_domain=CD)
    assert type(caught.value) is InvalidAuthority
    assert str(caught.value) == f"Invalid authority: {path}"
    assert caught.value.path == path


def test_get_accepts_a_bracketed_service_name_because_go_strips_the_brackets() -> None:
    target = parse_get_target("[web.ns.svc.cluster.local]:80", cluster_domain=CD)
    assert target == LookupTarget(ServiceName(namespace="ns", name="web"), 80)


# --------------------------------------------------------------------------
# §4.3 context token


INJECTOR_TOKEN = '{"ns":"emojivoto", "nodeName":"node-1", "pod":"web-5f7b8"}\n'


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        pytest.param("", ContextToken(), id="empty-string"),
        pytest.param(
            INJECTOR_TOKEN,
            ContextToken("emojivoto", "node-1", "web-5f7b8"),
            id="injector-json-with-trailing-newline",
        ),
        pytest.param('{"ns":"emojivoto"}', ContextToken(ns="emojivoto"), id="json-ns-only"),
        pytest.param(
            '{"nodeName":"node-1"}', ContextToken(node_name="node-1"), id="json-node-only"
        ),
        pytest.param("{}", ContextToken(), id="empty-json-object"),
        pytest.param(
            '{"ns":"a","extra":[1,{"x":null}],"n":1}',
            ContextToken(ns="a"),
            id="unknown-fields-ignored",
        ),
        pytest.param('{"ns":null,"pod":"p"}', ContextToken(pod="p"), id="null-field-is-absent"),
        pytest.param("null", ContextToken(), id="json-null-like-go"),
        pytest.param('{"ns":"a","ns":"b"}', ContextToken(ns="b"), id="repeated-key-last-wins"),
        pytest.param(
            '{"NodeName":"node-1","NS":"x"}',
            ContextToken(ns="x", node_name="node-1"),
            id="keys-match-case-insensitively-like-go",
        ),
        pytest.param(
            '{"ns":"bad\\ud800"}', ContextToken(ns="bad\ufffd"), id="lone-surrogate-replaced"
        ),
        pytest.param("ns:emojivoto", ContextToken(ns="emojivoto"), id="legacy-ns"),
        pytest.param("ns:emojivoto\n", ContextToken(ns="emojivoto"), id="legacy-trailing-newline"),
        pytest.param("ns:", ContextToken(), id="legacy-empty-namespace"),
    ],
)
def test_a_valid_context_token_parses_without_a_warning(token: str, expected: ContextToken) -> None:
    assert parse_context_token(token) == (expected, None)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("[]", id="json-array"),
        pytest.param('"x"', id="json-string"),
        pytest.param('"ns:x"', id="json-string-that-looks-legacy"),
        pytest.param("1", id="json-number"),
        pytest.param("true", id="json-bool"),
        pytest.param('{"ns":1}', id="non-string-ns"),
        pytest.param('{"ns":"a","nodeName":["n"]}', id="non-string-node-name"),
        pytest.param('{"pod":{"name":"p"}}', id="object-pod"),
        pytest.param('{"ns":"a"', id="truncated-json"),
        pytest.param('{"ns":"a","x":NaN}', id="nan-is-not-json"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested"),
        pytest.param("ns:a:b", id="legacy-with-two-colons"),
        pytest.param("NS:a", id="legacy-prefix-is-case-sensitive"),
        pytest.param("namespace:a", id="legacy-wrong-prefix"),
        pytest.param(" ", id="whitespace-only"),
    ],
)
def test_an_invalid_context_token_is_empty_with_a_reason(token: str) -> None:
    parsed, reason = parse_context_token(token)
    assert parsed == ContextToken()
    assert reason is not None
    assert "context token" in reason
    assert len(reason) < 500, "the reason quotes at most the start of a long token"


def test_context_token_defaults_are_empty_strings() -> None:
    token = ContextToken()
    assert (token.ns, token.node_name, token.pod) == ("", "", "")
