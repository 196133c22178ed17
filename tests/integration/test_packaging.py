"""The Kustomize overlays, rendered by the pinned kubectl, against real API servers.

Scope: `deploy/kustomize/overlays/source` and `overlays/target` render (the
kustomize built into the pinned kubectl), hold what each kind of cluster
needs, and every object they render is accepted by an API server
(`kubectl apply --server-side --dry-run=server`). Then the two programs run
with exactly the rendered RBAC, authenticating with real ServiceAccount
tokens, so a permission missing from the overlays fails here:

* `destination serve` with the rendered server role syncs every watch
  (gRPC health SERVING, `/ready`);
* `destination mirror` with the rendered mirror roles, and a target
  credential for the rendered target overlay, becomes ready and exercises
  every kind of write it makes (gateway and remote-discovery mirrors and
  Endpoints, a patch, deletes, Link status, finalizer, Lease, Event) with no
  failed write; `kubectl auth can-i` checks what the same roles refuse.

The mirror's roles are applied into a namespace of this module's own
(rules, verbs and resources untouched; only the namespace, and the names of
the cluster-scoped copies, differ), so no other controller that serves
`linkerd-multicluster` on the same test cluster can act on this test's Link.
What the mirror does beyond RBAC is tests/integration/test_mirror_*.py.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from destination.config import LogFormat
from mirror.app import run as run_mirror
from mirror.config import MirrorConfig
from tests.integration.destination_client import running_server
from tests.kube.binaries import REPO_ROOT, Binaries, BinariesMissing
from tests.kube.cluster import LocalCluster
from tests.kube.credentials import service_account_kubeconfig, service_account_user
from tests.kube.workloads import Kube, eventually

pytestmark = pytest.mark.integration

KUSTOMIZE = REPO_ROOT / "deploy" / "kustomize"
OVERLAYS = KUSTOMIZE / "overlays"
CRD_DIR = REPO_ROOT / "deploy" / "crds"
FIELD_MANAGER = "mcd-packaging-tests"
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
EXPORTED = "mirror.linkerd.io/exported"
LINK_GROUP = "multicluster.linkerd.io"
RBAC_PROPAGATION_TIMEOUT_S = 30.0
GATEWAY_IDENTITY = (
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
)


# -- rendering ---------------------------------------------------------------


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of one of our overlays."""
    return render(OVERLAYS / overlay)


