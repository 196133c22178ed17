"""``destination multicluster link-gen``: credentials and a Link for one target cluster.

Run against the TARGET cluster (``--kubeconfig``, ``--context``); pipe what it
prints into ``kubectl apply -f -`` on the SOURCE cluster::

    destination multicluster link-gen --context west --cluster-name west \\
        --api-server-address https://west-api.example:6443 \\
      | kubectl --context east apply -f -

Steps, each failing with what to do:

1. **The reader identity.** ServiceAccount ``--service-account-name``
   (``destination-remote-reader``) in ``--namespace``
   (``multicluster-destination``), bound to the least-privilege ClusterRole of
   ``deploy/remote-access.yaml`` (list/watch Services, Pods, EndpointSlices;
   ``access.py``). Whatever is missing is created, nothing existing is
   changed (``--no-create-access``: create nothing, fail if missing). Why
   create rather than require the manifest first: link-gen already needs
   admin rights on the target to mint a token, and an identity that exists
   but is not bound is found at step 3 either way.
2. **A token.** By default a long-lived token: Secret ``<sa>-token`` of type
   ``kubernetes.io/service-account-token``, created if missing, then waited
   for until the token controller fills it (what Linkerd does since
   Kubernetes 1.24 stopped creating them). It lasts until that Secret is
   deleted, which is how a link is revoked. With ``--token-duration 720h`` a
   bound token (TokenRequest) instead: nothing stored on the target, but the
   link stops working when it expires, so link-gen says when.
3. **The token's permissions, verified with the token itself**
   (SelfSubjectAccessReviews through the operator's address of the API
   server): a link that could not list Pods is refused here, not found
   broken later. RBAC changes take a moment to apply, so this waits up to
   10 s for a binding just created.
4. **The address.** The kubeconfig embeds the API server URL, its CA as
   data (a CA file of the operator's kubeconfig is read; with none, or with
   ``insecure-skip-tls-verify``, the target's ``kube-root-ca.crt``), and the
   token. ``--api-server-address`` replaces the URL: the operator's address
   is often one that only the workstation can use, and a loopback or
   link-local one gets a warning saying so.
5. **Domains.** ``--trust-domain`` and ``--cluster-domain`` default to what
   the target's ``linkerd-config`` says, else ``cluster.local``.
6. **The gateway.** From Service ``--gateway-name`` in ``--gateway-namespace``
   when it exists: its load-balancer addresses, port ``mc-gateway`` (its node
   port for a NodePort Service), the ``mirror.linkerd.io/gateway-identity``,
   ``probe-path`` and ``probe-period`` annotations and port ``mc-probe``;
   each can be given by flag instead. ``--no-gateway``: a pod-to-pod link,
   without gateway fields or gateway-mode ``selector``.

Output: Secret ``cluster-credentials-<name>`` for the mirror controller in
``--link-namespace``, the same for the destination server in
``--linkerd-namespace`` (label and domain annotations), and the Link;
``-o yaml`` (documents separated by ``---``) or ``-o json`` (one ``v1`` List).
Everything else (what was created, warnings) goes to stderr, so the output
can be piped as it is. Both the kubeconfig and the Link are checked with
the same code that will read them (``discovery.kubeconfig``,
``mirror.links``) before anything is printed.

Exit status: 0 with the manifests printed; 1 when the target cluster or a
step failed (nothing printed); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import importlib.metadata
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .addresses import classify_server
from .flags import (
    DEFAULT_LINK_NAMESPACE,
    DEFAULT_LINKERD_NAMESPACE,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_cluster_flags,
    error,
    note,
    warning,
)

if TYPE_CHECKING:
    from discovery.models import LabelSelector

    from .api import Api
    from .contexts import ClusterAccess
    from .documents import Gateway

__all__ = [
    "DEFAULT_FEDERATED_SELECTOR",
    "DEFAULT_REMOTE_DISCOVERY_SELECTOR",
    "DEFAULT_SELECTOR",
    "LinkGenError",
    "LinkGenOptions",
    "UsageError",
    "gateway_from_service",
    "options_from_args",
    "register",
]

DEFAULT_SELECTOR = "mirror.linkerd.io/exported=true"
DEFAULT_REMOTE_DISCOVERY_SELECTOR = "mirror.linkerd.io/exported=remote-discovery"
DEFAULT_FEDERATED_SELECTOR = "mirror.linkerd.io/federated=member"
DEFAULT_GATEWAY_NAME = "linkerd-gateway"
DEFAULT_GATEWAY_NAMESPACE = "linkerd-multicluster"
DEFAULT_PROBE_PATH = "/ready"
DEFAULT_PROBE_PERIOD = "3s"
GATEWAY_PORT_NAME = "mc-gateway"
PROBE_PORT_NAME = "mc-probe"
GATEWAY_IDENTITY_ANNOTATION = "mirror.linkerd.io/gateway-identity"
PROBE_PATH_ANNOTATION = "mirror.linkerd.io/probe-path"
PROBE_PERIOD_ANNOTATION = "mirror.linkerd.io/probe-period"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
PERMISSION_WAIT_S = 10.0
MIN_TOKEN_DURATION_S = 600  # the TokenRequest API refuses less

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_NAME_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\Z"
)


class UsageError(ValueError):
    """Flags that cannot work together or do not parse (exit 2)."""


class LinkGenError(Exception):
    """A step that failed on the target cluster; the message says what to do (exit 1)."""


@dataclass(frozen=True, slots=True)
class LinkGenOptions:
    """link-gen's flags, checked, before anything talks to a cluster."""

    cluster_name: str
    kubeconfig: str | None = None
    context: str | None = None
    timeout_s: float = 10.0
    namespace: str = "multicluster-destination"
    service_account: str = "destination-remote-reader"
    create_access: bool = True
    link_namespace: str = DEFAULT_LINK_NAMESPACE
    linkerd_namespace: str = DEFAULT_LINKERD_NAMESPACE
    target_linkerd_namespace: str = DEFAULT_LINKERD_NAMESPACE
    api_server_address: str | None = None
    tls_server_name: str | None = None
    token_duration_s: int | None = None  # None: a long-lived token Secret
    token_wait_s: float = 30.0
    trust_domain: str | None = None
    cluster_domain: str | None = None
    gateway: bool = True
    gateway_name: str = DEFAULT_GATEWAY_NAME
    gateway_namespace: str = DEFAULT_GATEWAY_NAMESPACE
    gateway_addresses: tuple[str, ...] | None = None
    gateway_port: int | None = None
    gateway_identity: str | None = None
    probe_path: str | None = None
    probe_port: int | None = None
    probe_period: str | None = None
    selector: LabelSelector | None = None
    remote_discovery_selector: LabelSelector | None = None
    federated_selector: LabelSelector | None = None
    excluded_labels: tuple[str, ...] = ()
    excluded_annotations: tuple[str, ...] = ()
    output: str = "yaml"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "link-gen",
        help="credentials and a Link for a target cluster (run against the target)",
        description=(
            "Run against the TARGET cluster: ensure its reader ServiceAccount (least "
            "privilege: list/watch Services, Pods, EndpointSlices), mint a token, and print the "
            "credentials Secrets and the Link to apply on the SOURCE cluster "
            "(| kubectl --context SOURCE apply -f -)."
        ),
        epilog=(
            "Exit status: 0 with the manifests printed on stdout; 1 when a step failed on the "
            "target cluster (nothing printed); 2 for a usage error. Notes and warnings go to "
            "stderr."
        ),
    )
    parser.add_argument(
        "--cluster-name", required=True, metavar="NAME", help="name of the target in links"
    )
    add_cluster_flags(parser, which="TARGET")
    identity = parser.add_argument_group("the target's reader identity and its token")
    identity.add_argument(
        "--namespace",
        metavar="NAMESPACE",
        default="multicluster-destination",
        help="namespace of the reader ServiceAccount on the target. "
        "Default: multicluster-destination.",
    )
    identity.add_argument(
        "--service-account-name",
        dest="service_account",
        metavar="NAME",
        default="destination-remote-reader",
        help="reader ServiceAccount (one per source cluster lets you revoke each alone). "
        "Default: destination-remote-reader.",
    )
    identity.add_argument(
        "--no-create-access",
        dest="create_access",
        action="store_false",
        help="create nothing on the target: fail if the ServiceAccount or its binding is "
        "missing (for RBAC managed elsewhere).",
    )
    identity.add_argument(
        "--token-duration",
        metavar="DURATION",
        help="mint a bound token of this lifetime (e.g. 720h, at least 10m) instead of a "
        "long-lived token Secret <sa>-token; the link stops working when it expires.",
    )
    identity.add_argument(
        "--token-wait",
        dest="token_wait_s",
        metavar="S",
        type=float,
        default=30.0,
        help="seconds to wait for the token controller to fill <sa>-token. Default: 30.",
    )
    address = parser.add_argument_group("how the source cluster reaches the target")
    address.add_argument(
        "--api-server-address",
        metavar="URL",
        help="https://host:port of the target's API server as the source cluster's pods reach "
        "it. Default: the server of the kubeconfig context.",
    )
    address.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name to verify the API server's certificate against, when the address is not in it.",
    )
    source = parser.add_argument_group("where the output goes on the source cluster")
    source.add_argument(
        "--link-namespace",
        metavar="NAMESPACE",
        default=DEFAULT_LINK_NAMESPACE,
        help=f"namespace of the Link and the mirror's Secret. Default: {DEFAULT_LINK_NAMESPACE}.",
    )
    source.add_argument(
        "--linkerd-namespace",
        "-L",
        metavar="NAMESPACE",
        default=DEFAULT_LINKERD_NAMESPACE,
        help="namespace of the destination server on the source (its copy of the Secret). "
        f"Default: {DEFAULT_LINKERD_NAMESPACE}.",
    )
    source.add_argument(
        "--target-linkerd-namespace",
        metavar="NAMESPACE",
        help="namespace of Linkerd's control plane on the target (its linkerd-config). "
        "Default: --linkerd-namespace.",
    )
    source.add_argument(
        "--trust-domain",
        metavar="DOMAIN",
        help="the target's identity trust domain. Default: its linkerd-config, else cluster.local.",
    )
    source.add_argument(
        "--cluster-domain",
        metavar="DOMAIN",
        help="the target's DNS cluster domain. Default: its linkerd-config, else cluster.local.",
    )
    gateway = parser.add_argument_group("the target's gateway")
    gateway.add_argument(
        "--no-gateway",
        dest="gateway",
        action="store_false",
        help="a pod-to-pod link: no gateway fields and no gateway-mode selector (only "
        "remote-discovery and federated exports).",
    )
    gateway.add_argument("--gateway-name", metavar="NAME", help=f"Default: {DEFAULT_GATEWAY_NAME}.")
    gateway.add_argument(
        "--gateway-namespace", metavar="NAMESPACE", help=f"Default: {DEFAULT_GATEWAY_NAMESPACE}."
    )
    gateway.add_argument(
        "--gateway-addresses",
        metavar="A,B",
        help="gateway addresses (IPs or DNS names) reachable from the source. Default: the "
        "gateway Service's load-balancer addresses.",
    )
    gateway.add_argument("--gateway-port", metavar="PORT", help="Default: port mc-gateway.")
    gateway.add_argument(
        "--gateway-identity",
        metavar="ID",
        help=f"Default: the gateway Service's {GATEWAY_IDENTITY_ANNOTATION} annotation.",
    )
    gateway.add_argument(
        "--probe-path",
        metavar="PATH",
        help=f"Default: annotation {PROBE_PATH_ANNOTATION}, else {DEFAULT_PROBE_PATH}.",
    )
    gateway.add_argument("--probe-port", metavar="PORT", help="Default: port mc-probe.")
    gateway.add_argument(
        "--probe-period",
        metavar="DURATION",
        help=f"Default: annotation {PROBE_PERIOD_ANNOTATION}, else {DEFAULT_PROBE_PERIOD}.",
    )
    exports = parser.add_argument_group("which target Services the Link exports")
    exports.add_argument(
        "--selector",
        "-l",
        metavar="QUERY",
        help=f"gateway-mode exports (label query). Default: {DEFAULT_SELECTOR}.",
    )
    exports.add_argument(
        "--remote-discovery-selector",
        metavar="QUERY",
        help=f"pod-to-pod exports. Default: {DEFAULT_REMOTE_DISCOVERY_SELECTOR}.",
    )
    exports.add_argument(
        "--federated-service-selector",
        metavar="QUERY",
        help=f"federated members. Default: {DEFAULT_FEDERATED_SELECTOR}.",
    )
    exports.add_argument("--excluded-labels", metavar="K,K/*", help="labels not copied to mirrors")
    exports.add_argument(
        "--excluded-annotations", metavar="K,K/*", help="annotations not copied to mirrors"
    )
    parser.add_argument(
        "--output", "-o", choices=("yaml", "json"), default="yaml", help="Default: yaml."
    )
    parser.set_defaults(handler=_link_gen)


