"""Federated Services: membership merging by many writers (reference §3.9).

Scope: `mirror.federation`. `next_federated` is what one writer (a Link, or
the local mirror) makes of the current `<svc>-federated`: joining appends
`svc@cluster` (a member already listed keeps its place), leaving removes
it, the last member leaving deletes the Service (None), and the metadata
comes from the source member only: the local one, else the oldest Link by
creation time, then name (`is_source`). Members come from
`mirror.desired.desired_state` over real projections, as in production.
Hypothesis runs arbitrary join/leave sequences of four writers against a
model of the membership and checks that every operation is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.models import ServiceRef
from mirror.desired import FederatedMember, Situation, desired_state
from mirror.federation import LOCAL, is_source, next_federated, parse_remote_members
from mirror.links import project_link
from mirror.remote import RemoteView, project_remote_service
from tests.unit import builders

NS = "ns"
FEDERATED = ServiceRef(NS, "web-federated")
MEMBER_LABEL = {"mirror.linkerd.io/federated": "member"}
REMOTE = "multicluster.linkerd.io/remote-discovery"
LOCAL_DISCOVERY = "multicluster.linkerd.io/local-discovery"
MIRRORED = "mirror.linkerd.io/mirrored-service"


def member(
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    ports: Sequence[tuple[str | None, int]] = (("http", 80),),
    excluded_labels: Sequence[str] = (),
) -> FederatedMember:
    """The member `web` of a Link's desired state, from a raw remote Service."""
    raw_link = {
        "metadata": {"name": "any"},
        "spec": {
            "targetClusterName": "any",
            "clusterCredentialsSecret": "creds",
            "federatedServiceSelector": {"matchLabels": MEMBER_LABEL},
            "excludedLabels": list(excluded_labels),
        },
    }
    link = project_link(raw_link)
    assert link is not None and link.spec is not None
    service = project_remote_service(
        builders.service(
            "web",
            NS,
            labels=MEMBER_LABEL | dict(labels or {}),
            annotations=annotations,
            ports=ports,
        )
    )
    assert service is not None
    remote = RemoteView()
    remote.put_service(service)
    desired = desired_state(
        Situation(
            link=link.spec,
            remote=remote,
            gateway_ips=None,
            gateway_alive=True,
            namespaces=frozenset({NS}),
        )
    )
    (found,) = desired.members
    return found


def join(
    current: Mapping[str, Any] | None,
    cluster: str,
    joining: FederatedMember | None = None,
    *,
    source: bool | None = None,
    created: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """`cluster` joins with `joining` (default: a plain member); source from `is_source`."""
    if source is None:
        source = is_source(current, cluster, created or {})
    return next_federated(
        current,
        service=FEDERATED,
        cluster=cluster,
        member=joining if joining is not None else member(),
        source=source,
    )


def leave(current: Mapping[str, Any] | None, cluster: str) -> dict[str, Any] | None:
    return next_federated(current, service=FEDERATED, cluster=cluster, member=None, source=False)


def annotations_of(service: Mapping[str, Any] | None) -> dict[str, str]:
    assert service is not None
    return dict(service["metadata"]["annotations"])


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "members"),
    [
        (None, []),
        ("", []),
        ("web@east", [("web", "east")]),
        ("web@east,web@west", [("web", "east"), ("web", "west")]),
        (" web @ east , web@west ", [("web", "east"), ("web", "west")]),
        ("web@east,web@east", [("web", "east")]),
        ("web,@east,web@,a@b@c,,web@west", [("web", "west")]),
    ],
)
def test_remote_members_are_parsed_in_order_and_malformed_ones_dropped(
    value: str | None, members: list[tuple[str, str]]
) -> None:
    assert parse_remote_members(value) == members


# -- joining -----------------------------------------------------------------------------------


def test_the_first_remote_member_creates_the_federated_service() -> None:
    joining = member(
        labels={"app": "web", "team": "a"},
        annotations={"owner": "a", "service.kubernetes.io/topology-mode": "Auto"},
        ports=(("http", 80), ("grpc", 9090)),
        excluded_labels=["team"],
    )
    assert join(None, "east", joining) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web-federated",
            "namespace": NS,
            "labels": {"app": "web", MIRRORED: "true"},  # no cluster-name label
            "annotations": {"owner": "a", REMOTE: "web@east"},
        },
        "spec": {
            "type": "ClusterIP",
            "ports": [
                {"port": 80, "protocol": "TCP", "name": "http", "targetPort": 8080},
                {"port": 9090, "protocol": "TCP", "name": "grpc", "targetPort": 17090},
            ],
        },
    }


