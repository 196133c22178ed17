"""ServiceProfiles projected into validated records (discovery.service_profiles).

Scope: every rule of the reference's translation checks (§6.3.3) and ours
(regexes, sizes, negative values) turns a bad spec into `problem` naming the
field; a good spec becomes typed records. Hypothesis feeds arbitrary JSON and
mutations of a valid profile: the projection never raises.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.models import ObjectRef
from discovery.service_profiles import (
    MAX_MATCH_DEPTH,
    MAX_ROUTES,
    DstOverrideSpec,
    RequestMatchSpec,
    ResponseMatchSpec,
    RetryBudgetSpec,
    StatusRange,
    project_service_profile,
)

NAME = "web.shop.svc.cluster.local"


def profile(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "linkerd.io/v1alpha2",
        "kind": "ServiceProfile",
        "metadata": {"name": NAME, "namespace": "shop", "resourceVersion": "7"},
        "spec": spec,
    }


VALID: dict[str, Any] = {
    "routes": [
        {
            "name": "GET /books/{id}",
            "condition": {"all": [{"method": "get"}, {"pathRegex": r"/books/\d+"}]},
            "responseClasses": [
                {"condition": {"status": {"min": 500, "max": 599}}, "isFailure": True}
            ],
            "isRetryable": True,
            "timeout": "250ms",
        },
        {"name": "", "condition": {"any": [{"pathRegex": "/a"}, {"not": {"method": "POST"}}]}},
    ],
    "retryBudget": {"retryRatio": 0.3, "minRetriesPerSecond": 5, "ttl": "1m"},
    "dstOverrides": [{"authority": "web-v2.shop.svc.cluster.local:80", "weight": "500m"}],
}  # fmt: skip


def test_a_valid_profile_becomes_typed_records() -> None:
    info = project_service_profile(profile(VALID))
    assert info is not None and info.problem is None
    assert info.ref == ObjectRef("shop", NAME)
    first, second = info.routes
    assert first.condition == RequestMatchSpec(
        all=(RequestMatchSpec(method="get"), RequestMatchSpec(path_regex=r"/books/\d+"))
    )
    assert first.response_classes[0].condition == ResponseMatchSpec(status=StatusRange(500, 599))
    assert first.response_classes[0].is_failure
    assert first.is_retryable and first.timeout_ns == 250_000_000
    assert second.name == "" and second.timeout_ns is None and not second.is_retryable
    assert info.retry_budget == RetryBudgetSpec(0.3, 5, 60_000_000_000)
    assert info.dst_overrides == (DstOverrideSpec("web-v2.shop.svc.cluster.local:80", 5_000),)


def test_a_profile_without_spec_fields_is_empty_and_valid() -> None:
    info = project_service_profile(profile({}))
    assert info is not None and info.problem is None
    assert info.routes == () and info.retry_budget is None and info.dst_overrides == ()


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    target: Any = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return spec


RESPONSE = ["routes", 0, "responseClasses", 0, "condition"]


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (["routes", 0, "condition"], None, "spec.routes[0].condition is missing"),
        (["routes", 0, "condition"], {}, "a request match needs one of"),
        (["routes", 0, "condition"], {"method": ""}, "a request match needs one of"),
        (["routes", 0, "condition"], {"all": [None]}, "spec.routes[0].condition.all[0] is null"),
        (["routes", 0, "condition"], {"pathRegex": "(unclosed"}, "is not a valid regex"),
        (["routes", 0, "condition"], {"pathRegex": "(?=lookahead)"}, "is not a valid regex"),
        (["routes", 0, "condition"], {"method": 7}, "method must be a string"),
        (["routes", 0, "condition"], "GET", "condition must be an object"),
        (RESPONSE, None, "condition is missing"),
        (RESPONSE, {}, "a response match needs one of"),
        (RESPONSE, {"status": {"min": 99}}, "outside 100..599"),
        (RESPONSE, {"status": {"max": 600}}, "outside 100..599"),
        (RESPONSE, {"status": {"min": 500, "max": 400}}, "below min"),
        (RESPONSE, {"status": {"min": "500"}}, "must be an integer"),
        (["routes", 0, "isRetryable"], "yes", "isRetryable must be a boolean"),
        (["retryBudget", "ttl"], "ten seconds", "spec.retryBudget.ttl: invalid duration"),
        (["retryBudget", "ttl"], "-1s", "is negative"),
        (["retryBudget", "retryRatio"], -0.1, "retryRatio"),
        (["retryBudget", "minRetriesPerSecond"], -1, "minRetriesPerSecond"),
        (["dstOverrides", 0, "weight"], "lots", "invalid quantity"),
        (["dstOverrides", 0, "weight"], "-1", "is outside"),
        (["dstOverrides", 0, "weight"], "1M", "is outside"),
        (["dstOverrides", 0, "authority"], "", "must not be empty"),
        (["routes"], {"name": "not a list"}, "spec.routes must be a list"),
    ],
)  # fmt: skip
def test_an_unusable_spec_is_recorded_with_its_problem(
    path: list[Any], value: Any, problem: str
) -> None:
    info = project_service_profile(profile(with_change(path, value)))
    assert info is not None
    assert info.problem is not None and problem in info.problem
    assert info.routes == () and info.dst_overrides == ()


def test_an_unparsable_route_timeout_drops_only_the_timeout() -> None:
    info = project_service_profile(profile(with_change(["routes", 0, "timeout"], "soon")))
    assert info is not None and info.problem is None
    assert info.routes[0].timeout_ns is None
    assert info.notes == ("route 'GET /books/{id}': timeout ignored: invalid duration 'soon'",)


def test_sizes_are_bounded() -> None:
    many = {"routes": [{"name": "r", "condition": {"method": "GET"}}] * (MAX_ROUTES + 1)}
    info = project_service_profile(profile(many))
    assert info is not None and info.problem is not None and "more than" in info.problem
    deep: dict[str, Any] = {"method": "GET"}
    for _ in range(MAX_MATCH_DEPTH + 1):
        deep = {"not": deep}
    info = project_service_profile(profile({"routes": [{"name": "r", "condition": deep}]}))
    assert info is not None and info.problem is not None and "nested deeper" in info.problem


def test_objects_without_a_name_are_not_profiles() -> None:
    assert project_service_profile({"metadata": {}}) is None
    assert project_service_profile({"spec": {}}) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["all", "any", "not", "method", "pathRegex", "status", "min", "max", "name",
             "condition", "responseClasses", "timeout", "ttl", "weight", "authority", "x"]
        ),
        children,
        max_size=5,
    ),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300)
@given(JSON)
def test_any_spec_is_a_record_never_an_exception(spec: Any) -> None:
    info = project_service_profile(profile(spec))
    assert info is not None
    assert info.ref == ObjectRef("shop", NAME)
    if info.problem is not None:
        assert info.routes == ()


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["routes", "retryBudget", "dstOverrides"]), min_size=1), JSON)
def test_any_field_replaced_by_junk_is_handled(keys: list[str], junk: Any) -> None:
    spec = copy.deepcopy(VALID)
    for key in keys:
        spec[key] = junk
    info = project_service_profile(profile(spec))
    assert info is not None
    for route in info.routes:
        assert isinstance(route.name, str) and route.condition is not None