# --------------------------------------------------------------------------
# flags


def _dns_label(value: str, flag: str) -> str:
    if len(value) > 63 or not _DNS_LABEL_RE.match(value):
        raise UsageError(f"{flag} {value!r} must be a DNS label (lower case, digits, '-')")
    return value


def _port(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"{flag} {value!r} is not a port number (1..65535)")
    return int(value)


def _selector(text: str | None, default: str, flag: str) -> LabelSelector:
    from mirror.selectors import SelectorError, parse_selector_text

    try:
        return parse_selector_text(default if text is None else text)
    except SelectorError as err:
        raise UsageError(f"{flag}: {err}") from None


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def _duration_s(text: str, flag: str) -> float:
    from discovery.units import UnitError, go_duration_ns

    try:
        nanos = go_duration_ns(text)
    except UnitError as err:
        raise UsageError(f"{flag}: {err}") from None
    return nanos / 1e9


def _server_url(text: str) -> str:
    from urllib.parse import urlsplit

    try:
        url = urlsplit(text)
        url.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"--api-server-address {text!r} is not a URL") from None
    if url.scheme != "https" or not url.hostname:
        raise UsageError(
            f"--api-server-address {text!r} must be an https://host[:port] URL "
            "(the destination server refuses plaintext links)"
        )
    if url.query or url.fragment or "@" in url.netloc:
        raise UsageError(f"--api-server-address {text!r} must not have credentials or a query")
    return text.rstrip("/")


