"""How this server reaches its OWN cluster: in-cluster config or the operator's kubeconfig.

The local cluster's settings belong to the operator: the Pod's
ServiceAccount (in-cluster config) or the kubeconfig file given with
`--kubeconfig` (tests, benchmarks, development). Both are trusted: the files
they name are read, `insecure-skip-tls-verify` is honoured. A LINKED
cluster's kubeconfig is a different matter (hostile, `discovery.kubeconfig`).

Why our own reader rather than kubernetes-asyncio's: importing
`kubernetes_asyncio.client` loads every API model (~860 modules, ~38 MB of
resident memory) and the server only needs a URL, TLS material and a
credential. So the common cases are read here into a `LocalClusterConfig`,
and `discovery.local_transport` connects with aiohttp directly:

* in-cluster: the server from `KUBERNETES_SERVICE_HOST`/`_PORT` (an IPv6
  host is bracketed), the CA and the bearer token from the ServiceAccount
  directory; the token file is re-read every `TOKEN_REFRESH_S` by the
  transport, since bound ServiceAccount tokens rotate;
* a kubeconfig of one file: its current context's cluster (`server`,
  `certificate-authority[-data]`, `insecure-skip-tls-verify`,
  `tls-server-name`) and user (`token` or `tokenFile`, re-read like the
  in-cluster token; `client-certificate[-data]` and `client-key[-data]`;
  `username` and `password`). Relative paths are relative to the
  kubeconfig's directory; inline data wins over a file, and `token` over
  `tokenFile`, as in kubernetes-asyncio.

Anything else that would change how requests are made (`exec` and
`auth-provider` plugins, `proxy-url`, impersonation, a field this reader
does not know, a list of several kubeconfig files) raises
`NeedsClientLibrary`: the caller then hands the file to kubernetes-asyncio,
imported only in that case, so no kubeconfig that worked before stops
working. A kubeconfig that is broken (not YAML, no current context, a
missing file, a value of the wrong type) raises `LocalConfigError` with the
file and the reason.

Every reader here blocks (files, YAML): `load_local_config` runs them in a
worker thread. The file paths of the in-cluster config are parameters so
that tests can point them at a temporary directory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_TOKEN = SERVICE_ACCOUNT_DIR / "token"
IN_CLUSTER_CA = SERVICE_ACCOUNT_DIR / "ca.crt"
HOST_VARIABLE = "KUBERNETES_SERVICE_HOST"
PORT_VARIABLE = "KUBERNETES_SERVICE_PORT"

TOKEN_REFRESH_S = 60.0
"""How long a token read from a file is used before the file is read again (client-go: 1 min)."""

MAX_FILE_BYTES = 1024 * 1024
"""Kubeconfigs, certificates, keys and tokens are a few KiB; a larger file is a mistake."""

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_SHOWN = 60

# Fields read here. Others that only describe (extensions) or that the client
# library ignores as well (disable-compression) have no effect on requests.
_CLUSTER_FIELDS = frozenset(
    {
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "extensions",
        "disable-compression",
    }
)
_USER_FIELDS = frozenset(
    {
        "token",
        "tokenFile",
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "username",
        "password",
        "extensions",
    }
)


class LocalConfigError(ValueError):
    """The local cluster's configuration cannot be used; the message says where and why."""


class NeedsClientLibrary(LocalConfigError):
    """The kubeconfig uses what only kubernetes-asyncio implements (a plugin, a proxy, ...)."""


@dataclass(frozen=True, slots=True)
class LocalClusterConfig:
    """How to reach and authenticate to the local API server; secrets are left out of `repr`."""

    server: str  # http(s)://host:port[/prefix], without a trailing slash
    source: str  # where it came from, for messages: "in-cluster config", "kubeconfig PATH"
    ca_pem: bytes | None = None  # None: the system's trust store
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # the current token (inline or read)
    token_file: Path | None = None  # re-read every TOKEN_REFRESH_S when set
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_server_name: str | None = None
    insecure_skip_tls_verify: bool = False

    @property
    def plaintext(self) -> bool:
        return self.server.lower().startswith("http://")


async def load_local_config(kubeconfig: str | None) -> LocalClusterConfig:
    """The kubeconfig file's settings, or the in-cluster config without one; read off the loop."""
    if kubeconfig:
        return await asyncio.to_thread(read_local_kubeconfig, kubeconfig)
    return await asyncio.to_thread(in_cluster_config)


# -- in-cluster ----------------------------------------------------------------


