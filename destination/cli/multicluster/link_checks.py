"""`check`, for one Link: each step of linking its target, verified in order.

1. the credentials Secret the Link names holds a kubeconfig the mirror
   controller accepts (`discovery.kubeconfig`, the same parser);
2. the target's API server answers those credentials (from this machine),
   with a message for each way it does not: refused, no answer, TLS,
   credentials rejected; and its address is not one that pods of the source
   cluster cannot reach (loopback, link-local);
3. the credentials may list and watch Services, Pods and EndpointSlices in
   every namespace (SelfSubjectAccessReviews), and a warning when they may do
   much more (read Secrets, create Pods, ...);
4. the destination server's copy of the credentials is in its namespace,
   with the label and annotations it needs, and equal to the mirror's;
5. the gateway is alive: as the mirror controller sees it (its `/links`,
   with `--mirror-admin`), or probed from this machine;
6. the namespaces of the exported Services exist here, every exported
   Service has its mirror, and the Link's status reports no failure;
7. every federated member of the target is listed in its federated
   Service, and no federated Service lists a member that is no longer one;
8. both clusters publish the same trust anchors (skipped, saying why, when
   either does not publish them readably).

A step whose input is missing is skipped with the reason (no credentials:
nothing on the target can be checked), never reported as a second failure.
The target's answers are hostile input: read through
`discovery.transport.RemoteTransport` only, projected with the mirror's own
`project_remote_service`, bounded by `Api`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from discovery.kubeconfig import KubeconfigError, RemoteKubeconfig, parse_kubeconfig
from discovery.project import (
    CLUSTER_DOMAIN_ANNOTATION,
    CLUSTER_NAME_LABEL,
    CREDENTIALS_SECRET_TYPE,
    TRUST_DOMAIN_ANNOTATION,
)
from discovery.reflector import describe_error
from discovery.transport import open_remote_transport
from mirror.links import Link, LinkSpec
from mirror.naming import (
    CLUSTER_NAME,
    FEDERATED_SUFFIX,
    HEADLESS_MIRROR_OF,
    MIRRORED_GATEWAY,
    REMOTE_DISCOVERY,
    federated_name,
    lease_name,
    mirror_name,
)
from mirror.remote import RemoteService, project_remote_service

from .access import EXCESS, REQUIRED, denied, granted
from .addresses import api_server_hint, classify_server, regenerate_hint
from .api import Api, ApiError, BodyTooLarge
from .linkerd_config import CONFIG_MAP, TRUST_ROOTS_CONFIG_MAP, anchor_fingerprints, trust_anchors
from .report import Category, Check

__all__ = ["LinkContext", "SourceView", "check_link"]

NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge)
LINK_GEN = (
    "destination multicluster link-gen --cluster-name {cluster} (against the target) "
    "| kubectl apply -f - (here)"
)


@dataclass(frozen=True, slots=True)
class SourceView:
    """What the source cluster holds, read once for every Link."""

    link_namespace: str
    linkerd_namespace: str
    namespaces: frozenset[str] | None  # None: could not be listed
    mirror_services: Sequence[Mapping[str, Any]]  # every Service labelled mirrored-service=true
    mirror_admin: str | None
    links_document: Mapping[str, Any] | None  # the mirror controller's /links
    links_error: str | None  # why /links could not be read
    local_anchors: str | None
    local_anchors_source: str


@dataclass
class LinkContext:
    link: Link
    spec: LinkSpec
    status: Mapping[str, Any]
    source: Api
    view: SourceView
    timeout_s: float
    remote: Api | None = None
    kubeconfig: bytes | None = None
    category: Category = field(default_factory=lambda: Category(""))

    @property
    def cluster(self) -> str:
        return self.spec.target_cluster_name

    def add(self, check: Check) -> Check:
        return self.category.add(check)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def _ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _kubeconfig_of(secret: Mapping[str, Any]) -> bytes:
    """The `kubeconfig` bytes of a credentials Secret; ValueError saying what is wrong."""
    data = secret.get("data")
    encoded = data.get("kubeconfig") if isinstance(data, Mapping) else None
    if not isinstance(encoded, str) or not encoded:
        raise ValueError("has no data key 'kubeconfig'")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data key 'kubeconfig' is not valid base64") from None


# --------------------------------------------------------------------------
# 1. credentials


async def check_credentials(ctx: LinkContext) -> RemoteKubeconfig | None:
    namespace, name = ctx.link.ref.namespace, ctx.spec.credentials_secret
    description = f"credentials Secret {namespace}/{name} holds a usable kubeconfig"
    regenerate = "generate new credentials: " + LINK_GEN.format(cluster=ctx.cluster)
    try:
        secret = await ctx.source.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except (ApiError, *NETWORK_ERRORS) as err:
        ctx.add(Check.error(description, f"cannot read it: {describe_error(err)}"))
        return None
    if secret is None:
        ctx.add(
            Check.error(
                description,
                f"Secret {namespace}/{name} does not exist: the mirror controller cannot "
                f"reach {ctx.cluster}",
                hint=f"apply link-gen's output here (its first Secret), or correct the Link's "
                f"spec.clusterCredentialsSecret; {regenerate}",
            )
        )
        return None
    if secret.get("type") != CREDENTIALS_SECRET_TYPE:
        ctx.add(
            Check.error(
                description,
                f"its type is {str(secret.get('type'))[:60]!r}: the mirror controller reads only "
                f"Secrets of type {CREDENTIALS_SECRET_TYPE}",
                hint=regenerate,
            )
        )
        return None
    try:
        data = _kubeconfig_of(secret)
        config = await asyncio.to_thread(parse_kubeconfig, data)
    except (ValueError, KubeconfigError) as err:
        ctx.add(Check.error(description, f"its kubeconfig {err}", hint=regenerate))
        return None
    ctx.kubeconfig = data
    ctx.add(Check.ok(description))
    return config


# --------------------------------------------------------------------------
# 2. the target's API server


def os_reason(err: BaseException | None) -> str:
    """An OSError as the system says it ("connection refused"), without asyncio's wrapping."""
    errno = getattr(err, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno).lower()
    return describe_error(err) if err is not None else "unknown error"


