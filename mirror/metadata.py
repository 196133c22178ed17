"""Labels, annotations and ports a mirror takes from the Service it mirrors (reference §3.6).

Labels: every remote label but those under `mirror.linkerd.io` (the export
markers must not make the mirror look exported itself) and the Link's
`excludedLabels`; then `mirror.linkerd.io/mirrored-service: "true"`.
Annotations: every remote annotation but the topology-aware-hints ones (not
multicluster aware), `kubectl.kubernetes.io/last-applied-configuration` (a
copy of the remote manifest, meaningless locally and large: the reference
copies it) and `excludedAnnotations`; `config.linkerd.io/opaque-ports` is
always kept, excluded or not, because the local side must know a port is
opaque.

An exclusion ending in `/*` excludes every key starting with what precedes
it; this is a plain string prefix, as in the reference (`evil.io/*` also
excludes `evil.ioX/key`), kept because Links written for Linkerd rely on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .naming import MIRRORED_SERVICE, OPAQUE_PORTS_ANNOTATION

__all__ = [
    "NEVER_COPIED_ANNOTATIONS",
    "endpoint_ports",
    "excluded",
    "mirror_annotations",
    "mirror_labels",
    "mirror_ports",
]

NEVER_COPIED_ANNOTATIONS = frozenset(
    {
        "service.kubernetes.io/topology-aware-hints",
        "service.kubernetes.io/topology-mode",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
)
_MIRROR_PREFIX = "mirror.linkerd.io"


def excluded(key: str, exclusions: Iterable[str]) -> bool:
    """Whether `key` is named by an exclusion: exactly, or by a `prefix/*` entry."""
    for entry in exclusions:
        if entry.endswith("/*"):
            if key.startswith(entry[:-2]):
                return True
        elif key == entry:
            return True
    return False


def mirror_labels(remote: Mapping[str, str], exclusions: Iterable[str]) -> dict[str, str]:
    rules = tuple(exclusions)
    labels = {
        key: value
        for key, value in remote.items()
        if not key.startswith(_MIRROR_PREFIX) and not excluded(key, rules)
    }
    labels[MIRRORED_SERVICE] = "true"
    return labels


def mirror_annotations(remote: Mapping[str, str], exclusions: Iterable[str]) -> dict[str, str]:
    rules = tuple(exclusions)
    annotations = {
        key: value
        for key, value in remote.items()
        if key not in NEVER_COPIED_ANNOTATIONS and not excluded(key, rules)
    }
    if OPAQUE_PORTS_ANNOTATION in remote:
        annotations[OPAQUE_PORTS_ANNOTATION] = remote[OPAQUE_PORTS_ANNOTATION]
    return annotations


def mirror_ports(ports: Iterable[Any]) -> list[dict[str, Any]]:
    """A Service's `spec.ports` as the mirror declares them (no nodePort: it is ClusterIP)."""
    result = []
    for port in ports:
        item: dict[str, Any] = {"port": port.port, "protocol": port.protocol}
        if port.name:
            item["name"] = port.name
        if port.target_port is not None:
            item["targetPort"] = port.target_port
        if port.app_protocol:
            item["appProtocol"] = port.app_protocol  # e.g. linkerd.io/opaque: keep it
        result.append(item)
    return result


def endpoint_ports(ports: Iterable[Any], gateway_port: int) -> list[dict[str, Any]]:
    """Endpoints ports of a gateway-mode mirror: each Service port, by name, at the gateway."""
    result = []
    for port in ports:
        item: dict[str, Any] = {"port": gateway_port, "protocol": port.protocol}
        if port.name:
            item["name"] = port.name
        result.append(item)
    return result
