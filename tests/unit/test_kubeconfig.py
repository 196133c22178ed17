"""Unit tests for discovery.kubeconfig and the projection of link Secrets.

Scope: a link Secret's kubeconfig becomes a `RemoteKubeconfig` holding only
the selected cluster's and user's allowlisted fields (token, client
certificate, basic credentials, inline CA, TLS server name), or is refused
with a short reason that echoes no secret: not YAML, anchors/aliases/merge
keys/duplicate keys, no usable context, names that are not strings or are
used twice, plugins, file paths, proxies, impersonation, plaintext http:// and
insecure-skip-tls-verify (unless insecure links are allowed), oversized input.

Regressions: a context naming its user or cluster by a number or boolean
(`user: 1`) once passed the checks on an entry named "1" while the client
library loaded an entry named 1 carrying an `exec` plugin or a `tokenFile`;
a child process under an audit hook shows nothing runs and nothing is read
now. Parsing runs in a worker thread, and 1 MiB is refused before parsing.
`project_credentials` turns Secrets into records whose `problem` names what
is missing.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import discovery.kubeconfig as kubeconfig_module
from discovery.kubeconfig import (
    MAX_KUBECONFIG_BYTES,
    KubeconfigError,
    RemoteKubeconfig,
    load_remote_kubeconfig,
    parse_kubeconfig,
)
from discovery.models import ClusterCredentials, ClusterName, ObjectRef
from discovery.project import Invalid, project_credentials
from tests import audited_client
from tests.kube.binaries import REPO_ROOT
from tests.kube.pki import ClusterPki, create_cluster_pki

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA = base64.b64encode(CA_PEM).decode()
SERVER = "https://10.0.0.1:6443"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"


def kubeconfig(user: dict[str, Any] | None = None, **cluster: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "west",
        "contexts": [{"name": "west", "context": {"cluster": "west", "user": "reader"}}],
        "clusters": [
            {
                "name": "west",
                "cluster": {"server": SERVER, "certificate-authority-data": CA} | cluster,
            }
        ],
        "users": [{"name": "reader", "user": user if user is not None else {"token": TOKEN}}],
    }


def dump(config: dict[str, Any]) -> bytes:
    return yaml.safe_dump(config).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return create_cluster_pki(
        tmp_path_factory.mktemp("pki"),
        cluster="west",
        cluster_domain="cluster.local",
        service_ip="10.96.0.1",
    )


# -- accepted ------------------------------------------------------------------


def test_an_inline_token_kubeconfig_gives_exactly_its_fields() -> None:
    assert parse_kubeconfig(dump(kubeconfig())) == RemoteKubeconfig(
        server=SERVER, ca_pem=CA_PEM, token=TOKEN
    )


def test_a_single_context_is_used_without_current_context() -> None:
    raw = kubeconfig()
    del raw["current-context"]
    assert parse_kubeconfig(dump(raw)).token == TOKEN


def test_a_client_certificate_user_is_read_and_kept_out_of_repr(pki: ClusterPki) -> None:
    user = {
        "client-certificate-data": b64(pki.admin.cert_pem()),
        "client-key-data": b64(pki.admin.key_pem()),
    }
    record = parse_kubeconfig(dump(kubeconfig(user)))
    assert (record.client_cert_pem, record.client_key_pem) == (
        pki.admin.cert_pem(),
        pki.admin.key_pem(),
    )
    assert record.token is None
    assert "PRIVATE KEY" not in repr(record)


def test_basic_credentials_a_server_prefix_and_a_tls_server_name_are_read() -> None:
    raw = kubeconfig(
        {"username": "reader", "password": "pa ss"},
        server="https://proxy.example:443/k8s/clusters/west",
        **{"tls-server-name": "kubernetes.default"},
    )
    record = parse_kubeconfig(dump(raw))
    assert (record.username, record.password) == ("reader", "pa ss")
    assert record.server == "https://proxy.example:443/k8s/clusters/west"
    assert record.tls_server_name == "kubernetes.default"
    assert "pa ss" not in repr(record) and TOKEN not in repr(record)


def test_unrelated_fields_and_entries_are_ignored() -> None:
    raw = kubeconfig(extensions=[{"name": "x", "extension": {"any": "thing"}}])
    raw["users"].append({"name": "other", "user": {"exec": {"command": "id"}}})
    raw["preferences"] = {"colors": True}
    assert parse_kubeconfig(dump(raw)).token == TOKEN


def test_insecure_links_are_accepted_only_when_allowed() -> None:
    plaintext = dump(kubeconfig(server="http://10.0.0.1:8080"))
    unverified = kubeconfig(**{"insecure-skip-tls-verify": True})
    del unverified["clusters"][0]["cluster"]["certificate-authority-data"]
    assert parse_kubeconfig(plaintext, allow_insecure=True).plaintext
    assert parse_kubeconfig(dump(unverified), allow_insecure=True).insecure_skip_tls_verify
    for data in (plaintext, dump(unverified)):
        with pytest.raises(KubeconfigError, match="--allow-insecure-remote-links"):
            parse_kubeconfig(data)


# -- refused -------------------------------------------------------------------


def with_context(**context: Any) -> bytes:
    raw = kubeconfig()
    raw["contexts"][0]["context"] = context
    return dump(raw)


def with_entries(key: str, *entries: Any) -> bytes:
    raw = kubeconfig()
    raw[key] = list(entries)
    return dump(raw)


REFUSED: dict[str, tuple[bytes, str]] = {
    "yaml": (b"{not: [yaml", "not valid YAML"),
    "empty": (b"", "is empty"),
    "two-documents": (dump(kubeconfig()) + b"---\n" + dump(kubeconfig()), "single document"),
    "not-mapping": (b"- a\n- list\n", "YAML mapping"),
    "python-tag": (b"a: !!python/object/apply:os.system [id]\n", "not valid YAML"),
    "no-context": (dump({"clusters": []}), "no current-context"),
    "unknown-context": (dump(kubeconfig() | {"current-context": "east"}), "'east' is not defined"),
    "context-number": (dump(kubeconfig() | {"current-context": 1}), "must be a string"),
    "user-number": (with_context(cluster="west", user=1), "user must be a string"),
    "user-true": (with_context(cluster="west", user=True), "user must be a string"),
    "user-list": (with_context(cluster="west", user=["reader"]), "user must be a string"),
    "cluster-number": (with_context(cluster=1, user="reader"), "cluster must be a string"),
    "cluster-missing": (with_context(user="reader"), "names no cluster"),
    "unknown-user": (with_context(cluster="west", user="nobody"), "'nobody' is not defined"),
    "name-number": (
        with_entries("users", {"name": 1, "user": {"token": "t"}}),
        "users[0]: name must be a non-empty string, not a number",
    ),
    "name-null": (with_entries("clusters", {"cluster": {"server": SERVER}}), "name must be"),
    "duplicate-user": (
        with_entries(
            "users", {"name": "reader", "user": {"token": "a"}}, {"name": "reader", "user": {}}
        ),
        "users: the name 'reader' is used twice",
    ),
    "duplicate-cluster": (
        with_entries(
            "clusters",
            {"name": "west", "cluster": {"server": SERVER}},
            {"name": "west", "cluster": {"server": "https://elsewhere"}},
        ),
        "the name 'west' is used twice",
    ),
    "entries-not-list": (dump(kubeconfig() | {"users": {"reader": {}}}), "users must be a list"),
    "entry-not-mapping": (with_entries("users", "reader"), "users[0] must be a mapping"),
    "body-not-mapping": (
        with_entries("users", {"name": "reader", "user": "token"}),
        "user must be a mapping",
    ),
    "too-many": (
        with_entries("users", *({"name": f"u{i}", "user": {}} for i in range(100))),
        "at most 64",
    ),
    "server-missing": (dump(kubeconfig(server=None)), "has no server"),
    "server-number": (dump(kubeconfig(server=6443)), "server must be an https:// URL"),
    "server-scheme": (dump(kubeconfig(server="10.0.0.1:6443")), "not an https:// URL"),
    "server-ftp": (dump(kubeconfig(server="ftp://10.0.0.1")), "not an https:// URL"),
    "server-port": (dump(kubeconfig(server="https://h:99999")), "server is not a URL"),
    "server-userinfo": (dump(kubeconfig(server="https://a:b@h")), "must not hold credentials"),
    "server-query": (dump(kubeconfig(server="https://h/?x=1")), "query or fragment"),
    "server-http": (dump(kubeconfig(server="http://10.0.0.1")), "plaintext http://"),
    "insecure": (
        dump(kubeconfig(**{"insecure-skip-tls-verify": True})),
        "insecure-skip-tls-verify: true turns certificate checks off",
    ),
    "insecure-not-bool": (
        dump(kubeconfig(**{"insecure-skip-tls-verify": "false"})),
        "must be true or false, not a string",
    ),
    "proxy": (dump(kubeconfig(**{"proxy-url": "http://proxy:3128"})), "proxy-url is not supported"),
    "ca-file": (
        dump(kubeconfig(**{"certificate-authority": "/etc/ca.crt"})),
        "certificate-authority names a local file",
    ),
    "ca-not-base64": (
        dump(kubeconfig(**{"certificate-authority-data": "!!"})),
        "certificate-authority-data is not valid base64",
    ),
    "ca-not-pem": (
        dump(kubeconfig(**{"certificate-authority-data": b64(b"junk")})),
        "does not hold a PEM certificate",
    ),
    "tls-server-name": (
        dump(kubeconfig(**{"tls-server-name": "a b"})),
        "tls-server-name 'a b' must be a host name",
    ),
    "exec": (dump(kubeconfig({"exec": {"command": "/bin/sh"}})), "exec plugins would run"),
    "auth-provider": (
        dump(kubeconfig({"auth-provider": {"name": "gcp"}})),
        "auth-provider plugins would run",
    ),
    "token-file": (
        dump(kubeconfig({"tokenFile": "/var/run/secrets/kubernetes.io/token"})),
        "tokenFile names a local file",
    ),
    "cert-file": (
        dump(kubeconfig({"client-certificate": "/etc/cert.pem"})),
        "client-certificate names a local file",
    ),
    "key-file": (dump(kubeconfig({"client-key": "/etc/key.pem"})), "client-key names a local file"),
    "impersonation": (dump(kubeconfig({"token": "t", "as": "admin"})), "as (impersonation)"),
    "token-number": (dump(kubeconfig({"token": 12345})), "token must be printable ASCII"),
    "token-and-basic": (
        dump(kubeconfig({"token": "t", "username": "u", "password": "p"})),
        "a token or a username and password, not both",
    ),
    "username-alone": (dump(kubeconfig({"username": "u"})), "username and password go together"),
    "username-colon": (
        dump(kubeconfig({"username": "u:v", "password": "p"})),
        "must not contain ':'",
    ),
    "cert-without-key": (
        dump(kubeconfig({"client-certificate-data": CA})),
        "client-certificate-data and client-key-data go together",
    ),
    "anchor": (b"users: &u []\nclusters: *u\n", "line 1: YAML anchors and aliases"),
    "merge-key": (b"a: {<<: {b: 1}}\n", "merge keys"),
    "duplicate-key": (
        b"current-context: west\ncurrent-context: east\n",
        "line 2: duplicate key 'current-context'",
    ),
    "too-many-values": (
        b"x: [" + b",".join([b"1"] * 20_001) + b"]\n",
        "more than 20000 YAML values",
    ),
    "oversized": (b"x: " + b"a" * MAX_KUBECONFIG_BYTES + b"\n", "at most 262144"),
}


@pytest.mark.parametrize(("data", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_unusable_kubeconfigs_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(KubeconfigError, match=re.escape(reason)) as caught:
        parse_kubeconfig(data)
    assert len(str(caught.value)) <= 300


def test_no_message_repeats_a_secret() -> None:
    secret = "s3cr3t-" + "x" * 200
    cases = [
        kubeconfig({"token": secret + " with a space"}),
        kubeconfig({"token": "t", "username": "u", "password": secret}),
        kubeconfig({"username": "u", "password": secret + "\x00"}),
        kubeconfig({"client-certificate-data": secret, "client-key-data": secret}),
        kubeconfig(server=f"https://user:{secret}@h:1"),
    ]
    for raw in cases:
        with pytest.raises(KubeconfigError) as caught:
            parse_kubeconfig(dump(raw))
        assert "s3cr3t" not in str(caught.value)


def test_names_from_the_input_are_cut_short() -> None:
    long_name = "n" * 5000
    with pytest.raises(KubeconfigError) as caught:
        parse_kubeconfig(dump(kubeconfig() | {"current-context": long_name}))
    assert len(str(caught.value)) < 100


# -- defect 1: a name of another type must never select a plugin or a file -----


def confused(tmp_path: Path, ca: str, key: Any, *, cluster: bool = False) -> dict[str, Any]:
    """A context naming its user (or cluster) `key`, a number or boolean; a clean entry
    named str(key) for the old check to pass, and an entry named `key` itself that runs
    a program, reads the server's token, or reads a local CA file and points elsewhere."""
    marker = tmp_path / "plugin-ran"
    token_file = tmp_path / "serviceaccount-token"
    token_file.write_text("the server's own token")
    ca_file = tmp_path / "local-ca.crt"
    ca_file.write_bytes(base64.b64decode(ca))
    raw = kubeconfig(**{"certificate-authority-data": ca})
    if cluster:
        raw["contexts"][0]["context"]["cluster"] = key
        raw["clusters"] = [
            {"name": str(key), "cluster": {"server": SERVER, "certificate-authority-data": ca}},
            {
                "name": key,
                "cluster": {
                    "server": "https://attacker.invalid:1",
                    "certificate-authority": str(ca_file),
                },
            },
        ]
        return raw
    raw["contexts"][0]["context"]["user"] = key
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "sh",
        "args": [
            "-c",
            f'touch {marker}; echo \'{{"apiVersion": "client.authentication.k8s.io/v1beta1", '
            '"kind": "ExecCredential", "status": {"token": "from-plugin"}}\'',
        ],
    }
    raw["users"] = [
        {"name": str(key), "user": {"token": "clean"}},
        {"name": key, "user": {"exec": plugin} if key != 2 else {"tokenFile": str(token_file)}},
    ]
    return raw