def options_from_args(args: argparse.Namespace) -> LinkGenOptions:
    """The flags as options; UsageError when they do not parse or contradict each other."""
    if not args.gateway:
        given = [
            flag
            for flag, value in (
                ("--gateway-name", args.gateway_name),
                ("--gateway-namespace", args.gateway_namespace),
                ("--gateway-addresses", args.gateway_addresses),
                ("--gateway-port", args.gateway_port),
                ("--gateway-identity", args.gateway_identity),
                ("--probe-path", args.probe_path),
                ("--probe-port", args.probe_port),
                ("--probe-period", args.probe_period),
                ("--selector", args.selector),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"--no-gateway and {', '.join(given)} contradict each other: a link without a "
                "gateway has no gateway fields and exports no Service in gateway mode"
            )
    token_duration_s = None
    if args.token_duration is not None:
        seconds = _duration_s(args.token_duration, "--token-duration")
        if seconds < MIN_TOKEN_DURATION_S:
            raise UsageError(
                f"--token-duration {args.token_duration} is shorter than 10m, the least "
                "Kubernetes issues"
            )
        token_duration_s = int(seconds)
    probe_period = None
    if args.probe_period is not None:
        probe_period = args.probe_period.strip()
        if probe_period.isascii() and probe_period.isdigit():
            probe_period += "s"
        if _duration_s(probe_period, "--probe-period") <= 0:
            raise UsageError("--probe-period must be positive")
    if args.probe_path is not None and not args.probe_path.startswith("/"):
        raise UsageError(f"--probe-path {args.probe_path!r} must be an absolute path (/ready)")
    if not 0 < args.token_wait_s <= 600:
        raise UsageError("--token-wait must be within (0, 600] seconds")
    addresses = _list(args.gateway_addresses) if args.gateway_addresses is not None else None
    if addresses == ():
        raise UsageError("--gateway-addresses is empty")
    for flag, value in (
        ("--trust-domain", args.trust_domain),
        ("--cluster-domain", args.cluster_domain),
    ):
        if value is not None and (len(value) > 253 or not _DNS_NAME_RE.match(value)):
            raise UsageError(f"{flag} {value!r} is not a DNS name")
    if args.tls_server_name is not None and not _DNS_NAME_RE.match(args.tls_server_name.lower()):
        raise UsageError(f"--tls-server-name {args.tls_server_name!r} is not a host name")
    return LinkGenOptions(
        cluster_name=_dns_label(args.cluster_name, "--cluster-name"),
        kubeconfig=args.kubeconfig,
        context=args.context,
        timeout_s=args.timeout_s,
        namespace=_dns_label(args.namespace, "--namespace"),
        service_account=_dns_label(args.service_account, "--service-account-name"),
        create_access=args.create_access,
        link_namespace=_dns_label(args.link_namespace, "--link-namespace"),
        linkerd_namespace=_dns_label(args.linkerd_namespace, "--linkerd-namespace"),
        target_linkerd_namespace=_dns_label(
            args.target_linkerd_namespace or args.linkerd_namespace, "--target-linkerd-namespace"
        ),
        api_server_address=_server_url(args.api_server_address)
        if args.api_server_address is not None
        else None,
        tls_server_name=args.tls_server_name,
        token_duration_s=token_duration_s,
        token_wait_s=args.token_wait_s,
        trust_domain=args.trust_domain,
        cluster_domain=args.cluster_domain,
        gateway=args.gateway,
        gateway_name=_dns_label(args.gateway_name or DEFAULT_GATEWAY_NAME, "--gateway-name"),
        gateway_namespace=_dns_label(
            args.gateway_namespace or DEFAULT_GATEWAY_NAMESPACE, "--gateway-namespace"
        ),
        gateway_addresses=addresses,
        gateway_port=_port(args.gateway_port, "--gateway-port"),
        gateway_identity=args.gateway_identity,
        probe_path=args.probe_path,
        probe_port=_port(args.probe_port, "--probe-port"),
        probe_period=probe_period,
        selector=_selector(args.selector, DEFAULT_SELECTOR, "--selector") if args.gateway else None,
        remote_discovery_selector=_selector(
            args.remote_discovery_selector,
            DEFAULT_REMOTE_DISCOVERY_SELECTOR,
            "--remote-discovery-selector",
        ),
        federated_selector=_selector(
            args.federated_service_selector,
            DEFAULT_FEDERATED_SELECTOR,
            "--federated-service-selector",
        ),
        excluded_labels=_list(args.excluded_labels),
        excluded_annotations=_list(args.excluded_annotations),
        output=args.output,
    )


# --------------------------------------------------------------------------
# the gateway


def _ports_by_name(service: Mapping[str, Any], *, node_port: bool) -> dict[str, int]:
    ports: dict[str, int] = {}
    for port in (service.get("spec") or {}).get("ports") or []:
        if not isinstance(port, Mapping) or not isinstance(port.get("name"), str):
            continue
        value = port.get("nodePort") if node_port else port.get("port")
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
            ports[port["name"]] = value
    return ports


def _ingress_addresses(service: Mapping[str, Any]) -> tuple[str, ...]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = []
    for entry in ingress:
        if isinstance(entry, Mapping):
            value = entry.get("ip") or entry.get("hostname")
            if isinstance(value, str) and value:
                addresses.append(value)
    return tuple(addresses)


def gateway_from_service(
    service: Mapping[str, Any] | None, options: LinkGenOptions
) -> tuple[Gateway, list[str]]:
    """The Link's gateway from the target's gateway Service (or None) and the flags.

    Flags win over the Service. Returns the gateway and warnings; raises
    LinkGenError when something the Link needs is neither in the Service nor
    given by flag.
    """
    from .documents import Gateway, ProbeSettings

    where = f"gateway Service {options.gateway_namespace}/{options.gateway_name}"
    warnings: list[str] = []
    if service is None:
        missing = [
            flag
            for flag, value in (
                ("--gateway-addresses", options.gateway_addresses),
                ("--gateway-port", options.gateway_port),
                ("--gateway-identity", options.gateway_identity),
            )
            if value is None
        ]
        if missing:
            raise LinkGenError(
                f"{where} does not exist on the target cluster: pass {', '.join(missing)} "
                "(and --probe-port to probe it), --gateway-name/--gateway-namespace for "
                "another Service, or --no-gateway for a pod-to-pod link"
            )
        service = {}
    spec = service.get("spec") or {}
    service_type = spec.get("type") if isinstance(spec, Mapping) else None
    node_port = service_type == "NodePort"
    ports = _ports_by_name(service, node_port=node_port)
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    if not isinstance(annotations, Mapping):
        annotations = {}
    addresses = options.gateway_addresses or _ingress_addresses(service)
    if not addresses:
        raise LinkGenError(
            f"{where} has no load-balancer address (type {service_type or 'unknown'}): pass "
            "--gateway-addresses with the gateway's addresses as the source cluster reaches "
            "them (node addresses for a NodePort Service)"
        )
    port = options.gateway_port or ports.get(GATEWAY_PORT_NAME)
    if port is None:
        raise LinkGenError(f"{where} has no port named {GATEWAY_PORT_NAME}: pass --gateway-port")
    identity = options.gateway_identity or annotations.get(GATEWAY_IDENTITY_ANNOTATION)
    if not isinstance(identity, str) or not identity:
        raise LinkGenError(
            f"{where} has no {GATEWAY_IDENTITY_ANNOTATION} annotation: pass --gateway-identity "
            "(<gateway ServiceAccount>.<namespace>.serviceaccount.identity.<linkerd namespace>."
            "<trust domain>)"
        )
    probe_port = options.probe_port or ports.get(PROBE_PORT_NAME)
    probe = None
    if probe_port is None:
        warnings.append(
            f"{where} has no port named {PROBE_PORT_NAME}: the gateway will not be probed, so "
            "its mirrors stay ready while it is down; pass --probe-port to probe it"
        )
    else:
        path = options.probe_path or annotations.get(PROBE_PATH_ANNOTATION) or DEFAULT_PROBE_PATH
        period = (
            options.probe_period or annotations.get(PROBE_PERIOD_ANNOTATION) or DEFAULT_PROBE_PERIOD
        )
        if not isinstance(path, str) or not isinstance(period, str):
            raise LinkGenError(f"{where}: probe annotations must be strings")
        period = period.strip()
        if period.isascii() and period.isdigit():
            period += "s"
        probe = ProbeSettings(path=path, port=probe_port, period=period)
    return Gateway(addresses=tuple(addresses), port=port, identity=identity, probe=probe), warnings


# --------------------------------------------------------------------------
# the target cluster


@dataclass
class _Report:
    """What link-gen did on the target, said on stderr (stdout is for the manifests)."""

    created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _created_by() -> str:
    try:
        version = importlib.metadata.version("multicluster-destination")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"multicluster-destination/cli {version}"


_COLLECTIONS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}


