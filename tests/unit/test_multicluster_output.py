"""What `check`, `gateways` and `unlink` print and plan, from in-memory inputs.

Scope: the check table (symbols, details, hints only under failures and
warnings, escaped text, the final status line) and its JSON (linkerd's
shape); the per-Link export checks on a given target and source (missing
mirrors with the Link status' reason, stale mirrors, federated members
missing or stale, headless members); trust anchors read from
`linkerd-config` safely and compared as certificate sets; the `gateways`
rows and table from a mirror controller's `/links`; and the unlink plan:
exactly the Link, the cluster's mirrors, its federated memberships, its two
Secrets, its Lease and finalizer, in that order, and nothing of another
cluster.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from destination.cli.multicluster.gateways import gateway_rows, table
from destination.cli.multicluster.link_checks import (
    LinkContext,
    SourceView,
    _check_federated,
    _check_mirrors,
    _status_conditions,
)
from destination.cli.multicluster.linkerd_config import (
    anchor_fingerprints,
    linkerd_config,
    trust_anchors,
)
from destination.cli.multicluster.report import (
    Category,
    Check,
    Result,
    render_json,
    render_table,
    succeeded,
)
from destination.cli.multicluster.unlink import UnlinkInputs, plan, without_cluster
from mirror.links import project_link
from mirror.remote import project_remote_service

# --------------------------------------------------------------------------
# the report


def test_the_table_reads_like_linkerd_check() -> None:
    categories = [
        Category(
            "source cluster",
            [
                Check.ok("the Link CRD exists"),
                Check.warning("every mirror belongs to a Link", "* a/b", hint="unlink it"),
            ],
        ),
        Category(
            "Link linkerd-multicluster/west",
            [
                Check.error(
                    "target answers", "cannot connect: refused", hint="use --api-server-address"
                ),
                Check.skipped("permissions", "the target cannot be reached"),
                Check("ok with a hint that is not shown", Result.SUCCESS, (), "never shown"),
            ],
        ),
    ]
    assert render_table(categories) == (
        "source cluster\n"
        "--------------\n"
        "√ the Link CRD exists\n"
        "‼ every mirror belongs to a Link\n"
        "    * a/b\n"
        "    hint: unlink it\n"
        "\n"
        "Link linkerd-multicluster/west\n"
        "------------------------------\n"
        "\u00d7 target answers\n"
        "    cannot connect: refused\n"
        "    hint: use --api-server-address\n"
        "- permissions\n"
        "    skipped: the target cannot be reached\n"
        "√ ok with a hint that is not shown\n"
        "\n"
        "Status check results are \u00d7\n"
    )
    assert not succeeded(categories)


def test_warnings_and_skips_do_not_fail_and_json_has_linkerds_shape() -> None:
    categories = [
        Category("c", [Check.ok("a"), Check.warning("b", "detail"), Check.skipped("c", "why")])
    ]
    assert succeeded(categories)
    assert render_table(categories).endswith("Status check results are √\n")
    document = json.loads(render_json(categories))
    assert document["success"] is True
    (category,) = document["categories"]
    assert category["categoryName"] == "c"
    assert [c["result"] for c in category["checks"]] == ["success", "warning", "skipped"]
    assert category["checks"][1]["error"] == "detail"
    assert "error" not in category["checks"][0]


def test_remote_text_cannot_drive_the_terminal() -> None:
    text = render_table([Category("c\x1b]0;t\x07", [Check.error("d\x1b[2J", "e\u202ef")])])
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text


def test_long_detail_lists_are_cut_and_counted() -> None:
    text = render_table([Category("c", [Check.error("d", *(f"* {i}" for i in range(30)))])])
    assert "* 19" in text and "* 20" not in text and "... and 10 more" in text


# --------------------------------------------------------------------------
# exports of one Link


def remote_service(
    name: str, namespace: str = "shop", headless: bool = False, **labels: str
) -> Any:
    service = project_remote_service(
        {
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"port": 80}], "clusterIP": "None" if headless else "10.0.0.1"},
        }
    )
    assert service is not None
    return service


def local(
    name: str, namespace: str = "shop", annotations: dict[str, str] | None = None, **labels: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"mirror.linkerd.io/mirrored-service": "true", **labels},
            "annotations": annotations or {},
        }
    }


def context(mirrors: list[dict[str, Any]], status: dict[str, Any] | None = None) -> LinkContext:
    link = project_link(
        {
            "metadata": {"name": "west", "namespace": "linkerd-multicluster"},
            "spec": {
                "targetClusterName": "west",
                "clusterCredentialsSecret": "cluster-credentials-west",
                "selector": {"matchLabels": {"mirror.linkerd.io/exported": "true"}},
                "federatedServiceSelector": {
                    "matchLabels": {"mirror.linkerd.io/federated": "member"}
                },
            },
        }
    )
    assert link is not None and link.spec is not None
    view = SourceView(
        link_namespace="linkerd-multicluster",
        linkerd_namespace="linkerd",
        namespaces=frozenset({"shop"}),
        mirror_services=mirrors,
        mirror_admin=None,
        links_document=None,
        links_error=None,
        local_anchors=None,
        local_anchors_source="",
    )
    return LinkContext(
        link=link,
        spec=link.spec,
        status=status or {},
        source=None,
        view=view,
        timeout_s=1,  # type: ignore[arg-type]
    )


CLUSTER = {"mirror.linkerd.io/cluster-name": "west"}


def test_missing_mirrors_are_listed_with_the_links_status_reason() -> None:
    status = {
        "mirrorServices": [
            {
                "remoteRef": {"name": "api", "namespace": "shop"},
                "conditions": [
                    {"type": "Mirrored", "status": "False", "reason": "Error", "message": "boom"}
                ],
            }
        ]
    }
    ctx = context([local("web-west", **CLUSTER), local("old-west", **CLUSTER)], status)
    exported = [remote_service("web"), remote_service("api")]
    _check_mirrors(ctx, "mirrored", exported, exported)
    mirrored, stale = ctx.category.checks
    assert mirrored.result is Result.ERROR
    assert mirrored.details == ("* shop/api: no mirror shop/api-west: Error: boom",)
    assert stale.result is Result.WARNING
    assert stale.details == ("* shop/old-west: its remote Service is gone or no longer exported",)


def test_every_exported_service_mirrored_passes() -> None:
    ctx = context(
        [
            local("web-west", **CLUSTER),
            local("web-north", **{"mirror.linkerd.io/cluster-name": "north"}),
        ]
    )
    _check_mirrors(ctx, "mirrored", [remote_service("web")], [remote_service("web")])
    assert [c.result for c in ctx.category.checks] == [Result.SUCCESS, Result.SUCCESS]


def test_federated_members_missing_stale_or_headless_are_errors() -> None:
    rd = "multicluster.linkerd.io/remote-discovery"
    ctx = context(
        [
            local("web-federated", annotations={rd: "web@north"}),
            local("gone-federated", annotations={rd: "gone@west,gone@north"}),
            local("db-federated", annotations={rd: "db@west"}),
        ]
    )
    members = [remote_service("web"), remote_service("db"), remote_service("cache", headless=True)]
    _check_federated(ctx, "federated", members, members)
    (check,) = ctx.category.checks
    assert check.result is Result.ERROR
    assert check.details == (
        "* shop/cache: headless, so it cannot join cache-federated",
        "* shop/web: shop/web-federated does not list web@west",
        "* shop/gone-federated lists gone@west, which west no longer exports as a member",
    )


def test_status_conditions_of_any_shape_never_raise() -> None:
    assert _status_conditions({"mirrorServices": "x"}, "mirrorServices") == {}
    assert (
        _status_conditions(
            {"mirrorServices": [1, {"remoteRef": 2}, {"conditions": [3]}]}, "mirrorServices"
        )
        == {}
    )


# --------------------------------------------------------------------------
# linkerd-config and trust anchors


def pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def test_linkerd_config_values_are_read() -> None:
    values = (
        "identityTrustDomain: west.example\nclusterDomain: west.local\n"
        f"identityTrustAnchorsPEM: |\n  {pem(b'one').replace(chr(10), chr(10) + '  ')}"
    )
    config = linkerd_config({"data": {"values": values}})
    assert config is not None
    assert (config.trust_domain, config.cluster_domain) == ("west.example", "west.local")
    assert config.anchors_pem is not None and anchor_fingerprints(config.anchors_pem) == {b"one"}


@pytest.mark.parametrize(
    "values",
    [
        "a: &x [1]\nb: *x\nidentityTrustDomain: west.example\n",  # aliases refused outright
        "identityTrustDomain: [not, a, string]\n",
        "identityTrustDomain: 'Bad Domain'\n",
        "- a list\n",
        "{ unclosed",
    ],
)
def test_hostile_linkerd_config_says_nothing(values: str) -> None:
    assert linkerd_config({"data": {"values": values}}) is None
    assert linkerd_config({"data": "nope"}) is None and linkerd_config(None) is None


def test_anchors_compare_as_sets_of_certificates() -> None:
    assert anchor_fingerprints(pem(b"one") + pem(b"two")) == anchor_fingerprints(
        "\n\n" + pem(b"two").replace("\n", "\r\n") + pem(b"one")
    )
    assert anchor_fingerprints(pem(b"one")) != anchor_fingerprints(pem(b"two"))
    for bad in ("", "no pem here", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"):
        with pytest.raises(ValueError):
            anchor_fingerprints(bad)
    roots = {"data": {"ca-bundle.crt": pem(b"roots")}}
    config = {"data": {"values": "identityTrustAnchorsPEM: x\n"}}
    assert trust_anchors(config, roots) == pem(b"roots")
    assert trust_anchors(config, None) == "x"


# --------------------------------------------------------------------------
# gateways


LINKS = {
    "identity": "mirror-0",
    "links": [
        {
            "name": "west",
            "namespace": "linkerd-multicluster",
            "cluster": "west",
            "leader": True,
            "state": "running",
            "error": None,
            "gateway": {
                "addresses": ["192.0.2.1"],
                "port": 4143,
                "probed": True,
                "alive": True,
                "latency_ms": 3.2,
            },
            "mirrored": {"mirror": 4, "federated": 1},
        },
        {
            "name": "east",
            "namespace": "linkerd-multicluster",
            "cluster": "east",
            "leader": True,
            "state": "running",
            "gateway": {
                "addresses": ["192.0.2.2"],
                "port": 4143,
                "probed": True,
                "alive": False,
                "latency_ms": 9.0,
            },
            "mirrored": {"mirror": 2},
        },
        {
            "name": "north",
            "namespace": "linkerd-multicluster",
            "cluster": "north",
            "leader": True,
            "state": "running",
            "gateway": None,
            "mirrored": {"mirror": 1},
        },
        {
            "name": "south",
            "namespace": "linkerd-multicluster",
            "cluster": "south",
            "leader": False,
            "state": "standby",
            "gateway": {"alive": True},
        },
        "garbage",
        {"name": 7, "gateway": "x", "mirrored": [1]},
    ],
}


def test_gateway_rows_and_table() -> None:
    rows = gateway_rows(LINKS)
    assert [(r["clusterName"], r["alive"], r["numberOfServices"], r["latency"]) for r in rows] == [
        ("7", None, None, None),
        ("east", False, 2, None),
        ("north", None, 1, None),
        ("south", None, None, None),
        ("west", True, 4, 3.2),
    ]
    text = table([r for r in rows if r["clusterName"] != "7"])
    assert text.splitlines() == [
        "CLUSTER  ALIVE    NUM_SVC  LATENCY",
        "east     False    2        -",
        "north    -        1        -",
        "south    unknown  -        -",
        "west     True     4        3.2ms",
    ]
    assert [r["clusterName"] for r in gateway_rows(LINKS, "west")] == ["west"]


# --------------------------------------------------------------------------
# unlink


def obj(
    kind: str,
    namespace: str,
    name: str,
    *,
    uid: str = "",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "resourceVersion": "7",
            "labels": labels or {},
            "annotations": annotations or {},
            **extra.pop("metadata", {}),
        },
        **extra,
    }


MIRROR = {"mirror.linkerd.io/mirrored-service": "true"}
RD = "multicluster.linkerd.io/remote-discovery"


def unlink_inputs() -> UnlinkInputs:
    ns = "linkerd-multicluster"
    return UnlinkInputs(
        cluster="west",
        link_namespace=ns,
        linkerd_namespace="linkerd",
        links=[
            obj(
                "Link",
                ns,
                "west",
                spec={"targetClusterName": "west", "clusterCredentialsSecret": "creds-west"},
                metadata={"finalizers": ["multicluster.linkerd.io/mirrors", "other"]},
            ),
            obj(
                "Link",
                ns,
                "north",
                spec={
                    "targetClusterName": "north",
                    "clusterCredentialsSecret": "cluster-credentials-north",
                },
            ),
        ],
        services=[
            obj(
                "Service",
                "shop",
                "web-west",
                labels={**MIRROR, "mirror.linkerd.io/cluster-name": "west"},
            ),
            obj(
                "Service",
                "shop",
                "web-north",
                labels={**MIRROR, "mirror.linkerd.io/cluster-name": "north"},
            ),
            obj(
                "Service",
                "shop",
                "web-federated",
                labels=MIRROR,
                annotations={RD: "web@west,web@north"},
            ),
            obj("Service", "shop", "db-federated", labels=MIRROR, annotations={RD: "db@west"}),
            obj("Service", "shop", "api-federated", labels=MIRROR, annotations={RD: "api@north"}),
        ],
        endpoints=[
            obj(
                "Endpoints",
                "shop",
                "web-west",
                labels={**MIRROR, "mirror.linkerd.io/cluster-name": "west"},
            )
        ],
        link_secrets=[
            obj("Secret", ns, "creds-west", type="mirror.linkerd.io/remote-kubeconfig"),
            obj(
                "Secret",
                ns,
                "cluster-credentials-north",
                type="mirror.linkerd.io/remote-kubeconfig",
            ),
            obj("Secret", ns, "cluster-credentials-west", type="Opaque"),
        ],
        destination_secrets=[
            obj(
                "Secret",
                "linkerd",
                "cluster-credentials-west",
                type="mirror.linkerd.io/remote-kubeconfig",
                labels={"multicluster.linkerd.io/cluster-name": "west"},
            ),
        ],
        leases=[
            obj("Lease", ns, "service-mirror-write-west"),
            obj("Lease", ns, "service-mirror-write-north"),
        ],
    )


def test_unlink_plans_exactly_what_the_cluster_made_in_order() -> None:
    steps = plan(unlink_inputs())
    assert [(s.action, s.kind, s.namespace, s.name) for s in steps] == [
        ("delete", "Link", "linkerd-multicluster", "west"),
        ("delete", "Service", "shop", "web-west"),
        ("delete", "Endpoints", "shop", "web-west"),
        ("unfederate", "Service", "shop", "db-federated"),
        ("unfederate", "Service", "shop", "web-federated"),
        ("delete", "Secret", "linkerd-multicluster", "creds-west"),
        ("delete", "Secret", "linkerd", "cluster-credentials-west"),
        ("delete", "Lease", "linkerd-multicluster", "service-mirror-write-west"),
        ("release", "Link", "linkerd-multicluster", "west"),
    ]
    assert all(s.uid for s in steps)
    assert (
        steps[0].path
        == "/apis/multicluster.linkerd.io/v1alpha3/namespaces/linkerd-multicluster/links/west"
    )
    assert steps[1].describe(done=False) == "delete Service shop/web-west"


def test_unlink_without_a_link_still_finds_what_it_left() -> None:
    inputs = unlink_inputs()
    inputs.links = [link for link in inputs.links if link["metadata"]["name"] != "west"]
    inputs.link_secrets = [
        *inputs.link_secrets,
        obj(
            "Secret",
            "linkerd-multicluster",
            "cluster-credentials-west",
            type="mirror.linkerd.io/remote-kubeconfig",
            uid="real",
        ),
    ]
    steps = plan(inputs)
    kinds = [(s.kind, s.name) for s in steps]
    assert ("Link", "west") not in kinds
    assert ("Secret", "cluster-credentials-west") in kinds and ("Secret", "creds-west") not in kinds
    assert ("Lease", "service-mirror-write-west") in kinds
    assert plan(UnlinkInputs(cluster="gone", link_namespace="a", linkerd_namespace="b")) == []


def test_removing_a_member_keeps_the_others_and_deletes_an_empty_federated_service() -> None:
    both = obj("Service", "shop", "web-federated", annotations={RD: "web@west, web@north"})
    assert without_cluster(both, "west") == (
        "patch",
        {"metadata": {"annotations": {RD: "web@north"}, "resourceVersion": "7"}},
    )
    assert without_cluster(both, "south") is None
    only = obj("Service", "shop", "db-federated", annotations={RD: "db@west"})
    assert without_cluster(only, "west") == ("delete", {})
    with_local = obj(
        "Service",
        "shop",
        "db-federated",
        annotations={RD: "db@west", "multicluster.linkerd.io/local-discovery": "db"},
    )
    assert without_cluster(with_local, "west") == (
        "patch",
        {"metadata": {"annotations": {RD: None}, "resourceVersion": "7"}},
    )


# --------------------------------------------------------------------------
# hostile input: what a mirror admin, a target or a federated Service may hold

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(st.sampled_from(["links", "identity"]), _json))
def test_any_links_document_gives_rows_and_a_table(document: dict[str, Any]) -> None:
    rows = gateway_rows(document)
    text = table(rows)
    assert len(text.splitlines()) == len(rows) + 1
    assert all(isinstance(row["clusterName"], str) for row in rows)


@settings(max_examples=300, deadline=None)
@given(members=st.text(max_size=60), cluster=st.sampled_from(["west", "a@b", ""]))
def test_any_membership_annotation_is_handled(members: str, cluster: str) -> None:
    service = obj("Service", "shop", "web-federated", annotations={RD: members})
    change = without_cluster(service, cluster)
    if change is not None and change[0] == "patch":
        left = change[1]["metadata"]["annotations"][RD]
        assert left is None or f"@{cluster}," not in f"{left},"


@settings(max_examples=300, deadline=None)
@given(values=st.text(max_size=200), status=_json)
def test_any_config_map_or_status_is_read_without_raising(values: str, status: Any) -> None:
    linkerd_config({"data": {"values": values}})
    _status_conditions({"mirrorServices": status}, "mirrorServices")
