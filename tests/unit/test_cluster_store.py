"""Unit tests for discovery.cluster_store: reconciling link Secrets into clusters.

Scope, with Secret events fed in memory (the Secret watch does not run):
unusable Secrets give a cluster in state `invalid` with the reason, not a
missing cluster; a Secret naming the local cluster and a second Secret for a
linked cluster are rejected and counted, and the first one (by
namespace/name) wins; deleting a Secret unlinks and tells listeners; a
kubeconfig pointing at a closed port gives `failing` with the connection
error (real sockets on loopback, nothing listening); an unparsable new
kubeconfig for a linked cluster leaves the old connection in place; and the
Prometheus collector reports each cluster's state.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, Configuration
from prometheus_client import CollectorRegistry, generate_latest

from discovery import cluster_store as cluster_store_module
from discovery import connection as connection_module
from discovery import reflector as reflector_module
from discovery.cluster_store import (
    ClusterState,
    ClusterStore,
    ClusterStoreCollector,
    StalenessPolicy,
)
from discovery.kubeconfig import parse_kubeconfig
from discovery.kubernetes_client import KubernetesClientTransport
from discovery.metrics import DiscoveryMetrics
from discovery.models import Kind, ObjectRef, ServiceRef
from discovery.ports import PortSet
from discovery.project import project_credentials
from discovery.reflector import Deleted, Listed, Upserted
from discovery.topics import AddressDiff, AddressSnapshot, ViewKey
from tests.kube.workloads import eventually
from tests.unit import builders as b
from tests.unit.log_recorder import LogRecorder
from tests.unit.scripted_api import REMOTE_PATHS, ScriptedApi, ScriptedCluster


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


def kubeconfig(server: str, token: str = "t") -> bytes:
    return yaml.safe_dump(
        {
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": token}}],
        }
    ).encode()


def secret(
    name: str, cluster: str, *, config: bytes | None = None, trust_domain: str = "west.local"
) -> Any:
    data = {"kubeconfig": base64.b64encode(config).decode()} if config is not None else {}
    return project_credentials(
        {
            "type": "mirror.linkerd.io/remote-kubeconfig",
            "metadata": {
                "name": name,
                "namespace": "linkerd",
                "labels": {"multicluster.linkerd.io/cluster-name": cluster},
                "annotations": {
                    "multicluster.linkerd.io/trust-domain": trust_domain,
                    "multicluster.linkerd.io/cluster-domain": "cluster.local",
                },
            },
            "data": data,
        }
    )


class Harness:
    def __init__(
        self, store: ClusterStore, registry: CollectorRegistry, metrics: DiscoveryMetrics
    ) -> None:
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.notified = 0
        store.add_listener(self._heard)

    def _heard(self) -> None:
        self.notified += 1

    def list(self, *records: Any) -> None:
        self.store.apply(Listed(Kind.SECRET, tuple(records)), time.perf_counter())

    def upsert(self, record: Any) -> None:
        self.store.apply(Upserted(Kind.SECRET, record), time.perf_counter())

    def delete(self, name: str) -> None:
        self.store.apply(Deleted(Kind.SECRET, ObjectRef("linkerd", name)), time.perf_counter())

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A store; `indirect` parametrization with True allows insecure links."""
    registry = CollectorRegistry()
    metrics = DiscoveryMetrics(registry)
    api = KubernetesClientTransport(ApiClient(Configuration()))
    store = ClusterStore(
        local_api=api,
        namespace="linkerd",
        local_name="east",
        metrics=metrics,
        default_opaque_ports=PortSet.EMPTY,
        enable_ipv6=False,
        allow_insecure_remote_links=getattr(request, "param", False),
    )
    registry.register(ClusterStoreCollector(store))
    # Runs the store's own lifecycle (its Secret watch fails quietly: no server) so
    # that cancelling it stops every cluster connection, as in the server.
    task = asyncio.create_task(store.run())
    try:
        yield Harness(store, registry, metrics)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()


async def test_an_unusable_secret_gives_an_invalid_cluster_with_the_reason(
    harness: Harness,
) -> None:
    harness.list(secret("cluster-credentials-west", "west", config=None))
    [status] = harness.store.statuses()
    assert status.state is ClusterState.INVALID
    assert status.error == "data key 'kubeconfig' is missing or empty"
    assert harness.store.serving("west") is None
    assert harness.sample("remote_cluster_state", cluster="west", state="invalid") == 1.0
    assert harness.sample("cluster_store_size") == 1.0


