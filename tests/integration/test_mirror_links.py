"""Links as an operator sees them: status, Events, deletion, and bad input that loses nothing.

Scope (reference §1.2, §3.12, Q7, Q21): a Link's status has one `Mirrored`
condition per remote Service it handles, with a `localRef` only when
mirrored, `MissingNamespace` while the local namespace is missing (and an
Event on the Link), then `Mirrored` once it exists; deleting the Link (the
controller's finalizer) removes its mirrors and federated memberships before
the Link goes. An invalid Link, a selector that cannot be read, a
credentials Secret without a kubeconfig and a remote Service that loses its
ports are each reported (an Event on the Link, the status, `/links`) and
leave every existing mirror as it is.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from tests.integration.mirror_controller import (
    CLUSTER_LABEL,
    EXPORTED,
    MEMBER,
    MIRRORED,
    REMOTE_DISCOVERY_EXPORT,
    Mirror,
    credentials_secret,
    delete_link_object,
    export,
    get_object,
    labels_of,
    link,
    link_events,
    link_spec,
    link_statuses,
    links_api,
    patch_link,
    read_link,
    running_mirror,
    status_of,
    wait_gone,
    wait_object,
)
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

GROUP, VERSION = "multicluster.linkerd.io", "v1alpha3"


async def test_link_status_events_and_deletion_with_its_mirrors(
    mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    elsewhere = f"elsewhere-{secrets.token_hex(3)}"  # a namespace of west only, for now
    await west.create_namespace(elsewhere)
    try:
        await west.create_service(namespace, "web", labels=EXPORTED)
        await west.create_service(namespace, "rd", labels=REMOTE_DISCOVERY_EXPORT)
        await west.create_service(namespace, "member", labels=MEMBER)
        await west.create_service(elsewhere, "ghost", labels=EXPORTED)
        linked = await link(east, west, mirror.namespace)
        c = linked.name
        statuses = await eventually(
            lambda: link_statuses(east, linked, "mirrorServices", namespace, elsewhere),
            lambda s: set(s) == {"web", "rd", "ghost"},
            what="a status entry per handled Service",
        )
        for remote in ("web", "rd"):
            assert statuses[remote]["status"] == "True"
            assert statuses[remote]["reason"] == "Mirrored"
            assert statuses[remote]["message"] == ""
            assert statuses[remote]["localRef"]["name"] == f"{remote}-{c}"
        ghost = statuses["ghost"]
        assert (ghost["status"], ghost["reason"]) == ("False", "MissingNamespace")
        assert ghost["message"] == "Namespace does not exist"
        assert "localRef" not in ghost, "never an empty localRef"
        assert ghost["entry"]["controllerName"] == "linkerd.io/service-mirror"
        member = await status_of(east, linked, "federatedServices", namespace, "member")
        assert member["localRef"]["name"] == "member-federated"
        await eventually(
            lambda: link_events(east, linked),
            lambda events: (
                (
                    "Normal",
                    "ServiceMirroringSkipped",
                    f"{elsewhere}/ghost: Namespace does not exist",
                )
                in events
            ),
            what="an Event on the Link saying why ghost is not mirrored",
        )
        found = await read_link(east, linked)
        assert found is not None
        assert found["metadata"]["finalizers"] == ["multicluster.linkerd.io/mirrors"]

        # The namespace appears: ghost is mirrored.
        await east.create_namespace(elsewhere)
        await wait_object(east, "Endpoints", elsewhere, f"ghost-{c}")
        await eventually(
            lambda: link_statuses(east, linked, "mirrorServices", elsewhere),
            lambda s: s["ghost"]["status"] == "True",
            what="ghost Mirrored",
        )

        # The Link is deleted: its mirrors and memberships go, then the Link.
        await delete_link_object(east, linked)
        await eventually(lambda: read_link(east, linked), lambda o: o is None, what="the Link gone")
        for ns, name in (
            (namespace, f"web-{c}"),
            (namespace, f"rd-{c}"),
            (elsewhere, f"ghost-{c}"),
        ):
            assert await get_object(east, "Service", ns, name) is None
        await wait_gone(east, "Endpoints", namespace, f"web-{c}")
        assert await get_object(east, "Service", namespace, "member-federated") is None
    finally:
        await west.delete_namespace(elsewhere)
        await east.delete_namespace(elsewhere)


async def test_bad_input_is_reported_and_loses_no_mirror(
    mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    linked = await link(east, west, mirror.namespace)
    name = f"web-{linked.name}"
    await wait_object(east, "Endpoints", namespace, name)
    original = await get_object(east, "Service", namespace, name)
    assert original is not None

    async def untouched() -> None:
        await asyncio.sleep(2.5)  # a repair period and more
        now = await get_object(east, "Service", namespace, name)
        assert now is not None and now["metadata"]["uid"] == original["metadata"]["uid"]
        assert await get_object(east, "Endpoints", namespace, name) is not None

    async def warned(reason: str, words: str) -> None:
        await eventually(
            lambda: link_events(east, linked),
            lambda events: any(
                kind == "Warning" and why == reason and words in message
                for kind, why, message in events
            ),
            what=f"a Warning {reason} Event mentioning {words!r}",
        )

    # An edit that makes the Link invalid.
    await patch_link(east, linked, {"spec": {"targetClusterName": "Not_A_Label"}})
    await warned("InvalidLink", "spec.targetClusterName")
    links = await mirror.links()
    assert "targetClusterName" in (links[linked.name]["error"] or "")
    await untouched()

    # A selector that cannot be read.
    await patch_link(
        east,
        linked,
        {
            "spec": {
                "targetClusterName": linked.name,
                "selector": {"matchLabels": {"bad key!": "x"}},
            }
        },
    )
    await warned("InvalidLink", "spec.selector")
    await untouched()

    # A credentials Secret without a kubeconfig.
    await patch_link(east, linked, {"spec": {"selector": {"matchLabels": {"bad key!": None}}}})
    broken = credentials_secret(linked.secret, linked.namespace, "")
    broken["data"] = {"config": broken["data"]["kubeconfig"]}
    await east.core.replace_namespaced_secret(linked.secret, linked.namespace, broken)
    await warned("InvalidCredentials", "data key 'kubeconfig' is missing or empty")
    await untouched()

    # A remote Service that loses its ports (ExternalName): reported, the mirror kept.
    second = await link(east, west, mirror.namespace)
    second_name = f"web-{second.name}"
    await wait_object(east, "Endpoints", namespace, second_name)
    kept = await get_object(east, "Service", namespace, second_name)
    assert kept is not None
    await west.core.patch_namespaced_service(
        "web",
        namespace,
        {
            "spec": {
                "type": "ExternalName",
                "externalName": "web.example.com",
                "clusterIP": None,
                "clusterIPs": None,
                "ports": None,
                "selector": None,
            }
        },
        _content_type="application/merge-patch+json",
    )
    statuses = await eventually(
        lambda: link_statuses(east, second, "mirrorServices", namespace),
        lambda s: s.get("web", {}).get("reason") == "InvalidService",
        what="web InvalidService",
    )
    assert statuses["web"]["message"] == "object spec has no exposed ports"
    assert "localRef" not in statuses["web"]
    await eventually(
        lambda: link_events(east, second),
        lambda events: (
            (
                "Normal",
                "ServiceMirroringSkipped",
                f"{namespace}/web: object spec has no exposed ports",
            )
            in events
        ),
        what="an Event saying why",
    )
    await asyncio.sleep(2.5)
    now = await get_object(east, "Service", namespace, second_name)
    assert now is not None and now["metadata"]["uid"] == kept["metadata"]["uid"]

    # A Link that was never valid is reported too, and writes nothing.
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Link",
        "metadata": {"name": "broken", "namespace": mirror.namespace},
        "spec": link_spec("broken") | {"gatewayAddress": "0x7f.1"},
    }
    await links_api(east).create_namespaced_custom_object(
        GROUP, VERSION, mirror.namespace, "links", body
    )
    broken_link = type(linked)("broken", mirror.namespace, west)
    await eventually(
        lambda: link_events(east, broken_link),
        lambda events: any(why == "InvalidLink" and "gatewayAddress" in m for _, why, m in events),
        what="an InvalidLink Event on a Link that never worked",
    )
    assert await mirror.writes("broken") == 0

    # A Link deleted while broken still takes its mirrors with it (its cluster name is read).
    await patch_link(east, linked, {"spec": {"selector": {"matchLabels": {"bad key!": "x"}}}})
    await delete_link_object(east, linked)
    await eventually(lambda: read_link(east, linked), lambda o: o is None, what="the Link gone")
    await wait_gone(east, "Service", namespace, name)
    assert await get_object(east, "Service", namespace, second_name) is not None


async def test_a_missing_namespace_is_created_only_when_asked(
    east: Kube, west: Kube, controller_namespace: str
) -> None:
    elsewhere = f"created-{secrets.token_hex(3)}"
    await west.create_namespace(elsewhere)
    try:
        await west.create_service(elsewhere, "web", labels=EXPORTED)
        async with running_mirror(
            east, controller_namespace, enable_namespace_creation=True
        ) as mirror:
            linked = await link(east, west, mirror.namespace)
            await wait_object(east, "Endpoints", elsewhere, f"web-{linked.name}")
            created = await east.core.read_namespace(elsewhere)
            assert created.metadata.labels == {
                MIRRORED: "true",
                CLUSTER_LABEL: linked.name,
                "kubernetes.io/metadata.name": elsewhere,
            }
    finally:
        await west.delete_namespace(elsewhere)
        await east.delete_namespace(elsewhere)


async def test_an_object_that_cannot_be_written_is_reported_and_backs_off_alone(
    mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    cluster = f"west-{secrets.token_hex(3)}"
    # A local Service of the mirror's name that is not a mirror: never adopted, never changed.
    await east.create_service(namespace, f"blocked-{cluster}", labels={"owner": "someone"})
    for name in ("blocked", "api"):
        await west.create_service(namespace, name, labels=EXPORTED)
    linked = await link(east, west, mirror.namespace, name=cluster)
    await wait_object(east, "Endpoints", namespace, f"api-{cluster}")
    statuses = await eventually(
        lambda: link_statuses(east, linked, "mirrorServices", namespace),
        lambda s: s.get("blocked", {}).get("reason") == "Error",
        what="blocked reported",
    )
    assert "exists that is not a mirror" in statuses["blocked"]["message"]
    creates = await mirror.metric(
        "mirror_writes_total", link=cluster, kind="Service", verb="create"
    )
    rounds = 20
    for i in range(rounds):  # as many reconciles, each caused by another object
        await export(west, namespace, "api", {"round": str(i)})
        await wait_object(
            east,
            "Service",
            namespace,
            f"api-{cluster}",
            lambda o, i=i: labels_of(o).get("round") == str(i),
        )
    again = await mirror.metric("mirror_writes_total", link=cluster, kind="Service", verb="create")
    assert again - creates < rounds, "the refused create waits out its own backoff"
    theirs = await get_object(east, "Service", namespace, f"blocked-{cluster}")
    assert labels_of(theirs) == {"owner": "someone"}


async def test_a_second_link_to_the_same_cluster_name_is_refused_and_takes_nothing(
    mirror: Mirror, east: Kube, west: Kube, namespace: str
) -> None:
    await west.create_service(namespace, "web", labels=EXPORTED)
    first = await link(east, west, mirror.namespace)
    name = f"web-{first.name}"
    await wait_object(east, "Endpoints", namespace, name)
    before = await get_object(east, "Service", namespace, name)
    assert before is not None
    await asyncio.sleep(1.1)  # creation times have a one-second resolution
    # Same target cluster name, another Link (and Secret) name.
    spec = link_spec(first.name) | {"clusterCredentialsSecret": f"cluster-credentials-{first.name}"}
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Link",
        "metadata": {"name": f"again-{first.name}", "namespace": mirror.namespace},
        "spec": spec,
    }
    await links_api(east).create_namespaced_custom_object(
        GROUP, VERSION, mirror.namespace, "links", body
    )
    second = type(first)(body["metadata"]["name"], mirror.namespace, west)
    await eventually(
        lambda: link_events(east, second),
        lambda events: any(
            why == "InvalidLink" and f"already the target of Link {first.name}" in message
            for _, why, message in events
        ),
        what="the younger Link refused",
    )
    await asyncio.sleep(2.5)  # a repair period of the first
    assert await mirror.writes(second.name) == 0
    now = await get_object(east, "Service", namespace, name)
    assert (
        now is not None
        and now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    )

    # Deleting the refused Link leaves the first one's mirrors alone.
    await delete_link_object(east, second)
    await eventually(lambda: read_link(east, second), lambda o: o is None, what="deleted")
    await asyncio.sleep(1)
    assert await get_object(east, "Endpoints", namespace, name) is not None
