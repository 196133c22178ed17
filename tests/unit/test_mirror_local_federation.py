"""The local federation: the local cluster's own members of `<svc>-federated` (§3.11).

Scope: `mirror.local_federation.LocalFederation.reconcile` over an in-memory
transport (every request recorded, answered in order) and a `LocalState`
filled by hand. A selected local Service joins with
`local-discovery: <svc>` and gives the federated Service its metadata;
our own objects never join whatever the selector; a headless Service cannot
join; a federated Service whose local member is gone loses its entry (and is
deleted when it was the last member); nothing is sent when all is as it
should be.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from discovery.metrics import DiscoveryMetrics
from discovery.models import ServiceRef
from mirror.local import LocalState
from mirror.local_federation import LocalFederation, LocalFederationSettings
from mirror.metrics import MirrorMetrics
from mirror.objects import project_local_object
from mirror.remote import project_remote_service
from mirror.selectors import LinkSelector, parse_selector_text
from mirror.writer import Writer
from tests.unit import builders
from tests.unit.scripted_api import RecordingTransport as Transport
from tests.unit.scripted_api import reply, status_body

NS = "ns"
MEMBER = {"mirror.linkerd.io/federated": "member"}
LOCAL_DISCOVERY = "multicluster.linkerd.io/local-discovery"
REMOTE_DISCOVERY = "multicluster.linkerd.io/remote-discovery"
MIRRORED = "mirror.linkerd.io/mirrored-service"


def federation(transport: Transport, *services: dict[str, Any]) -> LocalFederation:
    registry = CollectorRegistry()
    local = LocalState(
        api=transport,  # type: ignore[arg-type]
        namespace="mc",
        metrics=DiscoveryMetrics(registry),
        on_change=lambda kind, ref: None,
    )
    local.namespaces = {NS}
    found = LocalFederation(
        api=transport,  # type: ignore[arg-type]
        local=local,
        writer=Writer(transport, MirrorMetrics(registry)),  # type: ignore[arg-type]
        discovery_metrics=DiscoveryMetrics(CollectorRegistry()),
        settings=LocalFederationSettings(
            selector=LinkSelector(parse_selector_text("mirror.linkerd.io/federated=member")),
            excluded_labels=("secret/*",),
        ),
    )
    for raw in services:
        service = project_remote_service(raw)
        assert service is not None
        found.services[service.service] = service
    return found


def cache(found: LocalFederation, raw: dict[str, Any]) -> None:
    """A federated Service as our watch of mirror objects holds it."""
    obj = project_local_object("Service", raw)
    assert obj is not None
    found._local.services[obj.ref] = obj


def federated(annotations: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    raw = builders.service(
        "web-federated", NS, labels={MIRRORED: "true", **(labels or {})}, annotations=annotations
    )
    raw["metadata"]["resourceVersion"] = "7"
    raw["metadata"]["uid"] = "u-1"
    return raw


async def test_a_selected_local_service_joins_and_gives_the_metadata() -> None:
    transport = Transport(reply(404, status_body(404, "NotFound", "not found")), reply(201, {}))
    found = federation(
        transport,
        builders.service(
            "web", NS, labels=MEMBER | {"team": "a", "secret/x": "1"}, annotations={"note": "n"}
        ),
    )
    assert await found.reconcile()
    (get, post) = transport.requests
    assert get[:2] == ("GET", f"/api/v1/namespaces/{NS}/services/web-federated")
    method, path, body = post
    assert (method, path) == ("POST", f"/api/v1/namespaces/{NS}/services")
    assert body["metadata"]["labels"] == {"team": "a", MIRRORED: "true"}
    assert body["metadata"]["annotations"] == {"note": "n", LOCAL_DISCOVERY: "web"}
    assert [p["port"] for p in body["spec"]["ports"]] == [80]


async def test_our_own_objects_and_headless_services_never_join() -> None:
    transport = Transport()
    found = federation(
        transport,
        builders.service("web-west", NS, labels=MEMBER | {MIRRORED: "true"}),
        builders.service("db", NS, labels=MEMBER, cluster_ip="None"),
    )
    assert await found.reconcile()
    assert transport.requests == [], "nothing to write"


async def test_a_gone_local_member_leaves_and_the_last_one_deletes() -> None:
    current = federated({LOCAL_DISCOVERY: "web", REMOTE_DISCOVERY: "web@west"})
    transport = Transport(reply(200, current), reply(200, {}))
    found = federation(transport)
    cache(found, current)
    assert await found.reconcile()
    (_, (method, _, body)) = transport.requests
    assert method == "PUT"
    assert body["metadata"]["annotations"] == {REMOTE_DISCOVERY: "web@west"}
    assert body["metadata"]["resourceVersion"] == "7"

    alone = federated({LOCAL_DISCOVERY: "web"})
    transport = Transport(reply(200, alone), reply(200, {}))
    found = federation(transport)
    cache(found, alone)
    assert await found.reconcile()
    (_, (method, path, body)) = transport.requests
    assert (method, path) == ("DELETE", f"/api/v1/namespaces/{NS}/services/web-federated")
    assert body["preconditions"] == {"uid": "u-1"}


async def test_a_member_already_listed_costs_no_request() -> None:
    found = federation(Transport(), builders.service("web", NS, labels=MEMBER))
    current = federated({LOCAL_DISCOVERY: "web"})
    current["spec"]["ports"] = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    cache(found, current)
    transport = found._writer._api  # type: ignore[attr-defined]
    assert await found.reconcile()
    assert transport.requests == []
    assert ServiceRef(NS, "web") in found.services


async def test_a_same_named_service_that_is_not_ours_is_never_adopted() -> None:
    """Regression: the read-modify-write merged the membership into anyone's
    `web-federated` (its labels, annotations and ports replaced by the member's)."""
    theirs = builders.service("web-federated", NS, labels={"owner": "someone"})
    transport = Transport(
        reply(404, status_body(404, "NotFound", "")),  # not in our cache: we create it...
        reply(409, status_body(409, "AlreadyExists", "exists")),  # ...but it exists
        reply(200, theirs),
    )
    found = federation(transport, builders.service("web", NS, labels=MEMBER))
    assert not await found.reconcile()
    assert [method for method, _, _ in transport.requests] == ["GET", "POST", "GET"]
