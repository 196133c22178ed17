"""A real `410 Gone` on our watches: the reflectors relist into the same, correct index.

Where a 410 can reach our Reflector (observed with kube-apiserver 1.34 and
etcd 3.6): not after an API server outage. The Reflector relists after every
failure, so it never sends an old resourceVersion to a restarted server; it
comes back through a list, and the restarts it counts are connection errors,
never "expired" (the restarted server's watch cache would have answered the
old version with "too old resource version", code 410, had it been asked).
An old version is only sent when the Reflector resumes a watch that the
server ended cleanly, which the server does every WATCH_TIMEOUT_S (the other
410, a paginated list's expired continue token, needs more than PAGE_SIZE
objects and a compaction between two pages). Behind a watch cache a resumed
watch rarely expires: the cache keeps recent history and sends bookmarks.
An API server started with `--watch-cache=false` serves watches straight from
etcd and sends no bookmarks, so once etcd has compacted past the last version
a quiet kind saw, the resumed watch gets an ERROR event with code
410 ("The resourceVersion for the provided watch is too old.").

So the Reflectors here read through an extra API server with
`--watch-cache=false`, as the remote-access reader (as remote discovery
does); etcd is compacted past every version they hold; and WATCH_TIMEOUT_S is
shortened, so that the server ends each watch within seconds instead of five
minutes (and HEALTHY_AFTER_S with it, so that such an end is the routine end
of a healthy watch, resumed at once, as after five minutes in production).
The cluster's controllers use the primary API server, which also answers the
test's own reads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry

import discovery.reflector
from destination.config import DEFAULT_OPAQUE_PORTS
from discovery.cluster import ClusterCache
from discovery.connection import REMOTE_KINDS, Connection
from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, Kind, ObjectRef, ServiceRef
from discovery.ports import PortSet
from discovery.topics import AddressDiff, AddressSnapshot, ViewKey
from discovery.transport import remote_transport_from_kubeconfig
from tests.kube.cluster import (
    ExtraApiServer,
    LocalCluster,
    specs_for,
    start_clusters,
    stop_clusters,
)
from tests.kube.credentials import apply_remote_access, service_account_kubeconfig
from tests.kube.workloads import Kube, eventually, new_api_client

pytestmark = pytest.mark.integration

CLUSTER = ClusterName("expiry")
# The server ends each watch after this many seconds (production: 300), and the
# Reflector resumes it from the last resourceVersion it saw.
SHORT_WATCH_TIMEOUT_S = 2


@dataclass
class Expiry:
    """A cluster whose extra API server serves watches from etcd, not from a cache."""

    primary: Kube
    uncached: ExtraApiServer


@pytest.fixture
async def expiry() -> AsyncIterator[Expiry]:
    # A cluster of its own: etcd is compacted under it, and other tests' leftovers
    # (namespaces still being emptied) must not touch the kinds we watch.
    (cluster,) = await asyncio.to_thread(start_clusters, specs_for([CLUSTER]))
    try:
        uncached = await asyncio.to_thread(
            cluster.add_apiserver, "kube-apiserver-uncached", args=("--watch-cache=false",)
        )
        api = await new_api_client(cluster.kubeconfig)
        try:
            yield Expiry(primary=Kube(cluster=cluster, api=api), uncached=uncached)
        finally:
            await api.close()
    finally:
        await asyncio.to_thread(stop_clusters, [cluster], remove_dir=cluster.directory.parent)


@dataclass
class RecordingSink:
    diffs: list[AddressDiff] = field(default_factory=list)
    snapshot: AddressSnapshot | None = None

    def on_change(self, diff: AddressDiff, snapshot: AddressSnapshot) -> None:
        self.diffs.append(diff)
        self.snapshot = snapshot

    async def ips(self) -> list[str]:
        return sorted(a.ip for a in self.snapshot.addresses.values()) if self.snapshot else []


@dataclass
class Watching:
    cache: ClusterCache
    registry: CollectorRegistry

    def count(self, metric: str, kind: Kind, **labels: str) -> float:
        value = self.registry.get_sample_value(
            metric, {"cluster": CLUSTER, "kind": kind.value, **labels}
        )
        return value or 0.0

    async def counts(self, metric: str, **labels: str) -> dict[Kind, float]:
        """Per kind (async, so that `eventually` can poll it)."""
        return {kind: self.count(metric, kind, **labels) for kind in REMOTE_KINDS}

    def samples(self, metric: str) -> dict[tuple[str, ...], float]:
        """Every non-zero sample of `metric`, keyed by its label values."""
        return {
            tuple(sample.labels.values()): sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == metric and sample.value
        }


@contextlib.asynccontextmanager
async def watching(kubeconfig: str) -> AsyncIterator[Watching]:
    """The remote-discovery kinds flowing into a ClusterCache, as the server wires them."""
    api = await remote_transport_from_kubeconfig(kubeconfig.encode())
    registry = CollectorRegistry()
    metrics = DiscoveryMetrics(registry)
    cache = ClusterCache(
        name=CLUSTER,
        metrics=metrics,
        default_opaque_ports=PortSet.parse(DEFAULT_OPAQUE_PORTS)[0],
        enable_ipv6=False,
    )
    connection = Connection(
        cluster=CLUSTER, api=api, kinds=REMOTE_KINDS, sink=cache.apply, metrics=metrics
    )
    task = asyncio.create_task(connection.run())
    try:
        async with asyncio.timeout(30):
            await connection.synced.wait()
        cache.mark_synced()
        yield Watching(cache=cache, registry=registry)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


def compact_etcd(cluster: LocalCluster) -> int:
    """Compact etcd at its current revision (physically), through etcd's own HTTP gateway.

    Returns that revision: every older one is gone, so is every watch from it.
    """

    def post(path: str, body: Mapping[str, object]) -> dict[str, object]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{cluster.etcd_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer

    # A range read of any key answers with the store's current revision.
    header = post("/v3/kv/range", {"key": base64.b64encode(b"/registry/").decode()})["header"]
    assert isinstance(header, dict)
    revision = int(header["revision"])
    post("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


async def primary_state(kube: Kube) -> dict[Kind, dict[ObjectRef, tuple[str, ...]]]:
    """What the primary API server reports, in the index's terms: refs and their IPs."""
    services = await kube.core.list_service_for_all_namespaces()
    pods = await kube.core.list_pod_for_all_namespaces()
    slices = await kube.discovery.list_endpoint_slice_for_all_namespaces()
    return {
        Kind.SERVICE: {
            ServiceRef(s.metadata.namespace, s.metadata.name): () for s in services.items
        },
        Kind.POD: {
            ObjectRef(p.metadata.namespace, p.metadata.name): tuple(
                ip.ip for ip in p.status.pod_ips or ()
            )
            for p in pods.items
        },
        Kind.ENDPOINT_SLICE: {
            ObjectRef(s.metadata.namespace, s.metadata.name): tuple(
                sorted(address for e in s.endpoints or () for address in e.addresses)
            )
            for s in slices.items
        },
    }


