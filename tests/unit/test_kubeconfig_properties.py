"""Property-based tests of discovery.kubeconfig: hostile kubeconfigs, generated.

Scope: valid link kubeconfigs (several clusters, users and contexts, any
current context) and mutations of them: any field replaced by any YAML value
(type confusion of names, references, server, token, certificate data,
booleans), entries duplicated under the same name, plugins and file fields
added, huge strings, shared sub-documents (anchors and aliases), arbitrary
bytes and arbitrary YAML documents. Whatever the input, `parse_kubeconfig`
either raises KubeconfigError with a short message that repeats no secret, or
returns a record whose every value is correctly typed and was read from the
one cluster and the one user that the current context names (an independent
oracle below finds them, by exact string names).
"""

from __future__ import annotations

import base64
import copy
import string
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from discovery.kubeconfig import (
    MAX_KUBECONFIG_BYTES,
    KubeconfigError,
    RemoteKubeconfig,
    parse_kubeconfig,
)

SECRET = "SECRET-"  # every generated credential starts with it; no name or URL does
PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REFUSED_USER_FIELDS = (
    "exec",
    "auth-provider",
    "tokenFile",
    "client-certificate",
    "client-key",
    "as",
    "as-uid",
    "as-groups",
    "as-user-extra",
)
REFUSED_CLUSTER_FIELDS = ("certificate-authority", "proxy-url")

# -- generators ----------------------------------------------------------------

names = st.text(alphabet=string.ascii_lowercase + string.digits + "-.@:", min_size=1, max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
)
yaml_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
tokens = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=40)


def pem(label: str, body: bytes) -> str:
    text = f"-----BEGIN {label}-----\n{base64.b64encode(body).decode()}\n-----END {label}-----\n"
    return base64.b64encode(text.encode()).decode()


@st.composite
def cluster_bodies(draw: st.DrawFn) -> dict[str, Any]:
    host = draw(st.sampled_from(["10.0.0.1", "api.example", "[fd00::1]", "localhost"]))
    port = draw(st.integers(1, 65535))
    prefix = draw(st.sampled_from(["", "/", "/k8s/clusters/c-1"]))
    body: dict[str, Any] = {"server": f"https://{host}:{port}{prefix}"}
    if draw(st.booleans()):
        body["certificate-authority-data"] = pem("CERTIFICATE", draw(st.binary(max_size=40)))
    if draw(st.booleans()):
        body["tls-server-name"] = draw(st.sampled_from(["kubernetes.default", "api.example"]))
    return body


@st.composite
def user_bodies(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["token", "basic", "certificate", "token+certificate", "none"]))
    body: dict[str, Any] = {}
    if "token" in kind:
        body["token"] = SECRET + draw(tokens)
    if kind == "basic":
        body["username"] = draw(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8))
        body["password"] = SECRET + draw(tokens)
    if "certificate" in kind:
        body["client-certificate-data"] = pem("CERTIFICATE", draw(st.binary(max_size=40)))
        body["client-key-data"] = pem("PRIVATE KEY", (SECRET + draw(tokens)).encode())
    return body


@st.composite
def valid_kubeconfigs(draw: st.DrawFn) -> dict[str, Any]:
    cluster_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    user_names = draw(st.lists(names, min_size=0, max_size=3, unique=True))
    context_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    contexts = []
    for name in context_names:
        context: dict[str, Any] = {"cluster": draw(st.sampled_from(cluster_names))}
        if user_names and draw(st.booleans()):
            context["user"] = draw(st.sampled_from(user_names))
        contexts.append({"name": name, "context": context})
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": draw(cluster_bodies())} for n in cluster_names],
        "users": [{"name": n, "user": draw(user_bodies())} for n in user_names],
        "contexts": contexts,
    }
    if len(contexts) > 1 or draw(st.booleans()):
        document["current-context"] = draw(st.sampled_from(context_names))
    return document


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document that holds a value (for replacing it)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for position, child in enumerate(value):
            found += paths(child, (*prefix, position))
    return found