async def test_a_bad_kubeconfig_gives_an_invalid_cluster(harness: Harness) -> None:
    harness.list(secret("cluster-credentials-west", "west", config=b"exec: [oops"))
    await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.state is ClusterState.INVALID,
        what="invalid state",
        timeout_s=5,
    )
    assert "not valid YAML" in (harness.store.statuses()[0].error or "")


async def test_a_plaintext_link_is_invalid_with_the_reason(harness: Harness) -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(server)))
    status = await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.state is ClusterState.INVALID,
        what="invalid state",
        timeout_s=5,
    )
    assert status.error is not None
    assert "plaintext http://" in status.error and "--allow-insecure-remote-links" in status.error
    assert harness.store.serving("west") is None


@pytest.mark.parametrize("harness", [True], indirect=True)
async def test_a_plaintext_link_is_used_when_insecure_links_are_allowed(harness: Harness) -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(server)))
    status = await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.state is ClusterState.FAILING,
        what="failing state (connection refused)",
        timeout_s=10,
    )
    assert status.server == server


async def test_an_unreachable_cluster_is_failing_and_retried(harness: Harness) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(server)))
    assert harness.store.statuses()[0].state is ClusterState.CONNECTING
    status = await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.state is ClusterState.FAILING,
        what="failing state",
        timeout_s=10,
    )
    assert status.server == server
    assert status.error is not None and "Cannot connect" in status.error
    # Still linked, and still served (nothing to serve yet): it may come up any time.
    assert harness.store.serving("west") is not None


async def test_a_secret_naming_the_local_cluster_is_rejected(harness: Harness) -> None:
    harness.list(secret("cluster-credentials-east", "east", config=None))
    assert harness.store.statuses() == []
    assert harness.sample("cluster_links_rejected_total", reason="local_name") == 1.0


async def test_the_first_secret_of_a_cluster_wins_and_the_other_is_counted(
    harness: Harness,
) -> None:
    harness.list(
        secret("b-west", "west", config=None, trust_domain="second.local"),
        secret("a-west", "west", config=None, trust_domain="first.local"),
    )
    [status] = harness.store.statuses()
    assert (status.secret, status.trust_domain) == ("linkerd/a-west", "first.local")
    assert harness.sample("cluster_links_rejected_total", reason="duplicate") == 1.0
    harness.delete("a-west")  # the other one takes over
    [status] = harness.store.statuses()
    assert status.secret == "linkerd/b-west"


async def test_deleting_the_secret_unlinks_and_tells_listeners(harness: Harness) -> None:
    harness.list(secret("cluster-credentials-west", "west", config=None))
    before = harness.notified
    harness.delete("cluster-credentials-west")
    assert harness.store.statuses() == []
    assert harness.notified == before + 1
    assert harness.sample("remote_cluster_state", cluster="west", state="invalid") is None
    assert harness.sample("cluster_store_size") == 0.0


async def test_a_broken_rotation_keeps_the_running_connection(harness: Harness) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(server)))
    await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.state is ClusterState.FAILING,
        what="failing state",
        timeout_s=10,
    )
    harness.upsert(secret("cluster-credentials-west", "west", config=b"not: [yaml"))
    status = await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.rotation is not None and s.rotation.startswith("rejected"),
        what="rotation rejected",
        timeout_s=5,
    )
    assert status.server == server  # still the old connection
    assert (
        harness.sample(
            "remote_cluster_credential_rotations_total", cluster="west", result="rejected"
        )
        == 1.0
    )


async def test_a_trust_domain_change_alone_tells_listeners_without_reconnecting(
    harness: Harness,
) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(server)))
    await eventually(
        lambda: _async(harness.store.get("west")),
        lambda c: c is not None and c.live is not None,
        what="a live connection",
        timeout_s=5,
    )
    cluster = harness.store.get("west")
    assert cluster is not None and cluster.live is not None
    live = cluster.live
    before = harness.notified
    harness.upsert(
        secret("cluster-credentials-west", "west", config=kubeconfig(server), trust_domain="new.td")
    )
    assert harness.notified == before + 1
    assert cluster.live is live
    assert harness.store.statuses()[0].trust_domain == "new.td"