def in_cluster_config(
    environ: Mapping[str, str] | None = None,
    *,
    token_path: Path = IN_CLUSTER_TOKEN,
    ca_path: Path = IN_CLUSTER_CA,
) -> LocalClusterConfig:
    """The Pod's ServiceAccount: the API server's Service address, its CA, the token."""
    environ = os.environ if environ is None else environ
    source = "in-cluster config"
    host, port = environ.get(HOST_VARIABLE, ""), environ.get(PORT_VARIABLE, "")
    if not host or not port:
        raise LocalConfigError(
            f"{source}: {HOST_VARIABLE} and {PORT_VARIABLE} are not set (not running in a "
            "Pod?): pass --kubeconfig"
        )
    if ":" in host or "%" in host:  # IPv6, possibly with a zone
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    _check_url(server, source)
    ca_pem = _read_file(ca_path, source, "the ServiceAccount CA")
    token = read_token_file(token_path, source)
    return LocalClusterConfig(
        server=server, source=source, ca_pem=ca_pem, token=token, token_file=token_path
    )


def read_token_file(path: Path, where: str) -> str:
    """A bearer token from a file, surrounding whitespace removed; LocalConfigError if unusable.

    Blocking: call it from a worker thread.
    """
    text = _read_file(path, where, "token file").decode("ascii", errors="replace").strip()
    if not _TOKEN_RE.fullmatch(text):
        raise LocalConfigError(
            f"{where}: token file {path} does not hold printable ASCII without spaces"
        )
    return text


# -- kubeconfig ----------------------------------------------------------------


def read_local_kubeconfig(path: str) -> LocalClusterConfig:
    """The operator's kubeconfig file (one path; `~` expanded); see `parse_local_kubeconfig`."""
    if os.pathsep in path:
        raise NeedsClientLibrary(f"kubeconfig {_shown(path)} lists several files")
    file = Path(os.path.expanduser(path))
    source = f"kubeconfig {file}"
    data = _read_file(file, source, "the file")
    return parse_local_kubeconfig(data, base_dir=file.parent, source=source)


def parse_local_kubeconfig(
    data: bytes, *, base_dir: Path, source: str = "kubeconfig"
) -> LocalClusterConfig:
    """The current context's cluster and user, reading the files they name under `base_dir`.

    Raises NeedsClientLibrary for what only kubernetes-asyncio implements, and
    LocalConfigError for a kubeconfig that cannot work; nothing else.
    """
    document = _load_yaml(data, source)
    if not isinstance(document, dict):
        raise LocalConfigError(f"{source}: is not a kubeconfig (not a YAML mapping)")
    context_name = document.get("current-context")
    if not context_name:
        raise LocalConfigError(f"{source}: has no current-context")
    if type(context_name) is not str:
        raise LocalConfigError(f"{source}: current-context must be a string")
    context = _named(document, "contexts", "context", context_name, source)
    if context is None:
        raise LocalConfigError(f"{source}: context {_shown(context_name)} is not defined")
    where = f"{source}, context {_shown(context_name)}"
    cluster_name = _reference(context, "cluster", where)
    if cluster_name is None:
        raise LocalConfigError(f"{where}: names no cluster")
    cluster = _named(document, "clusters", "cluster", cluster_name, source)
    if cluster is None:
        raise LocalConfigError(f"{where}: cluster {_shown(cluster_name)} is not defined")
    user_name = _reference(context, "user", where)
    user: dict[Any, Any] = {}
    if user_name is not None:
        found = _named(document, "users", "user", user_name, source)
        if found is None:
            raise LocalConfigError(f"{where}: user {_shown(user_name)} is not defined")
        user = found
    return _config(
        _Section(cluster, f"{source}, cluster {_shown(cluster_name)}", base_dir),
        _Section(user, f"{source}, user {_shown(user_name)}", base_dir),
        source,
    )


def _config(cluster: _Section, user: _Section, source: str) -> LocalClusterConfig:
    cluster.only(_CLUSTER_FIELDS)
    user.only(_USER_FIELDS)
    server = cluster.string("server")
    if server is None:
        raise LocalConfigError(f"{cluster.where}: has no server")
    server = server.rstrip("/")
    _check_url(server, cluster.where)
    tls = not server.lower().startswith("http://")
    ca_pem = cluster.data_or_file("certificate-authority") if tls else None
    cert_pem = user.data_or_file("client-certificate") if tls else None
    key_pem = user.data_or_file("client-key") if tls else None
    if (cert_pem is None) != (key_pem is None):
        raise NeedsClientLibrary(f"{user.where}: a client certificate without a separate key")
    token, token_file = user.string("token", secret=True), None
    if token is None:
        token_file = user.path("tokenFile")
        if token_file is not None:
            token = read_token_file(token_file, user.where)
    elif not _TOKEN_RE.fullmatch(token):
        raise LocalConfigError(f"{user.where}: token must be printable ASCII without spaces")
    username, password = user.string("username"), user.string("password", secret=True)
    if (username is None) != (password is None):
        raise LocalConfigError(f"{user.where}: username and password go together")
    return LocalClusterConfig(
        server=server,
        source=source,
        ca_pem=ca_pem,
        client_cert_pem=cert_pem,
        client_key_pem=key_pem,
        token=token,
        token_file=token_file,
        username=username if token is None else None,
        password=password if token is None else None,
        tls_server_name=cluster.string("tls-server-name"),
        insecure_skip_tls_verify=cluster.boolean("insecure-skip-tls-verify"),
    )


