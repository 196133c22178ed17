"""Kubeconfigs from link Secrets, read into a typed record of what may be used.

A link Secret is written by whoever can write Secrets in the controller
namespace, and the server acts on it with its own process and identity. So
its kubeconfig is never handed to a client library: `parse_kubeconfig` picks
the few fields a remote link needs out of the document into a frozen
`RemoteKubeconfig`, and `discovery.transport` builds the connection from that
record alone. Nothing else in the document can have an effect.

What is accepted: one cluster (an `https://` server, an inline CA, an
optional TLS server name) and one user (an inline bearer token, an inline
client certificate and key, or a username and password). What is refused,
with a reason for the cluster's status:

* plugins (`exec`, `auth-provider`): they would run a program in the server;
* fields naming local files (`tokenFile`, `certificate-authority`,
  `client-certificate`, `client-key`): they would send the server's own
  ServiceAccount token, or any file it can read, to an address of the
  Secret writer's choosing;
* `proxy-url` and impersonation (`as`, `as-groups`, ...), which the transport
  does not implement rather than silently ignore;
* plaintext `http://` servers and `insecure-skip-tls-verify: true`, unless
  the server runs with `--allow-insecure-remote-links` (tests only);
* names that are not strings, and duplicate names: a context saying
  `user: 1` must not match an entry named `"1"` in one reading and an entry
  named `1` in another (the bypass this module once had);
* YAML anchors, aliases, merge keys and duplicate mapping keys (each a way
  for one document to read differently to different tools), more than
  `MAX_KUBECONFIG_BYTES`, and more than `MAX_ENTRIES` entries of a kind.

Error messages are short and never repeat credentials; anything echoed from
the input is cut to a few dozen characters.

Parsing is CPU work on hostile input, so the async entry point
`load_remote_kubeconfig` checks the size first, on the loop, then parses in a
worker thread with libyaml (`yaml.CSafeLoader`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
import yaml.nodes

MAX_KUBECONFIG_BYTES = 256 * 1024
"""Link kubeconfigs are a few KiB; a Secret may hold 1 MiB. Refused above this, unparsed."""

MAX_ENTRIES = 64
"""Contexts, clusters or users in one kubeconfig: a link needs one of each."""

MAX_YAML_EVENTS = 20_000
"""Parser events (about two per value) in one kubeconfig; a link needs a few hundred."""

MAX_SERVER_URL = 2048
_SHOWN = 40  # characters of an input value echoed in a message

# libyaml when the platform has it (every pyyaml wheel does): ~10x faster than
# the pure Python loader, and it refuses nesting deeper than 1000 levels.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"

_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9._:\[\]-]{1,253}")
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )?PRIVATE KEY-----")

# Fields that are refused whenever they hold anything, and why.
_PLUGIN = "plugins would run a program inside the destination server; embed a token or certificate"
_FILE = "names a local file, which the server would read and send; embed the data instead"
_CLUSTER_REFUSED = {
    "certificate-authority": f"{_FILE} (certificate-authority-data)",
    "proxy-url": "is not supported: the server connects to the API server directly",
}
_USER_REFUSED = {
    "exec": _PLUGIN,
    "auth-provider": _PLUGIN,
    "tokenFile": f"{_FILE} (token)",
    "client-certificate": f"{_FILE} (client-certificate-data)",
    "client-key": f"{_FILE} (client-key-data)",
    "as": "(impersonation) is not supported",
    "as-uid": "(impersonation) is not supported",
    "as-groups": "(impersonation) is not supported",
    "as-user-extra": "(impersonation) is not supported",
}
_INSECURE_HINT = "accepted only with --allow-insecure-remote-links, for tests"


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used, with a short reason fit for an operator."""


@dataclass(frozen=True, slots=True)
class RemoteKubeconfig:
    """Everything a link may say about how to reach its cluster, and nothing more.

    Built only by `parse_kubeconfig`; every value is of its declared type.
    Secrets are left out of `repr`, so a record in a log or a traceback leaks
    nothing.
    """

    server: str  # https://host:port[/prefix], or http:// when insecure links are allowed
    ca_pem: bytes | None = None  # None: the system's trust store
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_server_name: str | None = None
    insecure_skip_tls_verify: bool = False  # only ever True when insecure links are allowed

    @property
    def plaintext(self) -> bool:
        return self.server.lower().startswith("http://")


