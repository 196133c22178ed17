"""Parsing of what a proxy asks for: the ``path`` and ``context_token`` of a request.

Every ``Get`` and ``GetProfile`` request names its target as an *authority*
(``host[:port]``) and may carry a *context token* describing the calling pod.
This module turns those strings into typed values. It is pure: no I/O, no
gRPC, no Kubernetes access, so each rule can be tested in isolation and the
server only maps exceptions to status codes.

Design choices
--------------
* **Go-compatible splitting.** The reference controller splits authorities with
  Go's ``net.SplitHostPort``; :func:`parse_authority` reproduces its bracket
  rules (``[::1]:80`` works, ``2001:db8::1`` and ``[::1]`` do not) rather than
  using :func:`urllib.parse.urlsplit`, which accepts other shapes.
* **Strict ports.** A port is ASCII decimal digits only, value ``1..65535``.
  Leading zeros are accepted (``080`` is 80, like Go's integer parsing), signs,
  underscores, spaces and non-ASCII digits are not (Python's :func:`int` would
  accept several of those).
* **Exceptions carry what the server needs.** :class:`InvalidAuthority` keeps
  the text that failed (``.path``) and a short ``.reason``; ``str(exc)`` is the
  exact ``Get`` message (``"Invalid authority: <path>"``). The IP case of ``Get``
  is the subclass :class:`IpAuthorityNotSupported`, whose ``str`` is
  ``"IP queries not supported by Get API: host=<host>"``, so one ``except
  InvalidAuthority`` maps both to ``INVALID_ARGUMENT`` with the right text.
  ``GetProfile`` builds its own wording from ``.path`` and ``.reason``.
* **Stricter service names than upstream (deliberate).** Upstream accepts empty
  labels (``..svc.cluster.local`` parses as service ``""`` in namespace ``""``
  and then fails the lookup with ``NOT_FOUND``). Empty labels can never name a
  Kubernetes object, so they are rejected here as an invalid authority.
* **Bounded.** A path longer than :data:`MAX_PATH_LENGTH`, a host longer
  than a DNS name (253) or a label longer than 63 is an invalid authority, and
  what an error echoes of the path is cut to :data:`MAX_ECHOED_PATH`
  characters (:func:`loggable`), so a multi-megabyte path gives a short
  INVALID_ARGUMENT and a short log line. A context token longer than
  :data:`MAX_TOKEN_LENGTH`, or with a field longer than a DNS name, is ignored
  as a whole.
* **Context tokens never fail a request.** :func:`parse_context_token` returns
  the token plus an optional human-readable reason for the caller to log. Where
  Go's ``encoding/json`` would leave a half-filled token after a type error, we
  return an empty token instead (see the function's docstring).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Authority",
    "ContextToken",
    "InvalidAuthority",
    "IpAuthorityNotSupported",
    "LookupTarget",
    "ServiceName",
    "is_ip",
    "loggable",
    "parse_authority",
    "parse_context_token",
    "parse_get_target",
    "parse_service_host",
    "split_host_port",
]

DEFAULT_PORT = 80
"""Port used when the authority has no ``:`` at all."""

_MAX_PORT = 65535
MAX_HOST_LENGTH = 253
"""A DNS name's limit; longer hosts cannot name a service."""
MAX_LABEL_LENGTH = 63
MAX_PATH_LENGTH = 300
"""A host of 253 characters, brackets, ':' and a port with a few leading zeros."""
MAX_ECHOED_PATH = 300
MAX_TOKEN_LENGTH = 4096
"""Real tokens are a short JSON object; anything longer is not parsed at all."""
MAX_TOKEN_FIELD_LENGTH = 253


def loggable(text: str, limit: int = MAX_ECHOED_PATH) -> str:
    """`text` as it may appear in a log line or a status message: cut to `limit`."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters)"


_ASCII_DIGITS = frozenset("0123456789")


class InvalidAuthority(ValueError):
    """The requested authority (or host name) cannot be served.

    ``path`` is the text that failed to parse (the whole request path for
    :func:`parse_authority` and :func:`parse_get_target`, the host for
    :func:`parse_service_host`); ``reason`` says why, for logs and for the
    ``GetProfile`` error wording.
    """

    def __init__(self, path: str, reason: str = "") -> None:
        self.path = loggable(path)
        self.reason = loggable(reason, 2 * MAX_ECHOED_PATH)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The gRPC status message for ``Get``."""
        return f"Invalid authority: {self.path}"

    def __str__(self) -> str:
        return self.message


