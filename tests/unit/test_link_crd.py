"""The Link CRD's three versions, as reference §1 tabulates them.

Scope: `deploy/crds/links.multicluster.linkerd.io.yaml` as YAML reads it.
The file shares schema parts between versions through anchors and merge
keys; these tests pin what each version ends up with, so that a misplaced
anchor (a v1alpha3 field leaking into v1alpha1, a status rule changing in
both versions at once) fails here. That the API server enforces it is
tests/integration/test_link_crd.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "links.multicluster.linkerd.io.yaml"

V1ALPHA1_SPEC = {
    "targetClusterName",
    "targetClusterDomain",
    "targetClusterLinkerdNamespace",
    "clusterCredentialsSecret",
    "gatewayAddress",
    "gatewayPort",
    "gatewayIdentity",
    "probeSpec",
    "selector",
    "remoteDiscoverySelector",
}
SPEC_FIELDS = {
    "v1alpha1": V1ALPHA1_SPEC,
    "v1alpha2": V1ALPHA1_SPEC | {"federatedServiceSelector"},
    "v1alpha3": V1ALPHA1_SPEC
    | {"federatedServiceSelector"}
    | {"excludedAnnotations", "excludedLabels"},
}


def versions() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(CRD.read_text())
    return {version["name"]: version for version in document["spec"]["versions"]}


def schema(version: str) -> dict[str, Any]:
    properties: dict[str, Any] = versions()[version]["schema"]["openAPIV3Schema"]["properties"]
    return properties


def condition(version: str, status_list: str) -> dict[str, Any]:
    statuses = schema(version)["status"]["properties"][status_list]
    item: dict[str, Any] = statuses["items"]["properties"]["conditions"]["items"]
    return item


def test_three_served_versions_v1alpha3_stored_no_conversion_webhook() -> None:
    document = yaml.safe_load(CRD.read_text())
    assert [(v["name"], v["served"], v["storage"]) for v in document["spec"]["versions"]] == [
        ("v1alpha1", True, False),
        ("v1alpha2", True, False),
        ("v1alpha3", True, True),
    ]
    assert document["spec"].get("conversion", {"strategy": "None"}) == {"strategy": "None"}
    assert document["spec"]["scope"] == "Namespaced"


@pytest.mark.parametrize("version", sorted(SPEC_FIELDS))
def test_each_version_has_the_spec_fields_of_its_generation(version: str) -> None:
    assert set(schema(version)["spec"]["properties"]) == SPEC_FIELDS[version]


@pytest.mark.parametrize(
    ("version", "period"),
    [
        ("v1alpha1", {"type": "string"}),
        ("v1alpha2", {"type": "string", "format": "duration"}),
        ("v1alpha3", {"type": "string", "format": "duration"}),
    ],
)
def test_probe_defaults_in_every_version_and_a_duration_period_from_v1alpha2(
    version: str, period: dict[str, str]
) -> None:
    probe = schema(version)["spec"]["properties"]["probeSpec"]["properties"]
    assert set(probe) == {"path", "port", "period", "timeout", "failureThreshold"}
    assert probe["period"] == period
    assert probe["timeout"] == {"type": "string", "format": "duration", "default": "30s"}
    assert probe["failureThreshold"] == {"type": "string", "default": "3"}


def test_v1alpha1_has_no_status() -> None:
    assert "status" not in schema("v1alpha1")
    assert "subresources" not in versions()["v1alpha1"]


@pytest.mark.parametrize("version", ["v1alpha2", "v1alpha3"])
@pytest.mark.parametrize("status_list", ["mirrorServices", "federatedServices"])
def test_statuses_from_v1alpha2_a_local_ref_needs_a_name_and_a_namespace(
    version: str, status_list: str
) -> None:
    assert versions()[version]["subresources"] == {"status": {}}
    assert set(schema(version)["status"]["properties"]) == {"mirrorServices", "federatedServices"}
    local_ref = condition(version, status_list)["properties"]["localRef"]
    assert local_ref["required"] == ["name", "namespace"]
    assert local_ref["properties"]["group"]["default"] == "core"


@pytest.mark.parametrize(
    ("version", "required"),
    [("v1alpha2", ["type", "status", "localRef"]), ("v1alpha3", ["type", "status"])],
)
@pytest.mark.parametrize("status_list", ["mirrorServices", "federatedServices"])
def test_local_ref_is_optional_from_v1alpha3(
    version: str, required: list[str], status_list: str
) -> None:
    assert condition(version, status_list)["required"] == required