def index_state(cache: ClusterCache) -> dict[Kind, dict[ObjectRef, tuple[str, ...]]]:
    index = cache.index
    return {
        Kind.SERVICE: {ref: () for ref in index.services},
        Kind.POD: {ref: pod.ips for ref, pod in index.pods.items()},
        Kind.ENDPOINT_SLICE: {
            ref: tuple(sorted(a for e in s.endpoints for a in e.addresses))
            for ref, s in index.slices.items()
        },
    }


async def settled(watch: Watching, *, quiet_s: float = 1.5) -> None:
    """Wait until no watch event has arrived for `quiet_s` (the cluster is at rest)."""
    last = watch.samples("watch_events_total")
    while True:
        await asyncio.sleep(quiet_s)
        now = watch.samples("watch_events_total")
        if now == last:
            return
        last = now


async def test_a_410_relists_into_the_same_index_and_sends_nothing(
    expiry: Expiry, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = expiry.primary
    monkeypatch.setattr(discovery.reflector, "WATCH_TIMEOUT_S", SHORT_WATCH_TIMEOUT_S)
    # A watch the server ends after SHORT_WATCH_TIMEOUT_S is its routine end, not a
    # failure to back off from: it counts as having stayed healthy long enough.
    monkeypatch.setattr(discovery.reflector, "HEALTHY_AFTER_S", SHORT_WATCH_TIMEOUT_S / 2)
    await primary.create_namespace("shop")
    ips = await primary.deploy_service("shop", "web", replicas=2)
    namespace, account = await asyncio.to_thread(apply_remote_access, primary.cluster)
    kubeconfig = await asyncio.to_thread(
        service_account_kubeconfig,
        primary.cluster,
        namespace=namespace,
        service_account=account,
        server=expiry.uncached.server,
    )

    async with watching(kubeconfig) as watch:
        sink = RecordingSink()
        subscription = watch.cache.topics.subscribe(
            service=ServiceRef("shop", "web"), port=80, key=ViewKey(), sink=sink
        )
        assert sorted(a.ip for a in subscription.initial.addresses.values()) == ips

        # Watches through the uncached server deliver changes like any other.
        await primary.scale("shop", "web", 3)
        three = await primary.wait_for_ready_endpoints("shop", "web", 3)
        await eventually(sink.ips, lambda got: got == three, what="3 addresses")
        await settled(watch)
        assert index_state(watch.cache) == await primary_state(primary)
        diffs_before = len(sink.diffs)
        lists_before = await watch.counts("watch_lists_total")
        restarts_before = watch.samples("watch_restarts_total")
        assert await watch.counts("watch_restarts_total", reason="expired") == dict.fromkeys(
            REMOTE_KINDS, 0.0
        )

        # Two writes to a kind nobody watches put etcd's revision at least two past
        # the last one each reflector saw (a watch from R resumes at R+1, which
        # survives a compaction at R+1); the compaction then removes them all.
        for name in ("mark-1", "mark-2"):
            await primary.core.create_namespaced_config_map(
                "shop", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name))
            )
        await asyncio.to_thread(compact_etcd, primary.cluster)

        # Within one watch period, every kind's resumed watch is refused with 410.
        await eventually(
            lambda: watch.counts("watch_restarts_total", reason="expired"),
            lambda counts: all(n >= 1 for n in counts.values()),
            what="a 410 on the watch of every kind",
            timeout_s=5 * SHORT_WATCH_TIMEOUT_S + 10,
        )
        await eventually(
            lambda: watch.counts("watch_lists_total"),
            lambda counts: all(counts[k] > lists_before[k] for k in REMOTE_KINDS),
            what="a relist of every kind after the 410",
        )
        await asyncio.sleep(0.2)  # the refresh after a batch runs on the next loop turn
        assert index_state(watch.cache) == await primary_state(primary)
        assert len(sink.diffs) == diffs_before, "a relist of unchanged state sends nothing"
        # The 410 was the only reason to restart: no errors, no backoff.
        restarts = watch.samples("watch_restarts_total")
        new_restarts = {k: n - restarts_before.get(k, 0.0) for k, n in restarts.items()}
        assert {k: n for k, n in new_restarts.items() if n} == {
            (CLUSTER, kind.value, "expired"): 1.0 for kind in REMOTE_KINDS
        }

        # The watches resumed from the relist follow changes exactly.
        await primary.scale("shop", "web", 1)
        one = await primary.wait_for_ready_endpoints("shop", "web", 1)
        await eventually(sink.ips, lambda got: got == one, what="1 address")
        later = sink.diffs[diffs_before:]
        assert not [a for d in later for a in d.added]
        assert sorted(a.ip for d in later for a in d.removed) == sorted(set(three) - set(one))
        await settled(watch)
        assert index_state(watch.cache) == await primary_state(primary)
        # One 410 per kind: the versions of the relists were fresh, and still are.
        assert await watch.counts("watch_restarts_total", reason="expired") == dict.fromkeys(
            REMOTE_KINDS, 1.0
        )
        subscription.close()