async def _ensure_access(api: Api, options: LinkGenOptions, report: _Report) -> bool:
    """Create the reader identity's missing objects; True when something was created."""
    from .access import access_objects
    from .api import ApiError

    created = False
    for obj in access_objects(options.namespace, options.service_account, created_by=_created_by()):
        name = obj["metadata"]["name"]
        namespace = obj["metadata"].get("namespace")
        collection = _COLLECTIONS[obj["kind"]].format(namespace=namespace)
        shown = f"{obj['kind']} {namespace}/{name}" if namespace else f"{obj['kind']} {name}"
        if await api.get(f"{collection}/{name}") is not None:
            continue
        if not options.create_access:
            raise LinkGenError(
                f"{shown} does not exist on the target cluster and --no-create-access was "
                "given: apply deploy/remote-access.yaml there (or its equivalent for "
                f"{options.namespace}/{options.service_account}), or drop --no-create-access"
            )
        try:
            await api.create(collection, obj)
        except ApiError as err:
            if err.status != 409:  # created meanwhile: fine
                raise LinkGenError(f"cannot create {shown} on the target cluster: {err}") from None
        report.created.append(shown)
        created = True
    return created


async def _long_lived_token(api: Api, options: LinkGenOptions, report: _Report) -> str:
    from .access import (
        SERVICE_ACCOUNT_NAME_ANNOTATION,
        TOKEN_SECRET_TYPE,
        token_secret,
        token_secret_name,
    )
    from .api import ApiError

    collection = f"/api/v1/namespaces/{options.namespace}/secrets"
    name = token_secret_name(options.service_account)
    where = f"Secret {options.namespace}/{name}"
    secret = await api.get(f"{collection}/{name}")
    if secret is None:
        if not options.create_access:
            raise LinkGenError(
                f"{where} does not exist on the target cluster and --no-create-access was "
                "given: create it (type kubernetes.io/service-account-token, annotation "
                f"kubernetes.io/service-account.name: {options.service_account}), or use "
                "--token-duration for a bound token"
            )
        try:
            secret = await api.create(
                collection,
                token_secret(options.namespace, options.service_account, created_by=_created_by()),
            )
        except ApiError as err:
            raise LinkGenError(f"cannot create {where} on the target cluster: {err}") from None
        report.created.append(where)
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if secret.get("type") != TOKEN_SECRET_TYPE or (
        annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION) != options.service_account
    ):
        raise LinkGenError(
            f"{where} exists but is not a {TOKEN_SECRET_TYPE} Secret of ServiceAccount "
            f"{options.service_account}: delete it, or use --token-duration for a bound token"
        )
    deadline = time.monotonic() + options.token_wait_s
    while True:
        token = ((secret or {}).get("data") or {}).get("token")
        if isinstance(token, str) and token:
            try:
                return base64.b64decode(token, validate=True).decode("ascii")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise LinkGenError(f"{where} holds a token that is not base64 ASCII") from None
        if time.monotonic() > deadline:
            raise LinkGenError(
                f"{where} got no token within {options.token_wait_s:g}s: is the token controller "
                "of kube-controller-manager running (--controllers includes "
                "serviceaccount-token)? Or use --token-duration for a bound token"
            )
        await asyncio.sleep(0.25)
        secret = await api.get(f"{collection}/{name}")
        if secret is None:
            raise LinkGenError(f"{where} was deleted while waiting for its token")


