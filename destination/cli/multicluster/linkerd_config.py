"""What a cluster's Linkerd control plane publishes about itself: domains and trust anchors.

Linkerd keeps its install values in ConfigMap `linkerd-config` (data key
`values`, YAML): `identityTrustDomain`, `clusterDomain` and
`identityTrustAnchorsPEM`; recent versions also publish the anchors as
`ca-bundle.crt` of ConfigMap `linkerd-identity-trust-roots`. `link-gen`
reads the target's domains from there (the destination server needs both,
on its copy of the credentials); `check` compares the two clusters' trust
anchors, since identities only verify across clusters that share a root.

A ConfigMap read through a Link's credentials comes from the target and is
treated as hostile: bounded in size, YAML without anchors or aliases (a
billion-laughs document costs nothing here), values checked for type.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "CONFIG_MAP",
    "TRUST_ROOTS_CONFIG_MAP",
    "LinkerdConfig",
    "anchor_fingerprints",
    "linkerd_config",
    "trust_anchors",
]

CONFIG_MAP = "linkerd-config"
TRUST_ROOTS_CONFIG_MAP = "linkerd-identity-trust-roots"
TRUST_ROOTS_KEY = "ca-bundle.crt"
MAX_VALUES_BYTES = 512 * 1024
MAX_YAML_EVENTS = 50_000
MAX_ANCHORS = 64
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DNS_NAME_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\Z"
)
_PEM_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)


@dataclass(frozen=True, slots=True)
class LinkerdConfig:
    trust_domain: str | None
    cluster_domain: str | None
    anchors_pem: str | None


def _values(text: str) -> Mapping[str, Any]:
    """The `values` document, or {} when it is not a safe, small YAML mapping."""
    data = text.encode()
    if len(data) > MAX_VALUES_BYTES:
        return {}
    try:
        loader = _LOADER(data)
        try:
            events = 0
            while loader.check_event():
                event = loader.get_event()  # type: ignore[no-untyped-call]
                events += 1
                if events > MAX_YAML_EVENTS or isinstance(event, yaml.AliasEvent):
                    return {}
                if getattr(event, "anchor", None) is not None:
                    return {}
        finally:
            loader.dispose()
        document = yaml.load(data, Loader=_LOADER)  # a safe loader
    except yaml.YAMLError:
        return {}
    return document if isinstance(document, Mapping) else {}


def _domain(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= 253 and _DNS_NAME_RE.match(value.lower()):
        return value.lower()
    return None


def linkerd_config(config_map: Mapping[str, Any] | None) -> LinkerdConfig | None:
    """The domains and anchors of a `linkerd-config` ConfigMap; None when it says nothing."""
    data = (config_map or {}).get("data")
    if not isinstance(data, Mapping):
        return None
    values_text = data.get("values")
    values = _values(values_text) if isinstance(values_text, str) else {}
    anchors = values.get("identityTrustAnchorsPEM")
    config = LinkerdConfig(
        trust_domain=_domain(values.get("identityTrustDomain")),
        cluster_domain=_domain(values.get("clusterDomain")),
        anchors_pem=anchors if isinstance(anchors, str) and anchors.strip() else None,
    )
    return config if config != LinkerdConfig(None, None, None) else None


def trust_anchors(
    config_map: Mapping[str, Any] | None, trust_roots: Mapping[str, Any] | None
) -> str | None:
    """The trust anchors PEM a cluster publishes (trust-roots first), or None."""
    data = (trust_roots or {}).get("data")
    if isinstance(data, Mapping):
        bundle = data.get(TRUST_ROOTS_KEY)
        if isinstance(bundle, str) and bundle.strip():
            return bundle
    config = linkerd_config(config_map)
    return config.anchors_pem if config is not None else None


def anchor_fingerprints(pem: str) -> frozenset[bytes]:
    """The DER bytes of each certificate of a PEM bundle (order and whitespace ignored).

    Raises ValueError when the bundle holds no certificate, too many, or one
    that is not base64.
    """
    if len(pem) > MAX_VALUES_BYTES:
        raise ValueError("the trust anchors bundle is too large")
    blocks = _PEM_RE.findall(pem)
    if not blocks:
        raise ValueError("no PEM certificate in the trust anchors")
    if len(blocks) > MAX_ANCHORS:
        raise ValueError(f"more than {MAX_ANCHORS} trust anchors")
    ders: set[bytes] = set()
    for block in blocks:
        try:
            ders.add(base64.b64decode("".join(block.split()), validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("a trust anchor is not valid base64") from None
    return frozenset(ders)