def put(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


@st.composite
def mutated_kubeconfigs(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(valid_kubeconfigs())
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(
            st.sampled_from(["replace", "duplicate", "refused", "huge", "confuse-reference"])
        )
        if mutation == "replace":
            path = draw(st.sampled_from(paths(document)))
            put(document, path, draw(yaml_values))
        elif mutation == "duplicate":
            key = draw(st.sampled_from(["clusters", "users", "contexts"]))
            entries = document.get(key)
            if isinstance(entries, list) and entries:
                twin = copy.deepcopy(draw(st.sampled_from(entries)))
                body_key = key[:-1]
                if isinstance(twin, dict) and isinstance(twin.get(body_key), dict):
                    twin[body_key]["server" if key == "clusters" else "token"] = (
                        "https://twin.example" if key == "clusters" else SECRET + "twin"
                    )
                entries.insert(draw(st.integers(0, len(entries))), twin)
        elif mutation == "refused":
            key, fields = draw(
                st.sampled_from(
                    [("users", REFUSED_USER_FIELDS), ("clusters", REFUSED_CLUSTER_FIELDS)]
                )
            )
            entries = document.get(key)
            if isinstance(entries, list) and entries:
                entry = draw(st.sampled_from(entries))
                body = entry.get(key[:-1]) if isinstance(entry, dict) else None
                if isinstance(body, dict):
                    body[draw(st.sampled_from(fields))] = draw(
                        st.sampled_from(
                            [{"command": "id"}, "/var/run/secrets/token", "http://proxy:3128"]
                        )
                        | yaml_values
                    )
        elif mutation == "huge":
            path = draw(st.sampled_from(paths(document)))
            size = draw(st.sampled_from([1000, 70_000, MAX_KUBECONFIG_BYTES]))
            put(document, path, "x" * size)  # anywhere, so names too: not a secret
        else:  # a context names its cluster or user by a value of another type
            contexts = document.get("contexts")
            if isinstance(contexts, list) and contexts and isinstance(contexts[0], dict):
                context = contexts[0].get("context")
                if isinstance(context, dict):
                    field = draw(st.sampled_from(["cluster", "user"]))
                    confused = draw(st.sampled_from([1, True, 0, 1.5, None, ["a"], {"a": 1}]))
                    context[field] = confused
                    entries = document.setdefault(field + "s", [])
                    if isinstance(entries, list):
                        entries.append({"name": confused, field: {"exec": {"command": "id"}}})
                        entries.append({"name": str(confused), field: {}})
    return document


# -- the oracle ----------------------------------------------------------------


def only_entry(document: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    """The one entry whose name is exactly the string `name`; the oracle's own lookup."""
    entries = document[key]
    assert isinstance(entries, list)
    matching = [
        entry
        for entry in entries
        if isinstance(entry, dict) and type(entry.get("name")) is str and entry["name"] == name
    ]
    assert len(matching) == 1, f"{len(matching)} {key} named {name!r}, yet accepted"
    body = matching[0].get(key[:-1])
    if body is None:  # `user: null` is an empty section (no credentials), as kubectl reads it
        return {}
    assert isinstance(body, dict)
    return body


def text_or_none(body: dict[str, Any], key: str) -> Any:
    value = body.get(key)
    return None if value in (None, "") else value


def data_or_none(body: dict[str, Any], key: str) -> bytes | None:
    value = text_or_none(body, key)
    return None if value is None else base64.b64decode(value.replace("\n", ""))


def check_record(document: dict[str, Any], record: RemoteKubeconfig) -> None:
    """The record is exactly what the selected cluster and user say, nothing else."""
    contexts = document["contexts"]
    current = document.get("current-context")
    if current in (None, ""):
        assert len(contexts) == 1
        current = contexts[0]["name"]
    assert type(current) is str
    context = only_entry(document, "contexts", current)
    cluster_name, user_name = context["cluster"], context.get("user")
    assert type(cluster_name) is str
    cluster = only_entry(document, "clusters", cluster_name)
    user: dict[str, Any] = {}
    if user_name not in (None, ""):
        assert type(user_name) is str
        user = only_entry(document, "users", user_name)

    for field in REFUSED_CLUSTER_FIELDS:
        assert text_or_none(cluster, field) is None, f"accepted with {field}"
    for field in REFUSED_USER_FIELDS:
        assert text_or_none(user, field) is None, f"accepted with {field}"
    assert type(record.server) is str and record.server.lower().startswith("https://")
    assert record.server == cluster["server"]
    assert record.ca_pem == data_or_none(cluster, "certificate-authority-data")
    assert record.tls_server_name == text_or_none(cluster, "tls-server-name")
    assert record.insecure_skip_tls_verify is False
    assert record.token == text_or_none(user, "token")
    assert record.username == text_or_none(user, "username")
    assert record.password == text_or_none(user, "password")
    assert record.client_cert_pem == data_or_none(user, "client-certificate-data")
    assert record.client_key_pem == data_or_none(user, "client-key-data")
    for value in (record.token, record.username, record.password, record.tls_server_name):
        assert value is None or type(value) is str
    for data in (record.ca_pem, record.client_cert_pem, record.client_key_pem):
        assert data is None or type(data) is bytes


def parse_or_refuse(data: bytes) -> RemoteKubeconfig | None:
    """The record, or None after checking the refusal is short and repeats no secret."""
    try:
        return parse_kubeconfig(data)
    except KubeconfigError as err:
        message = str(err)
        assert 0 < len(message) <= 300, message
        assert SECRET not in message, message
        return None


def dump(document: Any) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True).encode()


# -- properties ----------------------------------------------------------------


@PROFILE
@given(valid_kubeconfigs())
def test_valid_kubeconfigs_give_the_selected_entries_exactly(document: dict[str, Any]) -> None:
    record = parse_kubeconfig(dump(document))
    check_record(document, record)


@PROFILE
@given(mutated_kubeconfigs())
def test_mutated_kubeconfigs_are_refused_or_read_only_from_the_selected_entries(
    document: dict[str, Any],
) -> None:
    record = parse_or_refuse(dump(document))
    if record is not None:
        check_record(document, record)


@PROFILE
@given(yaml_values)
def test_any_yaml_document_is_refused_or_well_formed(document: Any) -> None:
    record = parse_or_refuse(dump(document))
    if record is not None:
        check_record(document, record)


@PROFILE
@given(st.binary(max_size=4096))
def test_any_bytes_are_refused_or_give_a_record(data: bytes) -> None:
    record = parse_or_refuse(data)
    assert record is None or isinstance(record, RemoteKubeconfig)


@PROFILE
@given(valid_kubeconfigs(), st.data())
def test_shared_sub_documents_anchors_and_aliases_are_refused(
    document: dict[str, Any], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(["clusters", "contexts"]))
    entry = data.draw(st.sampled_from(document[key]))
    document["extensions"] = [{"name": "copy", "extension": entry}]  # the same object twice
    text = dump(document)
    assume(b"&" in text)
    record = parse_or_refuse(text)
    assert record is None


@PROFILE
@given(valid_kubeconfigs(), st.integers(1, 4096))
def test_input_over_the_cap_is_refused_whatever_it_holds(
    document: dict[str, Any], excess: int
) -> None:
    text = dump(document)
    padded = text + b"#" * (MAX_KUBECONFIG_BYTES - len(text) + excess)
    assert len(padded) > MAX_KUBECONFIG_BYTES
    try:
        parse_kubeconfig(padded)
    except KubeconfigError as err:
        assert "at most" in str(err)
    else:
        raise AssertionError("oversized input was parsed")
    # Right at the cap, the same document is read (a comment is padding, nothing more).
    at_cap = text + b"#" * (MAX_KUBECONFIG_BYTES - len(text))
    check_record(document, parse_kubeconfig(at_cap))