def _connection_problem(err: BaseException, server: str, timeout_s: float) -> str:
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cert_error = err.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return (
            f"TLS: the certificate of {server} does not verify: {reason} (is the address in "
            "the certificate, and the CA the target's?)"
        )
    if isinstance(err, aiohttp.ClientConnectorError):
        cause = err.os_error
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {server} failed: {describe_error(cause)}"
        return f"cannot connect to {server}: {os_reason(cause)}"
    if isinstance(err, aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS with {server} failed: {describe_error(err)}"
    if isinstance(err, TimeoutError):
        return f"no answer from {server} within {timeout_s:g}s"
    return f"cannot reach {server}: {type(err).__name__}: {describe_error(err)}"


async def check_reachable(ctx: LinkContext, config: RemoteKubeconfig) -> Api | None:
    server = config.server
    description = f"target API server {server} answers the Link's credentials (from here)"
    regenerate = "generate new credentials: " + LINK_GEN.format(cluster=ctx.cluster)
    try:
        api = Api(await open_remote_transport(config), timeout_s=ctx.timeout_s)
    except KubeconfigError as err:
        ctx.add(Check.error(description, f"its TLS material: {err}", hint=regenerate))
        return None
    try:
        await api.request("GET", "/version")
    except ApiError as err:
        await api.close()
        if err.status == 401:
            ctx.add(
                Check.error(
                    description,
                    f"{server} rejected the credentials (HTTP 401): the token is invalid, "
                    "expired, or its ServiceAccount or token Secret was deleted",
                    hint=regenerate,
                )
            )
        else:
            ctx.add(
                Check.error(
                    description,
                    f"{server} answered {err}",
                    hint=api_server_hint(server, cluster=ctx.cluster),
                )
            )
        return None
    except NETWORK_ERRORS as err:
        await api.close()
        ctx.add(
            Check.error(
                description,
                _connection_problem(err, server, ctx.timeout_s),
                hint=api_server_hint(server, cluster=ctx.cluster),
            )
        )
        return None
    ctx.add(Check.ok(description))
    reach = classify_server(server)
    address = f"target API server address {server} is reachable from other hosts"
    if reach.unreachable_from_other_hosts:
        ctx.add(
            Check.warning(
                address,
                f"it is a {reach.value} address: it answers here, but from the source cluster's "
                "pods it is not the target's API server",
                hint=regenerate_hint(ctx.cluster),
            )
        )
    else:
        ctx.add(Check.ok(address))
    return api


# --------------------------------------------------------------------------
# 3. permissions


async def _identity(api: Api) -> str | None:
    try:
        review = await api.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    except (ApiError, *NETWORK_ERRORS):
        return None
    user = ((review.get("status") or {}).get("userInfo") or {}).get("username")
    return user[:200] if isinstance(user, str) else None


async def check_permissions(ctx: LinkContext, remote: Api) -> bool:
    resources = ", ".join(sorted({p.resource for p in REQUIRED}))
    description = f"the credentials may list and watch {resources} in every namespace"
    try:
        missing = await denied(remote, REQUIRED)
    except (ApiError, *NETWORK_ERRORS) as err:
        ctx.add(Check.error(description, f"cannot ask {remote.server}: {describe_error(err)}"))
        return False
    identity = await _identity(remote)
    who = f" ({identity})" if identity else ""
    if missing:
        ctx.add(
            Check.error(
                description,
                *(f"* missing: {p} in every namespace{who}" for p in missing),
                hint=f"on {ctx.cluster}, bind the credentials' ServiceAccount to the reader role: "
                "kubectl apply -f deploy/remote-access.yaml there, or generate new credentials "
                "with link-gen (it creates the binding)",
            )
        )
    else:
        ctx.add(Check.ok(description))
    try:
        excess = await granted(remote, EXCESS)
    except (ApiError, *NETWORK_ERRORS) as err:
        excess = []
        ctx.add(Check.skipped("the credentials grant nothing more", describe_error(err)))
        return not missing
    description = "the credentials grant nothing more (no Secrets, no writes)"
    if excess:
        ctx.add(
            Check.warning(
                description,
                *(f"* also allowed: {p}{who}" for p in excess),
                hint="a leaked link would give these powers over the target: link with a "
                "ServiceAccount bound only to the reader role (link-gen's default identity)",
            )
        )
    else:
        ctx.add(Check.ok(description))
    return "list services" not in {str(p) for p in missing}


# --------------------------------------------------------------------------
# 4. the destination server's copy


async def check_destination_copy(ctx: LinkContext) -> None:
    namespace = ctx.view.linkerd_namespace
    description = f"the destination server's copy of the credentials is in namespace {namespace}"
    apply_hint = (
        "apply link-gen's output here (its second Secret: label "
        f"{CLUSTER_NAME_LABEL}, annotations {TRUST_DOMAIN_ANNOTATION} and "
        f"{CLUSTER_DOMAIN_ANNOTATION})"
    )
    try:
        secrets = await ctx.source.list(
            f"/api/v1/namespaces/{namespace}/secrets",
            label_selector=f"{CLUSTER_NAME_LABEL}={ctx.cluster}",
        )
    except (ApiError, *NETWORK_ERRORS) as err:
        ctx.add(
            Check.error(description, f"cannot list Secrets of {namespace}: {describe_error(err)}")
        )
        return
    secrets = sorted((s for s in secrets if s.get("type") == CREDENTIALS_SECRET_TYPE), key=_ref)
    if not secrets:
        ctx.add(
            Check.error(
                description,
                f"no Secret of type {CREDENTIALS_SECRET_TYPE} labelled "
                f"{CLUSTER_NAME_LABEL}={ctx.cluster} in {namespace}: the destination server does "
                f"not know {ctx.cluster}, so its remote-discovery and federated services get no "
                "endpoints",
                hint=apply_hint,
            )
        )
        return
    secret = secrets[0]
    shown = "/".join(_ref(secret))
    annotations = _annotations(secret)
    problems = [
        f"{shown} lacks the annotation {key}: the destination server refuses it"
        for key in (TRUST_DOMAIN_ANNOTATION, CLUSTER_DOMAIN_ANNOTATION)
        if not annotations.get(key)
    ]
    try:
        data = _kubeconfig_of(secret)
        await asyncio.to_thread(parse_kubeconfig, data)
    except (ValueError, KubeconfigError) as err:
        data = None
        problems.append(f"{shown}: its kubeconfig {err}")
    if problems:
        ctx.add(Check.error(description, *problems, hint=apply_hint))
        return
    warnings = []
    if len(secrets) > 1:
        warnings.append(
            f"{len(secrets)} Secrets name cluster {ctx.cluster}; the destination server uses "
            f"{shown} (the first by namespace and name) and ignores the others"
        )
    if ctx.kubeconfig is not None and data != ctx.kubeconfig:
        warnings.append(
            f"its kubeconfig differs from the mirror's ({ctx.link.ref.namespace}/"
            f"{ctx.spec.credentials_secret}): one of them is stale"
        )
    domain = annotations.get(CLUSTER_DOMAIN_ANNOTATION)
    if domain != ctx.spec.target_cluster_domain:
        warnings.append(
            f"its {CLUSTER_DOMAIN_ANNOTATION} is {str(domain)[:80]!r}, the Link's "
            f"targetClusterDomain {ctx.spec.target_cluster_domain!r}"
        )
    if warnings:
        ctx.add(
            Check.warning(
                description,
                *warnings,
                hint="apply the output of one link-gen run, which writes both copies and the Link",
            )
        )
    else:
        ctx.add(Check.ok(description, f"* {shown}"))


# --------------------------------------------------------------------------
# 5. the gateway


async def _probe(address: str, port: int, path: str, timeout_s: float) -> tuple[float | None, str]:
    """(latency in ms or None, what happened) for one GET of the gateway's probe."""
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{port}{path}"
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False
            ) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status == 200:
                return (time.perf_counter() - started) * 1000, f"{url}: 200"
            return None, f"{url}: HTTP {response.status}"
    except aiohttp.ClientConnectorError as err:
        return None, f"{url}: {os_reason(err.os_error)}"
    except TimeoutError:
        return None, f"{url}: no answer within {timeout_s:g}s"
    except (aiohttp.ClientError, OSError) as err:
        return None, f"{url}: {type(err).__name__}: {describe_error(err)}"