class IpAuthorityNotSupported(InvalidAuthority):
    """``Get`` was asked for an IP address; only ``GetProfile`` serves IPs."""

    def __init__(self, path: str, host: str) -> None:
        self.host = loggable(host)
        super().__init__(path, f"{host} is an IP address")

    @property
    def message(self) -> str:
        return f"IP queries not supported by Get API: host={self.host}"


# --------------------------------------------------------------------------
# path -> (host, port)


@dataclass(frozen=True, slots=True)
class Authority:
    """A request path split into host and port (reference §4.1).

    ``host`` never has brackets: ``[::1]:80`` gives ``host="::1"``.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _split_host_port(path: str) -> tuple[str, str]:
    """Split like Go's ``net.SplitHostPort``; raise :class:`InvalidAuthority`."""
    last_colon = path.rfind(":")
    if last_colon < 0:
        raise InvalidAuthority(path, f"address {path}: missing port in address")
    if path.startswith("["):
        close = path.find("]")
        if close < 0:
            raise InvalidAuthority(path, f"address {path}: missing ']' in address")
        if close + 1 == len(path):
            raise InvalidAuthority(path, f"address {path}: missing port in address")
        if close + 1 != last_colon:
            # Either "]" is not followed by ":" or that ":" is not the last one.
            why = "too many colons" if path[close + 1] == ":" else "missing port"
            raise InvalidAuthority(path, f"address {path}: {why} in address")
        host = path[1:close]
        # No "[" after the opening one, no "]" after the closing one.
        if "[" in path[1:]:
            raise InvalidAuthority(path, f"address {path}: unexpected '[' in address")
        if "]" in path[close + 1 :]:
            raise InvalidAuthority(path, f"address {path}: unexpected ']' in address")
    else:
        host = path[:last_colon]
        if ":" in host:
            raise InvalidAuthority(path, f"address {path}: too many colons in address")
        if "[" in path:
            raise InvalidAuthority(path, f"address {path}: unexpected '[' in address")
        if "]" in path:
            raise InvalidAuthority(path, f"address {path}: unexpected ']' in address")
    return host, path[last_colon + 1 :]


