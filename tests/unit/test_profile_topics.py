"""Profile topics (discovery.profile_topics): what GetProfile streams are told, and when.

Scope: the service-profile topic (§6.3.2: primary and backup ServiceProfiles
switching live, the default profile, a broken profile keeping the last good
one, the Service's opaque ports, §6.4) and the endpoint-profile topic (§6.5:
a running pod at the address, a pending or deleted one, host ports, an
ExternalWorkload, Server opacity on and off, the pod's owner). Records come
from the real projections; events go through the index and `note`/`refresh`
exactly as the cluster cache sends them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.index import ClusterIndex
from discovery.models import ExternalWorkloadInfo, Kind, ObjectRef, OwnerRef, PodInfo, ServiceRef
from discovery.ports import PortSet
from discovery.profile_topics import (
    EndpointProfileKey,
    EndpointProfileState,
    ProfileTopics,
    ServiceProfileKey,
    ServiceProfileState,
)
from discovery.project import project_server
from discovery.reflector import Deleted, Listed, ReflectorEvent, Upserted
from discovery.service_profiles import ServiceProfileInfo, project_service_profile
from tests.unit import builders as b

FQN = "web.ns.svc.cluster.local"
DEFAULTS = PortSet.parse("25,3306")[0]


class World:
    def __init__(self) -> None:
        self.index = ClusterIndex()
        self.topics = ProfileTopics(self.index, default_opaque_ports=DEFAULTS)

    def apply(self, event: ReflectorEvent) -> int:
        self.topics.note(event)
        if isinstance(event, Deleted):
            self.index.delete(event.kind, event.ref)
        elif isinstance(event, Upserted):
            self.index.upsert(event.record)
        self.topics.note(event)
        return self.topics.refresh()

    def upsert(self, kind: Kind, record: Any) -> int:
        return self.apply(Upserted(kind, record))

    def delete(self, kind: Kind, namespace: str, name: str) -> int:
        return self.apply(Deleted(kind, ObjectRef(namespace, name)))


class Recorder:
    def __init__(self) -> None:
        self.states: list[Any] = []

    def on_change(self, state: Any) -> None:
        self.states.append(state)


def profile(namespace: str, spec: dict[str, Any] | None = None) -> ServiceProfileInfo:
    info = project_service_profile(
        {"metadata": {"name": FQN, "namespace": namespace}, "spec": spec or {}}
    )
    assert info is not None
    return info


def route(name: str) -> dict[str, Any]:
    return {"routes": [{"name": name, "condition": {"method": "GET"}}]}


def service_world(
    annotations: dict[str, str] | None = None,
) -> tuple[World, Recorder, ServiceProfileState]:
    world = World()
    world.upsert(
        Kind.SERVICE,
        b.projected(b.service(ports=(("http", 80), ("db", 3306)), annotations=annotations)),
    )
    recorder = Recorder()
    key = ServiceProfileKey(ServiceRef("ns", "web"), 80, FQN, "client")
    subscription = world.topics.subscribe_service(key, recorder)
    return world, recorder, subscription.initial


def test_no_profile_is_the_default_profile() -> None:
    _, recorder, initial = service_world()
    assert initial.profile is None and not initial.opaque
    assert recorder.states == []


def test_primary_and_backup_switch_live() -> None:
    world, recorder, _ = service_world()
    backup = profile("ns", route("backup"))
    world.upsert(Kind.SERVICE_PROFILE, backup)
    assert [s.profile for s in recorder.states] == [backup]

    primary = profile("client", route("primary"))
    world.upsert(Kind.SERVICE_PROFILE, primary)
    assert recorder.states[-1].profile == primary

    changed_backup = profile("ns", route("backup-2"))
    assert world.upsert(Kind.SERVICE_PROFILE, changed_backup) == 0  # the primary still wins
    assert recorder.states[-1].profile == primary

    world.delete(Kind.SERVICE_PROFILE, "client", FQN)
    assert recorder.states[-1].profile == changed_backup
    world.delete(Kind.SERVICE_PROFILE, "ns", FQN)
    assert recorder.states[-1].profile is None
    assert len(recorder.states) == 4


def test_a_broken_profile_keeps_the_last_good_one() -> None:
    world, recorder, _ = service_world()
    good = profile("ns", route("good"))
    world.upsert(Kind.SERVICE_PROFILE, good)
    broken = profile("ns", {"routes": [{"name": "bad", "condition": {}}]})
    assert broken.problem is not None
    assert world.upsert(Kind.SERVICE_PROFILE, broken) == 0
    assert recorder.states == [ServiceProfileState(profile=good, opaque=False)]
    fixed = profile("ns", route("fixed"))
    world.upsert(Kind.SERVICE_PROFILE, fixed)
    assert recorder.states[-1].profile == fixed


def test_a_new_topic_on_a_broken_profile_starts_with_the_default() -> None:
    world = World()
    world.upsert(Kind.SERVICE, b.projected(b.service()))
    world.upsert(Kind.SERVICE_PROFILE, profile("ns", {"retryBudget": {"ttl": "forever"}}))
    key = ServiceProfileKey(ServiceRef("ns", "web"), 80, FQN, "")
    assert world.topics.subscribe_service(key, Recorder()).initial.profile is None


def test_a_new_topic_on_a_broken_update_gets_the_last_good_version() -> None:
    """What a stream gets must not depend on whether another stream held the topic."""
    world = World()
    world.upsert(Kind.SERVICE, b.projected(b.service()))
    good = profile("ns", route("good"))
    world.upsert(Kind.SERVICE_PROFILE, good)
    world.upsert(Kind.SERVICE_PROFILE, profile("ns", {"retryBudget": {"ttl": "forever"}}))
    world.upsert(Kind.SERVICE_PROFILE, profile("ns", {"routes": [{"name": "x", "condition": {}}]}))
    key = ServiceProfileKey(ServiceRef("ns", "web"), 80, FQN, "")
    assert world.topics.subscribe_service(key, Recorder()).initial.profile is good


def test_a_relisted_broken_version_keeps_the_last_good_one() -> None:
    world, recorder, _ = service_world()
    good = profile("ns", route("good"))
    world.upsert(Kind.SERVICE_PROFILE, good)
    broken = profile("ns", {"routes": [{"name": "bad", "condition": {}}]})
    world.upsert(Kind.SERVICE_PROFILE, broken)
    world.topics.note(Listed(Kind.SERVICE_PROFILE, (broken,)))
    world.index.replace(Kind.SERVICE_PROFILE, (broken,))
    assert world.topics.refresh() == 0
    assert [s.profile for s in recorder.states] == [good]


def test_a_broken_profile_recreated_counts_as_absent() -> None:
    world, recorder, _ = service_world()
    backup = profile("ns", route("backup"))
    world.upsert(Kind.SERVICE_PROFILE, backup)
    world.upsert(Kind.SERVICE_PROFILE, profile("client", route("primary")))
    broken = {"routes": [{"name": "bad", "condition": {}}]}
    world.upsert(Kind.SERVICE_PROFILE, profile("client", broken))
    assert recorder.states[-1].profile is not None
    assert recorder.states[-1].profile.ref.namespace == "client", "the primary's last good"
    world.delete(Kind.SERVICE_PROFILE, "client", FQN)
    world.upsert(Kind.SERVICE_PROFILE, profile("client", broken))  # never valid: absent
    assert recorder.states[-1].profile is backup


def test_a_never_valid_primary_leaves_the_backup_in_force_for_every_stream() -> None:
    world, recorder, _ = service_world()
    backup = profile("ns", route("backup"))
    world.upsert(Kind.SERVICE_PROFILE, backup)
    world.upsert(Kind.SERVICE_PROFILE, profile("client", {"retryBudget": {"ttl": "soon"}}))
    assert [s.profile for s in recorder.states] == [backup]
    new_topic = ServiceProfileKey(ServiceRef("ns", "web"), 3306, FQN, "client")
    assert world.topics.subscribe_service(new_topic, Recorder()).initial.profile is backup


def test_profiles_of_other_services_and_namespaces_are_ignored() -> None:
    world, recorder, _ = service_world()
    other = project_service_profile(
        {"metadata": {"name": "api.ns.svc.cluster.local", "namespace": "ns"}, "spec": {}}
    )
    assert world.upsert(Kind.SERVICE_PROFILE, other) == 0
    assert world.upsert(Kind.SERVICE_PROFILE, profile("elsewhere")) == 0
    assert recorder.states == []


def test_opaque_ports_follow_the_service_annotation() -> None:
    world, recorder, initial = service_world({"config.linkerd.io/opaque-ports": "http"})
    assert initial.opaque  # a service port name resolves
    service = b.service(ports=(("http", 80),), annotations={"config.linkerd.io/opaque-ports": ""})
    world.upsert(Kind.SERVICE, b.projected(service))
    assert [s.opaque for s in recorder.states] == [False]
    world.upsert(Kind.SERVICE, b.projected(b.service(ports=(("http", 80),))))
    assert [s.opaque for s in recorder.states] == [False]  # defaults: 80 is not among them
    world.upsert(
        Kind.SERVICE,
        b.projected(b.service(annotations={"config.linkerd.io/opaque-ports": "70-90"})),
    )
    assert [s.opaque for s in recorder.states] == [False, True]
    world.delete(Kind.SERVICE, "ns", "web")
    assert [s.opaque for s in recorder.states] == [False, True, False]


# -- endpoint profiles -------------------------------------------------------------


def pod_record(**kwargs: Any) -> PodInfo:
    host_ips = kwargs.pop("host_ips", ())
    host_network = kwargs.pop("host_network", False)
    record = b.projected(b.pod(**kwargs))
    assert isinstance(record, PodInfo)
    return dataclasses.replace(record, host_ips=tuple(host_ips), host_network=host_network)


def endpoint_world(ip: str = "10.0.0.1", port: int = 8080) -> tuple[World, Recorder, Any]:
    world = World()
    recorder = Recorder()
    subscription = world.topics.subscribe_endpoint(EndpointProfileKey(ip, port), recorder)
    return world, recorder, subscription


def test_an_unknown_address_is_a_bare_endpoint() -> None:
    _, _, subscription = endpoint_world(port=3306)
    assert subscription.initial == EndpointProfileState(
        ip="10.0.0.1", port=3306, pod=None, owner=None, workload=None, opaque=True
    )


def test_the_pod_at_an_address_follows_its_phase_and_deletion() -> None:
    world, recorder, _ = endpoint_world()
    world.upsert(Kind.POD, pod_record(phase="Pending"))
    assert recorder.states == []  # a pending pod is not included: still bare
    running = pod_record(phase="Running", owner=("ReplicaSet", "web-5d8f"))
    world.upsert(Kind.POD, running)
    assert recorder.states[-1].pod == running
    assert recorder.states[-1].owner == OwnerRef("ReplicaSet", "web-5d8f")
    world.upsert(Kind.POD, pod_record(phase="Succeeded"))
    assert recorder.states[-1].pod is None
    world.upsert(Kind.POD, running)
    world.delete(Kind.POD, "ns", "web-1")
    assert recorder.states[-1].pod is None and len(recorder.states) == 4


def test_a_pod_moving_to_another_address_leaves_this_one() -> None:
    world, recorder, _ = endpoint_world()
    world.upsert(Kind.POD, pod_record(ip="10.0.0.1"))
    world.upsert(Kind.POD, pod_record(ip="10.0.0.2"))
    assert [s.pod is not None for s in recorder.states] == [True, False]


def test_the_owner_follows_the_replica_set() -> None:
    world, recorder, _ = endpoint_world()
    world.upsert(Kind.POD, pod_record(owner=("ReplicaSet", "web-5d8f")))
    world.upsert(
        Kind.REPLICA_SET,
        b.projected(b.replica_set(owner=("Deployment", "web")), Kind.REPLICA_SET),
    )
    assert recorder.states[-1].owner == OwnerRef("Deployment", "web")


def test_host_network_pods_are_found_by_host_port_only() -> None:
    world, recorder, _ = endpoint_world("192.168.1.5", 9100)
    host = pod_record(
        ip="192.168.1.5",
        host_ips=("192.168.1.5",),
        host_network=True,
        app_ports=(("metrics", 9100),),
    )
    assert not any(p.host_port for p in host.container_ports)
    world.upsert(Kind.POD, host)
    assert recorder.states == []  # host network and no host port: nothing is found
    exposing = dataclasses.replace(
        host,
        container_ports=tuple(
            dataclasses.replace(p, host_port=p.container_port) for p in host.container_ports
        ),
    )
    world.upsert(Kind.POD, exposing)
    assert recorder.states[-1].pod == exposing


def test_an_external_workload_at_the_address() -> None:
    world, recorder, _ = endpoint_world("10.0.9.1", 8080)
    record = b.projected(b.external_workload(owner=("WorkloadGroup", "vms")))
    assert isinstance(record, ExternalWorkloadInfo)
    workload = dataclasses.replace(record, ips=("10.0.9.1",))
    world.upsert(Kind.EXTERNAL_WORKLOAD, workload)
    assert recorder.states[-1].workload == workload
    assert recorder.states[-1].owner == OwnerRef("WorkloadGroup", "vms")
    world.delete(Kind.EXTERNAL_WORKLOAD, "ns", "vm-1")
    assert recorder.states[-1].workload is None


def test_server_opacity_turns_on_and_off() -> None:
    world, recorder, _ = endpoint_world()
    world.upsert(Kind.POD, pod_record(labels={"app": "web"}, meshed=True))
    server = project_server(
        {
            "metadata": {"name": "web-opaque", "namespace": "ns"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "port": 8080,
                "proxyProtocol": "opaque",
            },
        }
    )
    world.upsert(Kind.SERVER, server)
    assert recorder.states[-1].opaque
    world.delete(Kind.SERVER, "ns", "web-opaque")
    assert not recorder.states[-1].opaque  # the reference can only turn it on


def test_unsubscribing_forgets_the_topic() -> None:
    world, recorder, subscription = endpoint_world()
    assert len(world.topics) == 1
    subscription.close()
    subscription.close()
    assert len(world.topics) == 0
    assert world.upsert(Kind.POD, pod_record()) == 0
    assert recorder.states == []


def test_a_failing_sink_does_not_hold_up_the_other_topics() -> None:
    class Failing:
        def on_change(self, state: Any) -> None:
            raise RuntimeError("a bug downstream")

    world = World()
    world.upsert(Kind.SERVICE, b.projected(b.service()))
    world.upsert(Kind.SERVICE, b.projected(b.service(name="api")))
    world.topics.subscribe_service(
        ServiceProfileKey(ServiceRef("ns", "web"), 80, FQN, ""), Failing()
    )
    recorder = Recorder()
    api_key = ServiceProfileKey(ServiceRef("ns", "api"), 80, "api.ns.svc.cluster.local", "")
    world.topics.subscribe_service(api_key, recorder)
    annotated = {"config.linkerd.io/opaque-ports": "80"}
    for name in ("web", "api"):
        event = Upserted(Kind.SERVICE, b.projected(b.service(name=name, annotations=annotated)))
        world.topics.note(event)
        world.index.upsert(event.record)
        world.topics.note(event)
    assert world.topics.refresh() == 1
    assert [s.opaque for s in recorder.states] == [True]


PROFILE_VERSIONS = st.lists(
    st.sampled_from(["good-1", "good-2", "broken-1", "broken-2", "delete"]), max_size=12
)


@settings(max_examples=200)
@given(PROFILE_VERSIONS, st.integers(min_value=0, max_value=12))
def test_every_stream_gets_the_last_valid_version_since_the_object_appeared(
    versions: list[str], join_at: int
) -> None:
    """Model: the served profile is the object's last valid version since it was last
    created, or the default; it does not depend on when a topic was subscribed."""
    world = World()
    world.upsert(Kind.SERVICE, b.projected(b.service()))

    def subscribe(port: int) -> Any:
        recorder = Recorder()
        key = ServiceProfileKey(ServiceRef("ns", "web"), port, FQN, "")
        initial = world.topics.subscribe_service(key, recorder).initial
        return lambda: recorder.states[-1] if recorder.states else initial

    topics = [subscribe(80)]
    expected: list[str] | None = None  # the route names of the version in force
    for step, version in enumerate(versions):
        if step == join_at:
            topics.append(subscribe(81))
        if version == "delete":
            world.delete(Kind.SERVICE_PROFILE, "ns", FQN)
            expected = None
        elif version.startswith("good"):
            world.upsert(Kind.SERVICE_PROFILE, profile("ns", route(version)))
            expected = [version]
        else:
            bad = {"routes": [{"name": version, "condition": {}}]}
            world.upsert(Kind.SERVICE_PROFILE, profile("ns", bad))
    topics.append(subscribe(82))
    for current in topics:
        state = current()
        served = None if state.profile is None else [r.name for r in state.profile.routes]
        assert served == expected


def test_a_draining_pod_stays_on_its_open_topic_but_is_not_found_anew() -> None:
    world, recorder, _ = endpoint_world()
    running = pod_record()
    world.upsert(Kind.POD, running)
    draining = pod_record(deletion_timestamp="2026-12-07T00:00:00Z")
    assert draining.terminating and draining.phase == "Running"
    world.upsert(Kind.POD, draining)
    assert recorder.states[-1].pod == running  # still served while it drains
    fresh = world.topics.subscribe_endpoint(EndpointProfileKey("10.0.0.1", 9090), Recorder())
    assert fresh.initial.pod is None  # a new lookup skips terminating pods (§2.1)
    world.upsert(Kind.POD, pod_record(deletion_timestamp="2026-12-07T00:00:00Z", phase="Failed"))
    assert recorder.states[-1].pod is None  # stopped running: gone from the topic