async def _lease_holder(ctx: LinkContext) -> str | None:
    path = (
        f"/apis/coordination.k8s.io/v1/namespaces/{ctx.link.ref.namespace}/leases/"
        f"{lease_name(ctx.link.name)}"
    )
    try:
        lease = await ctx.source.get(path)
    except (ApiError, *NETWORK_ERRORS):
        return None
    holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
    return holder[:200] if isinstance(holder, str) and holder else None


async def check_gateway(ctx: LinkContext) -> None:
    spec = ctx.spec
    addresses = ",".join(spec.gateway_addresses)
    description = f"gateway {addresses}:{spec.gateway_port} is alive"
    if not spec.gateway_enabled:
        ctx.add(Check.skipped("the gateway is alive", "the Link has no gateway (pod-to-pod link)"))
        return
    if spec.probe is None:
        ctx.add(
            Check.skipped(
                description,
                "the Link does not probe its gateway (no probeSpec.path), so its mirrors stay "
                "ready even while the gateway is down",
            )
        )
        return
    probe = spec.probe
    if ctx.view.mirror_admin is not None:
        await _gateway_from_admin(ctx, description)
        return
    loop = asyncio.get_running_loop()
    targets: list[str] = []
    failures: list[str] = []
    for address in spec.gateway_addresses:
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(address, probe.port, type=0, proto=6), ctx.timeout_s
            )
            targets += sorted({str(info[4][0]) for info in infos})
        except (OSError, TimeoutError) as err:
            failures.append(f"{address}: does not resolve: {describe_error(err)}")
    timeout = min(probe.timeout_s, ctx.timeout_s)
    results = await asyncio.gather(*(_probe(t, probe.port, probe.path, timeout) for t in targets))
    latencies = [latency for latency, _ in results if latency is not None]
    if latencies:
        ctx.add(Check.ok(description, f"probed from here: {min(latencies):.1f} ms"))
        return
    failures += [what for _, what in results]
    ctx.add(
        Check.error(
            description,
            *(f"* {failure}" for failure in failures),
            hint=f"the gateway of {ctx.cluster} does not answer its probe from here: check it is "
            "running on the target and its probe port reachable from the source cluster; pass "
            "--mirror-admin HOST:PORT to see what the mirror controller sees",
        )
    )


