"""The mirror's writes to the local API server, as `mirror_writes_total` counts them.

Scope: `mirror.writer.Writer` over an in-memory transport answering with
scripted responses. Requests that change objects are counted by Link, kind
and verb; reads (`Writer.read`, the fresh GET of a federated Service's
read-modify-write) are not, so that "this replica writes nothing" can be
checked from the metric; a refused write is an outcome, not an exception.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from mirror.metrics import MirrorMetrics
from mirror.writer import Writer
from tests.unit.scripted_api import ScriptedResponse, reply, status_body


class Transport:
    """Answers every request with the next scripted response; records (method, path)."""

    def __init__(self, *responses: ScriptedResponse) -> None:
        self.responses = list(responses)
        self.requests: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, **_: Any) -> ScriptedResponse:
        self.requests.append((method, path))
        return self.responses.pop(0)


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


SERVICE = {"kind": "Service", "metadata": {"name": "web-federated", "namespace": "ns"}}


async def test_reads_are_not_counted_as_writes() -> None:
    """Regression: the GET of every federated read-modify-write counted as a write, so a
    replica that changed nothing showed writes."""
    registry = CollectorRegistry()
    transport = Transport(reply(200, SERVICE), reply(201, SERVICE))
    writer = Writer(transport, MirrorMetrics(registry))  # type: ignore[arg-type]
    read = await writer.read("west", "Service", "ns", "web-federated")
    assert read.ok and read.body == SERVICE
    assert count(registry, "mirror_writes_total", link="west", kind="Service", verb="get") == 0
    created = await writer.create("west", SERVICE)
    assert created.ok
    assert count(registry, "mirror_writes_total", link="west", kind="Service", verb="create") == 1
    assert transport.requests == [
        ("GET", "/api/v1/namespaces/ns/services/web-federated"),
        ("POST", "/api/v1/namespaces/ns/services"),
    ]


async def test_a_refused_write_is_an_outcome_counted_as_a_failure() -> None:
    registry = CollectorRegistry()
    body = status_body(422, "Invalid", "metadata.name: Invalid value")
    transport = Transport(reply(422, body), reply(409, status_body(409, "Conflict", "changed")))
    writer = Writer(transport, MirrorMetrics(registry))  # type: ignore[arg-type]
    refused = await writer.create("west", SERVICE)
    assert not refused.ok and "Invalid value" in (refused.error or "")
    conflict = await writer.replace("west", SERVICE)
    assert conflict.conflict
    failures = "mirror_write_failures_total"
    assert count(registry, failures, link="west", kind="Service", verb="create") == 1
    assert count(registry, failures, link="west", kind="Service", verb="update") == 0


async def test_a_refused_write_says_what_the_api_server_said_and_nothing_else() -> None:
    """Regression: the error reused the reader's hint for 403 ("the credentials lack
    list/watch permission"), so a Link's status blamed the target's credentials for a
    write the local API server refused (a namespace being deleted)."""
    message = 'services "web-west" is forbidden: namespace ns is being terminated'
    transport = Transport(reply(403, status_body(403, "Forbidden", message)))
    writer = Writer(transport, MirrorMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    refused = await writer.create("west", SERVICE)
    assert refused.error == f"create Service: HTTP 403: Forbidden: {message}"