async def _bound_token(api: Api, options: LinkGenOptions, report: _Report) -> str:
    from .api import ApiError

    assert options.token_duration_s is not None
    path = f"/api/v1/namespaces/{options.namespace}/serviceaccounts/{options.service_account}/token"
    try:
        answer = await api.create(
            path,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": options.token_duration_s},
            },
        )
    except ApiError as err:
        raise LinkGenError(
            f"cannot mint a token for {options.namespace}/{options.service_account}: {err}"
        ) from None
    status = answer.get("status") or {}
    token, expires = status.get("token"), status.get("expirationTimestamp")
    if not isinstance(token, str) or not token:
        raise LinkGenError("the TokenRequest answer holds no token")
    report.warnings.append(
        f"the link's token expires at {expires}: generate and apply a new link before then "
        "(the API server may also have shortened the duration asked for)"
    )
    return token


async def _verify_permissions(
    access: ClusterAccess, token: str, *, recently_created: bool, timeout_s: float
) -> str | None:
    """Check the token's permissions through the operator's address; a problem, or None."""
    import aiohttp

    from discovery.kubeconfig import KubeconfigError, parse_kubeconfig
    from discovery.transport import open_remote_transport

    from .access import REQUIRED, denied
    from .api import Api, ApiError
    from .documents import link_kubeconfig

    try:
        config = parse_kubeconfig(
            link_kubeconfig(
                cluster_name="verify",
                server=access.server,
                ca_pem=access.ca_pem,
                tls_server_name=access.tls_server_name,
                user="verify",
                token=token,
            ),
            allow_insecure=not access.verify_tls,
        )
        api = Api(await open_remote_transport(config), timeout_s=timeout_s)
    except KubeconfigError as err:
        return f"skipped: {err}"
    deadline = time.monotonic() + (PERMISSION_WAIT_S if recently_created else 0)
    try:
        while True:
            missing = await denied(api, REQUIRED)
            if not missing:
                return None
            if time.monotonic() > deadline:
                return "denied: " + ", ".join(str(p) for p in missing)
            await asyncio.sleep(0.5)
    except (aiohttp.ClientError, TimeoutError, OSError, ApiError) as err:
        return f"skipped: {type(err).__name__}: {err}"
    finally:
        await api.close()