async def _async(value: Any) -> Any:
    return value


async def test_refused_secrets_settle_the_store_so_local_discovery_stays_ready(
    harness: Harness,
) -> None:
    store = harness.store
    assert not store.synced
    store._secrets_health(store._secret_reflector, "HTTP 500: etcd timeout")
    assert not store.synced  # a transient error: keep waiting for the list
    store._secrets_health(store._secret_reflector, "HTTP 403 (forbidden: ...): secrets")
    assert store.synced
    assert store.secrets_error is not None and "403" in store.secrets_error


async def test_an_unexpected_client_failure_is_that_clusters_alone(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(data: bytes, *, allow_insecure: bool) -> Any:
        raise RuntimeError("client library bug")

    monkeypatch.setattr(cluster_store_module, "remote_transport_from_kubeconfig", broken)
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig("https://x:1")))
    status = await eventually(
        lambda: _async(harness.store.statuses()[0]),
        lambda s: s.state is ClusterState.INVALID,
        what="invalid state",
        timeout_s=5,
    )
    assert status.error == "kubeconfig unusable: RuntimeError: client library bug"


# -- remote clusters played by a scripted transport -----------------------------


class Remotes:
    """Scripted remote API servers by (URL, token), and every client the store built."""

    def __init__(self) -> None:
        self.clusters: dict[tuple[str, str], ScriptedCluster] = {}
        self.clients: list[ScriptedApi] = []
        self.building: asyncio.Event | None = None  # set: clients are built at once

    def add(self, server: str, token: str = "t") -> ScriptedCluster:
        remote = ScriptedCluster()
        remote.items[REMOTE_PATHS["services"]] = [b.service()]
        remote.items[REMOTE_PATHS["pods"]] = [b.pod("web-1")]
        remote.items[REMOTE_PATHS["slices"]] = [
            b.endpoint_slice(endpoints=[b.endpoint("10.0.0.1", pod="web-1")])
        ]
        self.clusters[server, token] = remote
        return remote

    async def transport(self, data: bytes, *, allow_insecure: bool = False) -> ScriptedApi:
        config = parse_kubeconfig(data, allow_insecure=allow_insecure)
        api = self.clusters[config.server, config.token or ""].api(config.server)
        self.clients.append(api)
        if self.building is not None:
            await self.building.wait()
        return api


@pytest.fixture
def remotes(monkeypatch: pytest.MonkeyPatch) -> Remotes:
    remotes = Remotes()
    monkeypatch.setattr(cluster_store_module, "remote_transport_from_kubeconfig", remotes.transport)
    return remotes


WEST = "https://west.example:6443"


async def state_of(harness: Harness, name: str = "west") -> Any:
    return next((s for s in harness.store.statuses() if s.name == name), None)


async def wait_state(harness: Harness, *states: ClusterState, timeout_s: float = 5) -> Any:
    return await eventually(
        lambda: state_of(harness),
        lambda s: s is not None and s.state in states,
        what=f"west in state {'/'.join(states)}",
        timeout_s=timeout_s,
    )


class NullSink:
    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        pass


async def test_unlinking_removes_every_series_of_the_cluster(
    harness: Harness, remotes: Remotes
) -> None:
    west = remotes.add(WEST)
    west.events[REMOTE_PATHS["pods"]] = [
        {"type": "MODIFIED", "object": b.pod("web-1", ip="10.0.0.9")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}},
        {"type": "SURPRISE", "object": {}},
    ]
    west.events[REMOTE_PATHS["services"]] = [{"type": "ADDED", "object": {"kind": "Service"}}]
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST)))
    await wait_state(harness, ClusterState.SYNCED)
    cluster = harness.store.get("west")
    assert cluster is not None
    cluster.cache.topics.subscribe(
        service=ServiceRef(b.NS, "web"), port=80, key=ViewKey(), sink=NullSink()
    )
    moved = b.endpoint_slice(endpoints=[b.endpoint("10.0.0.2", pod="web-1")])
    cluster.cache.apply(Upserted(Kind.ENDPOINT_SLICE, b.projected(moved)), time.perf_counter())
    harness.upsert(secret("cluster-credentials-west", "west", config=None))  # rejected
    await asyncio.sleep(0.05)
    before = generate_latest(harness.registry).decode()
    for name in (
        "watch_events_total",
        "watch_lists_total",
        "invalid_objects_total",
        "cache_objects",
        "event_to_enqueue_seconds_bucket",
        "cluster_synced",
        "endpoint_views",
        "remote_cluster_credential_rotations_total",
    ):
        assert f'{name}{{cluster="west"' in before, name

    harness.delete("cluster-credentials-west")
    await asyncio.sleep(0.05)
    after = generate_latest(harness.registry).decode()
    assert [line for line in after.splitlines() if 'cluster="west"' in line] == []
    assert 'cluster="east"' in after, "the local cluster's series stay"


