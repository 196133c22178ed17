"""Unit tests for ``destination profile`` (destination.cli.profile): what an operator reads.

Scope: the text and JSON renderings of real DestinationProfile messages (built
by the translation the server uses), escaping of hostile strings, and the
command's registration. The gRPC side is covered by the integration tests.
"""

from __future__ import annotations

import json

from destination._proto import destination_pb2 as pb
from destination.cli.command import build_parser
from destination.cli.profile import render, to_json
from destination.translate.profiles import endpoint_profile, service_profile
from discovery.models import ServiceRef
from discovery.service_profiles import project_service_profile

FQN = "web.shop.svc.cluster.local"


def profile_message() -> pb.DestinationProfile:
    info = project_service_profile(
        {
            "metadata": {"name": FQN, "namespace": "shop"},
            "spec": {
                "routes": [
                    {
                        "name": "GET /books",
                        "condition": {"all": [{"method": "GET"}, {"pathRegex": "/books"}]},
                        "timeout": "250ms",
                        "isRetryable": True,
                        "responseClasses": [
                            {"condition": {"status": {"min": 500, "max": 599}}, "isFailure": True}
                        ],
                    }
                ],
                "dstOverrides": [{"authority": "web-v2", "weight": "500m"}],
            },
        }
    )
    assert info is not None
    return service_profile(info, fqn=FQN, service=ServiceRef("shop", "web"), port=80, opaque=False)


def test_the_text_shows_routes_budget_split_and_sources() -> None:
    text = render(f"{FQN}:80", profile_message(), 1)
    assert text.splitlines() == [
        f"{FQN}:80  profile 1",
        f"name        {FQN}",
        "opaque      no",
        "retries     ratio 0.2, at least 10/s, over 10s",
        "parent      core/Service shop/web:80",
        f"profile     linkerd.io/ServiceProfile shop/{FQN}",
        "split       web-v2:80 weight 5000",
        "routes      1",
        "  GET /books: all(GET, path~/books)  [timeout 250ms, retryable]",
        "    status 500-599 -> failure",
    ]


def test_an_empty_profile_says_why() -> None:
    text = render("web.shop.svc.cluster.local:9999", pb.DestinationProfile(), 1)
    assert "empty: the Service does not declare this port" in text


def test_an_endpoint_profile_shows_the_endpoint() -> None:
    endpoint = pb.WeightedAddr(weight=10_000)
    endpoint.addr.ip.ipv4 = 0x0A000001
    endpoint.addr.port = 8080
    endpoint.metric_labels["pod"] = "web-1"
    text = render("10.0.0.1:8080", endpoint_profile(endpoint, opaque=True), 1)
    assert "endpoint    10.0.0.1:8080" in text
    assert "opaque      yes" in text


def test_hostile_route_names_are_escaped() -> None:
    message = profile_message()
    message.routes[0].metrics_labels["route"] = "evil\x1b[2Jname"
    text = render(f"{FQN}:80", message, 1)
    assert "\x1b" not in text
    assert "evil" in text


def test_json_uses_the_proto_field_names() -> None:
    document = to_json(profile_message())
    assert document["fully_qualified_name"] == FQN
    assert document["routes"][0]["metrics_labels"] == {"route": "GET /books"}
    assert document["dst_overrides"] == [{"authority": "web-v2:80", "weight": 5000}]
    json.dumps(document)  # serializable as it is


def test_the_command_is_registered() -> None:
    args = build_parser().parse_args(["profile", f"{FQN}:80", "--once", "--json"])
    assert args.authority == f"{FQN}:80" and args.once and args.json