async def _root_ca(api: Api, namespace: str) -> bytes | None:
    config_map = await api.get(f"/api/v1/namespaces/{namespace}/configmaps/{ROOT_CA_CONFIG_MAP}")
    data = (config_map or {}).get("data") or {}
    ca = data.get("ca.crt") if isinstance(data, Mapping) else None
    return ca.encode() if isinstance(ca, str) and "BEGIN CERTIFICATE" in ca else None


async def _domains(api: Api, options: LinkGenOptions, report: _Report) -> tuple[str, str]:
    from .api import ApiError
    from .linkerd_config import CONFIG_MAP, linkerd_config

    config = None
    if options.trust_domain is None or options.cluster_domain is None:
        path = f"/api/v1/namespaces/{options.target_linkerd_namespace}/configmaps/{CONFIG_MAP}"
        try:
            config = linkerd_config(await api.get(path))
        except ApiError as err:
            report.notes.append(
                f"cannot read {options.target_linkerd_namespace}/{CONFIG_MAP}: {err}"
            )
        if config is None:
            report.notes.append(
                f"no linkerd-config in namespace {options.target_linkerd_namespace} of the target "
                f"says its domains: using {DEFAULT_CLUSTER_DOMAIN} where --trust-domain or "
                "--cluster-domain is not given"
            )
    trust = options.trust_domain or (config and config.trust_domain) or DEFAULT_CLUSTER_DOMAIN
    cluster = options.cluster_domain or (config and config.cluster_domain) or DEFAULT_CLUSTER_DOMAIN
    return trust, cluster


