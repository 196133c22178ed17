"""ServiceProfiles (linkerd.io/v1alpha2) projected into validated, typed records.

A ServiceProfile is written by anyone who may create objects in a namespace,
and its routes end up in every client proxy that talks to the service. So the
whole spec is checked here, once, when the watch event arrives, and becomes a
frozen tree of small records (`ServiceProfileInfo`): translation to protobuf
(destination side) then cannot fail, and the raw object is dropped.

A profile that does not validate is still recorded, with `problem` saying why
and no routes, and with the last version of the same object that did
validate (`last_good`). That matters: a broken update must not make a stream
fall back to the service's default profile or to another namespace's
profile; the object's last good version stays in force, for streams already
open and new ones alike, and the problem is logged and counted where it is
used. A profile that never validated is served as if it did not exist.

What is checked (the reference checks the first four; the rest are ours):

* every request match sets at least one of all/any/method/not/pathRegex, and
  every response match one of all/any/status/not; `all` and `any` hold no
  null entries; a route and a response class have a condition;
* status bounds, when non-zero, lie in 100..599 and max >= min;
* the retry budget's ttl is a Go duration (an unparsable one is an error);
* a route timeout that does not parse is *not* an error: as in the reference
  it is dropped with a note (`RouteSpec.timeout_problem`), and the route is
  kept without a timeout;
* path regexes compile as RE2 (Go's and, near enough, the proxy's syntax): a
  pattern the proxy cannot compile would break the route table there;
* negative durations, ratios and weights, and traffic-split weights beyond
  uint32, are errors (Go would send them wrapped or negative);
* sizes are bounded: routes, overrides, match depth and nodes, string length.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import re2

from .models import ObjectRef
from .units import UnitError, go_duration_ns, quantity_milli

__all__ = [
    "DstOverrideSpec",
    "ProfileProblem",
    "RequestMatchSpec",
    "ResponseClassSpec",
    "ResponseMatchSpec",
    "RetryBudgetSpec",
    "RouteSpec",
    "ServiceProfileInfo",
    "project_service_profile",
]

MAX_ROUTES = 1_000
MAX_RESPONSE_CLASSES = 100
MAX_DST_OVERRIDES = 100
MAX_MATCH_DEPTH = 32
MAX_MATCH_NODES = 10_000  # across one profile
MAX_STRING = 4_096  # route names, regexes, methods, authorities
MAX_WEIGHT = (1 << 32) - 1  # the proto's uint32

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are reported through `problem`, not stderr


class ProfileProblem(ValueError):
    """Why a ServiceProfile cannot be used; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class RequestMatchSpec:
    """`spec.routes[].condition`: what the CRD allows, validated. Unset fields are None."""

    all: tuple[RequestMatchSpec, ...] | None = None
    any: tuple[RequestMatchSpec, ...] | None = None
    method: str | None = None
    not_: RequestMatchSpec | None = None
    path_regex: str | None = None


@dataclass(frozen=True, slots=True)
class StatusRange:
    min: int  # 0: unset
    max: int  # 0: unset


@dataclass(frozen=True, slots=True)
class ResponseMatchSpec:
    all: tuple[ResponseMatchSpec, ...] | None = None
    any: tuple[ResponseMatchSpec, ...] | None = None
    status: StatusRange | None = None
    not_: ResponseMatchSpec | None = None


@dataclass(frozen=True, slots=True)
class ResponseClassSpec:
    condition: ResponseMatchSpec
    is_failure: bool


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    condition: RequestMatchSpec
    response_classes: tuple[ResponseClassSpec, ...]
    is_retryable: bool
    timeout_ns: int | None  # None: no timeout (unset, zero, or unparsable)
    timeout_problem: str | None = None  # set when a timeout was given but does not parse


@dataclass(frozen=True, slots=True)
class RetryBudgetSpec:
    retry_ratio: float
    min_retries_per_second: int
    ttl_ns: int  # 0: leave the proto field unset, as the reference does


@dataclass(frozen=True, slots=True)
class DstOverrideSpec:
    authority: str
    weight: int  # Quantity milli-units times 10: "1" is 10,000, as the proxy expects


@dataclass(frozen=True, slots=True)
class ServiceProfileInfo:
    """One ServiceProfile, validated; `problem` set means it must not be served.

    A version with a problem remembers the last version of the same object
    that had none (`last_good`, set by the index when it replaces one with the
    other): that is what is served in its place, to every stream alike,
    whether it was open before the broken version arrived or not.
    """

    ref: ObjectRef
    routes: tuple[RouteSpec, ...] = ()
    retry_budget: RetryBudgetSpec | None = None  # None: the default budget
    dst_overrides: tuple[DstOverrideSpec, ...] = ()
    problem: str | None = None
    resource_version: str = field(default="", compare=False)
    last_good: ServiceProfileInfo | None = field(default=None, compare=False, repr=False)

    @property
    def usable(self) -> ServiceProfileInfo | None:
        """What to serve for this object: itself, else its last good version, else nothing."""
        return self if self.problem is None else self.last_good

    def replacing(self, old: ServiceProfileInfo | None) -> ServiceProfileInfo:
        """This version as stored over `old` (the same object's previous version)."""
        if self.problem is None or old is None:
            return self
        return replace(self, last_good=old.usable)

    @property
    def notes(self) -> tuple[str, ...]:
        """Non-fatal findings to log: route timeouts that were dropped."""
        return tuple(
            f"route {route.name!r}: {route.timeout_problem}"
            for route in self.routes
            if route.timeout_problem
        )