async def test_a_rejected_rotation_is_counted_once_per_distinct_secret(
    harness: Harness, remotes: Remotes
) -> None:
    remotes.add(WEST)
    good = secret("cluster-credentials-west", "west", config=kubeconfig(WEST))
    harness.list(good)
    await wait_state(harness, ClusterState.SYNCED)
    broken = secret("cluster-credentials-west", "west", config=None)
    harness.upsert(broken)
    for _ in range(3):  # relists of the link Secrets, other clusters' Secrets changing
        harness.list(broken)
        harness.upsert(secret("cluster-credentials-north", "north", config=None))
        harness.delete("cluster-credentials-north")

    def rejected() -> float | None:
        return harness.sample(
            "remote_cluster_credential_rotations_total", cluster="west", result="rejected"
        )

    assert rejected() == 1.0
    status = await state_of(harness)
    assert status.state is ClusterState.SYNCED and status.rotation.startswith("rejected")
    harness.upsert(secret("cluster-credentials-west", "west", config=None, trust_domain="x.td"))
    assert rejected() == 2.0, "another broken version is another rejection"


# -- rotation -------------------------------------------------------------------


def sample_of(harness: Harness, result: str) -> float:
    value = harness.sample(
        "remote_cluster_credential_rotations_total", cluster="west", result=result
    )
    return value or 0.0


async def test_new_credentials_that_never_sync_are_abandoned_at_the_deadline(
    harness: Harness, remotes: Remotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_store_module, "ROTATION_DEADLINE_S", 0.5)
    remotes.add(WEST, token="old")
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST, "old")))
    await wait_state(harness, ClusterState.SYNCED)
    cluster = harness.store.get("west")
    assert cluster is not None and cluster.live is not None
    old = cluster.live
    # The new token lists everything but may not watch pods: it never works.
    new = remotes.add(WEST, token="new")
    new.refuse_watches[REMOTE_PATHS["pods"]] = 403
    harness.upsert(secret("cluster-credentials-west", "west", config=kubeconfig(WEST, "new")))
    await asyncio.sleep(0.2)
    status = await state_of(harness)
    assert status.rotation.startswith("pending: Pod: HTTP 403"), status.rotation
    assert cluster.live is old, "credentials that cannot watch never replace working ones"

    status = await eventually(
        lambda: state_of(harness),
        lambda s: s.rotation is not None and s.rotation.startswith("abandoned"),
        what="the rotation abandoned",
        timeout_s=3,
    )
    assert "did not sync within 0.5s (Pod: HTTP 403" in status.rotation
    assert status.state is ClusterState.SYNCED and cluster.live is old
    assert sample_of(harness, "abandoned") == 1.0 and sample_of(harness, "applied") == 0.0
    assert cluster.staged is None and cluster.staged_events is None
    await eventually(
        lambda: _async(remotes.clients[-1].closed), bool, what="client closed", timeout_s=2
    )


async def test_a_rotation_holding_too_many_objects_is_abandoned(
    harness: Harness, remotes: Remotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_store_module, "STAGED_MAX_OBJECTS", 50)
    monkeypatch.setattr(connection_module, "STAGED_MAX_OBJECTS", 50)
    remotes.add(WEST, token="old")
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST, "old")))
    await wait_state(harness, ClusterState.SYNCED)
    new = remotes.add(WEST, token="new")
    new.refuse_lists[REMOTE_PATHS["pods"]] = 403  # never syncs...
    # ...while its Service watch streams ever new objects.
    new.events[REMOTE_PATHS["services"]] = [
        {"type": "ADDED", "object": b.service(f"s{i}")} for i in range(200)
    ]
    harness.upsert(secret("cluster-credentials-west", "west", config=kubeconfig(WEST, "new")))
    status = await eventually(
        lambda: state_of(harness),
        lambda s: s.rotation is not None and s.rotation.startswith("abandoned"),
        what="the rotation abandoned",
        timeout_s=3,
    )
    assert "more than 50 objects held" in status.rotation
    assert sample_of(harness, "abandoned") == 1.0
    assert status.state is ClusterState.SYNCED