async def _gateway_from_admin(ctx: LinkContext, description: str) -> None:
    admin = ctx.view.mirror_admin
    if ctx.view.links_document is None:
        ctx.add(
            Check.error(
                description,
                f"cannot read http://{admin}/links: {ctx.view.links_error}",
                hint="pass --mirror-admin HOST:PORT of the mirror controller's admin server "
                "(kubectl port-forward to its port 9997), or leave --mirror-admin out to probe "
                "the gateway from here",
            )
        )
        return
    entries = ctx.view.links_document.get("links")
    entry = next(
        (
            e
            for e in (entries if isinstance(entries, list) else [])
            if isinstance(e, Mapping)
            and e.get("name") == ctx.link.name
            and e.get("namespace") == ctx.link.ref.namespace
        ),
        None,
    )
    if entry is None:
        ctx.add(
            Check.error(
                description,
                f"the mirror controller at {admin} does not serve Link {ctx.link.ref.namespace}/"
                f"{ctx.link.name}",
                hint=f"is `destination mirror --namespace {ctx.link.ref.namespace}` running, and "
                "is --mirror-admin its admin address?",
            )
        )
        return
    if not entry.get("leader"):
        holder = await _lease_holder(ctx)
        held = (
            f"its Lease {lease_name(ctx.link.name)} is held by {holder}"
            if holder
            else "no replica holds its Lease"
        )
        ctx.add(
            Check.skipped(
                description,
                f"the replica at {admin} does not lead this Link ({held}); point --mirror-admin "
                "at the leader",
            )
        )
        return
    gateway = entry.get("gateway")
    alive = gateway.get("alive") if isinstance(gateway, Mapping) else None
    latency = gateway.get("latency_ms") if isinstance(gateway, Mapping) else None
    if alive is True:
        shown = f"{latency} ms" if isinstance(latency, int | float) else "no latency yet"
        ctx.add(Check.ok(description, f"the mirror controller's probes succeed ({shown})"))
        return
    assert ctx.spec.probe is not None
    probe = ctx.spec.probe
    urls = ", ".join(
        f"http://{f'[{a}]' if ':' in a else a}:{probe.port}{probe.path}"
        for a in ctx.spec.gateway_addresses
    )
    reason = (
        f"the mirror controller's probes of {urls} fail: its gateway-mode mirrors are not ready"
        if alive is False
        else f"the mirror controller does not run this Link (state {entry.get('state')!s:.40}): "
        f"{entry.get('error') or 'no error given'!s:.300}"
    )
    ctx.add(
        Check.error(
            description,
            reason,
            hint=f"check the gateway on {ctx.cluster} (its pods and Service) and that the source "
            "cluster reaches its addresses; `destination multicluster gateways` shows every link",
        )
    )