async def load_remote_kubeconfig(data: bytes, *, allow_insecure: bool = False) -> RemoteKubeconfig:
    """`parse_kubeconfig` off the event loop; oversized input is refused before any work."""
    check_size(data)
    return await asyncio.to_thread(parse_kubeconfig, data, allow_insecure=allow_insecure)


def check_size(data: bytes) -> None:
    if not isinstance(data, bytes):
        raise KubeconfigError(f"must be bytes, not {type(data).__name__}")
    if len(data) > MAX_KUBECONFIG_BYTES:
        raise KubeconfigError(
            f"is {len(data)} bytes; link kubeconfigs may hold at most "
            f"{MAX_KUBECONFIG_BYTES} (embed only the link's cluster and user)"
        )


def parse_kubeconfig(data: bytes, *, allow_insecure: bool = False) -> RemoteKubeconfig:
    """The record of the current context's cluster and user, or KubeconfigError saying why not.

    Blocking (CPU): call it from a worker thread, or use `load_remote_kubeconfig`.
    """
    check_size(data)
    document = _load_yaml(data)
    if not isinstance(document, dict):
        raise KubeconfigError(
            f"is not a kubeconfig (expected a YAML mapping, got {_kind(document)})"
        )
    contexts = _entries(document, "contexts", "context")
    clusters = _entries(document, "clusters", "cluster")
    users = _entries(document, "users", "user")

    context_name = _current_context(document, contexts)
    context = contexts[context_name]
    where = f"context {_shown(context_name)}"
    cluster_name = _reference(context, "cluster", where)
    if cluster_name is None:
        raise KubeconfigError(f"{where} names no cluster")
    if cluster_name not in clusters:
        raise KubeconfigError(f"{where}: cluster {_shown(cluster_name)} is not defined")
    user_name = _reference(context, "user", where)
    if user_name is not None and user_name not in users:
        raise KubeconfigError(f"{where}: user {_shown(user_name)} is not defined")

    cluster = _Section(clusters[cluster_name], f"cluster {_shown(cluster_name)}")
    user = _Section(users[user_name] if user_name is not None else {}, f"user {_shown(user_name)}")
    cluster.refuse(_CLUSTER_REFUSED)
    user.refuse(_USER_REFUSED)

    server = _server(cluster, allow_insecure=allow_insecure)
    ca_pem = cluster.pem("certificate-authority-data", _PEM_CERTIFICATE, "certificate")
    insecure = cluster.boolean("insecure-skip-tls-verify")
    if insecure and not allow_insecure:
        raise KubeconfigError(
            f"{cluster.where}: insecure-skip-tls-verify: true turns certificate checks off; "
            f"embed certificate-authority-data instead ({_INSECURE_HINT})"
        )
    if insecure and ca_pem is not None:
        raise KubeconfigError(
            f"{cluster.where}: insecure-skip-tls-verify and certificate-authority-data "
            "contradict each other"
        )
    tls_server_name = cluster.string("tls-server-name", _HOSTNAME_RE, "a host name")

    token = user.string("token", _TOKEN_RE, "printable ASCII without spaces", secret=True)
    username = user.string("username", None, "printable text", secret=False)
    password = user.string("password", None, "printable text", secret=True)
    cert_pem = user.pem("client-certificate-data", _PEM_CERTIFICATE, "certificate")
    key_pem = user.pem("client-key-data", _PEM_PRIVATE_KEY, "private key")
    if (cert_pem is None) != (key_pem is None):
        raise KubeconfigError(
            f"{user.where}: client-certificate-data and client-key-data go together"
        )
    if (username is None) != (password is None):
        raise KubeconfigError(f"{user.where}: username and password go together")
    if username is not None and ":" in username:
        raise KubeconfigError(f"{user.where}: username must not contain ':'")
    if token is not None and username is not None:
        raise KubeconfigError(f"{user.where}: set a token or a username and password, not both")
    return RemoteKubeconfig(
        server=server,
        ca_pem=ca_pem,
        client_cert_pem=cert_pem,
        client_key_pem=key_pem,
        token=token,
        username=username,
        password=password,
        tls_server_name=tls_server_name,
        insecure_skip_tls_verify=insecure,
    )