async def test_the_trust_domain_stays_the_live_one_until_the_rotation_went_live(
    harness: Harness, remotes: Remotes
) -> None:
    remotes.add(WEST, token="old")
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST, "old")))
    await wait_state(harness, ClusterState.SYNCED)
    new = remotes.add(WEST, token="new")
    new.refuse_lists[REMOTE_PATHS["pods"]] = 403
    before = harness.notified
    harness.upsert(
        secret(
            "cluster-credentials-west", "west", config=kubeconfig(WEST, "new"), trust_domain="n.td"
        )
    )
    await asyncio.sleep(0.1)
    status = await state_of(harness)
    assert status.rotation.startswith("pending")
    assert status.trust_domain == "west.local", "the identities served are the live ones"
    cluster = harness.store.get("west")
    assert cluster is not None and cluster.credentials.trust_domain == "west.local"
    assert harness.notified == before

    del new.refuse_lists[REMOTE_PATHS["pods"]]  # the new credentials now work
    status = await eventually(
        lambda: state_of(harness),
        lambda s: s.rotation is None,
        what="the rotation applied",
        timeout_s=5,
    )
    assert status.trust_domain == "n.td" and cluster.credentials.trust_domain == "n.td"
    assert harness.notified > before, "listeners re-send identities when it went live"
    assert sample_of(harness, "applied") == 1.0


# -- races while links change --------------------------------------------------


async def test_a_broken_secret_cancels_a_first_connection_being_built(
    harness: Harness, remotes: Remotes
) -> None:
    remotes.add(WEST)
    remotes.building = asyncio.Event()  # clients take a while to build
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST)))
    await asyncio.sleep(0.05)
    assert len(remotes.clients) == 1
    harness.upsert(secret("cluster-credentials-west", "west", config=None))
    assert (await state_of(harness)).state is ClusterState.INVALID
    remotes.building.set()
    await asyncio.sleep(0.1)
    status = await state_of(harness)
    assert status.state is ClusterState.INVALID, "the old credentials never go live"
    cluster = harness.store.get("west")
    assert cluster is not None and cluster.live is None
    assert remotes.clients[0].requests == []


async def test_a_connection_stopped_before_it_ran_closes_its_client(
    harness: Harness, remotes: Remotes
) -> None:
    remotes.add(WEST)

    def unlink_as_soon_as_live() -> None:
        cluster = harness.store.get("west")
        if cluster is not None and cluster.live is not None:
            # In the very step that started its watches: the task never runs.
            harness.delete("cluster-credentials-west")

    harness.store.add_listener(unlink_as_soon_as_live)
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST)))
    await eventually(
        lambda: _async(harness.store.get("west")), lambda c: c is None, what="unlinked"
    )
    await eventually(
        lambda: _async(remotes.clients[0].closed), bool, what="its client closed", timeout_s=2
    )
    assert remotes.clients[0].requests == []


# -- staleness and failures ------------------------------------------------------


async def test_a_cluster_whose_watch_keeps_being_refused_is_withdrawn_on_time(
    harness: Harness, remotes: Remotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reflector_module, "BACKOFF_INITIAL_S", 0.02)
    monkeypatch.setattr(reflector_module, "BACKOFF_MAX_S", 0.1)
    logs = LogRecorder()
    monkeypatch.setattr(cluster_store_module, "log", logs)
    harness.store.staleness = StalenessPolicy(withdraw_after_s=0.6)
    west = remotes.add(WEST)
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST)))
    await wait_state(harness, ClusterState.SYNCED)
    # Pods can still be listed, but no longer watched: every cycle lists fine.
    west.refuse_watches[REMOTE_PATHS["pods"]] = 403
    west.cut_watches(REMOTE_PATHS["pods"])
    status = await wait_state(harness, ClusterState.WITHDRAWN, timeout_s=3)
    assert "Pod: HTTP 403" in (status.error or "")
    changes = [r["state"] for r in logs.named("cluster_state") if r["previous"] != "connecting"]
    assert changes == ["stale", "withdrawn"], "no flip back to synced on each relist"
    assert len(remotes.clients[0].lists(REMOTE_PATHS["pods"])) <= 12


