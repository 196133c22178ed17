"""ServiceProfiles and endpoints into `DestinationProfile` messages (reference §6.3.3, §6.5).

Input records were validated when their watch event arrived
(`discovery.service_profiles`), so nothing here can fail: a function of the
record, the requested port and the Service's opaque ports gives one message,
which the caller serializes once for every stream that shares those inputs.

Choices that differ from Linkerd's controller (docs/compatibility.md):
`profile_ref.kind` is always "ServiceProfile" (the reference copies the cached
object's TypeMeta, often empty in a live cluster), and the default profile's
`profile_ref` keeps the reference's `{group: "linkerd.io"}` shape.
"""

from __future__ import annotations

from google.protobuf import duration_pb2

from destination._proto import destination_pb2 as pb
from destination._proto import http_types_pb2, meta_pb2
from destination.authority import InvalidAuthority, split_host_port
from destination.translate.endpoints import EncodeContext, MeshSettings, owner_label, weighted_addr
from discovery.models import Address, IpFamily, ServiceRef
from discovery.profile_topics import EndpointProfileState
from discovery.service_profiles import (
    DstOverrideSpec,
    RequestMatchSpec,
    ResponseMatchSpec,
    RetryBudgetSpec,
    RouteSpec,
    ServiceProfileInfo,
)

__all__ = [
    "DEFAULT_RETRY_BUDGET",
    "endpoint_addr",
    "endpoint_profile",
    "method_match",
    "service_profile",
]

_NS_PER_S = 1_000_000_000
DEFAULT_RETRY_BUDGET = RetryBudgetSpec(
    retry_ratio=0.2, min_retries_per_second=10, ttl_ns=10 * _NS_PER_S
)
_REGISTERED_METHODS: dict[str, http_types_pb2.HttpMethod.Registered] = {
    name: getattr(http_types_pb2.HttpMethod, name)
    for name in http_types_pb2.HttpMethod.Registered.keys()  # noqa: SIM118 (an enum wrapper)
}