CONFUSIONS = {
    "user-1-exec": (1, False),
    "user-true-exec": (True, False),
    "user-2-token-file": (2, False),
    "cluster-1-ca-file": (1, True),
}


@pytest.fixture(scope="module")
def confusion_reports(tmp_path_factory: pytest.TempPathFactory, pki: ClusterPki) -> dict[str, Any]:
    """Every confused kubeconfig, built in one audited child process."""
    reports = {}
    directories = {}
    cases = []
    for case_id, (key, cluster) in CONFUSIONS.items():
        directories[case_id] = tmp_path_factory.mktemp(case_id)
        raw = confused(directories[case_id], b64(pki.ca.cert_pem()), key, cluster=cluster)
        data = yaml.safe_dump(raw).encode()
        cases.append({"kubeconfig": b64(data)})
    results = audited_client.run({"cases": cases}, cwd=REPO_ROOT)
    for (case_id, directory), result in zip(directories.items(), results, strict=True):
        reports[case_id] = (directory, result)
    return reports


@pytest.mark.parametrize("case_id", CONFUSIONS)
def test_a_name_of_another_type_never_runs_a_plugin_or_reads_a_file(
    confusion_reports: dict[str, Any], case_id: str
) -> None:
    directory, report = confusion_reports[case_id]
    assert report["error"] is not None and "KubeconfigError" in report["error"], report
    assert re.search("must be a (non-empty )?string", report["error"]), report["error"]
    assert report["processes"] == [], "a program was started"
    assert not (directory / "plugin-ran").exists(), "the exec plugin ran"
    for name in ("serviceaccount-token", "local-ca.crt"):
        assert str(directory / name) not in report["opened"], f"{name} was read"