# -- projection ---------------------------------------------------------------


class _Budget:
    """Counts match nodes across one profile, so a huge tree is refused early."""

    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes = 0

    def take(self, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_MATCH_NODES:
            raise ProfileProblem(f"{where}: more than {MAX_MATCH_NODES} match conditions")


def _string(value: Any, where: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ProfileProblem(f"{where} must be a string, not {_type_name(value)}")
    if len(value) > MAX_STRING:
        raise ProfileProblem(f"{where} is longer than {MAX_STRING} characters")
    if not allow_empty and not value:
        raise ProfileProblem(f"{where} must not be empty")
    return value


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProfileProblem(f"{where} must be a boolean, not {_type_name(value)}")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProfileProblem(f"{where} must be a list, not {_type_name(value)}")
    if len(value) > limit:
        raise ProfileProblem(f"{where} has more than {limit} entries")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProfileProblem(f"{where} must be an object, not {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _match_list(
    raw: Any, where: str, depth: int, budget: _Budget, child: Any
) -> tuple[Any, ...] | None:
    if raw is None:
        return None
    items = _list(raw, where, MAX_MATCH_NODES)
    result = []
    for index, item in enumerate(items):
        if item is None:
            raise ProfileProblem(f"{where}[{index}] is null")
        result.append(child(item, f"{where}[{index}]", depth + 1, budget))
    return tuple(result)


def _request_match(raw: Any, where: str, depth: int, budget: _Budget) -> RequestMatchSpec:
    if raw is None:
        raise ProfileProblem(f"{where} is missing")
    if depth > MAX_MATCH_DEPTH:
        raise ProfileProblem(f"{where}: matches nested deeper than {MAX_MATCH_DEPTH}")
    budget.take(where)
    body = _mapping(raw, where)
    method = body.get("method")
    if method is not None:
        method = _string(method, f"{where}.method") or None  # "" is unset, as in Go
    regex = body.get("pathRegex")
    match = RequestMatchSpec(
        all=_match_list(body.get("all"), f"{where}.all", depth, budget, _request_match),
        any=_match_list(body.get("any"), f"{where}.any", depth, budget, _request_match),
        method=method,
        not_=(
            _request_match(body["not"], f"{where}.not", depth + 1, budget)
            if body.get("not") is not None
            else None
        ),
        path_regex=_regex(regex, f"{where}.pathRegex") if regex is not None else None,
    )
    if (
        match.all is None
        and match.any is None
        and match.method is None
        and match.not_ is None
        and match.path_regex is None
    ):
        raise ProfileProblem(
            f"{where}: a request match needs one of all, any, method, not or pathRegex"
        )
    return match


def _regex(raw: Any, where: str) -> str | None:
    pattern = _string(raw, where)
    if not pattern:
        return None  # "" is "unset", as in the reference
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        raise ProfileProblem(f"{where} {pattern[:100]!r} is not a valid regex: {reason}") from None
    return pattern


def _status_bound(raw: Any, where: str) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ProfileProblem(f"{where} must be an integer, not {_type_name(raw)}")
    if raw != 0 and not 100 <= raw <= 599:
        raise ProfileProblem(f"{where} {raw} is outside 100..599")
    return raw


def _response_match(raw: Any, where: str, depth: int, budget: _Budget) -> ResponseMatchSpec:
    if raw is None:
        raise ProfileProblem(f"{where} is missing")
    if depth > MAX_MATCH_DEPTH:
        raise ProfileProblem(f"{where}: matches nested deeper than {MAX_MATCH_DEPTH}")
    budget.take(where)
    body = _mapping(raw, where)
    status = None
    if body.get("status") is not None:
        status_body = _mapping(body["status"], f"{where}.status")
        low = _status_bound(status_body.get("min"), f"{where}.status.min")
        high = _status_bound(status_body.get("max"), f"{where}.status.max")
        if low and high and high < low:
            raise ProfileProblem(f"{where}.status: max {high} is below min {low}")
        status = StatusRange(min=low, max=high)
    match = ResponseMatchSpec(
        all=_match_list(body.get("all"), f"{where}.all", depth, budget, _response_match),
        any=_match_list(body.get("any"), f"{where}.any", depth, budget, _response_match),
        status=status,
        not_=(
            _response_match(body["not"], f"{where}.not", depth + 1, budget)
            if body.get("not") is not None
            else None
        ),
    )
    if match.all is None and match.any is None and match.status is None and match.not_ is None:
        raise ProfileProblem(f"{where}: a response match needs one of all, any, status or not")
    return match


def _route(raw: Any, where: str, budget: _Budget) -> RouteSpec:
    body = _mapping(raw, where)
    name = _string(body.get("name", ""), f"{where}.name")
    condition = _request_match(body.get("condition"), f"{where}.condition", 1, budget)
    classes = []
    for index, item in enumerate(
        _list(body.get("responseClasses"), f"{where}.responseClasses", MAX_RESPONSE_CLASSES)
    ):
        class_where = f"{where}.responseClasses[{index}]"
        class_body = _mapping(item, class_where)
        classes.append(
            ResponseClassSpec(
                condition=_response_match(
                    class_body.get("condition"), f"{class_where}.condition", 1, budget
                ),
                is_failure=_bool(class_body.get("isFailure"), f"{class_where}.isFailure"),
            )
        )
    timeout_ns: int | None = None
    timeout_problem = None
    timeout = body.get("timeout")
    if timeout not in (None, ""):
        try:
            parsed = go_duration_ns(_string(timeout, f"{where}.timeout"))
            if parsed < 0:
                raise UnitError(f"negative duration {timeout!r}")
            timeout_ns = parsed or None
        except (UnitError, ProfileProblem) as err:
            timeout_problem = f"timeout ignored: {err}"
    return RouteSpec(
        name=name,
        condition=condition,
        response_classes=tuple(classes),
        is_retryable=_bool(body.get("isRetryable"), f"{where}.isRetryable"),
        timeout_ns=timeout_ns,
        timeout_problem=timeout_problem,
    )


def _retry_budget(raw: Any) -> RetryBudgetSpec:
    body = _mapping(raw, "spec.retryBudget")
    ratio = body.get("retryRatio", 0)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 2**31:
        raise ProfileProblem(f"spec.retryBudget.retryRatio {ratio!r} is not a number >= 0")
    minimum = body.get("minRetriesPerSecond", 0)
    if isinstance(minimum, bool) or not isinstance(minimum, int) or not 0 <= minimum <= MAX_WEIGHT:
        raise ProfileProblem(
            f"spec.retryBudget.minRetriesPerSecond {minimum!r} is not an integer in 0..{MAX_WEIGHT}"
        )
    ttl_text = _string(body.get("ttl", ""), "spec.retryBudget.ttl")
    try:
        ttl_ns = go_duration_ns(ttl_text)
    except UnitError as err:
        raise ProfileProblem(f"spec.retryBudget.ttl: {err}") from None
    if ttl_ns < 0:
        raise ProfileProblem(f"spec.retryBudget.ttl {ttl_text!r} is negative")
    return RetryBudgetSpec(retry_ratio=float(ratio), min_retries_per_second=minimum, ttl_ns=ttl_ns)


def _dst_override(raw: Any, where: str) -> DstOverrideSpec:
    body = _mapping(raw, where)
    authority = _string(body.get("authority"), f"{where}.authority", allow_empty=False)
    try:
        milli = quantity_milli(body.get("weight"))
    except UnitError as err:
        raise ProfileProblem(f"{where}.weight: {err}") from None
    weight = milli * 10
    if not 0 <= weight <= MAX_WEIGHT:
        raise ProfileProblem(
            f"{where}.weight {body.get('weight')!r} is outside 0..{MAX_WEIGHT // 10_000}"
        )
    return DstOverrideSpec(authority=authority, weight=weight)


def _spec(ref: ObjectRef, spec: Mapping[str, Any], version: str) -> ServiceProfileInfo:
    budget = _Budget()
    routes = tuple(
        _route(item, f"spec.routes[{index}]", budget)
        for index, item in enumerate(_list(spec.get("routes"), "spec.routes", MAX_ROUTES))
    )
    retry_budget = (
        _retry_budget(spec["retryBudget"]) if spec.get("retryBudget") is not None else None
    )
    overrides = tuple(
        _dst_override(item, f"spec.dstOverrides[{index}]")
        for index, item in enumerate(
            _list(spec.get("dstOverrides"), "spec.dstOverrides", MAX_DST_OVERRIDES)
        )
    )
    return ServiceProfileInfo(
        ref=ref,
        routes=routes,
        retry_budget=retry_budget,
        dst_overrides=overrides,
        resource_version=version,
    )


def project_service_profile(raw: Mapping[str, Any]) -> ServiceProfileInfo | None:
    """The profile, with `problem` set when its spec is unusable; None without a name.

    Never raises: every failure becomes the record's `problem`, so the index
    knows that a profile exists (and is broken) under that name.
    """
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    ref = ObjectRef(namespace if isinstance(namespace, str) else "", meta["name"])
    version = meta.get("resourceVersion")
    version = version if isinstance(version, str) else ""
    try:
        spec = raw.get("spec")
        return _spec(ref, _mapping(spec, "spec") if spec is not None else {}, version)
    except ProfileProblem as err:
        return ServiceProfileInfo(ref=ref, problem=str(err), resource_version=version)
    except RecursionError:
        return ServiceProfileInfo(
            ref=ref, problem="spec nested too deeply", resource_version=version
        )