def _duration(ns: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ns // _NS_PER_S, nanos=ns % _NS_PER_S)


def _retry_budget(spec: RetryBudgetSpec) -> pb.RetryBudget:
    budget = pb.RetryBudget(
        retry_ratio=spec.retry_ratio, min_retries_per_second=spec.min_retries_per_second
    )
    if spec.ttl_ns:
        budget.ttl.CopyFrom(_duration(spec.ttl_ns))
    return budget


def method_match(method: str) -> http_types_pb2.HttpMethod:
    """A method name as the proxy matches it: upper-cased, registered when it is one."""
    upper = method.upper()
    registered = _REGISTERED_METHODS.get(upper)
    if registered is not None:
        return http_types_pb2.HttpMethod(registered=registered)
    return http_types_pb2.HttpMethod(unregistered=upper)


def _request_match(spec: RequestMatchSpec) -> pb.RequestMatch:
    """The reference's fixed order: all, any, method, not, path; one is used as it is."""
    parts: list[pb.RequestMatch] = []
    if spec.all is not None:
        parts.append(
            pb.RequestMatch(all=pb.RequestMatch.Seq(matches=[_request_match(m) for m in spec.all]))
        )
    if spec.any is not None:
        parts.append(
            pb.RequestMatch(any=pb.RequestMatch.Seq(matches=[_request_match(m) for m in spec.any]))
        )
    if spec.method is not None:
        parts.append(pb.RequestMatch(method=method_match(spec.method)))
    if spec.not_ is not None:
        negated = pb.RequestMatch()
        getattr(negated, "not").CopyFrom(_request_match(spec.not_))  # `not` is a keyword
        parts.append(negated)
    if spec.path_regex is not None:
        parts.append(pb.RequestMatch(path=pb.PathMatch(regex=spec.path_regex)))
    if len(parts) == 1:
        return parts[0]
    return pb.RequestMatch(all=pb.RequestMatch.Seq(matches=parts))


def _response_match(spec: ResponseMatchSpec) -> pb.ResponseMatch:
    """Fixed order: all, any, status, not."""
    parts: list[pb.ResponseMatch] = []
    if spec.all is not None:
        parts.append(
            pb.ResponseMatch(
                all=pb.ResponseMatch.Seq(matches=[_response_match(m) for m in spec.all])
            )
        )
    if spec.any is not None:
        parts.append(
            pb.ResponseMatch(
                any=pb.ResponseMatch.Seq(matches=[_response_match(m) for m in spec.any])
            )
        )
    if spec.status is not None:
        parts.append(
            pb.ResponseMatch(status=pb.HttpStatusRange(min=spec.status.min, max=spec.status.max))
        )
    if spec.not_ is not None:
        negated_response = pb.ResponseMatch()
        getattr(negated_response, "not").CopyFrom(_response_match(spec.not_))
        parts.append(negated_response)
    if len(parts) == 1:
        return parts[0]
    return pb.ResponseMatch(all=pb.ResponseMatch.Seq(matches=parts))


def _route(spec: RouteSpec) -> pb.Route:
    route = pb.Route(
        condition=_request_match(spec.condition),
        response_classes=[
            pb.ResponseClass(condition=_response_match(c.condition), is_failure=c.is_failure)
            for c in spec.response_classes
        ],
        metrics_labels={"route": spec.name},
        is_retryable=spec.is_retryable,
    )
    if spec.timeout_ns:
        route.timeout.CopyFrom(_duration(spec.timeout_ns))
    return route


def _authority_with_port(authority: str, port: int) -> str:
    """An override's authority, with the requested port when it names none."""
    try:
        split_host_port(authority)
    except InvalidAuthority:
        return f"{authority}:{port}"
    return authority


def _dst_override(spec: DstOverrideSpec, port: int) -> pb.WeightedDst:
    return pb.WeightedDst(authority=_authority_with_port(spec.authority, port), weight=spec.weight)


def service_profile(
    profile: ServiceProfileInfo | None,
    *,
    fqn: str,
    service: ServiceRef,
    port: int,
    opaque: bool,
) -> pb.DestinationProfile:
    """The message of the service-profile flow; `profile` None is the default profile.

    `profile` must not carry a `problem` (callers keep the last good message instead).
    """
    if profile is not None and profile.problem is not None:
        raise ValueError(f"profile {profile.ref} is not usable: {profile.problem}")
    message = pb.DestinationProfile(
        fully_qualified_name=fqn,
        opaque_protocol=opaque,
        retry_budget=_retry_budget(
            profile.retry_budget
            if profile is not None and profile.retry_budget is not None
            else DEFAULT_RETRY_BUDGET
        ),
        parent_ref=meta_pb2.Metadata(
            resource=meta_pb2.Resource(
                group="core",
                kind="Service",
                name=service.name,
                namespace=service.namespace,
                port=port,
            )
        ),
    )
    if profile is None:
        message.profile_ref.resource.group = "linkerd.io"
        return message
    message.profile_ref.CopyFrom(
        meta_pb2.Metadata(
            resource=meta_pb2.Resource(
                group="linkerd.io",
                kind="ServiceProfile",
                name=profile.ref.name,
                namespace=profile.ref.namespace,
            )
        )
    )
    message.routes.extend(_route(route) for route in profile.routes)
    message.dst_overrides.extend(_dst_override(dst, port) for dst in profile.dst_overrides)
    return message


def endpoint_profile(endpoint: pb.WeightedAddr | None, *, opaque: bool) -> pb.DestinationProfile:
    """The message of the endpoint-profile flow (§6.5): an endpoint, no routes, no names."""
    message = pb.DestinationProfile(
        opaque_protocol=opaque, retry_budget=_retry_budget(DEFAULT_RETRY_BUDGET)
    )
    if endpoint is not None:
        message.endpoint.CopyFrom(endpoint)
    return message


def endpoint_addr(state: EndpointProfileState, mesh: MeshSettings) -> pb.WeightedAddr | None:
    """The `endpoint` of an endpoint profile: a Get address with §6.5's differences.

    No `zone_locality`, a pod's zone is "", the workload's namespace is a label,
    and an ExternalWorkload's owner label keeps the owner's kind as written (the
    reference does so here, unlike Get). None when the pod cannot be addressed
    safely (a meshed pod without proxy ports): nothing is sent then.
    """
    address = Address(
        ip=state.ip,
        port=state.port,
        family=IpFamily.V6 if ":" in state.ip else IpFamily.V4,
        hostname=None,
        zone=None,
        zone_hints=None,
        node_name=None,
        pod=state.pod,
        owner=state.owner,
        opaque=state.opaque,
        external_workload=state.workload,
    )
    context = EncodeContext(
        mesh=mesh, requested_port=state.port, subscriber_zone="", trust_domain=mesh.trust_domain
    )
    message = weighted_addr(address, context)
    if message is None:
        return None
    labels = message.metric_labels
    labels.pop("zone_locality", None)
    owner_of = state.pod or state.workload
    if owner_of is not None:
        labels["namespace"] = owner_of.ref.namespace
    if state.workload is not None and state.owner is not None and state.owner.kind:
        labels.pop(owner_label(state.owner.kind), None)
        labels[state.owner.kind] = state.owner.name
    return message