# -- defect 6: size cap, and parsing off the event loop ------------------------


async def test_an_oversized_kubeconfig_is_refused_at_once_without_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = []
    monkeypatch.setattr(kubeconfig_module, "parse_kubeconfig", parsed.append)
    # 1 MiB (the most a Secret holds) of the shape that is slowest to parse.
    data = b"x: [" + b",".join([b"1"] * (512 * 1024 - 4)) + b"]\n"
    assert len(data) > 1024 * 1024 - 8
    started = time.perf_counter()
    with pytest.raises(KubeconfigError, match=f"link kubeconfigs may hold at most {262144}"):
        await load_remote_kubeconfig(data)
    assert time.perf_counter() - started < 0.05
    assert parsed == []


async def test_a_large_kubeconfig_is_parsed_in_a_worker_thread_while_the_loop_runs(
    monkeypatch: pytest.MonkeyPatch, pki: ClusterPki
) -> None:
    # Allowed (under both caps) and as slow as allowed input gets: many distinct keys.
    keys = ", ".join(f"key{i:05d}-{'x' * 12}: {i}" for i in range(6000))
    raw = kubeconfig(**{"certificate-authority-data": b64(pki.ca.cert_pem())})
    data = dump(raw) + f"preferences: {{{keys}}}\n".encode()
    assert len(data) < MAX_KUBECONFIG_BYTES
    loop_turns = 0
    seen: dict[str, Any] = {}
    real_parse = kubeconfig_module.parse_kubeconfig

    def observed_parse(raw: bytes, **kwargs: Any) -> RemoteKubeconfig:
        seen["thread"] = threading.current_thread()
        before = loop_turns
        started = time.perf_counter()
        record = real_parse(raw, **kwargs)
        seen["took_s"] = time.perf_counter() - started
        seen["loop_turns"] = loop_turns - before
        return record

    async def turn() -> None:
        nonlocal loop_turns
        while True:
            loop_turns += 1
            await asyncio.sleep(0.001)

    monkeypatch.setattr(kubeconfig_module, "parse_kubeconfig", observed_parse)
    ticker = asyncio.create_task(turn())
    try:
        record = await load_remote_kubeconfig(data)
    finally:
        ticker.cancel()
    assert seen["thread"] is not threading.main_thread()
    # The loop kept turning while the parse was under way (it cannot, on the loop).
    assert seen["loop_turns"] > 0, seen
    assert record.token == TOKEN


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
