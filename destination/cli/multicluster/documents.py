"""What `link-gen` prints: a link kubeconfig, two credentials Secrets and a Link.

All pure: the command gathers the inputs from the target cluster and its
flags, these functions turn them into manifests, and `render` prints them
for `kubectl apply -f -` on the source cluster.

* The kubeconfig holds one cluster, one user and one context, everything
  inline (server URL, CA data, token): the destination server and the mirror
  controller refuse kubeconfigs naming files or plugins, and a file path of
  the operator's machine means nothing in a pod anyway.
* Secret 1, `cluster-credentials-<name>` in the Link's namespace, is the mirror
  controller's (it watches Secrets of type `mirror.linkerd.io/remote-kubeconfig`
  there; the Link names it in `spec.clusterCredentialsSecret`).
* Secret 2, the same name in the destination server's namespace, is the
  destination server's: it finds it by its label
  `multicluster.linkerd.io/cluster-name` and needs the annotations
  `multicluster.linkerd.io/trust-domain` and `multicluster.linkerd.io/cluster-domain`
  (Linkerd left these undocumented, a recurring surprise: reference §7 item 7).
  When both namespaces are one, a single Secret carries everything.
* The Link (`multicluster.linkerd.io/v1alpha3`), with the fields of reference
  §1.1; without a gateway it has no gateway fields and no `selector`, so only
  remote-discovery and federated exports apply.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from discovery.models import LabelSelector
from discovery.project import (
    CLUSTER_DOMAIN_ANNOTATION,
    CLUSTER_NAME_LABEL,
    CREDENTIALS_SECRET_TYPE,
    TRUST_DOMAIN_ANNOTATION,
)
from mirror.selectors import selector_to_json

__all__ = [
    "CREATED_BY_ANNOTATION",
    "Gateway",
    "LinkInputs",
    "ProbeSettings",
    "credentials_secret_name",
    "credentials_secrets",
    "link_document",
    "link_kubeconfig",
    "render",
]

LINK_API_VERSION = "multicluster.linkerd.io/v1alpha3"
CREATED_BY_ANNOTATION = "linkerd.io/created-by"
KUBECONFIG_KEY = "kubeconfig"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    path: str
    port: int
    period: str  # a Go duration ("3s")


@dataclass(frozen=True, slots=True)
class Gateway:
    addresses: tuple[str, ...]
    port: int
    identity: str
    probe: ProbeSettings | None


@dataclass(frozen=True, slots=True)
class LinkInputs:
    cluster_name: str
    link_namespace: str
    linkerd_namespace: str  # the source's destination server namespace
    target_linkerd_namespace: str
    trust_domain: str
    cluster_domain: str
    gateway: Gateway | None
    selector: LabelSelector | None  # gateway-mode exports; None without a gateway
    remote_discovery_selector: LabelSelector
    federated_selector: LabelSelector
    excluded_labels: tuple[str, ...] = ()
    excluded_annotations: tuple[str, ...] = ()
    created_by: str = "multicluster-destination/cli"


def credentials_secret_name(cluster: str) -> str:
    return f"cluster-credentials-{cluster}"


def link_kubeconfig(
    *,
    cluster_name: str,
    server: str,
    ca_pem: bytes | None,
    tls_server_name: str | None,
    user: str,
    token: str,
) -> bytes:
    """A self-contained kubeconfig: one cluster, one user with a token, one context."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }
    return yaml.safe_dump(document, sort_keys=False).encode()


def _secret(
    name: str,
    namespace: str,
    kubeconfig: bytes,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": CREDENTIALS_SECRET_TYPE,
        "metadata": metadata,
        "data": {KUBECONFIG_KEY: base64.b64encode(kubeconfig).decode()},
    }


def credentials_secrets(inputs: LinkInputs, kubeconfig: bytes) -> list[dict[str, Any]]:
    """The mirror controller's Secret, then the destination server's (one if they coincide)."""
    name = credentials_secret_name(inputs.cluster_name)
    destination = _secret(
        name,
        inputs.linkerd_namespace,
        kubeconfig,
        labels={CLUSTER_NAME_LABEL: inputs.cluster_name},
        annotations={
            TRUST_DOMAIN_ANNOTATION: inputs.trust_domain,
            CLUSTER_DOMAIN_ANNOTATION: inputs.cluster_domain,
        },
    )
    if inputs.link_namespace == inputs.linkerd_namespace:
        return [destination]
    return [_secret(name, inputs.link_namespace, kubeconfig), destination]


def link_document(inputs: LinkInputs) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "targetClusterName": inputs.cluster_name,
        "targetClusterDomain": inputs.cluster_domain,
        "targetClusterLinkerdNamespace": inputs.target_linkerd_namespace,
        "clusterCredentialsSecret": credentials_secret_name(inputs.cluster_name),
    }
    gateway = inputs.gateway
    if gateway is not None:
        spec["gatewayAddress"] = ",".join(gateway.addresses)
        spec["gatewayPort"] = str(gateway.port)
        spec["gatewayIdentity"] = gateway.identity
        if gateway.probe is not None:
            spec["probeSpec"] = {
                "path": gateway.probe.path,
                "port": str(gateway.probe.port),
                "period": gateway.probe.period,
            }
    if inputs.selector is not None:
        spec["selector"] = selector_to_json(inputs.selector)
    spec["remoteDiscoverySelector"] = selector_to_json(inputs.remote_discovery_selector)
    spec["federatedServiceSelector"] = selector_to_json(inputs.federated_selector)
    if inputs.excluded_labels:
        spec["excludedLabels"] = list(inputs.excluded_labels)
    if inputs.excluded_annotations:
        spec["excludedAnnotations"] = list(inputs.excluded_annotations)
    return {
        "apiVersion": LINK_API_VERSION,
        "kind": "Link",
        "metadata": {
            "name": inputs.cluster_name,
            "namespace": inputs.link_namespace,
            "annotations": {CREATED_BY_ANNOTATION: inputs.created_by},
        },
        "spec": spec,
    }


def render(documents: Sequence[dict[str, Any]], output: str) -> str:
    """YAML documents separated by `---`, or one JSON `v1/List`: both `kubectl apply -f -`."""
    if output == "json":
        return (
            json.dumps({"apiVersion": "v1", "kind": "List", "items": list(documents)}, indent=2)
            + "\n"
        )
    if output != "yaml":
        raise ValueError(f"unknown output format {output!r}")
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in documents)
