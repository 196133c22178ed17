"""ServiceProfile records into DestinationProfile messages (reference §6.3.3).

Scope: the fixed order of request and response matches, single-versus-`all`,
registered and unregistered methods, metrics labels, retryability and
timeouts, retry budgets (default and custom, ttl 0 unset), traffic-split
authorities and weights, parent_ref/profile_ref, the default profile, and
the endpoint-profile message. Records come from the real projection.
Hypothesis: whatever a ServiceProfile says, if it validates, it translates
(the validation is what makes translation unable to fail).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from destination._proto import destination_pb2 as pb
from destination._proto import http_types_pb2, meta_pb2
from destination.translate.profiles import endpoint_profile, method_match, service_profile
from discovery.models import ServiceRef
from discovery.service_profiles import ServiceProfileInfo, project_service_profile
from tests.unit.test_service_profiles import JSON

FQN = "web.shop.svc.cluster.local"
SERVICE = ServiceRef("shop", "web")


def sp(spec: dict[str, Any], namespace: str = "shop") -> ServiceProfileInfo:
    info = project_service_profile(
        {"kind": "ServiceProfile", "metadata": {"name": FQN, "namespace": namespace}, "spec": spec}
    )
    assert info is not None and info.problem is None, info
    return info


def translate(info: ServiceProfileInfo | None, port: int = 8080) -> pb.DestinationProfile:
    return service_profile(info, fqn=FQN, service=SERVICE, port=port, opaque=False)


def test_the_default_profile() -> None:
    message = service_profile(None, fqn=FQN, service=SERVICE, port=8080, opaque=True)
    assert message.fully_qualified_name == FQN
    assert message.opaque_protocol
    assert message.retry_budget == pb.RetryBudget(
        retry_ratio=0.2, min_retries_per_second=10, ttl=duration_pb2.Duration(seconds=10)
    )
    assert not message.routes and not message.dst_overrides
    resource = message.parent_ref.resource
    assert (resource.group, resource.kind, resource.name, resource.namespace, resource.port) == (
        "core",
        "Service",
        "web",
        "shop",
        8080,
    )
    assert message.profile_ref.WhichOneof("kind") == "resource"
    assert message.profile_ref.resource == meta_pb2.Resource(group="linkerd.io")
    assert not message.HasField("endpoint")


def test_profile_ref_names_the_profile_used() -> None:
    message = translate(sp({}, namespace="client-ns"))
    resource = message.profile_ref.resource
    assert (resource.group, resource.kind, resource.name, resource.namespace) == (
        "linkerd.io",
        "ServiceProfile",
        FQN,
        "client-ns",
    )


def test_request_matches_follow_the_fixed_order_and_single_rule() -> None:
    condition = {
        "pathRegex": "/x",
        "not": {"method": "delete"},
        "method": "purge",
        "any": [{"method": "GET"}],
        "all": [{"pathRegex": "/a"}, {"pathRegex": "/b"}],
    }
    route = translate(sp({"routes": [{"name": "r", "condition": condition}]})).routes[0]
    parts = route.condition.all.matches
    assert [part.WhichOneof("match") for part in parts] == ["all", "any", "method", "not", "path"]
    assert [m.path.regex for m in parts[0].all.matches] == ["/a", "/b"]
    assert parts[1].any.matches[0].method == method_match("GET")
    assert parts[2].method.unregistered == "PURGE"
    assert getattr(parts[3], "not").method.registered == http_types_pb2.HttpMethod.DELETE
    assert parts[4].path.regex == "/x"

    single = translate(sp({"routes": [{"name": "r", "condition": {"method": "get"}}]}))
    assert single.routes[0].condition.WhichOneof("match") == "method"
    assert single.routes[0].condition.method.WhichOneof("type") == "registered"
    assert single.routes[0].condition.method.registered == http_types_pb2.HttpMethod.GET


def test_response_classes_follow_the_fixed_order() -> None:
    condition = {
        "not": {"status": {"min": 200}},
        "status": {"min": 500, "max": 599},
        "any": [{"status": {"min": 429, "max": 429}}],
        "all": [{"status": {"max": 504}}],
    }
    spec = {
        "routes": [
            {
                "name": "r",
                "condition": {"pathRegex": "/"},
                "responseClasses": [{"condition": condition, "isFailure": True}],
            }
        ]
    }
    response_class = translate(sp(spec)).routes[0].response_classes[0]
    assert response_class.is_failure
    parts = response_class.condition.all.matches
    assert [part.WhichOneof("match") for part in parts] == ["all", "any", "status", "not"]
    assert parts[2].status == pb.HttpStatusRange(min=500, max=599)
    assert getattr(parts[3], "not").status == pb.HttpStatusRange(min=200)


def test_route_labels_retryability_and_timeouts() -> None:
    spec = {
        "routes": [
            {
                "name": "fast",
                "condition": {"method": "GET"},
                "timeout": "1.5s",
                "isRetryable": True,
            },
            {"name": "", "condition": {"method": "GET"}, "timeout": "0s"},
            {"name": "bad", "condition": {"method": "GET"}, "timeout": "later"},
        ]
    }
    fast, unnamed, bad = translate(sp(spec)).routes
    assert dict(fast.metrics_labels) == {"route": "fast"}
    assert fast.is_retryable
    assert fast.timeout == duration_pb2.Duration(seconds=1, nanos=500_000_000)
    assert dict(unnamed.metrics_labels) == {"route": ""}
    assert not unnamed.HasField("timeout") and not bad.HasField("timeout")


def test_a_custom_retry_budget_is_used_as_given() -> None:
    budget = translate(
        sp({"retryBudget": {"retryRatio": 0.5, "minRetriesPerSecond": 3, "ttl": "250ms"}})
    ).retry_budget
    assert budget.retry_ratio == 0.5 and budget.min_retries_per_second == 3
    assert budget.ttl == duration_pb2.Duration(nanos=250_000_000)
    zero = translate(
        sp({"retryBudget": {"retryRatio": 0.1, "minRetriesPerSecond": 1, "ttl": "0s"}})
    ).retry_budget
    assert not zero.HasField("ttl")


def test_traffic_split_authorities_get_the_port_when_they_name_none() -> None:
    spec = {
        "dstOverrides": [
            {"authority": "web-v1.shop.svc.cluster.local", "weight": 1},
            {"authority": "web-v2.shop.svc.cluster.local:9090", "weight": "500m"},
            {"authority": "web-v3", "weight": "0"},
        ]
    }
    overrides = translate(sp(spec), port=8080).dst_overrides
    assert [(o.authority, o.weight) for o in overrides] == [
        ("web-v1.shop.svc.cluster.local:8080", 10_000),
        ("web-v2.shop.svc.cluster.local:9090", 5_000),
        ("web-v3:8080", 0),
    ]
    assert not any(o.HasField("backend_ref") for o in overrides)


def test_the_endpoint_profile_message() -> None:
    endpoint = pb.WeightedAddr(weight=10_000)
    message = endpoint_profile(endpoint, opaque=True)
    assert message.endpoint == endpoint and message.opaque_protocol
    assert message.retry_budget.min_retries_per_second == 10
    assert not message.fully_qualified_name and not message.routes
    assert not message.HasField("parent_ref") and not message.HasField("profile_ref")


def test_translation_is_deterministic_bytes() -> None:
    info = sp({"routes": [{"name": "r", "condition": {"method": "GET"}}]})
    first = translate(info).SerializeToString(deterministic=True)
    assert first == translate(info).SerializeToString(deterministic=True)


SPEC_PARTS = st.fixed_dictionaries(
    {},
    optional={
        "routes": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=8), "condition": JSON},
                optional={
                    "responseClasses": st.lists(
                        st.fixed_dictionaries({"condition": JSON}, optional={"isFailure": JSON}),
                        max_size=3,
                    ),
                    "timeout": st.sampled_from(["", "0s", "1.5s", "250ms", "-1s", "x", "1h1m"]),
                    "isRetryable": st.booleans(),
                },
            ),
            max_size=3,
        ),
        "retryBudget": JSON,
        "dstOverrides": st.lists(
            st.fixed_dictionaries(
                {
                    "authority": st.sampled_from(["a", "a:80", "[::1]:9", "b:c:d", ""]),
                    "weight": st.sampled_from([0, 1, "1", "500m", "0.25", "1k", "-1", "x"]),
                }
            ),
            max_size=3,
        ),
    },
)


@settings(max_examples=300)
@given(SPEC_PARTS, st.integers(min_value=1, max_value=65535), st.booleans())
def test_a_profile_that_validates_always_translates(
    spec: dict[str, Any], port: int, opaque: bool
) -> None:
    info = project_service_profile(
        {"kind": "ServiceProfile", "metadata": {"name": FQN, "namespace": "shop"}, "spec": spec}
    )
    assert info is not None
    if info.problem is not None:
        return
    message = service_profile(info, fqn=FQN, service=SERVICE, port=port, opaque=opaque)
    assert pb.DestinationProfile.FromString(message.SerializeToString()) == message
    assert len(message.routes) == len(info.routes)
    assert all(":" in dst.authority for dst in message.dst_overrides)
