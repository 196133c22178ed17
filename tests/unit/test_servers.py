"""Unit tests for Server-driven opacity (reference §5.8).

Scope: projecting Servers (port by number or name, opaque protocol, invalid
selectors refused); label selector semantics (matchLabels and the four
operators; an empty selector matches everything, none matches nothing); and
through the index and topics: a Server in the pod's namespace whose selector
and port match makes the address opaque (re-sent as an Add), a Server
elsewhere or on another port does not, deleting it turns opacity off, and a
pod relabelled out of a Server's selector follows. Overlapping Servers do not
reproduce the reference's quirk (one deletion turning off opacity another
Server still grants).
"""

from __future__ import annotations

from typing import Any

import pytest

from discovery.index import ClusterIndex
from discovery.models import Kind, LabelSelector, ObjectRef, SelectorRequirement, ServiceRef
from discovery.ports import PortSet
from discovery.project import Invalid, label_selector, project_server
from discovery.topics import Topics, ViewKey
from tests.unit import builders as b

WEB = ServiceRef(b.NS, "web")


def server(
    name: str = "web-http",
    namespace: str = b.NS,
    *,
    port: int | str = 8080,
    protocol: str = "opaque",
    selector: dict[str, Any] | None = None,
    no_selector: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"port": port, "proxyProtocol": protocol}
    if not no_selector:
        spec["podSelector"] = selector if selector is not None else {"matchLabels": {"app": "web"}}
    return {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "kind": "Server",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_a_server_is_projected() -> None:
    record = project_server(server(port="http"))
    assert not isinstance(record, Invalid)
    assert (record.port, record.opaque) == ("http", True)
    assert record.pod_selector == LabelSelector(match_labels=(("app", "web"),))
    assert project_server(server(protocol="HTTP/2")).opaque is False  # type: ignore[union-attr]
    assert project_server(server(no_selector=True)).pod_selector is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param({"matchExpressions": [{"key": "a", "operator": "In"}]}, id="in-no-values"),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            id="exists-with-values",
        ),
        pytest.param({"matchExpressions": [{"key": "a", "operator": "Near"}]}, id="operator"),
    ],
)
def test_an_invalid_selector_makes_the_server_invalid(selector: dict[str, Any]) -> None:
    assert isinstance(project_server(server(selector=selector)), Invalid)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        pytest.param({}, {}, True, id="empty-matches-all"),
        pytest.param({"matchLabels": {"app": "web"}}, {"app": "web", "x": "1"}, True, id="labels"),
        pytest.param({"matchLabels": {"app": "web"}}, {"app": "api"}, False, id="labels-differ"),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {},
            True,
            id="notin-absent",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False, id="exists"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
            {"tier": ""},
            False,
            id="does-not-exist",
        ),
    ],
)
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert label_selector(selector).matches(labels) is matches


def test_selector_requirements_keep_their_values() -> None:
    parsed = label_selector({"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]})
    assert parsed.expressions == (SelectorRequirement("k", "In", frozenset({"v"})),)


class World:
    def __init__(self) -> None:
        self.index = ClusterIndex()
        self.topics = Topics(self.index, default_opaque_ports=PortSet.EMPTY, enable_ipv6=False)

    def apply(self, *raws: dict[str, Any], kind: Kind | None = None) -> set[ServiceRef]:
        affected: set[ServiceRef] = set()
        for raw in raws:
            affected |= self.index.upsert(b.projected(raw, kind))
        self.topics.refresh(affected)
        return affected

    def delete_server(self, name: str) -> None:
        self.topics.refresh(self.index.delete(Kind.SERVER, ObjectRef(b.NS, name)))

    def opaque(self) -> dict[str, bool]:
        sink = _Sink()
        subscription = self.topics.subscribe(service=WEB, port=80, key=ViewKey(), sink=sink)
        result = {a.ip: a.opaque for a in subscription.initial.addresses.values()}
        subscription.close()
        return result


class _Sink:
    def on_change(self, diff: object, snapshot: object) -> None:
        pass


def web_world() -> World:
    world = World()
    world.apply(
        b.service(),
        b.pod("web-1", ip="10.0.0.1", labels={"app": "web"}, meshed=True),
        b.pod("web-2", ip="10.0.0.2", labels={"app": "web", "tier": "canary"}, meshed=True),
        b.endpoint_slice(
            endpoints=[b.endpoint("10.0.0.1", pod="web-1"), b.endpoint("10.0.0.2", pod="web-2")]
        ),
    )
    return world


def server_raw(**kwargs: Any) -> dict[str, Any]:
    return server(**kwargs)


@pytest.mark.parametrize("port", [pytest.param(8080, id="number"), pytest.param("http", id="name")])
def test_a_matching_opaque_server_makes_the_port_opaque(port: int | str) -> None:
    world = web_world()
    assert world.opaque() == {"10.0.0.1": False, "10.0.0.2": False}
    assert world.apply(server_raw(port=port), kind=Kind.SERVER) == {WEB}
    assert world.opaque() == {"10.0.0.1": True, "10.0.0.2": True}
    world.delete_server("web-http")
    assert world.opaque() == {"10.0.0.1": False, "10.0.0.2": False}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(server(namespace="other"), id="other-namespace"),
        pytest.param(server(port=9090), id="other-port"),
        pytest.param(server(port="admin"), id="other-port-name"),
        pytest.param(server(protocol="HTTP/1"), id="not-opaque"),
        pytest.param(server(no_selector=True), id="no-selector"),
        pytest.param(server(selector={"matchLabels": {"app": "api"}}), id="other-pods"),
    ],
)
def test_servers_that_do_not_match_change_nothing(raw: dict[str, Any]) -> None:
    world = web_world()
    world.apply(raw, kind=Kind.SERVER)
    assert world.opaque() == {"10.0.0.1": False, "10.0.0.2": False}


def test_a_pod_relabelled_out_of_the_selector_loses_opacity() -> None:
    world = web_world()
    canary = {"matchLabels": {"tier": "canary"}}
    world.apply(server_raw(selector=canary), kind=Kind.SERVER)
    assert world.opaque() == {"10.0.0.1": False, "10.0.0.2": True}
    relabelled = b.pod("web-2", ip="10.0.0.2", labels={"app": "web"}, meshed=True)
    assert world.apply(relabelled) == {WEB}
    assert world.opaque() == {"10.0.0.1": False, "10.0.0.2": False}


def test_deleting_one_of_two_overlapping_servers_keeps_opacity() -> None:
    world = web_world()
    world.apply(server_raw(name="a"), server_raw(name="b"), kind=Kind.SERVER)
    world.delete_server("a")
    assert world.opaque() == {"10.0.0.1": True, "10.0.0.2": True}