async def test_a_failure_in_the_withdraw_timer_is_logged_with_the_cluster(
    harness: Harness,
    remotes: Remotes,
    monkeypatch: pytest.MonkeyPatch,
    loop_errors: list[dict[str, Any]],
) -> None:
    logs = LogRecorder()
    monkeypatch.setattr(cluster_store_module, "log", logs)
    harness.store.staleness = StalenessPolicy(withdraw_after_s=0.2)
    west = remotes.add(WEST)
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST)))
    await wait_state(harness, ClusterState.SYNCED)

    def broken() -> None:
        if harness.store.statuses()[0].state is ClusterState.WITHDRAWN:
            raise RuntimeError("listener bug")

    harness.store._listeners.insert(0, broken)
    before = harness.notified
    west.refuse_lists[REMOTE_PATHS["pods"]] = 503
    west.cut_watches(REMOTE_PATHS["pods"])
    await wait_state(harness, ClusterState.WITHDRAWN, timeout_s=3)
    await asyncio.sleep(0.05)
    assert harness.notified == before + 1, "the other listeners still heard of the withdrawal"
    [record] = logs.named("store_listener_failed")
    assert record["cluster"] == "west" and isinstance(record["exc_info"], RuntimeError)
    assert loop_errors == []


async def test_a_task_that_fails_is_logged_with_the_cluster_and_shown(
    harness: Harness,
    remotes: Remotes,
    monkeypatch: pytest.MonkeyPatch,
    loop_errors: list[dict[str, Any]],
) -> None:
    logs = LogRecorder()
    monkeypatch.setattr(cluster_store_module, "log", logs)

    def broken_connection(**kwargs: object) -> None:
        raise RuntimeError("a bug building the connection")

    monkeypatch.setattr(cluster_store_module, "Connection", broken_connection)
    remotes.add(WEST)
    remotes.add("https://north.example:6443")
    harness.list(
        secret("cluster-credentials-west", "west", config=kubeconfig(WEST)),
        secret(
            "cluster-credentials-north", "north", config=kubeconfig("https://north.example:6443")
        ),
    )
    status = await wait_state(harness, ClusterState.FAILING)
    assert "internal error" in (status.error or "") and "a bug building" in status.error
    failed = logs.named("cluster_task_failed")
    assert sorted(r["cluster"] for r in failed) == ["north", "west"]
    assert all(isinstance(r["exc_info"], RuntimeError) for r in failed)
    gc.collect()  # an exception never retrieved would be reported now
    await asyncio.sleep(0)
    assert loop_errors == []


async def test_a_silent_remote_is_stale_within_seconds_keeps_its_endpoints_and_recovers(
    harness: Harness, remotes: Remotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "LIVENESS_INTERVAL_S", 0.1)
    monkeypatch.setattr(connection_module, "LIVENESS_TIMEOUT_S", 0.1)
    monkeypatch.setattr(reflector_module, "BACKOFF_MAX_S", 0.1)
    west = remotes.add(WEST)
    harness.list(secret("cluster-credentials-west", "west", config=kubeconfig(WEST)))
    await wait_state(harness, ClusterState.SYNCED)
    west.go_silent()  # a stopped process: connections stay open, nothing answers
    started = time.monotonic()
    status = await wait_state(harness, ClusterState.STALE, timeout_s=2)
    assert time.monotonic() - started < 1.0  # 0.1 + 2 x 0.1 s, plus the loop's latency
    assert (status.error or "").startswith("API server not answering")
    assert status.objects == {"Service": 1, "EndpointSlice": 1, "Pod": 1}, "kept, not dropped"
    assert harness.store.serving("west") is not None
    west.resume()
    status = await wait_state(harness, ClusterState.SYNCED, timeout_s=3)
    assert status.error is None