def _address_warning(server: str, *, given: bool, context: str) -> str | None:
    reach = classify_server(server)
    if not reach.unreachable_from_other_hosts:
        return None
    if given:
        return (
            f"--api-server-address {server} is a {reach.value} address: only a source cluster "
            "on this same machine can reach it there"
        )
    return (
        f"the target's API server address {server} (from kubeconfig context {context}) is a "
        f"{reach.value} address: pods of the source cluster cannot reach the target there. "
        "Pass --api-server-address https://<address reachable from the source cluster>:<port> "
        "(a name or IP in the API server's certificate, or add --tls-server-name)"
    )


def _refused(
    server: str, ca_pem: bytes | None, options: LinkGenOptions, access: ClusterAccess, *, token: str
) -> bytes:
    """The link's kubeconfig, read back as the destination server will; LinkGenError if refused."""
    from discovery.kubeconfig import KubeconfigError, parse_kubeconfig

    from .documents import link_kubeconfig

    kubeconfig = link_kubeconfig(
        cluster_name=options.cluster_name,
        server=server,
        ca_pem=ca_pem,
        tls_server_name=options.tls_server_name or access.tls_server_name,
        user=options.service_account,
        token=token,
    )
    try:
        parse_kubeconfig(kubeconfig)
    except KubeconfigError as err:
        raise LinkGenError(
            f"the destination server would refuse this link's kubeconfig: {err} (give an "
            "https:// address it can use with --api-server-address)"
        ) from None
    return kubeconfig