# --------------------------------------------------------------------------
# 6, 7. exported Services


def _status_conditions(status: Mapping[str, Any], key: str) -> dict[tuple[str, str], str]:
    """`namespace/name` of a remote Service -> "Reason: message" of a failing condition."""
    failing: dict[tuple[str, str], str] = {}
    entries = status.get(key)
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        remote = entry.get("remoteRef") or {}
        conditions = entry.get("conditions") or []
        if not isinstance(remote, Mapping) or not isinstance(conditions, list):
            continue
        for condition in conditions:
            if isinstance(condition, Mapping) and condition.get("status") == "False":
                reason = str(condition.get("reason") or "")[:60]
                message = str(condition.get("message") or "")[:200]
                failing[(str(remote.get("namespace", "")), str(remote.get("name", "")))] = (
                    f"{reason}: {message}" if message else reason
                )
    return failing


async def check_exports(ctx: LinkContext, remote: Api | None) -> None:
    cluster = ctx.cluster
    names = (
        f"namespaces of {cluster}'s exported Services exist here",
        f"every exported Service of {cluster} is mirrored",
        f"federated Services list every member of {cluster}",
    )
    if remote is None:
        for name in names:
            ctx.add(Check.skipped(name, f"the Services of {cluster} cannot be read"))
        return
    try:
        raw = await remote.list("/api/v1/services")
    except (ApiError, *NETWORK_ERRORS) as err:
        for name in names:
            ctx.add(
                Check.error(name, f"cannot list the Services of {cluster}: {describe_error(err)}")
            )
        return
    services = [s for s in (project_remote_service(r) for r in raw) if s is not None]
    spec = ctx.spec
    exported = [
        s
        for s in services
        if spec.selector.matches(s.label_map())
        or spec.remote_discovery_selector.matches(s.label_map())
    ]
    members = [s for s in services if spec.federated_selector.matches(s.label_map())]
    present = ctx.view.namespaces
    _check_namespaces(ctx, names[0], exported, members)

    def here(service: RemoteService) -> bool:
        return present is None or service.ref.namespace in present

    _check_mirrors(ctx, names[1], [s for s in exported if here(s)], exported)
    _check_federated(ctx, names[2], [s for s in members if here(s)], members)