def split_host_port(path: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: host and port text, the port not checked.

    Used where the reference only asks whether a string *has* a port, such as
    a traffic split's authority.
    """
    return _split_host_port(path)


def _parse_decimal(text: str, *, maximum: int) -> int | None:
    """ASCII digits (leading zeros allowed) as an int ``<= maximum``, else ``None``.

    Leading zeros are dropped before converting, so an absurdly long run of
    zeros costs nothing and never hits :func:`int`'s digit limit.
    """
    if not text or not set(text) <= _ASCII_DIGITS:
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(maximum)):
        return None
    value = int(significant)
    return value if value <= maximum else None


def parse_authority(path: str) -> Authority:
    """Split a request path into host and port (reference §4.1).

    * No ``:`` at all: the whole path is the host and the port is 80.
    * Otherwise Go ``net.SplitHostPort`` rules: an IPv6 host must be bracketed
      (``[2001:db8::1]:80``); ``2001:db8::1``, ``[::1]`` and ``a:b:80`` fail.
    * The port is decimal digits with a value in ``1..65535``.

    The host is not validated here (it may even be empty); that is the job of
    :func:`is_ip` and :func:`parse_service_host`.
    """
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidAuthority(path, f"longer than {MAX_PATH_LENGTH} characters")
    if ":" not in path:
        return Authority(host=path, port=DEFAULT_PORT)
    host, port_text = _split_host_port(path)
    port = _parse_decimal(port_text, maximum=_MAX_PORT)
    if port is None or port == 0:
        raise InvalidAuthority(path, f"invalid port {port_text!r}")
    return Authority(host=host, port=port)


def is_ip(host: str) -> bool:
    """Whether Go's ``net.ParseIP`` would accept ``host``.

    Dotted-quad IPv4 (no leading zeros) and IPv6 literals, including embedded
    IPv4 such as ``::ffff:1.2.3.4``. Brackets and zones (``fe80::1%eth0``) are
    rejected, as Go does; Python's :mod:`ipaddress` would accept a zone.
    """
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------
# host -> service


@dataclass(frozen=True, slots=True)
class ServiceName:
    """A Kubernetes service named by a cluster-local DNS name (reference §4.2).

    ``hostname`` is the instance ID of a pod DNS name
    (``<hostname>.<svc>.<ns>.svc.<cluster domain>``) and ``None`` for a plain
    service name.
    """

    namespace: str
    name: str
    hostname: str | None = None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _cluster_domain_labels(cluster_domain: str) -> list[str]:
    labels = cluster_domain.split(".")
    if not all(labels):
        # A configuration error, not a bad request: plain ValueError on purpose.
        raise ValueError(f"invalid cluster domain {cluster_domain!r}")
    return labels


def parse_service_host(host: str, *, cluster_domain: str) -> ServiceName:
    """Read ``<svc>.<ns>.svc.<cd>`` or ``<hostname>.<svc>.<ns>.svc.<cd>``.

    The name must end with the labels ``svc`` and those of ``cluster_domain``
    (case-sensitive; a trailing dot is not allowed), preceded by exactly two
    labels (service, namespace) or three (hostname, service, namespace). Empty
    labels are rejected. Raises :class:`InvalidAuthority` with ``path=host``.
    ``cluster_domain`` may have one label (``example``) or several
    (``cluster.local``); an empty one or one with empty labels is a
    :class:`ValueError`.
    """
    suffix = ["svc", *_cluster_domain_labels(cluster_domain)]
    if len(host) > MAX_HOST_LENGTH:
        raise InvalidAuthority(host, f"name longer than {MAX_HOST_LENGTH} characters")
    labels = host.split(".")
    if any(len(label) > MAX_LABEL_LENGTH for label in labels):
        raise InvalidAuthority(host, f"name has a label longer than {MAX_LABEL_LENGTH}")
    if len(labels) < len(suffix) or labels[-len(suffix) :] != suffix:
        raise InvalidAuthority(host, f"name {host} does not match cluster domain {cluster_domain}")
    head = labels[: -len(suffix)]
    if not all(head):
        raise InvalidAuthority(host, f"name {host} has an empty label")
    if len(head) == 2:
        return ServiceName(namespace=head[1], name=head[0])
    if len(head) == 3:
        return ServiceName(namespace=head[2], name=head[1], hostname=head[0])
    raise InvalidAuthority(host, f"invalid k8s service {host}")


# --------------------------------------------------------------------------
# Get dispatch


@dataclass(frozen=True, slots=True)
class LookupTarget:
    """What a ``Get`` request subscribes to: a service (maybe one pod of it) and a port."""

    service: ServiceName
    port: int


def parse_get_target(path: str, *, cluster_domain: str) -> LookupTarget:
    """Steps 1-3 of ``Get`` dispatch (reference §5.1).

    1. Unparsable path: :class:`InvalidAuthority` (``"Invalid authority: <path>"``).
    2. Host is an IP: :class:`IpAuthorityNotSupported`
       (``"IP queries not supported by Get API: host=<host>"``).
    3. Host is not a cluster-local name: :class:`InvalidAuthority` with the
       whole path.
    """
    authority = parse_authority(path)
    if is_ip(authority.host):
        raise IpAuthorityNotSupported(path, authority.host)
    try:
        service = parse_service_host(authority.host, cluster_domain=cluster_domain)
    except InvalidAuthority as err:
        raise InvalidAuthority(path, err.reason) from err
    return LookupTarget(service=service, port=authority.port)


# --------------------------------------------------------------------------
# context token


@dataclass(frozen=True, slots=True)
class ContextToken:
    """The caller's identity as sent by the proxy (reference §4.3).

    ``ns`` selects the client-side ServiceProfile (GetProfile only),
    ``node_name`` the node for topology filtering (Get only), ``pod`` is for
    logs only. Empty strings mean "not given".
    """

    ns: str = ""
    node_name: str = ""
    pod: str = ""


_EMPTY_TOKEN = ContextToken()

# JSON key -> ContextToken attribute.
_TOKEN_FIELDS = {"ns": "ns", "nodeName": "node_name", "pod": "pod"}
_TOKEN_FIELDS_FOLDED = {key.lower(): key for key in _TOKEN_FIELDS}


class _TokenError(ValueError):
    pass


class _JsonObject(list[tuple[str, Any]]):
    """A decoded JSON object as its ``(key, value)`` pairs in document order.

    A distinct type so that a JSON array (a plain list) is not mistaken for it.
    """


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and Go) do not.
    raise _TokenError(f"invalid JSON constant {name}")


def _replace_lone_surrogates(text: str) -> str:
    # json.loads keeps unpaired "\ud800" escapes as lone surrogates, which cannot
    # be encoded later; Go's decoder turns them into U+FFFD.
    if all(not 0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def _token_from_json(token: str) -> ContextToken:
    """Decode the JSON form, raising :class:`_TokenError` or :class:`ValueError`."""
    try:
        pairs = json.loads(
            token,
            object_pairs_hook=_JsonObject,
            parse_constant=_reject_constant,
        )
    except RecursionError as err:
        raise _TokenError("JSON nested too deeply") from err
    if pairs is None:
        # Go decodes `null` into a struct as a no-op, without an error.
        return _EMPTY_TOKEN
    if not isinstance(pairs, _JsonObject):
        kind = "array" if isinstance(pairs, list) else type(pairs).__name__
        raise _TokenError(f"JSON {kind} is not an object")
    values: dict[str, str] = {}
    # Keys are applied in document order, so a repeated key keeps its last value.
    # Like Go's encoding/json, an exact key wins and otherwise an ASCII
    # case-insensitive match is used ("NodeName" fills nodeName).
    for key, value in pairs:
        field = key if key in _TOKEN_FIELDS else _TOKEN_FIELDS_FOLDED.get(key.lower())
        if field is None or value is None:
            continue
        if not isinstance(value, str):
            kind = "object" if isinstance(value, _JsonObject) else type(value).__name__
            raise _TokenError(f"field {_shorten(key)} is {kind}, not a string")
        if len(value) > MAX_TOKEN_FIELD_LENGTH:
            raise _TokenError(f"field {_shorten(key)} is longer than {MAX_TOKEN_FIELD_LENGTH}")
        values[_TOKEN_FIELDS[field]] = _replace_lone_surrogates(value)
    return ContextToken(**values)


def parse_context_token(token: str) -> tuple[ContextToken, str | None]:
    """Parse a context token; return it with a reason to log when it was rejected.

    Never raises. Accepted forms, tried in order:

    * ``""``: the empty token, no reason.
    * A JSON object (what the injector writes, usually followed by a newline):
      the optional string fields ``ns``, ``nodeName`` and ``pod``; unknown
      fields are ignored, ``null`` values count as absent, and the JSON value
      ``null`` is an empty token (as in Go).
    * The legacy ``ns:<namespace>`` form (exactly one ``:`` and ``ns`` before
      it). A trailing newline is dropped from the namespace; Go would keep it
      and then find no ServiceProfile.
    * Anything else gives the empty token and a reason.

    A JSON object whose known field is not a string (``{"ns": 1}``) is
    rejected as a whole. Go's decoder keeps the fields it managed to decode
    before reporting the type error; we return an empty token instead, so a
    malformed token never half-applies.
    """
    if token == "":
        return _EMPTY_TOKEN, None
    if len(token) > MAX_TOKEN_LENGTH:
        return _EMPTY_TOKEN, (
            f"context token {_shorten(token)} is longer than {MAX_TOKEN_LENGTH} characters"
        )
    try:
        return _token_from_json(token), None
    except ValueError as err:  # json.JSONDecodeError and _TokenError
        json_error = str(err)
    parts = token.split(":")
    if len(parts) == 2 and parts[0] == "ns":
        namespace = parts[1].removesuffix("\n").removesuffix("\r")
        if len(namespace) > MAX_TOKEN_FIELD_LENGTH:
            return _EMPTY_TOKEN, f"context token namespace is longer than {MAX_TOKEN_FIELD_LENGTH}"
        return ContextToken(ns=namespace), None
    return _EMPTY_TOKEN, (
        f"context token {_shorten(token)} is neither a JSON object nor 'ns:<namespace>': "
        f"{loggable(json_error)}"
    )


_MAX_TOKEN_IN_REASON = 200


def _shorten(token: str) -> str:
    """``repr`` of the token, cut so that a huge token cannot flood the logs."""
    if len(token) <= _MAX_TOKEN_IN_REASON:
        return repr(token)
    return f"{token[:_MAX_TOKEN_IN_REASON]!r}... ({len(token)} characters)"
