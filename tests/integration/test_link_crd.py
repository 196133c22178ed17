"""The Link CRD on a real API server: older Links read back as v1alpha3; status rules.

Scope: `deploy/crds/links.multicluster.linkerd.io.yaml` as the test clusters
install it. Links written at v1alpha1 and v1alpha2 (as older `link` commands
and GitOps repositories hold them) are accepted, pruned to the fields of
their version, defaulted, and read back as v1alpha3, the version the mirror
reads. A status condition's `localRef`, when present, needs a name and a
namespace: an empty `localRef: {}` (what v1alpha2 clients wrote for a
Service that could not be mirrored, linkerd/linkerd2#14433) is refused at
both versions that have a status; from v1alpha3 a condition may have none.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube.workloads import Kube

pytestmark = pytest.mark.integration

GROUP = "multicluster.linkerd.io"
SELECTOR = {"matchLabels": {"mirror.linkerd.io/exported": "true"}}
FEDERATED = {"matchLabels": {"mirror.linkerd.io/federated": "member"}}


def link(version: str, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "Link",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetClusterName": name,
            "clusterCredentialsSecret": f"cluster-credentials-{name}",
            "gatewayAddress": "10.12.255.1",
            "gatewayPort": "4143",
            "selector": SELECTOR,
            **spec,
        },
    }


def create(kube: Kube, document: dict[str, Any], *, validate: str = "strict") -> None:
    """kubectl's default refuses unknown fields; `warn` (the API's default) prunes them."""
    kube.cluster.kubectl("create", f"--validate={validate}", "-f", "-", input=json.dumps(document))


def read(kube: Kube, version: str, namespace: str, name: str) -> dict[str, Any]:
    text = kube.cluster.kubectl(
        "get", f"links.{version}.{GROUP}", name, "-n", namespace, "-o", "json"
    )
    document: dict[str, Any] = json.loads(text)
    return document


def patch_status(kube: Kube, version: str, namespace: str, name: str, status: Any) -> None:
    kube.cluster.kubectl(
        "patch",
        f"links.{version}.{GROUP}",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def condition(local_ref: dict[str, str] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "Mirrored",
        "status": "True" if local_ref else "False",
        "reason": "Mirrored" if local_ref else "MissingNamespace",
        "message": "",
        "lastTransitionTime": "2026-12-07T04:00:00Z",
    }
    if local_ref is not None:
        entry["localRef"] = local_ref
    return entry


def mirror_status(local_ref: dict[str, str] | None) -> dict[str, Any]:
    return {
        "mirrorServices": [
            {
                "controllerName": "linkerd.io/service-mirror",
                "remoteRef": {"kind": "Service", "name": "web", "namespace": "shop"},
                "conditions": [condition(local_ref)],
            }
        ]
    }


def test_a_v1alpha1_link_is_accepted_and_read_back_as_v1alpha3(east: Kube, namespace: str) -> None:
    document = link(
        "v1alpha1",
        namespace,
        "old",
        probeSpec={"path": "/ready", "port": "4191", "period": "3"},
        remoteDiscoverySelector={"matchLabels": {"mirror.linkerd.io/exported": "remote-discovery"}},
        # Not v1alpha1 fields: refused by strict validation, pruned otherwise.
        federatedServiceSelector=FEDERATED,
        excludedLabels=["team"],
    )
    with pytest.raises(RuntimeError, match=r'unknown field "spec\.excludedLabels"'):
        create(east, document)
    create(east, document, validate="warn")
    got = read(east, "v1alpha3", namespace, "old")
    assert got["apiVersion"] == f"{GROUP}/v1alpha3"
    spec = got["spec"]
    assert "federatedServiceSelector" not in spec
    assert "excludedLabels" not in spec
    assert spec["selector"] == SELECTOR
    assert spec["remoteDiscoverySelector"]["matchLabels"] == {
        "mirror.linkerd.io/exported": "remote-discovery"
    }
    # A bare number was a valid v1alpha1 period (link-gen turns it into "3s" later).
    assert spec["probeSpec"] == {
        "path": "/ready",
        "port": "4191",
        "period": "3",
        "timeout": "30s",
        "failureThreshold": "3",
    }
    assert "status" not in got


def test_a_v1alpha2_link_is_accepted_and_read_back_as_v1alpha3(east: Kube, namespace: str) -> None:
    document = link(
        "v1alpha2",
        namespace,
        "middle",
        probeSpec={"path": "/ready", "port": "4191", "period": "3s", "timeout": "5s"},
        federatedServiceSelector=FEDERATED,
        excludedAnnotations=["example.com/*"],  # v1alpha3 only
    )
    with pytest.raises(RuntimeError, match=r'unknown field "spec\.excludedAnnotations"'):
        create(east, document)
    create(east, document, validate="warn")
    got = read(east, "v1alpha3", namespace, "middle")
    assert got["apiVersion"] == f"{GROUP}/v1alpha3"
    assert got["spec"]["federatedServiceSelector"] == FEDERATED
    assert "excludedAnnotations" not in got["spec"]
    assert got["spec"]["probeSpec"]["timeout"] == "5s"
    assert got["spec"]["probeSpec"]["failureThreshold"] == "3"
    # And a v1alpha3 Link reads back at v1alpha2 too (no conversion: same fields).
    assert read(east, "v1alpha2", namespace, "middle")["apiVersion"] == f"{GROUP}/v1alpha2"


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("v1alpha1", True), ("v1alpha2", False), ("v1alpha3", False)],
)
def test_a_probe_period_must_be_a_duration_from_v1alpha2(
    east: Kube, namespace: str, version: str, accepted: bool
) -> None:
    document = link(version, namespace, "period", probeSpec={"path": "/ready", "period": "soon"})
    if accepted:
        create(east, document)
        return
    with pytest.raises(RuntimeError, match=r"probeSpec\.period"):
        create(east, document)


FULL_REF = {"kind": "Service", "name": "web-west", "namespace": "shop"}


@pytest.mark.parametrize(
    ("version", "local_ref", "accepted"),
    [
        pytest.param("v1alpha3", FULL_REF, True, id="v1alpha3-full"),
        pytest.param("v1alpha3", None, True, id="v1alpha3-absent"),
        pytest.param("v1alpha3", {}, False, id="v1alpha3-empty"),
        pytest.param("v1alpha3", {"name": "web-west"}, False, id="v1alpha3-no-namespace"),
        pytest.param("v1alpha2", FULL_REF, True, id="v1alpha2-full"),
        pytest.param("v1alpha2", None, False, id="v1alpha2-absent"),
        pytest.param("v1alpha2", {}, False, id="v1alpha2-empty"),
    ],
)
def test_a_status_local_ref_needs_a_name_and_a_namespace(
    east: Kube, namespace: str, version: str, local_ref: dict[str, str] | None, accepted: bool
) -> None:
    create(east, link("v1alpha3", namespace, "status"))
    if not accepted:
        with pytest.raises(RuntimeError, match=r"(?s)is invalid: .*conditions\[0\]\.localRef"):
            patch_status(east, version, namespace, "status", mirror_status(local_ref))
        assert "status" not in read(east, "v1alpha3", namespace, "status")
        return
    patch_status(east, version, namespace, "status", mirror_status(local_ref))
    (entry,) = read(east, "v1alpha3", namespace, "status")["status"]["mirrorServices"]
    assert entry["remoteRef"]["group"] == "core"  # defaulted
    (written,) = entry["conditions"]
    assert written.get("localRef") == (None if local_ref is None else FULL_REF | {"group": "core"})


def test_a_v1alpha1_link_has_no_status_subresource(east: Kube, namespace: str) -> None:
    create(east, link("v1alpha3", namespace, "nostatus"))
    with pytest.raises(RuntimeError, match=r"Error from server \(NotFound\)"):
        patch_status(east, "v1alpha1", namespace, "nostatus", mirror_status(FULL_REF))