def _check_namespaces(
    ctx: LinkContext, description: str, exported: list[RemoteService], members: list[RemoteService]
) -> None:
    present = ctx.view.namespaces
    if present is None:
        ctx.add(Check.skipped(description, "the namespaces of this cluster cannot be listed"))
        return
    missing: dict[str, set[str]] = {}
    for service in (*exported, *members):
        if service.ref.namespace not in present:
            missing.setdefault(service.ref.namespace, set()).add(service.ref.name)
    if not missing:
        ctx.add(Check.ok(description))
        return
    ctx.add(
        Check.error(
            description,
            *(
                f"* {namespace} does not exist here ({', '.join(sorted(svcs)[:5])}"
                f"{', ...' if len(svcs) > 5 else ''} exported by {ctx.cluster})"
                for namespace, svcs in sorted(missing.items())
            ),
            hint=f"create them (kubectl create namespace {sorted(missing)[0]}), or run the mirror "
            "controller with --enable-namespace-creation: mirrors go into the namespace of the "
            "same name",
        )
    )


def _local_mirrors(ctx: LinkContext) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {
        _ref(s): s
        for s in ctx.view.mirror_services
        if _labels(s).get(CLUSTER_NAME) == ctx.cluster
        and not _labels(s).get(MIRRORED_GATEWAY)
        and not _ref(s)[1].endswith(FEDERATED_SUFFIX)
    }


def _check_mirrors(
    ctx: LinkContext,
    description: str,
    exported: list[RemoteService],
    all_exported: list[RemoteService],
) -> None:
    cluster = ctx.cluster
    local = _local_mirrors(ctx)
    failing = _status_conditions(ctx.status, "mirrorServices")
    problems = []
    for service in sorted(exported, key=lambda s: s.ref):
        namespace, name = service.ref
        mirror = (namespace, mirror_name(name, cluster))
        condition = failing.get((namespace, name))
        if mirror not in local:
            why = f": {condition}" if condition else ""
            problems.append(f"* {namespace}/{name}: no mirror {namespace}/{mirror[1]}{why}")
        elif condition:
            problems.append(f"* {namespace}/{name}: {condition}")
    if problems:
        ctx.add(
            Check.error(
                description,
                *problems,
                hint="is the mirror controller running and leading this Link (`destination "
                "multicluster gateways`, its logs)? A Service without ports, or whose mirror "
                "name would pass 63 characters, cannot be mirrored",
            )
        )
    else:
        ctx.add(Check.ok(description, f"{len(exported)} mirrored"))
    wanted = {(s.ref.namespace, mirror_name(s.ref.name, cluster)) for s in all_exported}
    stale = sorted(
        "/".join(ref)
        for ref, obj in local.items()
        if ref not in wanted and not _labels(obj).get(HEADLESS_MIRROR_OF)
    )
    description = f"no mirror of {cluster} outlived its export"
    if stale:
        ctx.add(
            Check.warning(
                description,
                *(f"* {ref}: its remote Service is gone or no longer exported" for ref in stale),
                hint="the mirror controller deletes them at its next reconcile; if they stay, "
                "it is not running for this Link",
            )
        )
    else:
        ctx.add(Check.ok(description))