def test_the_local_member_is_listed_as_local_discovery() -> None:
    created = join(None, LOCAL, member(labels={"app": "web"}))
    assert created is not None
    assert created["metadata"]["annotations"] == {LOCAL_DISCOVERY: "web"}
    assert created["metadata"]["labels"] == {"app": "web", MIRRORED: "true"}


def test_members_are_appended_in_the_order_they_join() -> None:
    service = join(None, "east")
    service = join(service, "west")
    service = join(service, LOCAL)
    service = join(service, "north")
    assert annotations_of(service)[REMOTE] == "web@east,web@west,web@north"
    assert annotations_of(service)[LOCAL_DISCOVERY] == "web"


def test_a_member_joining_again_keeps_its_place_and_changes_nothing() -> None:
    """Regression: a rejoin moved the member to the end of the list, so two Links each
    rewrote the federated Service on every resync, swapping their order."""
    service = join(join(None, "east"), "west")
    assert annotations_of(service)[REMOTE] == "web@east,web@west"
    assert join(service, "east") == service
    assert join(service, "west") == service
    written = {"metadata": service["metadata"] | {"annotations": {REMOTE: "web@east,web@west"}}}
    assert annotations_of(join(written, "east"))[REMOTE] == "web@east,web@west"


def test_joining_twice_is_joining_once() -> None:
    for cluster in ("east", LOCAL):
        once = join(None, cluster)
        assert join(once, cluster) == once


def test_a_non_source_member_leaves_the_metadata_alone() -> None:
    first = join(None, "east", member(labels={"app": "web"}, annotations={"a": "1"}))
    second = join(
        first,
        "west",
        member(labels={"app": "other"}, annotations={"b": "2"}, ports=(("x", 1),)),
        source=False,
    )
    assert second is not None and first is not None
    assert second["metadata"]["labels"] == first["metadata"]["labels"]
    assert second["metadata"]["annotations"] == {"a": "1", REMOTE: "web@east,web@west"}
    assert second["spec"] == first["spec"]


def test_a_source_member_replaces_labels_annotations_and_ports_keeping_membership() -> None:
    current = join(join(None, "east"), LOCAL)
    replaced = join(
        current,
        LOCAL,
        member(labels={"app": "mine"}, annotations={"local": "yes"}, ports=(("tcp", 7000),)),
    )
    assert replaced is not None
    assert replaced["metadata"]["labels"] == {"app": "mine", MIRRORED: "true"}
    assert replaced["metadata"]["annotations"] == {
        "local": "yes",
        REMOTE: "web@east",
        LOCAL_DISCOVERY: "web",
    }
    assert replaced["spec"]["ports"] == [
        {"port": 7000, "protocol": "TCP", "name": "tcp", "targetPort": 15000}
    ]


def test_a_member_cannot_forge_membership_through_its_annotations() -> None:
    forged = member(annotations={REMOTE: "db@west", LOCAL_DISCOVERY: "db"})
    service = join(None, "east", forged)
    assert annotations_of(service) == {REMOTE: "web@east"}


# -- leaving -----------------------------------------------------------------------------------


def test_leaving_removes_only_that_member() -> None:
    service = join(join(join(join(None, "east"), "west"), "north"), LOCAL)
    after = leave(service, "west")
    assert annotations_of(after)[REMOTE] == "web@east,web@north"
    assert annotations_of(after)[LOCAL_DISCOVERY] == "web"
    without_local = leave(after, LOCAL)
    assert LOCAL_DISCOVERY not in annotations_of(without_local)
    assert annotations_of(without_local)[REMOTE] == "web@east,web@north"


def test_leaving_when_not_a_member_changes_nothing() -> None:
    service = join(join(None, "east"), "west")
    assert leave(service, "north") == service
    assert leave(leave(service, "west"), "west") == leave(service, "west")