def _load_yaml(data: bytes, source: str) -> Any:
    """The same safe YAML reading as kubernetes-asyncio's (so a fallback reads alike)."""
    try:
        return yaml.load(data, Loader=_LOADER)  # a safe loader
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LocalConfigError(f"{source}: is not valid YAML: {first[:120]}") from None
    except RecursionError:
        raise LocalConfigError(f"{source}: is not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:  # a constructor's: `!!int x`, 02-30
        raise LocalConfigError(f"{source}: is not valid YAML: {str(err)[:120]}") from None


def _named(
    document: dict[Any, Any], key: str, body_key: str, name: str, source: str
) -> dict[Any, Any] | None:
    """The body of the entry of list `key` named `name`; None when there is none."""
    entries = document.get(key)
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise LocalConfigError(f"{source}: {key} must be a list")
    found: dict[Any, Any] | None = None
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LocalConfigError(f"{source}: {key}[{position}] must be a mapping")
        if entry.get("name") != name:
            continue
        if found is not None:
            raise LocalConfigError(f"{source}: {key}: the name {_shown(name)} is used twice")
        body = entry.get(body_key)
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise LocalConfigError(f"{source}: {key} {_shown(name)}: {body_key} must be a mapping")
        found = body
    return found


def _reference(context: dict[Any, Any], key: str, where: str) -> str | None:
    value = context.get(key)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise LocalConfigError(f"{where}: {key} must be a string naming an entry")
    return value


class _Section:
    """The selected cluster or user: typed reads of its fields, files under `base_dir`."""

    def __init__(self, body: dict[Any, Any], where: str, base_dir: Path) -> None:
        self.body = body
        self.where = where
        self.base_dir = base_dir

    def only(self, known: frozenset[str]) -> None:
        for key, value in self.body.items():
            if key not in known and value not in (None, "", [], {}):
                raise NeedsClientLibrary(f"{self.where}: {_shown(key)} is not read here")

    def string(self, key: str, *, secret: bool = False) -> str | None:
        value = self.body.get(key)
        if value is None or value == "":
            return None
        if type(value) is int:  # `password: 1234` is a number to YAML
            value = str(value)
        if type(value) is not str or not value.isprintable():
            shown = "" if secret or type(value) is not str else f" {_shown(value)}"
            raise LocalConfigError(f"{self.where}: {key}{shown} must be printable text")
        return value

    def boolean(self, key: str) -> bool:
        value = self.body.get(key)
        if value is None:
            return False
        if type(value) is not bool:
            raise LocalConfigError(f"{self.where}: {key} must be true or false")
        return value

    def path(self, key: str) -> Path | None:
        name = self.string(key)
        return None if name is None else self.base_dir / name

    def data_or_file(self, key: str) -> bytes | None:
        """`key-data` (base64, wins when both are set) or the file named by `key`."""
        data = self.string(f"{key}-data", secret=True)
        if data is not None:
            try:
                return base64.b64decode(re.sub(r"\s+", "", data), validate=True)
            except (binascii.Error, ValueError):
                raise LocalConfigError(f"{self.where}: {key}-data is not valid base64") from None
        path = self.path(key)
        return None if path is None else _read_file(path, self.where, key)


def _read_file(path: Path, where: str, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise LocalConfigError(
            f"{where}: cannot read {what} {path}: {err.strerror or type(err).__name__}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise LocalConfigError(f"{where}: {what} {path} is larger than {MAX_FILE_BYTES} bytes")
    if not data.strip():
        raise LocalConfigError(f"{where}: {what} {path} is empty")
    return data


def _check_url(server: str, where: str) -> None:
    try:
        url = urlsplit(server)
        url.port  # noqa: B018  # raises ValueError when out of range or not a number
    except ValueError:
        raise LocalConfigError(f"{where}: server {_shown(server)} is not a URL") from None
    if url.scheme.lower() not in ("https", "http") or not url.hostname:
        raise LocalConfigError(f"{where}: server {_shown(server)} is not an http(s):// URL")
    if url.query or url.fragment or "@" in url.netloc or not server.isprintable() or " " in server:
        raise LocalConfigError(
            f"{where}: server {_shown(server)} must be scheme://host:port[/path] only"
        )


def _shown(value: object) -> str:
    text = repr(str(value))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