async def generate(options: LinkGenOptions, report: _Report) -> str:
    """Everything link-gen does; the manifests as text, or LinkGenError."""
    import aiohttp

    from mirror.links import project_link

    from .api import ApiError, BodyTooLarge
    from .contexts import KubeconfigProblem, open_cluster
    from .documents import LinkInputs, credentials_secrets, link_document, render

    try:
        api, access = await open_cluster(
            options.kubeconfig, options.context, timeout_s=options.timeout_s
        )
    except KubeconfigProblem as err:
        raise LinkGenError(str(err)) from None
    try:
        try:
            # What can fail for want of a flag comes first: the target is left untouched.
            trust_domain, cluster_domain = await _domains(api, options, report)
            gateway = None
            if options.gateway:
                service = await api.get(
                    f"/api/v1/namespaces/{options.gateway_namespace}/services/{options.gateway_name}"
                )
                gateway, gateway_warnings = gateway_from_service(service, options)
                report.warnings += gateway_warnings
            inputs = LinkInputs(
                cluster_name=options.cluster_name,
                link_namespace=options.link_namespace,
                linkerd_namespace=options.linkerd_namespace,
                target_linkerd_namespace=options.target_linkerd_namespace,
                trust_domain=trust_domain,
                cluster_domain=cluster_domain,
                gateway=gateway,
                selector=options.selector,
                remote_discovery_selector=options.remote_discovery_selector
                or _selector(None, DEFAULT_REMOTE_DISCOVERY_SELECTOR, ""),
                federated_selector=options.federated_selector
                or _selector(None, DEFAULT_FEDERATED_SELECTOR, ""),
                excluded_labels=options.excluded_labels,
                excluded_annotations=options.excluded_annotations,
                created_by=_created_by(),
            )
            link = link_document(inputs)
            projected = project_link(link)
            if projected is None or projected.problem:
                raise LinkGenError(
                    "the Link would not be valid: "
                    f"{projected.problem if projected else 'no metadata'}"
                )
            ca_pem = access.ca_pem  # None: the system trust store, as for the operator
            if not access.verify_tls:
                ca_pem = await _root_ca(api, options.namespace)
                if ca_pem is None:
                    raise LinkGenError(
                        f"kubeconfig context {access.context} skips TLS verification and the "
                        f"target publishes no {ROOT_CA_CONFIG_MAP} ConfigMap: a link must "
                        "verify the API server; add certificate-authority-data to the context"
                    )
                report.warnings.append(
                    f"kubeconfig context {access.context} skips TLS verification; the link "
                    f"embeds the target's {ROOT_CA_CONFIG_MAP} instead"
                )
            server = options.api_server_address or access.server
            _refused(server, ca_pem, options, access, token="placeholder")
            created = await _ensure_access(api, options, report)
            if options.token_duration_s is None:
                token = await _long_lived_token(api, options, report)
            else:
                token = await _bound_token(api, options, report)
        except ApiError as err:
            raise LinkGenError(f"the target cluster ({access.server}) answered: {err}") from None
        except (aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge) as err:
            raise LinkGenError(
                f"cannot reach the target cluster at {access.server} (context {access.context}): "
                f"{type(err).__name__}: {err}"
            ) from None
        problem = await _verify_permissions(
            access, token, recently_created=created, timeout_s=options.timeout_s
        )
    finally:
        await api.close()
    if problem is not None and problem.startswith("denied: "):
        raise LinkGenError(
            f"ServiceAccount {options.namespace}/{options.service_account} may not "
            f"{problem.removeprefix('denied: ')} on the target cluster, which links need: bind it "
            "to the ClusterRole of deploy/remote-access.yaml (link-gen creates that binding "
            "unless it exists or --no-create-access is given)"
        )
    if problem is not None:
        report.warnings.append(f"could not verify the token's permissions ({problem})")
    address_warning = _address_warning(
        server, given=options.api_server_address is not None, context=access.context
    )
    if address_warning:
        report.warnings.append(address_warning)
    kubeconfig = _refused(server, ca_pem, options, access, token=token)
    if inputs.link_namespace == inputs.linkerd_namespace:
        report.notes.append(
            f"--link-namespace and --linkerd-namespace are both {inputs.link_namespace}: one "
            "Secret serves the mirror controller and the destination server"
        )
    return render([*credentials_secrets(inputs, kubeconfig), link], options.output)


def _link_gen(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except UsageError as err:
        error(str(err))
        return EXIT_USAGE
    report = _Report()
    try:
        text = asyncio.run(generate(options, report))
    except LinkGenError as err:
        _say(report)
        error(str(err))
        return EXIT_FAILURE
    _say(report)
    sys.stdout.write(text)
    return EXIT_OK


def _say(report: _Report) -> None:
    for what in report.created:
        note(f"created {what} on the target cluster")
    for text in report.notes:
        note(text)
    for text in report.warnings:
        warning(text)
