"""The profile scenario's logic: its ServiceProfiles, the tags streams keep, steps, latencies.

The ServiceProfile bodies go through the server's own projection and
translation (no cluster), so a body the server would reject, or a tag that
does not read what the server sends, fails here rather than in a long run.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import cast

import pytest

from bench.profile_stream import (
    DEFAULT,
    ProfileReport,
    ProfileStatus,
    ProfileStream,
    ProfileTag,
    profile_status,
    profile_tag,
)
from bench.profiles import (
    INITIAL_TAG,
    OPAQUE_PORTS,
    SERVICE_PORT,
    profile_assignments,
    profile_body,
    profile_histogram,
    profile_name,
    profile_steps,
    step_latencies,
    wait_profiles,
)
from bench.promstats import parse
from bench.run import Clients
from destination._proto import destination_pb2 as pb
from destination.config import DEFAULT_OPAQUE_PORTS
from destination.translate.profiles import service_profile
from discovery.models import ServiceInfo, ServiceRef
from discovery.ports import PortSet
from discovery.profile_topics import service_opaque_ports
from discovery.project import project_service
from discovery.service_profiles import ServiceProfileInfo, project_service_profile

SERVICE = ServiceRef("bench", "svc-007")


def projected(version: int) -> ServiceProfileInfo:
    info = project_service_profile(profile_body("svc-007", version))
    assert info is not None
    assert info.problem is None, info.problem
    return info


def message(info: ServiceProfileInfo | None, *, opaque: bool = False) -> pb.DestinationProfile:
    return service_profile(
        info, fqn=profile_name("svc-007"), service=SERVICE, port=SERVICE_PORT, opaque=opaque
    )


@pytest.mark.parametrize("version", [1, 2, 9, 10, 11])
def test_every_version_projects_and_reads_back_as_itself(version: int) -> None:
    assert profile_tag(message(projected(version))) == ProfileTag(f"v{version}", False)


def test_the_default_profile_and_opacity() -> None:
    assert profile_tag(message(None)) == ProfileTag(DEFAULT, False)
    assert profile_tag(message(projected(3), opaque=True)) == ProfileTag("v3", True)
    assert str(ProfileTag("v3", True)) == "v3+opaque"


def test_a_route_and_budget_of_different_versions_is_flagged() -> None:
    mixed = message(projected(4))
    mixed.retry_budget.min_retries_per_second = 5
    assert profile_tag(mixed).version == "mismatch:v4"


def test_a_profile_without_the_bench_route_is_unmarked() -> None:
    info = project_service_profile(
        {"metadata": {"name": profile_name("svc-007"), "namespace": "bench"}, "spec": {}}
    )
    assert profile_tag(message(info)).version == "unmarked"


def test_the_profile_is_named_for_the_service_lookup() -> None:
    assert profile_name("svc-007") == "svc-007.bench.svc.cluster.local"
    body = profile_body("svc-007", 1)
    assert body["metadata"] == {"name": "svc-007.bench.svc.cluster.local", "namespace": "bench"}
    assert body["apiVersion"] == "linkerd.io/v1alpha2"


def test_the_opaque_annotation_makes_the_service_port_opaque() -> None:
    defaults = PortSet.parse(DEFAULT_OPAQUE_PORTS)[0]

    def service(annotations: dict[str, str]) -> ServiceInfo:
        raw = {
            "metadata": {"name": "svc-007", "namespace": "bench", "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": SERVICE_PORT}], "clusterIP": "10.0.0.7"},
        }
        info = project_service(raw)
        assert isinstance(info, ServiceInfo)
        return info

    assert SERVICE_PORT in service_opaque_ports(service({OPAQUE_PORTS: "80"}), defaults)
    assert SERVICE_PORT not in service_opaque_ports(service({}), defaults)


def test_steps_cycle_through_five_changes_with_fresh_versions() -> None:
    steps = profile_steps(2)
    assert [s.kind for s in steps] == ["create", "update", "opaque-on", "opaque-off", "delete"] * 2
    written = [s.version for s in steps if s.kind in ("create", "update")]
    assert written == [1, 2, 3, 4]
    assert [str(s.expect) for s in steps[:5]] == ["v1", "v2", "v2+opaque", "v2", DEFAULT]
    assert steps[4].expect == INITIAL_TAG
    # Each step's tag differs from the one before it, so every step is a change to see.
    tags = [INITIAL_TAG, *(s.expect for s in steps)]
    assert all(a != b for a, b in itertools.pairwise(tags))
    assert len({s.label for s in steps}) == len(steps)


def test_a_stream_dates_its_tag_by_the_message_that_changed_it() -> None:
    stream = ProfileStream(1, "svc-007")
    assert not stream.at(INITIAL_TAG)
    stream.apply(message(None), 10.0)
    stream.apply(message(None), 11.0)  # the same profile again: not a change
    assert (stream.tag, stream.t_tag, stream.messages) == (INITIAL_TAG, 10.0, 2)
    stream.apply(message(projected(1)), 12.0)
    assert stream.at(ProfileTag("v1", False)) and stream.t_tag == 12.0
    stream.ended("UNAVAILABLE: gone")
    assert stream.ends == 1 and stream.last_error == "UNAVAILABLE: gone"
    status = profile_status(
        [stream, ProfileStream(2, "svc-008")], {"svc-007": ProfileTag("v1", False)}
    )
    assert (status.streams, status.connected, status.at_target, status.messages) == (2, 1, 1, 3)
    assert status.last_change == 12.0


def report(service: str, tag: ProfileTag | None, t_tag: float | None) -> ProfileReport:
    return ProfileReport(1, service, tag is not None, tag, t_tag, 1, 0, None)


def test_step_latencies_count_only_this_steps_message() -> None:
    expect = ProfileTag("v2", False)
    reports = [
        report("a", expect, 100.25),
        report("b", expect, 100.5),
        report("a", ProfileTag("v1", False), 99.0),  # still the old version
        report("b", expect, 99.0),  # the right tag, but from before the write
        report("a", None, None),
    ]
    latencies, wrong = step_latencies(reports, expect, {"a": 100.0, "b": 100.0})
    assert latencies == [0.25, 0.5]
    assert wrong == Counter({"v1": 1, "v2 (from before the write)": 1, "not connected": 1})


def test_assignments_pair_a_get_and_a_profile_stream_per_client() -> None:
    out = profile_assignments(["svc-000", "svc-001"], 3, nodes=2)
    assert len(out) == 12
    assert len({a.stream_id for a in out}) == 12
    by_kind = Counter(a.rpc for a in out)
    assert by_kind == Counter({"Get": 6, "GetProfile": 6})
    for get, profile in zip(out[::2], out[1::2], strict=True):
        assert (get.rpc, profile.rpc) == ("Get", "GetProfile")
        assert (get.service, get.path, get.context_token, get.slot) == (
            profile.service,
            profile.path,
            profile.context_token,
            profile.slot,
        )
    assert out[0].path == "svc-000.bench.svc.cluster.local:80"


def test_a_profile_specific_histogram_is_preferred_when_the_server_has_one() -> None:
    plain = parse(
        "# TYPE event_to_enqueue_seconds histogram\n"
        'event_to_enqueue_seconds_bucket{cluster="east",le="+Inf"} 1\n'
        'event_to_enqueue_seconds_count{cluster="east"} 1\n'
        'event_to_enqueue_seconds_sum{cluster="east"} 0.1\n'
    )
    assert profile_histogram(plain) == "event_to_enqueue_seconds"
    both = parse(
        "# TYPE profile_event_to_enqueue_seconds histogram\n"
        'profile_event_to_enqueue_seconds_bucket{cluster="east",le="+Inf"} 1\n'
        'profile_event_to_enqueue_seconds_count{cluster="east"} 1\n'
        'profile_event_to_enqueue_seconds_sum{cluster="east"} 0.1\n'
    )
    assert profile_histogram(both) == "profile_event_to_enqueue_seconds"


class Answers:
    """Stands in for the client processes: profile_status answers from a list, last one kept."""

    def __init__(self, *answers: ProfileStatus) -> None:
        self.answers = list(answers)

    async def profile_status(self, targets: dict[str, ProfileTag]) -> ProfileStatus:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def status(connected: int, at: int, ends: int, last: float = 0.0) -> ProfileStatus:
    return ProfileStatus(
        streams=4,
        connected=connected,
        at_target=at,
        ends=ends,
        messages=connected,
        last_change=last,
    )


async def test_a_server_refusing_every_stream_ends_the_wait_at_once() -> None:
    refused = cast(Clients, Answers(status(0, 0, 1), status(0, 0, 4)))
    started = time.monotonic()
    got = await wait_profiles(refused, {}, timeout_s=30, require_quiet=False, refused_is_final=True)
    assert got == (0, 4, "refused")
    assert time.monotonic() - started < 5


async def test_streams_at_their_tag_converge() -> None:
    ready = cast(Clients, Answers(status(4, 2, 0), status(4, 4, 0)))
    assert await wait_profiles(ready, {}, timeout_s=30, require_quiet=False) == (4, 4, "converged")