# -- YAML ----------------------------------------------------------------------


def _load_yaml(data: bytes) -> Any:
    try:
        _check_events(data)
        loader = _LOADER(data)
        try:
            node = loader.get_single_node()
            if node is None:
                raise KubeconfigError("is empty")
            _check_nodes(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KubeconfigError(f"is not valid YAML: {_cut(first_line, 120)}") from None
    except RecursionError:  # only the pure Python loader recurses; libyaml caps nesting
        raise KubeconfigError("is not valid YAML: nested too deeply") from None


def _check_events(data: bytes) -> None:
    """A first pass over the parser's events: few enough, and no anchors or aliases.

    Cheap (no nodes are built) and it stops at the first excess, so a document
    of a hundred thousand tiny values costs milliseconds, not a second.
    """
    loader = _LOADER(data)
    try:
        count = 0
        while loader.check_event():
            event = loader.get_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            count += 1
            if count > MAX_YAML_EVENTS:
                raise KubeconfigError(
                    f"has more than {MAX_YAML_EVENTS} YAML values; a link needs a few dozen"
                )
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                line = event.start_mark.line + 1
                raise KubeconfigError(f"line {line}: YAML anchors and aliases are not allowed")
    finally:
        loader.dispose()


def _check_nodes(root: yaml.nodes.Node) -> None:
    """Refuse what lets one document read differently to different tools.

    The composer returns an aliased node as the very same object as its
    anchor, so a node met twice is an alias (and a cycle can't loop here).
    """
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        line = node.start_mark.line + 1
        if id(node) in seen:
            raise KubeconfigError(f"line {line}: YAML anchors and aliases are not allowed")
        seen.add(id(node))
        if isinstance(node, yaml.nodes.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    raise KubeconfigError(f"line {line}: YAML merge keys (<<) are not allowed")
                if isinstance(key, yaml.nodes.ScalarNode):
                    if (key.tag, key.value) in keys:
                        raise KubeconfigError(
                            f"line {key.start_mark.line + 1}: duplicate key {_shown(key.value)}"
                        )
                    keys.add((key.tag, key.value))
                stack += (key, value)
        elif isinstance(node, yaml.nodes.SequenceNode):
            stack += node.value


# -- structure -----------------------------------------------------------------


def _entries(document: dict[Any, Any], key: str, body_key: str) -> dict[str, dict[Any, Any]]:
    """Named entries of one list (`clusters`, ...) by name: names are strings, and unique."""
    entries = document.get(key)
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise KubeconfigError(f"{key} must be a list, not {_kind(entries)}")
    if len(entries) > MAX_ENTRIES:
        raise KubeconfigError(f"has {len(entries)} {key}; at most {MAX_ENTRIES} are read")
    named: dict[str, dict[Any, Any]] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KubeconfigError(f"{key}[{position}] must be a mapping, not {_kind(entry)}")
        name = entry.get("name")
        if type(name) is not str or not name:
            raise KubeconfigError(
                f"{key}[{position}]: name must be a non-empty string, not {_kind(name)}"
            )
        if name in named:
            raise KubeconfigError(f"{key}: the name {_shown(name)} is used twice")
        body = entry.get(body_key)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise KubeconfigError(
                f"{key}[{position}] ({_shown(name)}): {body_key} must be a mapping, "
                f"not {_kind(body)}"
            )
        named[name] = body
    return named


def _current_context(document: dict[Any, Any], contexts: dict[str, dict[Any, Any]]) -> str:
    name = document.get("current-context")
    if name is None or name == "":
        if len(contexts) != 1:
            raise KubeconfigError("has no current-context, and not exactly one context")
        return next(iter(contexts))
    if type(name) is not str:
        raise KubeconfigError(f"current-context must be a string, not {_kind(name)}")
    if name not in contexts:
        raise KubeconfigError(f"context {_shown(name)} is not defined")
    return name


def _reference(context: dict[Any, Any], key: str, where: str) -> str | None:
    """The name a context gives for its cluster or user: a string, or absent."""
    value = context.get(key)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise KubeconfigError(
            f"{where}: {key} must be a string naming an entry, not {_kind(value)}"
        )
    return value


class _Section:
    """The body of the selected cluster or user: typed reads of single fields."""

    def __init__(self, body: dict[Any, Any], where: str) -> None:
        self.body = body
        self.where = where

    def _get(self, key: str) -> Any:
        value = self.body.get(key)
        return None if value == "" else value

    def refuse(self, refused: dict[str, str]) -> None:
        for key, reason in refused.items():
            if self._get(key) is not None:
                raise KubeconfigError(f"{self.where}: {key} {reason}")

    def string(
        self, key: str, pattern: re.Pattern[str] | None, what: str, *, secret: bool = False
    ) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        valid = type(value) is str and (
            pattern.fullmatch(value) if pattern is not None else value.isprintable()
        )
        if not valid:
            shown = "" if secret or type(value) is not str else f" {_shown(value)}"
            kind = "" if type(value) is str else f", not {_kind(value)}"
            raise KubeconfigError(f"{self.where}: {key}{shown} must be {what}{kind}")
        return str(value)

    def boolean(self, key: str) -> bool:
        value = self.body.get(key)
        if value is None:
            return False
        if type(value) is not bool:
            raise KubeconfigError(f"{self.where}: {key} must be true or false, not {_kind(value)}")
        return value

    def pem(self, key: str, pattern: re.Pattern[bytes], what: str) -> bytes | None:
        """Base64 of PEM text (as kubeconfigs embed it); never echoed, it may be a key."""
        value = self._get(key)
        if value is None:
            return None
        if type(value) is not str:
            raise KubeconfigError(f"{self.where}: {key} must be base64 text, not {_kind(value)}")
        try:
            decoded = base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            raise KubeconfigError(f"{self.where}: {key} is not valid base64") from None
        if not decoded.isascii() or not pattern.search(decoded):
            raise KubeconfigError(f"{self.where}: {key} does not hold a PEM {what}")
        return decoded


def _server(cluster: _Section, *, allow_insecure: bool) -> str:
    where = cluster.where
    server = cluster.body.get("server")
    if server is None or server == "":
        raise KubeconfigError(f"{where} has no server")
    if type(server) is not str:
        raise KubeconfigError(f"{where}: server must be an https:// URL, not {_kind(server)}")
    if len(server) > MAX_SERVER_URL or not server.isprintable() or any(c.isspace() for c in server):
        raise KubeconfigError(f"{where}: server is not a URL")
    try:
        url = urlsplit(server)
        port = url.port  # raises ValueError when out of range or not a number
    except ValueError:
        raise KubeconfigError(f"{where}: server is not a URL") from None
    del port
    if "@" in url.netloc:
        raise KubeconfigError(f"{where}: server URL must not hold credentials")
    scheme = url.scheme.lower()
    if scheme == "http":
        if not allow_insecure:
            raise KubeconfigError(
                f"{where}: server {_shown(server)} is plaintext http://: the credentials would "
                f"cross the network unencrypted; use https:// ({_INSECURE_HINT})"
            )
    elif scheme != "https":
        raise KubeconfigError(f"{where}: server {_shown(server)} is not an https:// URL")
    if not url.hostname:
        raise KubeconfigError(f"{where}: server {_shown(server)} has no host")
    if url.query or url.fragment or "?" in server or "#" in server:
        raise KubeconfigError(f"{where}: server {_shown(server)} must not have a query or fragment")
    return server


# -- messages ------------------------------------------------------------------

_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    bytes: "binary data",
    set: "a set",
    type(None): "null",
}


def _kind(value: object) -> str:
    """What a YAML value is, in YAML's words (values are never echoed here)."""
    return _KINDS.get(type(value), "a timestamp" if hasattr(value, "isoformat") else "a value")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: object) -> str:
    """A name or URL from the input, quoted, cut short, control characters escaped."""
    return _cut(repr(str(value)), _SHOWN)
