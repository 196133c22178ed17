"""The service-profile flow on live streams: ServiceProfiles and opaque ports (§6.3, §6.4).

Scope: a ServiceProfile applied, changed and deleted under open streams (by
name and by ClusterIP), with every translation rule of §6.3.3 compared
message for message; the client namespace's (primary) and the service's own
(backup) profiles switching as either appears, changes or disappears; the
Service's opaque-ports annotation edited through names, numbers, ranges, an
empty value and its removal; malformed ServiceProfiles (the ones the CRD
schema lets through) rejected without a message while the stream stays open
on its last good profile, and the ones the schema refuses. A message equal
to the last one sent is never sent again.

"Nothing was sent" is checked after a barrier: a change to a sentinel object
of the same kind (one watch, so events arrive in order) whose effect is seen
on the sentinel's own stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from google.protobuf import duration_pb2
from kubernetes_asyncio.client.exceptions import ApiException

from destination._proto import destination_pb2 as pb
from destination._proto import http_types_pb2, meta_pb2
from tests.integration.destination_client import (
    ProfileStream,
    Server,
    open_known_profile_stream,
    open_profile_stream,
)
from tests.integration.links import metric
from tests.integration.mesh_objects import (
    client_token,
    delete_service_profile,
    fqn,
    label_service_profile,
    put_service_profile,
)
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

GET, POST, DELETE, HEAD = (
    http_types_pb2.HttpMethod.GET,
    http_types_pb2.HttpMethod.POST,
    http_types_pb2.HttpMethod.DELETE,
    http_types_pb2.HttpMethod.HEAD,
)
OPAQUE_PORTS = "config.linkerd.io/opaque-ports"
SETTLE_S = 0.3  # after a barrier: time for a message already on its way to arrive


# --------------------------------------------------------------------------
# expected messages


def duration(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def default_profile(service: str, namespace: str, port: int = 80) -> pb.DestinationProfile:
    """What the server sends without a ServiceProfile (§6.3.3, as the reference sends it)."""
    return pb.DestinationProfile(
        fully_qualified_name=fqn(service, namespace),
        retry_budget=pb.RetryBudget(retry_ratio=0.2, min_retries_per_second=10, ttl=duration(10)),
        parent_ref=meta_pb2.Metadata(
            resource=meta_pb2.Resource(
                group="core", kind="Service", name=service, namespace=namespace, port=port
            )
        ),
        profile_ref=meta_pb2.Metadata(resource=meta_pb2.Resource(group="linkerd.io")),
    )


def with_profile(
    base: pb.DestinationProfile,
    *,
    profile_namespace: str,
    routes: list[pb.Route] | None = None,
    budget: pb.RetryBudget | None = None,
    overrides: list[pb.WeightedDst] | None = None,
) -> pb.DestinationProfile:
    message = pb.DestinationProfile()
    message.CopyFrom(base)
    message.profile_ref.resource.kind = "ServiceProfile"
    message.profile_ref.resource.name = base.fully_qualified_name
    message.profile_ref.resource.namespace = profile_namespace
    message.routes.extend(routes or [])
    message.dst_overrides.extend(overrides or [])
    if budget is not None:
        message.retry_budget.CopyFrom(budget)
    return message


def method(registered: int | None = None, unregistered: str | None = None) -> pb.RequestMatch:
    if unregistered is not None:
        return pb.RequestMatch(method=http_types_pb2.HttpMethod(unregistered=unregistered))
    return pb.RequestMatch(method=http_types_pb2.HttpMethod(registered=registered))  # type: ignore[arg-type]


def path(regex: str) -> pb.RequestMatch:
    return pb.RequestMatch(path=pb.PathMatch(regex=regex))


def req_all(*matches: pb.RequestMatch) -> pb.RequestMatch:
    return pb.RequestMatch(all=pb.RequestMatch.Seq(matches=matches))


def req_any(*matches: pb.RequestMatch) -> pb.RequestMatch:
    return pb.RequestMatch(any=pb.RequestMatch.Seq(matches=matches))


def req_not(match: pb.RequestMatch) -> pb.RequestMatch:
    negated = pb.RequestMatch()
    getattr(negated, "not").CopyFrom(match)
    return negated


def status(low: int, high: int) -> pb.ResponseMatch:
    return pb.ResponseMatch(status=pb.HttpStatusRange(min=low, max=high))


def resp_all(*matches: pb.ResponseMatch) -> pb.ResponseMatch:
    return pb.ResponseMatch(all=pb.ResponseMatch.Seq(matches=matches))


def resp_any(*matches: pb.ResponseMatch) -> pb.ResponseMatch:
    return pb.ResponseMatch(any=pb.ResponseMatch.Seq(matches=matches))


def resp_not(match: pb.ResponseMatch) -> pb.ResponseMatch:
    negated = pb.ResponseMatch()
    getattr(negated, "not").CopyFrom(match)
    return negated


def route(
    name: str,
    condition: pb.RequestMatch,
    *classes: tuple[pb.ResponseMatch, bool],
    retryable: bool = False,
    timeout: duration_pb2.Duration | None = None,
) -> pb.Route:
    message = pb.Route(
        condition=condition,
        response_classes=[pb.ResponseClass(condition=c, is_failure=f) for c, f in classes],
        metrics_labels={"route": name},
        is_retryable=retryable,
    )
    if timeout is not None:
        message.timeout.CopyFrom(timeout)
    return message


# --------------------------------------------------------------------------
# barriers


class Sentinel:
    """A Service with a stream of its own, to know the server has seen earlier events.

    `profiles()` changes the sentinel's ServiceProfile, `services()` its
    opaque-ports annotation, and each waits for the sentinel's stream to show
    it: every event of that kind before it has then been applied.
    """

    def __init__(self, server: Server, kube: Kube, namespace: str) -> None:
        self._server = server
        self._kube = kube
        self._namespace = namespace
        self._turns = itertools.count(1)
        self.stream: ProfileStream | None = None

    async def start(self) -> None:
        await self._kube.create_service(self._namespace, "sentinel")
        self.stream = await open_known_profile_stream(
            self._server, f"{fqn('sentinel', self._namespace)}:80"
        )
        await self.stream.count(1, what="the sentinel's profile")

    async def profiles(self) -> None:
        assert self.stream is not None
        turn = f"turn-{next(self._turns)}"
        await put_service_profile(
            self._kube,
            self._namespace,
            fqn("sentinel", self._namespace),
            {"routes": [{"name": turn, "condition": {"method": "GET"}}]},
        )
        await self.stream.until(
            lambda p: [r.metrics_labels["route"] for r in p.routes] == [turn],
            what=f"the sentinel's {turn}",
        )
        await asyncio.sleep(SETTLE_S)

    async def services(self) -> None:
        assert self.stream is not None
        latest = self.stream.latest
        assert latest is not None
        opaque = not latest.opaque_protocol
        await self._kube.core.patch_namespaced_service(
            "sentinel",
            self._namespace,
            {"metadata": {"annotations": {OPAQUE_PORTS: "80" if opaque else ""}}},
        )
        await self.stream.until(
            lambda p: p.opaque_protocol == opaque, what="the sentinel's opaque flag"
        )
        await asyncio.sleep(SETTLE_S)

    def stop(self) -> None:
        if self.stream is not None:
            self.stream.cancel()


@pytest.fixture
async def sentinel(server: Server, east: Kube, namespace: str) -> AsyncIterator[Sentinel]:
    barrier = Sentinel(server, east, namespace)
    await barrier.start()
    yield barrier
    barrier.stop()


async def quiet(stream: ProfileStream, count: int) -> None:
    """After a barrier: the stream got nothing more than `count` messages and is open."""
    assert len(stream.profiles) == count, stream.profiles[count:]
    assert stream.open


# --------------------------------------------------------------------------
# §6.3.3: translation on a live stream

EVERY_RULE: dict[str, Any] = {
    "routes": [
        {
            "name": "get-books",
            "condition": {"method": "get", "pathRegex": "/books/[^/]*"},
            "responseClasses": [
                {"condition": {"status": {"min": 500, "max": 599}}, "isFailure": True},
                {
                    "condition": {
                        "not": {"status": {"max": 199}},
                        "status": {"min": 100},
                        "any": [{"status": {"min": 200, "max": 299}}],
                        "all": [{"status": {"min": 300}}],
                    },
                    "isFailure": False,
                },
            ],
            "isRetryable": True,
            "timeout": "1.5s",
        },
        {
            "name": "everything",
            "condition": {
                "pathRegex": "/y",
                "not": {"method": "post"},
                "method": "purge",
                "any": [{"pathRegex": "/x"}],
                "all": [{"method": "GET"}],
            },
            "timeout": "250ms",
        },
        {
            "name": "",
            "condition": {"all": [{"method": "Delete"}, {"pathRegex": "/z"}]},
            "timeout": "1m",
        },
        {"name": "no-timeout", "condition": {"method": "head"}, "timeout": "0s"},
    ],
    "dstOverrides": [
        {"authority": "web-v2.{ns}.svc.cluster.local", "weight": "500m"},
        {"authority": "web-v1.{ns}.svc.cluster.local:8080", "weight": 1},
        {"authority": "10.0.0.1:9000", "weight": "0.25"},
        {"authority": "off", "weight": 0},
    ],
}


def every_rule_routes() -> list[pb.Route]:
    return [
        route(
            "get-books",
            req_all(method(GET), path("/books/[^/]*")),
            (status(500, 599), True),
            (
                resp_all(
                    resp_all(status(300, 0)),
                    resp_any(status(200, 299)),
                    status(100, 0),
                    resp_not(status(0, 199)),
                ),
                False,
            ),
            retryable=True,
            timeout=duration(1, 500_000_000),
        ),
        route(
            "everything",
            req_all(
                req_all(method(GET)),
                req_any(path("/x")),
                method(unregistered="PURGE"),
                req_not(method(POST)),
                path("/y"),
            ),
            timeout=duration(0, 250_000_000),
        ),
        route("", req_all(method(DELETE), path("/z")), timeout=duration(60)),
        route("no-timeout", method(HEAD)),
    ]


def with_namespace(spec: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    overrides = [
        {**o, "authority": o["authority"].format(ns=namespace)} for o in spec["dstOverrides"]
    ]
    return {**spec, "dstOverrides": overrides}


async def test_a_service_profile_applied_changed_and_deleted_on_live_streams(
    server: Server, east: Kube, namespace: str, sentinel: Sentinel
) -> None:
    ns = namespace
    await east.create_service(ns, "web", extra_spec={"ipFamilyPolicy": "RequireDualStack"})
    service = await east.core.read_namespaced_service("web", ns)
    v4, v6 = service.spec.cluster_ips
    by_name = await open_known_profile_stream(server, f"{fqn('web', ns)}:80")
    by_ips = [open_profile_stream(server, f"{v4}:80"), open_profile_stream(server, f"[{v6}]:80")]
    streams = [by_name, *by_ips]

    async def all_see(expected: pb.DestinationProfile, what: str) -> None:
        for stream in streams:
            await stream.until(lambda p: p == expected, what=what)

    default = default_profile("web", ns)
    await all_see(default, "the default profile")

    name = fqn("web", ns)
    await put_service_profile(east, ns, name, with_namespace(EVERY_RULE, ns))
    first = with_profile(
        default,
        profile_namespace=ns,
        routes=every_rule_routes(),
        overrides=[
            pb.WeightedDst(authority=f"web-v2.{ns}.svc.cluster.local:80", weight=5_000),
            pb.WeightedDst(authority=f"web-v1.{ns}.svc.cluster.local:8080", weight=10_000),
            pb.WeightedDst(authority="10.0.0.1:9000", weight=2_500),
            pb.WeightedDst(authority="off:80", weight=0),
        ],
    )
    await all_see(first, "every translation rule")

    # Changed: routes reordered, a custom budget, no overrides.
    await put_service_profile(
        east,
        ns,
        name,
        {
            "routes": list(reversed(EVERY_RULE["routes"])),
            "retryBudget": {"retryRatio": 0.5, "minRetriesPerSecond": 3, "ttl": "1m30s"},
        },
    )
    second = with_profile(
        default,
        profile_namespace=ns,
        routes=list(reversed(every_rule_routes())),
        budget=pb.RetryBudget(retry_ratio=0.5, min_retries_per_second=3, ttl=duration(90)),
    )
    await all_see(second, "the changed profile")

    # A zero ttl leaves the field unset (the reference sends no ttl either).
    await put_service_profile(
        east,
        ns,
        name,
        {"retryBudget": {"retryRatio": 0.1, "minRetriesPerSecond": 0, "ttl": "0s"}},
    )
    third = with_profile(
        default,
        profile_namespace=ns,
        budget=pb.RetryBudget(retry_ratio=0.1, min_retries_per_second=0),
    )
    await all_see(third, "a budget without ttl")
    assert not by_name.profiles[-1].retry_budget.HasField("ttl")

    # A new object version with the same spec sends nothing.
    sent = [len(stream.profiles) for stream in streams]
    await label_service_profile(east, ns, name, "yes")
    await sentinel.profiles()
    for stream, count in zip(streams, sent, strict=True):
        await quiet(stream, count)

    await delete_service_profile(east, ns, name)
    await all_see(default, "the default profile again")
    assert [p == default for p in by_name.profiles] == [True, False, False, False, True]
    for stream in streams:
        stream.cancel()


# --------------------------------------------------------------------------
# §6.3.2: primary (client namespace) and backup (service namespace)


async def test_the_client_namespace_profile_wins_live_as_either_comes_and_goes(
    server: Server, east: Kube, namespace: str, sentinel: Sentinel
) -> None:
    ns = namespace
    client_ns = f"{ns[:50]}-client"
    await east.create_namespace(client_ns)
    try:
        await east.create_service(ns, "web")
        name = fqn("web", ns)
        client = await open_known_profile_stream(server, f"{name}:80", client_token(client_ns))
        legacy = open_profile_stream(server, f"{name}:80", f"ns:{client_ns}")
        others = [
            open_profile_stream(server, f"{name}:80"),  # no token: backup only
            open_profile_stream(server, f"{name}:80", client_token(ns)),  # its own namespace
            open_profile_stream(server, f"{name}:80", "not a token"),  # ignored
        ]

        def routes(stream: ProfileStream) -> tuple[str, list[str]]:
            latest = stream.latest
            assert latest is not None
            return (
                latest.profile_ref.resource.namespace,
                [r.metrics_labels["route"] for r in latest.routes],
            )

        async def shows(stream: ProfileStream, expected: tuple[str, list[str]], what: str) -> None:
            await stream.until(lambda _: routes(stream) == expected, what=what)

        for stream in (client, legacy, *others):
            await shows(stream, ("", []), "the default profile")

        async def profile(where: str, route_name: str) -> None:
            spec = {"routes": [{"name": route_name, "condition": {"method": "GET"}}]}
            await put_service_profile(east, where, name, spec)

        await profile(ns, "backup")
        for stream in (client, legacy, *others):
            await shows(stream, (ns, ["backup"]), "the backup")

        await profile(client_ns, "primary")
        for stream in (client, legacy):
            await shows(stream, (client_ns, ["primary"]), "the primary")
        await profile(client_ns, "primary-2")
        for stream in (client, legacy):
            await shows(stream, (client_ns, ["primary-2"]), "the changed primary")

        # The backup changing or going away changes nothing for the primary's streams.
        sent = [len(client.profiles), len(legacy.profiles)]
        await profile(ns, "backup-2")
        for stream in others:
            await shows(stream, (ns, ["backup-2"]), "the changed backup")
        await delete_service_profile(east, ns, name)
        for stream in others:
            await shows(stream, ("", []), "no backup: the default")
        await sentinel.profiles()
        await quiet(client, sent[0])
        await quiet(legacy, sent[1])

        # The primary gone, with no backup: the default; the backup back: the backup.
        await delete_service_profile(east, client_ns, name)
        await shows(client, ("", []), "the default")
        await profile(ns, "backup-3")
        for stream in (client, legacy, *others):
            await shows(stream, (ns, ["backup-3"]), "the backup again")
        for stream in (client, legacy, *others):
            assert stream.open
            stream.cancel()
        # Every stream saw each distinct profile once: none was sent twice in a row.
        for stream in (client, legacy, *others):
            assert all(a != b for a, b in itertools.pairwise(stream.profiles))
    finally:
        await east.delete_namespace(client_ns)


# --------------------------------------------------------------------------
# §6.4: the Service's opaque ports


async def test_opaque_port_annotation_edits_on_live_streams(
    server: Server, east: Kube, namespace: str, sentinel: Sentinel
) -> None:
    ns = namespace
    await east.create_service(
        ns,
        "web",
        ports={"http": (80, 8080), "mysql": (3306, 3306), "grpc": (9090, 9090)},
    )
    http = await open_known_profile_stream(server, f"{fqn('web', ns)}:80")
    mysql = open_profile_stream(server, f"{fqn('web', ns)}:3306")
    counts = {"http": 0, "mysql": 0}
    last: tuple[bool, bool] | None = None

    async def expect(annotation: str | None, opaque: tuple[bool, bool]) -> None:
        nonlocal last
        if last is not None:
            await east.core.patch_namespaced_service(
                "web", ns, {"metadata": {"annotations": {OPAQUE_PORTS: annotation}}}
            )
            await sentinel.services()
        for key, stream, flag, before in (
            ("http", http, opaque[0], None if last is None else last[0]),
            ("mysql", mysql, opaque[1], None if last is None else last[1]),
        ):
            if flag != before:
                counts[key] += 1
            await stream.until(lambda p, flag=flag: p.opaque_protocol == flag, what=annotation)
            assert len(stream.profiles) == counts[key], (annotation, key, stream.profiles)
        last = opaque

    await expect(None, (False, True))  # absent: the defaults (3306 is one)
    await expect("http", (True, False))  # a service port name; the defaults no longer apply
    await expect("9000-9100, 80", (True, False))  # a range and a number: nothing changed
    await expect("3306,http,", (True, True))  # one trailing comma allowed
    await expect("", (False, False))  # present but empty: nothing is opaque
    await expect("banana, 3300-3310", (False, True))  # an invalid item is skipped
    await expect("mysql", (False, True))  # the name of port 3306: nothing changed
    await expect(None, (False, True))  # removed: the defaults again, nothing changed
    await expect("http", (True, False))
    await expect(None, (False, True))
    for stream in (http, mysql):
        assert stream.open
        stream.cancel()


# --------------------------------------------------------------------------
# malformed ServiceProfiles

ACCEPTED_BY_THE_SCHEMA_BUT_UNUSABLE: list[tuple[str, dict[str, Any]]] = [
    ("a bad regex", {"routes": [{"name": "r", "condition": {"pathRegex": "/(unclosed"}}]}),
    (
        "a status above 599",
        {
            "routes": [
                {
                    "name": "r",
                    "condition": {"method": "GET"},
                    "responseClasses": [{"condition": {"status": {"min": 700}}}],
                }
            ]
        },
    ),
    (
        "a status range upside down",
        {
            "routes": [
                {
                    "name": "r",
                    "condition": {"method": "GET"},
                    "responseClasses": [{"condition": {"status": {"min": 500, "max": 400}}}],
                }
            ]
        },
    ),
    (
        "an unparsable ttl",
        {"retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "soon"}},
    ),
    ("an empty request match", {"routes": [{"name": "r", "condition": {}}]}),
    (
        "an empty response match",
        {
            "routes": [
                {
                    "name": "r",
                    "condition": {"method": "GET"},
                    "responseClasses": [{"condition": {}, "isFailure": True}],
                }
            ]
        },
    ),
    ("a negative weight", {"dstOverrides": [{"authority": "a", "weight": "-1"}]}),
]

REFUSED_BY_THE_SCHEMA: list[tuple[str, dict[str, Any]]] = [
    ("a route without a condition", {"routes": [{"name": "r"}]}),
    ("a route without a name", {"routes": [{"condition": {"method": "GET"}}]}),
    (
        "a response class without a condition",
        {
            "routes": [
                {"name": "r", "condition": {"method": "GET"}, "responseClasses": [{}]},
            ]
        },
    ),
    ("a budget without minRetriesPerSecond", {"retryBudget": {"retryRatio": 1, "ttl": "1s"}}),
    ("a weight that is no quantity", {"dstOverrides": [{"authority": "a", "weight": "lots"}]}),
]


async def rejected_count(server: Server, namespace: str) -> float:
    return await metric(server.admin, "service_profiles_rejected_total", namespace=namespace)


async def test_malformed_profiles_are_rejected_and_the_stream_keeps_its_last_good_profile(
    server: Server, east: Kube, namespace: str
) -> None:
    ns = namespace
    name = fqn("web", ns)
    await east.create_service(ns, "web")
    await east.create_service(ns, "never")  # its profile never validates
    stream = await open_known_profile_stream(server, f"{name}:80")
    await stream.until(lambda p: not p.routes, what="the default profile")
    good = {"routes": [{"name": "good", "condition": {"method": "GET"}, "timeout": "2s"}]}
    await put_service_profile(east, ns, name, good)
    last_good = await stream.until(lambda p: len(p.routes) == 1, what="the good profile")

    rejected = await rejected_count(server, ns)
    for what, spec in ACCEPTED_BY_THE_SCHEMA_BUT_UNUSABLE:
        await put_service_profile(east, ns, name, spec)
        rejected += 1
        await eventually(
            lambda: rejected_count(server, ns),
            lambda n, want=rejected: n == want,
            what=f"{what} rejected and counted",
            interval_s=0.05,
        )
        await asyncio.sleep(SETTLE_S)
        assert stream.profiles[-1] == last_good, f"{what}: a message was sent"
        assert len(stream.profiles) == 2 and stream.open, what

        # A new stream on the broken profile gets the last good one too.
        joining = open_profile_stream(server, f"{name}:80")
        await joining.count(1, what=f"a new stream while {what}")
        assert joining.profiles == [last_good], what
        joining.cancel()

    for what, spec in REFUSED_BY_THE_SCHEMA:
        with pytest.raises(ApiException) as refused:
            await put_service_profile(east, ns, name, spec)
        assert refused.value.status == 422, what

    # An unparsable route timeout drops only the timeout (as the reference does).
    slow = {"routes": [{"name": "slow", "condition": {"method": "GET"}, "timeout": "banana"}]}
    await put_service_profile(east, ns, name, slow)
    kept = await stream.until(
        lambda p: [r.metrics_labels["route"] for r in p.routes] == ["slow"],
        what="the route kept without its timeout",
    )
    assert not kept.routes[0].HasField("timeout")
    assert await rejected_count(server, ns) == rejected

    await put_service_profile(east, ns, fqn("never", ns), ACCEPTED_BY_THE_SCHEMA_BUT_UNUSABLE[0][1])
    await eventually(
        lambda: rejected_count(server, ns),
        lambda n: n == rejected + 1,
        what="the never-valid profile rejected",
        interval_s=0.05,
    )
    never = await open_known_profile_stream(server, f"{fqn('never', ns)}:80")
    await never.count(1, what="a stream on a profile that never validated")
    assert never.profiles == [default_profile("never", ns)]
    never.cancel()
    stream.cancel()


async def test_a_new_stream_gets_the_last_good_profile_when_no_stream_held_it(
    server: Server, east: Kube, namespace: str
) -> None:
    """Whether another stream happens to be open must not change what a new one gets."""
    ns = namespace
    name = fqn("web", ns)
    await east.create_service(ns, "web")
    good = {"routes": [{"name": "good", "condition": {"method": "GET"}}]}
    await put_service_profile(east, ns, name, good)
    first = await open_known_profile_stream(server, f"{name}:80")
    last_good = await first.until(lambda p: len(p.routes) == 1, what="the good profile")
    first.cancel()
    rejected = await rejected_count(server, ns)
    await put_service_profile(east, ns, name, ACCEPTED_BY_THE_SCHEMA_BUT_UNUSABLE[0][1])
    await eventually(
        lambda: rejected_count(server, ns),
        lambda n: n == rejected + 1,
        what="the broken version rejected",
        interval_s=0.05,
    )
    later = open_profile_stream(server, f"{name}:80")
    await later.count(1, what="a new stream on the broken profile")
    assert later.profiles == [last_good]
    later.cancel()