def _check_federated(
    ctx: LinkContext,
    description: str,
    members: list[RemoteService],
    all_members: list[RemoteService],
) -> None:
    from mirror.federation import parse_remote_members

    cluster = ctx.cluster
    federated = {
        _ref(s): parse_remote_members(_annotations(s).get(REMOTE_DISCOVERY))
        for s in ctx.view.mirror_services
        if _ref(s)[1].endswith(FEDERATED_SUFFIX)
    }
    failing = _status_conditions(ctx.status, "federatedServices")
    problems = []
    for service in sorted(members, key=lambda s: s.ref):
        namespace, name = service.ref
        fed = (namespace, federated_name(name))
        condition = failing.get((namespace, name))
        if service.headless:
            problems.append(f"* {namespace}/{name}: headless, so it cannot join {fed[1]}")
        elif (name, cluster) not in federated.get(fed, []):
            why = f" ({condition})" if condition else ""
            listed = "does not exist" if fed not in federated else f"does not list {name}@{cluster}"
            problems.append(f"* {namespace}/{name}: {namespace}/{fed[1]} {listed}{why}")
        elif condition:
            problems.append(f"* {namespace}/{name}: {condition}")
    wanted = {(s.ref.namespace, s.ref.name) for s in all_members}
    for (namespace, fed_name), entries in sorted(federated.items()):
        for remote, member_cluster in entries:
            if member_cluster == cluster and (namespace, remote) not in wanted:
                problems.append(
                    f"* {namespace}/{fed_name} lists {remote}@{cluster}, which {cluster} no "
                    "longer exports as a member"
                )
    if problems:
        ctx.add(
            Check.error(
                description,
                *problems,
                hint="the mirror controller keeps memberships in step; if it is running for this "
                "Link, its logs and the Link's status say why not",
            )
        )
    else:
        ctx.add(Check.ok(description, f"{len(members)} member(s)"))


# --------------------------------------------------------------------------
# 8. trust anchors


async def check_anchors(ctx: LinkContext, remote: Api | None) -> None:
    description = "the clusters share trust anchors"
    if ctx.view.local_anchors is None:
        ctx.add(
            Check.skipped(
                description, f"this cluster publishes none ({ctx.view.local_anchors_source})"
            )
        )
        return
    if remote is None:
        ctx.add(Check.skipped(description, f"{ctx.cluster} cannot be read"))
        return
    namespace = ctx.spec.target_linkerd_namespace
    documents: list[Mapping[str, Any] | None] = []
    reasons = []
    for name in (CONFIG_MAP, TRUST_ROOTS_CONFIG_MAP):
        try:
            documents.append(await remote.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}"))
        except (ApiError, *NETWORK_ERRORS) as err:
            documents.append(None)
            reasons.append(f"{namespace}/{name}: {describe_error(err)}")
    remote_pem = trust_anchors(documents[0], documents[1])
    if remote_pem is None:
        why = "; ".join(reasons) or f"no {CONFIG_MAP} or {TRUST_ROOTS_CONFIG_MAP} in {namespace}"
        ctx.add(
            Check.skipped(
                description,
                f"{ctx.cluster} publishes no trust anchors readable with the Link's credentials "
                f"({why}; the reader role reads no ConfigMaps)",
            )
        )
        return
    try:
        local, theirs = anchor_fingerprints(ctx.view.local_anchors), anchor_fingerprints(remote_pem)
    except ValueError as err:
        ctx.add(Check.error(description, str(err)))
        return
    if local == theirs:
        ctx.add(Check.ok(description, f"{len(local)} anchor(s)"))
        return
    ctx.add(
        Check.error(
            description,
            f"this cluster has {len(local)} anchor(s), {ctx.cluster} {len(theirs)}, "
            f"{len(local & theirs)} in common",
            hint="identities issued in one cluster do not verify in the other: install both "
            "control planes with the same trust anchors",
        )
    )


# --------------------------------------------------------------------------


async def check_link(ctx: LinkContext) -> Category:
    """Every check of one Link, in order; the category holds their results.

    Whatever goes wrong checking one Link is reported in its category and
    never stops the checks of the others.
    """
    remote: Api | None = None
    try:
        config = await check_credentials(ctx)
        if config is not None:
            remote = await check_reachable(ctx, config)
        else:
            ctx.add(Check.skipped("the target API server answers", "no usable credentials"))
        can_list = False
        if remote is not None:
            can_list = await check_permissions(ctx, remote)
        else:
            ctx.add(Check.skipped("the credentials' permissions", "the target cannot be reached"))
        await check_destination_copy(ctx)
        await check_gateway(ctx)
        await check_exports(ctx, remote if can_list else None)
        await check_anchors(ctx, remote)
    except Exception as err:  # one Link's surprise must not hide the other Links' results
        ctx.add(
            Check.error(
                "the checks of this Link ran to the end",
                f"stopped by {type(err).__name__}: {describe_error(err)}",
            )
        )
    finally:
        if remote is not None:
            await remote.close()
    return ctx.category
