"""Unit tests for discovery.index: ClusterIndex writes and the services they affect.

Scope: for each kind of event (Service, EndpointSlice, Pod, Node, ReplicaSet,
Job; upsert, delete and relist), the set of services `ClusterIndex` reports
as affected, which is what decides which topics are refreshed; the reverse
maps behind it (a slice moving between services, a pod leaving a slice, a pod
changing owner); relists that drop objects missing from the list; and
`workload_owner` (ReplicaSet to Deployment, standalone ReplicaSet, Job to
CronJob, no owner). Records come from raw objects through discovery.project.
"""

from __future__ import annotations

from typing import Any

import pytest

from discovery.index import ClusterIndex
from discovery.models import Kind, ObjectRef, OwnerRef, PodInfo, ServiceRef
from tests.unit import builders as b

WEB = ServiceRef(b.NS, "web")
API = ServiceRef(b.NS, "api")


def upsert(index: ClusterIndex, raw: dict[str, Any], kind: Kind | None = None) -> set[ServiceRef]:
    return index.upsert(b.projected(raw, kind))


def slice_for(service: str, name: str, *pods: str) -> dict[str, Any]:
    """A slice of `service` whose endpoints point at `pods` (10.0.0.N for the N-th)."""
    return b.endpoint_slice(
        name,
        service=service,
        endpoints=[b.endpoint(f"10.0.0.{i + 1}", pod=p) for i, p in enumerate(pods)],
    )


@pytest.fixture
def index() -> ClusterIndex:
    return ClusterIndex()


# --------------------------------------------------------------------------
# Services and slices


def test_upserting_a_service_affects_that_service(index: ClusterIndex) -> None:
    assert upsert(index, b.service("web")) == {WEB}
    assert upsert(index, b.service("web", ports=[("grpc", 9090)])) == {WEB}
    assert index.services[WEB].ports[0].name == "grpc"


def test_deleting_a_service_affects_it_once(index: ClusterIndex) -> None:
    upsert(index, b.service("web"))
    assert index.delete(Kind.SERVICE, WEB) == {WEB}
    assert index.delete(Kind.SERVICE, WEB) == set()
    assert WEB not in index.services


def test_deleting_a_service_keeps_its_slices(index: ClusterIndex) -> None:
    upsert(index, b.service("web"))
    upsert(index, slice_for("web", "web-a", "web-1"))
    index.delete(Kind.SERVICE, WEB)
    assert [s.ref.name for s in index.slices_of(WEB)] == ["web-a"]


def test_upserting_a_slice_affects_its_service(index: ClusterIndex) -> None:
    assert upsert(index, slice_for("web", "web-a", "web-1")) == {WEB}
    assert [s.ref.name for s in index.slices_of(WEB)] == ["web-a"]


def test_deleting_a_slice_affects_its_service_once(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    assert index.delete(Kind.ENDPOINT_SLICE, ObjectRef(b.NS, "web-a")) == {WEB}
    assert index.delete(Kind.ENDPOINT_SLICE, ObjectRef(b.NS, "web-a")) == set()
    assert index.slices_of(WEB) == []
    assert WEB not in index.slices_by_service


def test_a_slice_moved_to_another_service_affects_both(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "shared", "web-1"))
    assert upsert(index, slice_for("api", "shared", "web-1")) == {WEB, API}
    assert index.slices_of(WEB) == []
    assert [s.ref.name for s in index.slices_of(API)] == ["shared"]


def test_after_a_slice_moves_its_pods_affect_only_the_new_service(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "shared", "web-1"))
    upsert(index, slice_for("api", "shared", "web-1"))
    assert upsert(index, b.pod("web-1")) == {API}


