"""Mirror objects as the local cluster holds them, compared with what a Link wants.

The controller watches its own objects (Services and Endpoints labelled
`mirror.linkerd.io/mirrored-service=true`) and keeps each as a `LocalObject`:
the fields it writes, normalized the way `desired.py` writes them, plus the
uid, resourceVersion and allocated ClusterIP. `plan` then says what to do to
make the cluster hold a desired object: nothing (the common case: a resync or
an unchanged remote Service costs no API request), create it, patch it (a
JSON merge patch replacing exactly the labels, annotations, ports or subsets
that differ; keys someone else added to our objects are removed, as the
reference replaces them wholesale), or re-create it (a Service turning
headless or back: its clusterIP is immutable).

`mirror.linkerd.io/remote-resource-version` is written with every change but
never compared: a remote update that changes nothing mirrored must not cost
a write.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from discovery.models import ForeignRecord, ObjectRef

from .naming import REMOTE_RESOURCE_VERSION

__all__ = ["Action", "LocalObject", "Step", "normalize", "plan", "project_local_object"]

_NOT_COMPARED = frozenset({REMOTE_RESOURCE_VERSION})


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def _items(value: Any) -> list[Any]:
    """A list field, or nothing: our objects can be edited by anyone allowed to."""
    return value if isinstance(value, list) else []


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _port(raw: Any) -> dict[str, Any]:
    item = raw if isinstance(raw, Mapping) else {}
    port: dict[str, Any] = {"port": item.get("port"), "protocol": item.get("protocol") or "TCP"}
    for key in ("name", "targetPort", "appProtocol"):
        if item.get(key) not in (None, ""):
            port[key] = item[key]
    return port


def _subsets(raw: Any) -> list[dict[str, Any]]:
    subsets = []
    for subset in _items(raw):
        if not isinstance(subset, Mapping):
            continue
        normalized: dict[str, Any] = {}
        for key in ("addresses", "notReadyAddresses"):
            addresses = [
                {k: a[k] for k in ("ip", "hostname") if isinstance(a, Mapping) and a.get(k)}
                for a in _items(subset.get(key))
            ]
            if addresses:
                normalized[key] = sorted(
                    addresses, key=lambda a: (str(a.get("ip", "")), str(a.get("hostname", "")))
                )
        normalized["ports"] = sorted(
            (_port(p) for p in _items(subset.get("ports"))),
            key=lambda p: (str(p.get("name", "")), _number(p.get("port"))),
        )
        if normalized.get("addresses") or normalized.get("notReadyAddresses"):
            subsets.append(normalized)
    return subsets


def normalize(kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the controller writes, in one canonical form (desired or actual alike)."""
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    annotations = {
        k: v for k, v in _strings(meta.get("annotations")).items() if k not in _NOT_COMPARED
    }
    result: dict[str, Any] = {"labels": _strings(meta.get("labels")), "annotations": annotations}
    if kind == "Service":
        spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        result["headless"] = spec.get("clusterIP") == "None"
        result["ports"] = sorted(
            (_port(p) for p in _items(spec.get("ports"))),
            key=lambda p: (_number(p.get("port")), str(p.get("protocol"))),
        )
    else:
        result["subsets"] = _subsets(raw.get("subsets"))
    return result


@dataclass(frozen=True, slots=True)
class LocalObject(ForeignRecord):
    """One of our mirror objects as the local cluster holds it."""

    kind: str = "Service"  # or "Endpoints"
    uid: str = ""
    normalized: Mapping[str, Any] = field(default_factory=dict, hash=False)
    cluster_ip: str | None = None
    resource_version: str = field(default="", compare=False)

    @property
    def labels(self) -> Mapping[str, str]:
        labels: Mapping[str, str] = self.normalized.get("labels", {})
        return labels

    @property
    def annotations(self) -> Mapping[str, str]:
        annotations: Mapping[str, str] = self.normalized.get("annotations", {})
        return annotations


def project_local_object(kind: str, raw: Mapping[str, Any]) -> LocalObject | None:
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    cluster_ip = spec.get("clusterIP") if kind == "Service" else None
    version = meta.get("resourceVersion")
    return LocalObject(
        ref=ObjectRef(namespace, name),
        kind=kind,
        uid=str(meta.get("uid") or ""),
        normalized=normalize(kind, raw),
        cluster_ip=cluster_ip if isinstance(cluster_ip, str) and cluster_ip != "None" else None,
        resource_version=version if isinstance(version, str) else "",
    )


class Action(enum.Enum):
    NONE = "none"
    CREATE = "create"
    PATCH = "patch"
    RECREATE = "recreate"  # delete, then create: a field that cannot change in place
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    manifest: Mapping[str, Any] | None = None  # the desired object (CREATE, RECREATE)
    patch: Mapping[str, Any] | None = None  # a JSON merge patch (PATCH)


def _map_patch(desired: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, str | None]:
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if actual.get(k) != v}
    patch.update({k: None for k in actual if k not in desired})
    return patch


def plan(manifest: Mapping[str, Any] | None, actual: LocalObject | None) -> Step:
    """What to do so that the cluster holds `manifest` (None: hold nothing)."""
    if manifest is None:
        return Step(Action.DELETE) if actual is not None else Step(Action.NONE)
    if actual is None:
        return Step(Action.CREATE, manifest=manifest)
    kind = str(manifest.get("kind"))
    want = normalize(kind, manifest)
    have = actual.normalized
    if kind == "Service" and want["headless"] != have.get("headless"):
        return Step(Action.RECREATE, manifest=manifest)
    patch: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key in ("labels", "annotations"):
        changes = _map_patch(want[key], have.get(key, {}))
        if changes:
            metadata[key] = changes
    if kind == "Service":
        if want["ports"] != have.get("ports"):
            patch["spec"] = {"ports": (manifest.get("spec") or {}).get("ports", [])}
    elif want["subsets"] != have.get("subsets"):
        patch["subsets"] = manifest.get("subsets", [])
    if not metadata and not patch:
        return Step(Action.NONE)
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if REMOTE_RESOURCE_VERSION in annotations:
        metadata.setdefault("annotations", {})[REMOTE_RESOURCE_VERSION] = annotations[
            REMOTE_RESOURCE_VERSION
        ]
    if metadata:
        patch["metadata"] = metadata
    return Step(Action.PATCH, patch=patch)
