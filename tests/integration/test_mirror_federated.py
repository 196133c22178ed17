"""Federated Services across three clusters: members joining and leaving (reference §3.9, §3.11).

Scope: one controller on east with two Links (west, then north: west is the
older) and its local federation (east's own Service labelled
`mirror.linkerd.io/federated=member`). `web-federated` lists each remote
member as `web@<cluster>` in the remote-discovery annotation and the local
one in `local-discovery`; its labels, annotations and ports come from the
local member when there is one, else from the oldest Link's; it is deleted
when the last member leaves and never has an Endpoints object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.links import LOCAL_DISCOVERY, REMOTE_DISCOVERY
from tests.integration.mirror_controller import (
    MEMBER,
    MIRRORED,
    Mirror,
    annotations_of,
    export,
    get_object,
    labels_of,
    link,
    link_statuses,
    ports_of,
    status_of,
    wait_gone,
    wait_object,
)
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def north_namespace(north: Kube, namespace: str) -> AsyncIterator[str]:
    """The test's namespace in north too."""
    await north.create_namespace(namespace)
    yield namespace
    await north.delete_namespace(namespace)


async def member(kube: Kube, namespace: str, origin: str, ports: dict[str, Any]) -> None:
    await kube.create_service(
        namespace,
        "web",
        labels=MEMBER | {"origin": origin},
        annotations={"from": origin},
        ports=ports,
    )


def says(members: str | None, local: str | None, origin: str) -> Any:
    """A check of `web-federated`: its memberships and where its metadata comes from."""

    def check(found: dict[str, Any] | None) -> bool:
        annotations = annotations_of(found)
        return (
            found is not None
            and annotations.get(REMOTE_DISCOVERY) == members
            and annotations.get(LOCAL_DISCOVERY) == local
            and labels_of(found) == {"origin": origin, MIRRORED: "true"}
            and annotations.get("from") == origin
        )

    return check


async def test_members_of_three_clusters_join_and_leave_a_federated_service(
    mirror: Mirror, east: Kube, west: Kube, north: Kube, north_namespace: str
) -> None:
    namespace = north_namespace
    await member(west, namespace, "west", {"http": (80, 8080)})
    await member(north, namespace, "north", {"http": (80, 8080), "admin": (81, 8081)})
    # The local Service exists from the start, but joins only when labelled.
    await east.create_service(
        namespace,
        "web",
        labels={"origin": "east"},
        annotations={"from": "east"},
        ports={"http": (80, 8080), "metrics": (9100, 9100)},
    )
    west_link = await link(east, west, mirror.namespace)
    w = west_link.name
    fed = "web-federated"
    await wait_object(east, "Service", namespace, fed, says(f"web@{w}", None, "west"))
    await asyncio.sleep(1.1)  # creation times have a one-second resolution: north is younger
    north_link = await link(east, north, mirror.namespace)
    n = north_link.name
    found = await wait_object(
        east,
        "Service",
        namespace,
        fed,
        says(f"web@{w},web@{n}", None, "west"),
        what="north joins; the oldest Link (west) still gives the metadata",
    )
    assert ports_of(found) == [("http", 80, "TCP")]
    status = await status_of(east, north_link, "federatedServices", namespace, "web")
    assert status["status"] == "True"
    assert status["localRef"]["name"] == fed

    # The local member joins: it always gives the metadata.
    await export(east, namespace, "web", MEMBER)
    found = await wait_object(
        east, "Service", namespace, fed, says(f"web@{w},web@{n}", "web", "east")
    )
    assert ports_of(found) == [("http", 80, "TCP"), ("metrics", 9100, "TCP")]
    assert await get_object(east, "Endpoints", namespace, fed) is None, "never any Endpoints"

    # ... and leaves: the oldest Link's member gives it back.
    await export(east, namespace, "web", {"mirror.linkerd.io/federated": None})
    found = await wait_object(
        east, "Service", namespace, fed, says(f"web@{w},web@{n}", None, "west")
    )
    assert ports_of(found) == [("http", 80, "TCP")]

    # West's member leaves: north is the only (so the oldest) member left.
    await export(west, namespace, "web", {"mirror.linkerd.io/federated": None})
    found = await wait_object(east, "Service", namespace, fed, says(f"web@{n}", None, "north"))
    assert ports_of(found) == [("admin", 81, "TCP"), ("http", 80, "TCP")]
    await eventually(
        lambda: link_statuses(east, west_link, "federatedServices", namespace),
        lambda s: "web" not in s,
        what="west's federated status entry removed",
    )

    # The last member's Service is deleted: so is the federated Service.
    await north.core.delete_namespaced_service("web", namespace)
    await wait_gone(east, "Service", namespace, fed)
    assert await get_object(east, "Endpoints", namespace, fed) is None
