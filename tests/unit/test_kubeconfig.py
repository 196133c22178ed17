"""Unit tests for discovery.kubeconfig and the projection of link Secrets.

Scope: a link Secret's kubeconfig is accepted with inline credentials (token
or client certificate) and rejected, with a reason an operator can act on,
when it is not YAML, has no usable context, no http(s) server, runs a plugin
(`exec`, `auth-provider`) or names a local file. `project_credentials` turns
Secrets into records whose `problem` names what is missing.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from discovery.kubeconfig import KubeconfigError, client_from_kubeconfig, parse_kubeconfig
from discovery.models import ClusterCredentials, ClusterName, ObjectRef
from discovery.project import Invalid, project_credentials
from tests.kube.pki import create_cluster_pki

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def kubeconfig(user: dict[str, Any] | None = None, **cluster: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "west",
        "contexts": [{"name": "west", "context": {"cluster": "west", "user": "reader"}}],
        "clusters": [
            {
                "name": "west",
                "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": CA}
                | cluster,
            }
        ],
        "users": [{"name": "reader", "user": user if user is not None else {"token": "abc"}}],
    }


def dump(config: dict[str, Any]) -> bytes:
    return yaml.safe_dump(config).encode()


def test_an_inline_token_kubeconfig_is_accepted() -> None:
    config = parse_kubeconfig(dump(kubeconfig()))
    assert config["current-context"] == "west"


def test_a_single_context_is_used_without_current_context() -> None:
    raw = kubeconfig()
    del raw["current-context"]
    assert parse_kubeconfig(dump(raw))["current-context"] == "west"


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        pytest.param(b"{not: [yaml", "not valid YAML", id="yaml"),
        pytest.param(b"- a\n- list\n", "expected a YAML mapping", id="not-mapping"),
        pytest.param(dump({"clusters": []}), "no current-context", id="no-context"),
        pytest.param(
            dump(kubeconfig() | {"current-context": "east"}),
            "context 'east' is not defined",
            id="unknown-context",
        ),
        pytest.param(dump(kubeconfig(server="10.0.0.1:6443")), "not an http(s) URL", id="server"),
        pytest.param(
            dump(kubeconfig(**{"certificate-authority": "/etc/ca.crt"})),
            "certificate-authority names a local file",
            id="ca-file",
        ),
        pytest.param(
            dump(kubeconfig({"exec": {"command": "/bin/sh"}})), "'exec' plugins", id="exec"
        ),
        pytest.param(
            dump(kubeconfig({"auth-provider": {"name": "gcp"}})),
            "'auth-provider' plugins",
            id="auth-provider",
        ),
        pytest.param(
            dump(kubeconfig({"tokenFile": "/var/run/secrets/kubernetes.io/token"})),
            "'tokenFile' names a local file",
            id="token-file",
        ),
        pytest.param(
            dump(kubeconfig({"client-key": "/etc/key.pem"})),
            "'client-key' names a local file",
            id="key-file",
        ),
    ],
)
def test_unusable_kubeconfigs_are_rejected_with_the_reason(config: bytes, reason: str) -> None:
    with pytest.raises(KubeconfigError, match=re.escape(reason)):
        parse_kubeconfig(config)


async def test_a_certificate_that_is_not_pem_is_rejected() -> None:
    with pytest.raises(KubeconfigError, match="not valid PEM"):
        await client_from_kubeconfig(dump(kubeconfig()))


async def test_a_client_is_built_for_the_kubeconfig_server(tmp_path: Path) -> None:
    pki = create_cluster_pki(
        tmp_path, cluster="west", cluster_domain="cluster.local", service_ip="10.96.0.1"
    )
    ca = base64.b64encode(pki.ca.cert.read_bytes()).decode()
    raw = kubeconfig(**{"certificate-authority-data": ca})
    client, server = await client_from_kubeconfig(dump(raw))
    try:
        assert server == "https://10.0.0.1:6443"
        assert client.configuration.host == "https://10.0.0.1:6443"
    finally:
        await client.close()


def secret(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "mirror.linkerd.io/remote-kubeconfig",
        "metadata": {
            "name": "cluster-credentials-west",
            "namespace": "linkerd",
            "resourceVersion": "7",
            "labels": {"multicluster.linkerd.io/cluster-name": "west"},
            "annotations": {
                "multicluster.linkerd.io/trust-domain": "west.local",
                "multicluster.linkerd.io/cluster-domain": "cluster.local",
            },
        },
        "data": {"kubeconfig": base64.b64encode(b"kubeconfig bytes").decode()},
    }
    raw.update(overrides)
    return raw


def test_a_link_secret_is_projected() -> None:
    record = project_credentials(secret())
    assert record == ClusterCredentials(
        ref=ObjectRef("linkerd", "cluster-credentials-west"),
        cluster=ClusterName("west"),
        trust_domain="west.local",
        cluster_domain="cluster.local",
        kubeconfig=b"kubeconfig bytes",
        problem=None,
    )


def test_the_resource_version_alone_does_not_make_a_secret_different() -> None:
    bumped = secret()
    bumped["metadata"] = bumped["metadata"] | {"resourceVersion": "8"}
    assert project_credentials(bumped) == project_credentials(secret())


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param(secret(data={}), "data key 'kubeconfig' is missing", id="no-kubeconfig"),
        pytest.param(secret(data={"kubeconfig": "!!!"}), "not valid base64", id="not-base64"),
        pytest.param(secret(type="Opaque"), "type is 'Opaque'", id="wrong-type"),
        pytest.param(
            secret(
                metadata={
                    "name": "c",
                    "namespace": "linkerd",
                    "labels": {"multicluster.linkerd.io/cluster-name": "west"},
                }
            ),
            "annotation multicluster.linkerd.io/trust-domain is missing; "
            "annotation multicluster.linkerd.io/cluster-domain is missing",
            id="no-annotations",
        ),
    ],
)
def test_an_unusable_secret_keeps_its_cluster_and_says_why(
    raw: dict[str, Any], problem: str
) -> None:
    record = project_credentials(raw)
    assert isinstance(record, ClusterCredentials)
    assert record.cluster == "west"
    assert record.problem is not None and problem in record.problem


def test_a_secret_without_the_cluster_label_is_invalid() -> None:
    raw = secret(metadata={"name": "c", "namespace": "linkerd"})
    assert isinstance(project_credentials(raw), Invalid)