def render(directory: Path) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize`, with the pinned kubectl (kustomize v5 inside)."""
    try:
        kubectl = Binaries.locate().kubectl
    except BinariesMissing as err:
        pytest.fail(str(err), pytrace=False)
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def without_labels(doc: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(doc)
    stripped["metadata"].pop("labels", None)
    return stripped


def manifest_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def as_list(docs: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def deployment(overlay: str, name: str) -> dict[str, Any]:
    (found,) = (d for d in rendered(overlay) if d["kind"] == "Deployment" and key(d)[2] == name)
    return found


def bound_rbac(overlay: str, deployment_name: str) -> list[dict[str, Any]]:
    """The ServiceAccount a Deployment runs as, its bindings and the roles they grant."""
    pod = deployment(overlay, deployment_name)
    namespace = pod["metadata"]["namespace"]
    account = pod["spec"]["template"]["spec"]["serviceAccountName"]
    docs = rendered(overlay)
    bindings = [
        d
        for d in docs
        if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        and any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == namespace
            for s in d["subjects"]
        )
    ]
    roles = [
        d
        for d in docs
        if d["kind"] in {"Role", "ClusterRole"}
        and any(
            b["roleRef"]["kind"] == d["kind"]
            and b["roleRef"]["name"] == d["metadata"]["name"]
            and (d["kind"] == "ClusterRole" or key(b)[1] == key(d)[1])
            for b in bindings
        )
    ]
    (account_doc,) = (
        d for d in docs if d["kind"] == "ServiceAccount" and key(d)[1:] == (namespace, account)
    )
    return [account_doc, *roles, *bindings]


# -- the cluster side ----------------------------------------------------------


def apply(cluster: LocalCluster, docs: list[dict[str, Any]], *, dry_run: bool = False) -> str:
    args = ["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, "-f", "-", input=as_list(docs))


def ensure_namespaces(cluster: LocalCluster, names: set[str]) -> None:
    """Namespaced objects are refused, even in a dry run, until their namespace exists."""
    apply(
        cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    )


def can_i(cluster: LocalCluster, user: str, verb: str, resource: str, *where: str) -> bool:
    try:
        cluster.kubectl("auth", "can-i", verb, resource, *where, f"--as={user}")
    except RuntimeError as err:
        if "(1)" in str(err):  # kubectl exits 1 for "no"
            return False
        raise
    return True


def wait_allowed(cluster: LocalCluster, user: str, verb: str, resource: str, *where: str) -> None:
    """The RBAC authorizer reads roles from an informer: wait until it enforces a new binding."""
    deadline = time.monotonic() + RBAC_PROPAGATION_TIMEOUT_S
    while not can_i(cluster, user, verb, resource, *where):
        if time.monotonic() > deadline:
            raise AssertionError(f"{cluster.name}: {user} still may not {verb} {resource}")
        time.sleep(0.2)


def token_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    path.write_text(
        service_account_kubeconfig(cluster, namespace=namespace, service_account=account)
    )
    return path


def relocated(docs: list[dict[str, Any]], namespace: str, suffix: str) -> list[dict[str, Any]]:
    """The same rules in another namespace; cluster-scoped copies get their own names."""
    moved = copy.deepcopy(docs)
    for doc in moved:
        meta = doc["metadata"]
        if doc["kind"] in CLUSTER_SCOPED:
            meta["name"] = f"{meta['name']}-{suffix}"
        else:
            meta["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
    return moved


# -- rendering: what each overlay holds -----------------------------------------


def test_the_source_overlay_holds_the_crds_the_server_and_the_mirror() -> None:
    docs = rendered("source")
    kinds = {(kind, name) for kind, _, name in map(key, docs)}
    assert {
        ("Namespace", "multicluster-destination"),
        ("Namespace", "linkerd-multicluster"),
        ("Deployment", "destination"),
        ("Deployment", "destination-mirror"),
        ("Service", "destination"),
        ("Service", "destination-headless"),
        ("PodDisruptionBudget", "destination"),
        ("PodDisruptionBudget", "destination-mirror"),
    } <= kinds
    assert not any(name == "destination-remote-reader" for _, name in kinds)
    # The CRDs as the test clusters install them (anchors and merge keys expand
    # the same way in kustomize as in PyYAML).
    crds = {key(d)[2]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    for path in CRD_DIR.glob("*.yaml"):
        (expected,) = manifest_documents(path)
        assert crds.pop(expected["metadata"]["name"]) == expected, path.name
    assert not crds
    # One image, two commands; the mirror serves the namespace it runs in.
    server = deployment("source", "destination")["spec"]["template"]["spec"]["containers"][0]
    mirror = deployment("source", "destination-mirror")["spec"]["template"]["spec"]
    (container,) = mirror["containers"]
    assert (server["args"], container["args"]) == (["serve"], ["mirror"])
    assert server["image"] == container["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DESTINATION_MIRROR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mirror["securityContext"]["runAsNonRoot"] is True


def test_the_source_overlay_renders_the_server_manifest_unchanged_but_for_labels() -> None:
    """deploy/destination.yaml and deploy/mirror.yaml are the base: nothing else in it."""
    docs = {key(d): without_labels(d) for d in rendered("source")}
    for manifest in ("destination.yaml", "mirror.yaml"):
        for expected in manifest_documents(REPO_ROOT / "deploy" / manifest):
            assert docs.pop(key(expected)) == without_labels(expected), (manifest, key(expected))
    assert {kind for kind, _, _ in docs} == {"CustomResourceDefinition"}


def test_the_target_overlay_is_the_remote_access_identity_and_nothing_else() -> None:
    docs = [without_labels(d) for d in rendered("target")]
    expected = [
        without_labels(d) for d in manifest_documents(REPO_ROOT / "deploy" / "remote-access.yaml")
    ]
    assert sorted(docs, key=key) == sorted(expected, key=key)


def test_the_namespace_creation_component_turns_the_flag_on_and_grants_only_that(
    tmp_path: Path,
) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(OVERLAYS / "source", overlay)],
                "components": [
                    os.path.relpath(KUSTOMIZE / "components" / "namespace-creation", overlay)
                ],
            }
        )
    )
    docs = {key(d): d for d in render(overlay)}
    base = {key(d): d for d in rendered("source")}
    changed = [k for k in base if docs[k] != base[k]]
    mirror = ("Deployment", "linkerd-multicluster", "destination-mirror")
    assert changed == [mirror]
    (container,) = docs[mirror]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DESTINATION_MIRROR_ENABLE_NAMESPACE_CREATION"] == "true"
    added = {k[0]: d for k, d in docs.items() if k not in base}
    assert set(added) == {"ClusterRole", "ClusterRoleBinding"}
    assert added["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}
    ]
    pod = base[mirror]["spec"]["template"]["spec"]
    assert added["ClusterRoleBinding"]["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": "linkerd-multicluster",
        }
    ]
    assert added["ClusterRoleBinding"]["roleRef"]["name"] == key(added["ClusterRole"])[2]


# -- the API server accepts every object ------------------------------------------


@pytest.mark.parametrize(("overlay", "cluster"), [("source", "east"), ("target", "west")])
def test_every_rendered_object_is_accepted_by_the_api_server(
    clusters: dict[str, LocalCluster], overlay: str, cluster: str
) -> None:
    target = clusters[cluster]
    docs = list(rendered(overlay))
    namespaces = {key(d)[1] for d in docs if key(d)[1]} | {
        key(d)[2] for d in docs if d["kind"] == "Namespace"
    }
    ensure_namespaces(target, namespaces)
    out = apply(target, docs, dry_run=True)
    applied = [
        line for line in out.splitlines() if line.endswith("serverside-applied (server dry run)")
    ]
    assert len(applied) == len(docs), out


# -- the server with the rendered RBAC -----------------------------------------------


async def test_the_server_syncs_every_watch_with_the_rendered_rbac(
    east: Kube, tmp_path: Path
) -> None:
    rbac = bound_rbac("source", "destination")
    account = rbac[0]["metadata"]
    cluster = east.cluster
    await asyncio.to_thread(ensure_namespaces, cluster, {key(d)[1] for d in rbac if key(d)[1]})
    await asyncio.to_thread(apply, cluster, rbac)
    user = service_account_user(account["namespace"], account["name"])
    await asyncio.to_thread(
        wait_allowed, cluster, user, "watch", "serviceprofiles.linkerd.io", "-A"
    )
    kubeconfig = await asyncio.to_thread(
        token_kubeconfig, cluster, account["namespace"], account["name"], tmp_path / "server"
    )
    # running_server waits for gRPC health SERVING: every watch has listed.
    async with running_server(east, kubeconfig=str(kubeconfig)) as server:
        status, text = await http_get(server.admin, "/ready")
        assert status == 200, text


# -- the mirror with the rendered RBAC ------------------------------------------------


@pytest.fixture(scope="module")
def mirror_rbac(clusters: dict[str, LocalCluster]) -> Iterator[tuple[str, str]]:
    """The rendered mirror RBAC in a namespace of its own on east: (namespace, user)."""
    cluster = clusters["east"]
    suffix = secrets.token_hex(3)
    namespace = f"mirror-rbac-{suffix}"
    docs = relocated(bound_rbac("source", "destination-mirror"), namespace, suffix)
    ensure_namespaces(cluster, {namespace})
    apply(cluster, docs)
    account = docs[0]["metadata"]["name"]
    user = service_account_user(namespace, account)
    wait_allowed(
        cluster, user, "patch", f"links.{LINK_GROUP}", "--subresource=status", "-n", namespace
    )
    wait_allowed(cluster, user, "create", "services", "-n", "default")
    try:
        yield namespace, user
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                cluster.kubectl(
                    "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found"
                )


@pytest.mark.parametrize(
    ("verb", "resource", "where", "allowed"),
    [
        pytest.param("watch", "secrets", "own", True, id="watch-secrets-here"),
        pytest.param("get", "secrets", "own", False, id="no-secret-reads-by-name"),
        pytest.param("list", "secrets", "default", False, id="no-secrets-elsewhere"),
        pytest.param("list", "secrets", "-A", False, id="no-secrets-cluster-wide"),
        pytest.param("create", "secrets", "own", False, id="no-secret-writes"),
        pytest.param("create", "services", "default", True, id="create-services-anywhere"),
        pytest.param("update", "services", "default", True, id="update-services"),
        pytest.param("delete", "endpoints", "default", True, id="delete-endpoints"),
        pytest.param("update", "endpoints", "default", False, id="no-endpoints-replace"),
        pytest.param("create", "endpointslices.discovery.k8s.io", "default", False, id="no-slices"),
        pytest.param("create", "pods", "default", False, id="no-pods"),
        pytest.param("delete", "deployments.apps", "default", False, id="no-deployments"),
        pytest.param("list", "nodes", "-A", False, id="no-nodes"),
        pytest.param("watch", "namespaces", "-A", True, id="watch-namespaces"),
        pytest.param("create", "namespaces", "-A", False, id="no-namespace-creation"),
        pytest.param("patch", f"links.{LINK_GROUP}", "own", True, id="patch-links"),
        pytest.param("delete", f"links.{LINK_GROUP}", "own", False, id="no-link-deletes"),
        pytest.param("update", f"links.{LINK_GROUP}", "own", False, id="no-link-replace"),
        pytest.param("list", f"links.{LINK_GROUP}", "default", False, id="no-links-elsewhere"),
        pytest.param("update", "leases.coordination.k8s.io", "own", True, id="renew-leases"),
        pytest.param("delete", "leases.coordination.k8s.io", "own", False, id="no-lease-deletes"),
        pytest.param(
            "create", "leases.coordination.k8s.io", "default", False, id="no-leases-elsewhere"
        ),
        pytest.param("create", "events", "default", False, id="no-events-elsewhere"),
        pytest.param(
            "create", "rolebindings.rbac.authorization.k8s.io", "own", False, id="no-rbac"
        ),
    ],
)
def test_the_mirror_roles_allow_only_what_the_controller_does(
    clusters: dict[str, LocalCluster],
    mirror_rbac: tuple[str, str],
    verb: str,
    resource: str,
    where: str,
    allowed: bool,
) -> None:
    namespace, user = mirror_rbac
    scope = ["-n", namespace] if where == "own" else (["-A"] if where == "-A" else ["-n", where])
    assert can_i(clusters["east"], user, verb, resource, *scope) is allowed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def target_credentials(west: Kube) -> str:
    """A kubeconfig for the identity the rendered target overlay creates on west."""
    docs = list(rendered("target"))
    await asyncio.to_thread(apply, west.cluster, docs)
    (binding,) = (d for d in docs if d["kind"] == "ClusterRoleBinding")
    (subject,) = binding["subjects"]
    user = service_account_user(subject["namespace"], subject["name"])
    await asyncio.to_thread(
        wait_allowed, west.cluster, user, "watch", "endpointslices.discovery.k8s.io", "-A"
    )
    return await asyncio.to_thread(
        service_account_kubeconfig,
        west.cluster,
        namespace=subject["namespace"],
        service_account=subject["name"],
    )


@pytest.fixture
async def west_only_namespace(west: Kube) -> AsyncIterator[str]:
    """A namespace the target has and the source lacks (the mirror reports it, in an Event)."""
    name = f"only-west-{secrets.token_hex(3)}"
    await west.create_namespace(name)
    yield name
    await west.delete_namespace(name)


@pytest.fixture
async def running_mirror(
    east: Kube, mirror_rbac: tuple[str, str], tmp_path: Path
) -> AsyncIterator[tuple[str, asyncio.Task[int], asyncio.Event]]:
    """`destination mirror` as the rendered mirror ServiceAccount; yields its admin address."""
    namespace, user = mirror_rbac
    account = user.rsplit(":", 1)[1]
    kubeconfig = await asyncio.to_thread(
        token_kubeconfig, east.cluster, namespace, account, tmp_path / "mirror"
    )
    admin = f"127.0.0.1:{free_port()}"
    config = MirrorConfig(
        namespace=namespace,
        kubeconfig=str(kubeconfig),
        admin_address=admin,
        identity="packaging-test",
        log_format=LogFormat.CONSOLE,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_mirror(config, stop=stop))
    try:
        yield admin, task, stop
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(task, return_exceptions=True)


async def http_get(admin: str, path: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://{admin}{path}") as response:
            return response.status, await response.text()
    except aiohttp.ClientError as err:
        return 0, str(err)


async def exists(read: Any, *args: str) -> bool:
    try:
        await read(*args)
        return True
    except ApiException as err:
        if err.status == 404:
            return False
        raise


async def test_the_mirror_mirrors_a_linked_target_with_the_rendered_rbac(
    east: Kube,
    west: Kube,
    namespace: str,
    west_only_namespace: str,
    mirror_rbac: tuple[str, str],
    running_mirror: tuple[str, asyncio.Task[int], asyncio.Event],
) -> None:
    home, _ = mirror_rbac
    admin, task, stop = running_mirror
    await eventually(lambda: http_get(admin, "/ready"), lambda r: r[0] == 200, what="/ready")

    target = f"west-{secrets.token_hex(3)}"
    credentials = await target_credentials(west)
    await east.core.create_namespaced_secret(
        home,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "mirror.linkerd.io/remote-kubeconfig",
            "metadata": {"name": f"cluster-credentials-{target}"},
            "data": {"kubeconfig": base64.b64encode(credentials.encode()).decode()},
        },
    )
    objects = k8s.CustomObjectsApi(east.api)
    await objects.create_namespaced_custom_object(
        LINK_GROUP,
        "v1alpha3",
        home,
        "links",
        {
            "apiVersion": f"{LINK_GROUP}/v1alpha3",
            "kind": "Link",
            "metadata": {"name": target},
            "spec": {
                "targetClusterName": target,
                "targetClusterDomain": "cluster.local",
                "clusterCredentialsSecret": f"cluster-credentials-{target}",
                "gatewayAddress": "10.12.255.1",
                "gatewayPort": "4143",
                "gatewayIdentity": GATEWAY_IDENTITY,
                "selector": {"matchLabels": {EXPORTED: "true"}},
                "remoteDiscoverySelector": {"matchLabels": {EXPORTED: "remote-discovery"}},
            },
        },
    )
    # Exports: one per mode, and one in a namespace east does not have (an Event).
    await west.create_service(namespace, "web", selector={}, labels={EXPORTED: "true"})
    await west.create_service(namespace, "api", selector={}, labels={EXPORTED: "remote-discovery"})
    await west.create_service(west_only_namespace, "lost", selector={}, labels={EXPORTED: "true"})

    core = east.core
    web, api = f"web-{target}", f"api-{target}"

    async def mirrors() -> tuple[bool, bool, bool]:
        return (
            await exists(core.read_namespaced_service, web, namespace),
            await exists(core.read_namespaced_endpoints, web, namespace),
            await exists(core.read_namespaced_service, api, namespace),
        )

    await eventually(mirrors, lambda got: got == (True, True, True), what="the three mirrors")

    async def link() -> dict[str, Any]:
        got: dict[str, Any] = await objects.get_namespaced_custom_object(
            LINK_GROUP, "v1alpha3", home, "links", target
        )
        return got

    def reasons(got: dict[str, Any]) -> dict[str, str]:
        return {
            entry["remoteRef"]["name"]: entry["conditions"][0]["reason"]
            for entry in got.get("status", {}).get("mirrorServices", [])
        }

    got = await eventually(
        link,
        lambda got: (
            reasons(got) == {"web": "Mirrored", "api": "Mirrored", "lost": "MissingNamespace"}
        ),
        what="the Link's status (links/status patch)",
    )
    assert got["metadata"].get("finalizers"), "the finalizer (links patch)"
    lease = await k8s.CoordinationV1Api(east.api).read_namespaced_lease(
        f"service-mirror-write-{target}", home
    )
    assert lease.spec.holder_identity == "packaging-test"

    async def events() -> list[str]:
        listed = await core.list_namespaced_event(home)
        return [e.reason for e in listed.items if e.involved_object.name == target]

    await eventually(events, lambda got: "ServiceMirroringSkipped" in got, what="an Event")

    # A label on the remote Service reaches its mirror (a patch), and an
    # unexported Service's mirror and Endpoints go (deletes).
    await west.core.patch_namespaced_service(
        "api", namespace, {"metadata": {"labels": {"tier": "backend"}}}
    )
    await eventually(
        lambda: core.read_namespaced_service(api, namespace),
        lambda svc: (svc.metadata.labels or {}).get("tier") == "backend",
        what="the patched mirror",
    )
    await west.core.patch_namespaced_service(
        "web", namespace, {"metadata": {"labels": {EXPORTED: None}}}
    )
    await eventually(mirrors, lambda got: got == (False, False, True), what="web's mirror gone")

    status, text = await http_get(admin, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    writes = {
        (s.labels["kind"], s.labels["verb"])
        for s in families["mirror_writes"].samples
        if s.name == "mirror_writes_total" and s.value > 0
    }
    assert {
        ("Service", "create"),
        ("Endpoints", "create"),
        ("Service", "patch"),
        ("Service", "delete"),
        ("Endpoints", "delete"),
        ("Link", "patch"),
        ("Event", "create"),
    } <= writes, writes
    assert "mirror_write_failures" in families
    failed = {
        (s.labels["kind"], s.labels["verb"]): s.value
        for s in families["mirror_write_failures"].samples
        if s.name == "mirror_write_failures_total" and s.value > 0
    }
    assert failed == {}

    # Deleting the Link: its mirrors go first, then the finalizer (a patch).
    await objects.delete_namespaced_custom_object(LINK_GROUP, "v1alpha3", home, "links", target)
    await eventually(mirrors, lambda got: got == (False, False, False), what="api's mirror gone")

    async def link_gone() -> bool:
        return not await exists(
            objects.get_namespaced_custom_object, LINK_GROUP, "v1alpha3", home, "links", target
        )

    await eventually(link_gone, bool, what="the Link released by its finalizer")
    assert not task.done()
    stop.set()
    async with asyncio.timeout(30):
        assert await task == 0