def test_slices_of_a_service_are_all_listed(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    upsert(index, slice_for("web", "web-b", "web-2"))
    upsert(index, slice_for("api", "api-a", "api-1"))
    assert sorted(s.ref.name for s in index.slices_of(WEB)) == ["web-a", "web-b"]
    assert index.slices_of(ServiceRef(b.NS, "nothing")) == []


# --------------------------------------------------------------------------
# Pods


def test_a_pod_no_slice_points_at_affects_nothing(index: ClusterIndex) -> None:
    assert upsert(index, b.pod("web-1")) == set()
    assert index.delete(Kind.POD, ObjectRef(b.NS, "web-1")) == set()


def test_a_pod_affects_the_services_of_slices_pointing_at_it(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    upsert(index, slice_for("api", "api-a", "web-1", "api-1"))
    assert upsert(index, b.pod("web-1")) == {WEB, API}
    assert upsert(index, b.pod("api-1", ip="10.0.0.2")) == {API}


def test_a_pod_arriving_before_its_slice_is_found_once_the_slice_points_at_it(
    index: ClusterIndex,
) -> None:
    assert upsert(index, b.pod("web-1")) == set()
    upsert(index, slice_for("web", "web-a", "web-1"))
    assert upsert(index, b.pod("web-1", meshed=True)) == {WEB}


def test_deleting_a_pod_affects_its_services_only_if_it_was_known(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1", "web-2"))
    upsert(index, b.pod("web-1"))
    assert index.delete(Kind.POD, ObjectRef(b.NS, "web-1")) == {WEB}
    assert index.delete(Kind.POD, ObjectRef(b.NS, "web-2")) == set()
    assert ObjectRef(b.NS, "web-1") not in index.pods


def test_a_pod_removed_from_its_slice_no_longer_affects_the_service(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1", "web-2"))
    upsert(index, slice_for("web", "web-a", "web-2"))
    assert upsert(index, b.pod("web-1")) == set()
    assert upsert(index, b.pod("web-2")) == {WEB}


def test_a_pod_still_in_another_slice_of_the_service_keeps_affecting_it(
    index: ClusterIndex,
) -> None:
    upsert(index, slice_for("web", "web-v4", "web-1"))
    upsert(index, slice_for("web", "web-v6", "web-1"))
    index.delete(Kind.ENDPOINT_SLICE, ObjectRef(b.NS, "web-v4"))
    assert upsert(index, b.pod("web-1")) == {WEB}
    index.delete(Kind.ENDPOINT_SLICE, ObjectRef(b.NS, "web-v6"))
    assert upsert(index, b.pod("web-1")) == set()


def test_a_target_ref_without_namespace_means_the_slice_namespace(index: ClusterIndex) -> None:
    raw = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1", pod_namespace=None)])
    upsert(index, raw)
    assert upsert(index, b.pod("web-1")) == {WEB}


def test_external_workload_targets_are_tracked_and_other_kinds_are_not(
    index: ClusterIndex,
) -> None:
    raw = b.endpoint_slice(
        endpoints=[
            b.endpoint("10.0.0.1", pod="vm-1", target_kind="ExternalWorkload"),
            b.endpoint("10.0.0.3", pod="web-3", target_kind="Node"),
            b.endpoint("10.0.0.2"),
        ]
    )
    upsert(index, raw)
    assert upsert(index, b.external_workload("vm-1")) == {WEB}
    assert upsert(index, b.external_workload("vm-1")) == set()  # unchanged
    assert index.delete(Kind.EXTERNAL_WORKLOAD, ObjectRef(b.NS, "vm-1")) == {WEB}
    assert upsert(index, b.pod("web-3")) == set()


# --------------------------------------------------------------------------
# Nodes, ReplicaSets and Jobs


def test_nodes_affect_no_service_and_give_their_zone(index: ClusterIndex) -> None:
    assert upsert(index, b.node("node-a", zone="zone-a")) == set()
    assert index.node_zone("node-a") == "zone-a"
    assert index.node_zone("unknown") == ""
    assert index.delete(Kind.NODE, ObjectRef("", "node-a")) == set()
    assert index.node_zone("node-a") == ""


@pytest.fixture
def deployment_pods(index: ClusterIndex) -> ClusterIndex:
    """web-1 and web-2 of ReplicaSet web-5d8f back `web`; api-1 of api-77 backs `api`."""
    upsert(index, slice_for("web", "web-a", "web-1", "web-2"))
    upsert(index, slice_for("api", "api-a", "api-1"))
    upsert(index, b.pod("web-1", owner=("ReplicaSet", "web-5d8f")))
    upsert(index, b.pod("web-2", ip="10.0.0.2", owner=("ReplicaSet", "web-5d8f")))
    upsert(index, b.pod("api-1", owner=("ReplicaSet", "api-77")))
    return index


def test_a_new_replica_set_affects_the_services_of_its_pods(deployment_pods: ClusterIndex) -> None:
    raw = b.replica_set("web-5d8f", owner=("Deployment", "web"))
    assert upsert(deployment_pods, raw, Kind.REPLICA_SET) == {WEB}


def test_a_replica_set_whose_owner_did_not_change_affects_nothing(
    deployment_pods: ClusterIndex,
) -> None:
    raw = b.replica_set("web-5d8f", owner=("Deployment", "web"))
    upsert(deployment_pods, raw, Kind.REPLICA_SET)
    assert upsert(deployment_pods, raw, Kind.REPLICA_SET) == set()


def test_a_replica_set_adopted_or_orphaned_affects_its_pods_services(
    deployment_pods: ClusterIndex,
) -> None:
    upsert(deployment_pods, b.replica_set("web-5d8f"), Kind.REPLICA_SET)
    adopted = b.replica_set("web-5d8f", owner=("Deployment", "web"))
    assert upsert(deployment_pods, adopted, Kind.REPLICA_SET) == {WEB}
    assert upsert(deployment_pods, b.replica_set("web-5d8f"), Kind.REPLICA_SET) == {WEB}


def test_deleting_a_replica_set_affects_its_pods_services(deployment_pods: ClusterIndex) -> None:
    upsert(deployment_pods, b.replica_set("api-77", owner=("Deployment", "api")), Kind.REPLICA_SET)
    assert deployment_pods.delete(Kind.REPLICA_SET, ObjectRef(b.NS, "api-77")) == {API}
    assert deployment_pods.delete(Kind.REPLICA_SET, ObjectRef(b.NS, "api-77")) == set()


def test_a_replica_set_without_pods_affects_nothing(index: ClusterIndex) -> None:
    assert (
        upsert(index, b.replica_set("idle", owner=("Deployment", "x")), Kind.REPLICA_SET) == set()
    )


def test_a_replica_set_in_another_namespace_does_not_affect_same_named_pods(
    deployment_pods: ClusterIndex,
) -> None:
    raw = b.replica_set("web-5d8f", "other", owner=("Deployment", "web"))
    assert upsert(deployment_pods, raw, Kind.REPLICA_SET) == set()


def test_a_pod_that_changes_owner_is_tracked_under_the_new_owner(
    deployment_pods: ClusterIndex,
) -> None:
    upsert(deployment_pods, b.pod("web-1", owner=("ReplicaSet", "web-new")))
    old = b.replica_set("web-5d8f", owner=("Deployment", "web"))
    new = b.replica_set("web-new", owner=("Deployment", "web"))
    assert upsert(deployment_pods, old, Kind.REPLICA_SET) == {WEB}  # web-2 still there
    upsert(deployment_pods, b.pod("web-2", ip="10.0.0.2", owner=("ReplicaSet", "web-new")))
    assert deployment_pods.delete(Kind.REPLICA_SET, ObjectRef(b.NS, "web-5d8f")) == set()
    assert upsert(deployment_pods, new, Kind.REPLICA_SET) == {WEB}


def test_a_deleted_pod_is_forgotten_by_its_owner(deployment_pods: ClusterIndex) -> None:
    deployment_pods.delete(Kind.POD, ObjectRef(b.NS, "api-1"))
    raw = b.replica_set("api-77", owner=("Deployment", "api"))
    assert upsert(deployment_pods, raw, Kind.REPLICA_SET) == set()


def test_a_job_affects_the_services_of_its_pods(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "batch-1-x"))
    upsert(index, b.pod("batch-1-x", owner=("Job", "batch-1")))
    raw = b.job("batch-1", owner=("CronJob", "batch"))
    assert upsert(index, raw, Kind.JOB) == {WEB}
    assert upsert(index, raw, Kind.JOB) == set()
    assert index.delete(Kind.JOB, ObjectRef(b.NS, "batch-1")) == {WEB}


def test_a_job_and_a_replica_set_of_the_same_name_are_kept_apart(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    upsert(index, b.pod("web-1", owner=("ReplicaSet", "same")))
    assert upsert(index, b.job("same", owner=("CronJob", "c")), Kind.JOB) == set()
    assert upsert(index, b.replica_set("same", owner=("Deployment", "d")), Kind.REPLICA_SET) == {
        WEB
    }


# --------------------------------------------------------------------------
# workload_owner


def _pod_info(owner: tuple[str, str] | None = None, **kwargs: Any) -> PodInfo:
    info = b.projected(b.pod(owner=owner, **kwargs))
    assert isinstance(info, PodInfo)
    return info


@pytest.mark.parametrize(
    ("pod_owner", "workload", "expected"),
    [
        pytest.param(None, None, None, id="no-owner"),
        pytest.param(
            ("ReplicaSet", "web-5d8f"),
            (Kind.REPLICA_SET, b.replica_set("web-5d8f", owner=("Deployment", "web"))),
            OwnerRef("Deployment", "web"),
            id="replicaset-of-deployment",
        ),
        pytest.param(
            ("ReplicaSet", "web-5d8f"),
            (Kind.REPLICA_SET, b.replica_set("web-5d8f")),
            OwnerRef("ReplicaSet", "web-5d8f"),
            id="standalone-replicaset",
        ),
        pytest.param(
            ("ReplicaSet", "web-5d8f"),
            None,
            OwnerRef("ReplicaSet", "web-5d8f"),
            id="replicaset-not-cached",
        ),
        pytest.param(
            ("ReplicaSet", "web-5d8f"),
            (Kind.REPLICA_SET, b.replica_set("web-5d8f", owner=("Rollout", "web"))),
            OwnerRef("ReplicaSet", "web-5d8f"),
            id="replicaset-of-an-unlisted-kind",
        ),
        pytest.param(
            ("Job", "nightly-1"),
            (Kind.JOB, b.job("nightly-1", owner=("CronJob", "nightly"))),
            OwnerRef("CronJob", "nightly"),
            id="job-of-cronjob",
        ),
        pytest.param(
            ("Job", "once"),
            (Kind.JOB, b.job("once")),
            OwnerRef("Job", "once"),
            id="standalone-job",
        ),
        pytest.param(("Job", "once"), None, OwnerRef("Job", "once"), id="job-not-cached"),
        pytest.param(
            ("StatefulSet", "db"), None, OwnerRef("StatefulSet", "db"), id="statefulset-as-is"
        ),
        pytest.param(("DaemonSet", "agent"), None, OwnerRef("DaemonSet", "agent"), id="daemonset"),
    ],
)
def test_workload_owner_resolves_replica_sets_and_jobs_to_their_owner(
    index: ClusterIndex,
    pod_owner: tuple[str, str] | None,
    workload: tuple[Kind, dict[str, Any]] | None,
    expected: OwnerRef | None,
) -> None:
    if workload is not None:
        upsert(index, workload[1], workload[0])
    assert index.workload_owner(_pod_info(pod_owner)) == expected


def test_workload_owner_of_a_pod_with_several_owners_is_none(index: ClusterIndex) -> None:
    pod = _pod_info(owners=[b.owner_ref("ReplicaSet", "a"), b.owner_ref("ReplicaSet", "b")])
    assert index.workload_owner(pod) is None


def test_workload_owner_looks_in_the_pod_namespace(index: ClusterIndex) -> None:
    upsert(index, b.replica_set("web-5d8f", "other", owner=("Deployment", "web")), Kind.REPLICA_SET)
    assert index.workload_owner(_pod_info(("ReplicaSet", "web-5d8f"))) == OwnerRef(
        "ReplicaSet", "web-5d8f"
    )


@pytest.mark.parametrize(
    ("rs_name", "template_hash", "expected"),
    [
        ("web-5d8f7c9b4", "5d8f7c9b4", OwnerRef("Deployment", "web")),
        ("api-v2-6c4d", "6c4d", OwnerRef("Deployment", "api-v2")),
        ("web-5d8f7c9b4", None, OwnerRef("ReplicaSet", "web-5d8f7c9b4")),  # a bare ReplicaSet
        ("web-other", "5d8f7c9b4", OwnerRef("ReplicaSet", "web-other")),  # name does not match
        ("-5d8f", "5d8f", OwnerRef("ReplicaSet", "-5d8f")),  # nothing left of the name
    ],
)
def test_remote_pods_name_their_deployment_without_replica_sets(
    index: ClusterIndex, rs_name: str, template_hash: str | None, expected: OwnerRef
) -> None:
    """A linked cluster grants no ReplicaSets: the Deployment is read from the RS name."""
    index.owners_from_template_hash = True
    labels = {"pod-template-hash": template_hash} if template_hash else None
    pod = b.projected(b.pod(owner=("ReplicaSet", rs_name), labels=labels))
    assert isinstance(pod, PodInfo)
    assert index.workload_owner(pod) == expected


def test_local_pods_name_their_deployment_only_through_the_replica_set(
    index: ClusterIndex,
) -> None:
    pod = b.projected(b.pod(owner=("ReplicaSet", "web-5d8f"), labels={"pod-template-hash": "5d8f"}))
    assert isinstance(pod, PodInfo)
    assert index.workload_owner(pod) == OwnerRef("ReplicaSet", "web-5d8f")  # RS not seen yet


# --------------------------------------------------------------------------
# relists


def test_a_relist_of_pods_deletes_the_missing_ones(index: ClusterIndex) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    upsert(index, slice_for("api", "api-a", "api-1"))
    upsert(index, b.pod("web-1"))
    upsert(index, b.pod("api-1"))
    upsert(index, b.pod("lonely"))
    affected = index.replace(Kind.POD, [b.projected(b.pod("api-1"))])
    assert affected == {WEB}, "api-1 was relisted unchanged: nothing to rebuild"
    assert set(index.pods) == {ObjectRef(b.NS, "api-1")}


def test_a_relist_of_slices_deletes_missing_slices_and_affects_their_service(
    index: ClusterIndex,
) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    upsert(index, slice_for("api", "api-a", "api-1"))
    affected = index.replace(Kind.ENDPOINT_SLICE, [b.projected(slice_for("api", "api-a", "api-1"))])
    assert affected == {WEB, API}
    assert index.slices_of(WEB) == []
    assert upsert(index, b.pod("web-1")) == set()


def test_a_relist_of_services_deletes_missing_services(index: ClusterIndex) -> None:
    upsert(index, b.service("web"))
    upsert(index, b.service("api"))
    assert index.replace(Kind.SERVICE, [b.projected(b.service("api"))]) == {WEB, API}
    assert set(index.services) == {API}


def test_an_empty_relist_deletes_everything_of_that_kind_only(index: ClusterIndex) -> None:
    upsert(index, b.service("web"))
    upsert(index, b.node("node-a"))
    upsert(index, b.replica_set("web-5d8f"), Kind.REPLICA_SET)
    assert index.replace(Kind.NODE, []) == set()
    assert index.replace(Kind.REPLICA_SET, []) == set()
    assert index.sizes() == {
        Kind.SERVICE: 1,
        Kind.ENDPOINT_SLICE: 0,
        Kind.POD: 0,
        Kind.NODE: 0,
        Kind.REPLICA_SET: 0,
        Kind.JOB: 0,
        Kind.SERVER: 0,
        Kind.EXTERNAL_WORKLOAD: 0,
        Kind.SERVICE_PROFILE: 0,
    }


def test_a_relist_of_nodes_keeps_listed_nodes(index: ClusterIndex) -> None:
    upsert(index, b.node("node-a", zone="zone-a"))
    upsert(index, b.node("node-b", zone="zone-b"))
    index.replace(Kind.NODE, [b.projected(b.node("node-b", zone="zone-c"))])
    assert set(index.nodes) == {"node-b"}
    assert index.node_zone("node-b") == "zone-c"


def test_a_relist_of_replica_sets_affects_services_of_pods_of_dropped_sets(
    index: ClusterIndex,
) -> None:
    upsert(index, slice_for("web", "web-a", "web-1"))
    upsert(index, b.pod("web-1", owner=("ReplicaSet", "web-5d8f")))
    upsert(index, b.replica_set("web-5d8f", owner=("Deployment", "web")), Kind.REPLICA_SET)
    assert index.replace(Kind.REPLICA_SET, []) == {WEB}
    assert index.workload_owner(_pod_info(("ReplicaSet", "web-5d8f"))) == OwnerRef(
        "ReplicaSet", "web-5d8f"
    )


def test_a_pod_status_change_alone_affects_no_service(index: ClusterIndex) -> None:
    """Phase, conditions and IPs reach no proxy message: no rebuild for them."""
    upsert(index, b.service())
    upsert(index, b.pod("web-1", ip="10.0.0.1", phase="Pending"))
    upsert(index, b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")]))
    assert upsert(index, b.pod("web-1", ip="10.0.0.1", phase="Running")) == set()
    assert upsert(index, b.pod("web-1", ip="10.0.0.1", phase="Running", meshed=True)) == {WEB}
