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

Never copied either, unlike the reference: the keys by which the destination
server decides where a Service's endpoints come from (reference §3.13) -
the labels `multicluster.linkerd.io/remote-discovery` and
`multicluster.linkerd.io/remote-service`, and the annotations
`multicluster.linkerd.io/remote-discovery` and
`multicluster.linkerd.io/local-discovery`. Copied from a target's Service,
they would let that cluster send traffic for its own mirror `web-east` to a
local Service (`local-discovery: db`) or to another linked cluster
(`remote-discovery: db@west`). The mirror sets the labels itself, per mode
(as the reference's update path does, §3.7 step 5), and federation writes
its own membership annotations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .naming import (
    LOCAL_DISCOVERY,
    MIRRORED_SERVICE,
    OPAQUE_PORTS_ANNOTATION,
    REMOTE_DISCOVERY,
    REMOTE_SERVICE,
)

__all__ = [
    "NEVER_COPIED_ANNOTATIONS",
    "NEVER_COPIED_LABELS",
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
        REMOTE_DISCOVERY,  # federated membership: the destination's routing contract
        LOCAL_DISCOVERY,
    }
)
NEVER_COPIED_LABELS = frozenset({REMOTE_DISCOVERY, REMOTE_SERVICE})  # remote-discovery routing
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
        if not key.startswith(_MIRROR_PREFIX)
        and key not in NEVER_COPIED_LABELS
        and not excluded(key, rules)
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