def test_the_last_member_leaving_deletes_the_federated_service() -> None:
    assert leave(join(None, "east"), "east") is None
    assert leave(join(None, LOCAL), LOCAL) is None
    assert leave(leave(join(join(None, "east"), LOCAL), LOCAL), "east") is None
    assert leave(None, "east") is None


def test_the_membership_annotation_is_dropped_when_its_list_empties() -> None:
    service = leave(join(join(None, LOCAL), "east"), "east")
    assert REMOTE not in annotations_of(service)
    assert annotations_of(service)[LOCAL_DISCOVERY] == "web"


# -- who gives the metadata --------------------------------------------------------------------


CREATED = {
    "east": "2025-01-01T00:00:00Z",
    "west": "2025-02-01T00:00:00Z",
    "north": "2025-01-01T00:00:00Z",
}


def listing(*entries: str, local: str | None = None) -> dict[str, Any]:
    annotations = {REMOTE: ",".join(entries)}
    if local is not None:
        annotations[LOCAL_DISCOVERY] = local
    return {"metadata": {"annotations": annotations}}


def test_the_local_member_is_always_the_source() -> None:
    assert is_source(None, LOCAL, {})
    assert is_source(listing("web@east"), LOCAL, CREATED)


def test_a_remote_member_is_never_the_source_beside_a_local_one() -> None:
    assert not is_source(listing("web@east", local="web"), "east", CREATED)
    assert not is_source(listing(local="web"), "east", CREATED)


def test_the_oldest_link_is_the_source() -> None:
    assert is_source(None, "west", CREATED)  # first member
    assert is_source(listing("web@west"), "east", CREATED)
    assert not is_source(listing("web@east"), "west", CREATED)
    assert is_source(listing("web@east", "web@west"), "east", CREATED)


def test_links_created_at_the_same_time_are_ordered_by_name() -> None:
    assert is_source(listing("web@north"), "east", CREATED)
    assert not is_source(listing("web@east"), "north", CREATED)


def test_members_of_unknown_links_and_malformed_entries_are_ignored() -> None:
    assert is_source(listing("web@gone", "garbage", "@", "web@"), "west", CREATED)
    assert not is_source(listing("web@gone", "web@east"), "west", CREATED)


def test_the_oldest_link_joining_later_takes_over_the_metadata() -> None:
    young = join(None, "west", member(labels={"from": "west"}), created=CREATED)
    old = join(young, "east", member(labels={"from": "east"}), created=CREATED)
    assert old is not None
    assert old["metadata"]["labels"] == {"from": "east", MIRRORED: "true"}
    again = join(old, "west", member(labels={"from": "west"}), created=CREATED)
    assert again == old


# -- properties --------------------------------------------------------------------------------

WRITERS = ["east", "west", "north", LOCAL]
OPERATIONS = st.lists(
    st.tuples(st.sampled_from(WRITERS), st.booleans(), st.sampled_from(["a", "b"])), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(OPERATIONS)
def test_any_sequence_of_joins_and_leaves_matches_the_membership_model(
    operations: list[tuple[str, bool, str]],
) -> None:
    members = {label: member(labels={"v": label}) for label in ("a", "b")}
    current: dict[str, Any] | None = None
    remote_order: list[str] = []  # the model: remote members in the order they joined
    local = False
    for writer, joining, label in operations:
        step = (
            join(current, writer, members[label], created=CREATED)
            if joining
            else leave(current, writer)
        )
        # Every operation is idempotent.
        again = (
            join(step, writer, members[label], created=CREATED) if joining else leave(step, writer)
        )
        assert again == step
        current = step
        if writer == LOCAL:
            local = joining
        elif joining and writer not in remote_order:
            remote_order.append(writer)
        elif not joining and writer in remote_order:
            remote_order.remove(writer)

        if not remote_order and not local:
            assert current is None
            continue
        annotations = annotations_of(current)
        assert parse_remote_members(annotations.get(REMOTE)) == [("web", c) for c in remote_order]
        assert (annotations.get(LOCAL_DISCOVERY) == "web") is local
        assert current is not None
        assert current["metadata"]["labels"][MIRRORED] == "true"
        assert current["metadata"]["labels"]["v"] in ("a", "b")
        assert current["metadata"]["name"] == "web-federated"
        assert current["spec"]["ports"]
