"""``destination multicluster check``: is every link of the SOURCE cluster working?

Run against the SOURCE cluster (``--kubeconfig``, ``--context``). First the
source cluster itself:

* the Link CRD is installed (``multicluster.linkerd.io/v1alpha3``, kind Link);
* the Links' namespace (``--namespace``) and the destination server's
  (``--linkerd-namespace``) exist;
* every Link is valid, read with the mirror controller's own parser
  (``mirror.links.project_link``), with the field at fault;
* every mirror Service belongs to a Link (leftovers of a removed link are
  named, with the ``unlink`` command that removes them);

then, per valid Link, every step of linking its target (``link_checks.py``):
credentials, reachability (with what to do about an address the source
cluster's pods cannot use), permissions, the destination server's copy,
the gateway, mirrors and Link status, federated members, namespaces, trust
anchors. A check that cannot run because an earlier one failed is shown
as skipped, with the reason.

Reachability and the gateway probe are tried from the machine running
``check``: an address that works here may still not work from the source
cluster's pods, and the address checks say so. With ``--mirror-admin
HOST:PORT`` the gateway's liveness is the mirror controller's own (its
``/links``), which is what decides whether mirrors are ready.

Output: a table like ``linkerd check`` (√, ‼, a cross, and ``-`` for skipped, a hint
under each failure), or ``--output json``. Exit status: 0 when no check
failed (warnings allowed); 1 when one did; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .flags import (
    DEFAULT_LINK_NAMESPACE,
    DEFAULT_LINKERD_NAMESPACE,
    EXIT_FAILURE,
    EXIT_OK,
    add_cluster_flags,
    add_namespace_flags,
)

if TYPE_CHECKING:
    from .api import Api
    from .report import Category

__all__ = ["CheckOptions", "register", "run_checks"]

LINKS_CRD = "links.multicluster.linkerd.io"


@dataclass(frozen=True, slots=True)
class CheckOptions:
    kubeconfig: str | None = None
    context: str | None = None
    timeout_s: float = 10.0
    namespace: str = DEFAULT_LINK_NAMESPACE
    linkerd_namespace: str = DEFAULT_LINKERD_NAMESPACE
    cluster_name: str | None = None
    mirror_admin: str | None = None
    output: str = "table"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="verify every link of the source cluster, step by step",
        description=(
            "Run against the SOURCE cluster: check the Link CRD, each Link, its credentials, "
            "the target's API server and the credentials' permissions there, the destination "
            "server's copy of the credentials, the gateway, mirrors, federated members, "
            "namespaces and trust anchors; each failure with a hint."
        ),
        epilog=(
            "Exit status: 0 when no check failed (warnings allowed); 1 when one did; 2 for a "
            "usage error. Reachability is tested from this machine."
        ),
    )
    add_cluster_flags(parser, which="SOURCE")
    add_namespace_flags(parser)
    parser.add_argument("--cluster-name", metavar="NAME", help="check only the Link of this target")
    parser.add_argument(
        "--mirror-admin",
        metavar="HOST:PORT",
        help="admin address of the mirror controller: gateway liveness as it sees it. "
        "Default: probe the gateways from this machine.",
    )
    parser.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="Default: table."
    )
    parser.set_defaults(handler=_check)


def _options(args: argparse.Namespace) -> CheckOptions:
    return CheckOptions(
        kubeconfig=args.kubeconfig,
        context=args.context,
        timeout_s=args.timeout_s,
        namespace=args.namespace,
        linkerd_namespace=args.linkerd_namespace,
        cluster_name=args.cluster_name,
        mirror_admin=args.mirror_admin,
        output=args.output,
    )


async def _links_document(admin: str, timeout_s: float) -> tuple[dict[str, Any] | None, str | None]:
    import json

    import aiohttp

    from discovery.reflector import describe_error

    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False
            ) as session,
            session.get(f"http://{admin}/links", allow_redirects=False) as response,
        ):
            if response.status != 200:
                return None, f"HTTP {response.status}"
            body = await response.content.read(16 * 1024 * 1024)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
        return None, describe_error(err)
    try:
        document = json.loads(body)
    except ValueError:
        return None, "the answer is not JSON"
    if not isinstance(document, dict):
        return None, "the answer is not a JSON object"
    return document, None


async def _local_anchors(api: Api, namespace: str) -> tuple[str | None, str]:
    from .api import ApiError, BodyTooLarge
    from .linkerd_config import CONFIG_MAP, TRUST_ROOTS_CONFIG_MAP, trust_anchors

    documents = []
    for name in (CONFIG_MAP, TRUST_ROOTS_CONFIG_MAP):
        try:
            documents.append(await api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}"))
        except (ApiError, BodyTooLarge, TimeoutError, OSError):
            documents.append(None)
    pem = trust_anchors(documents[0], documents[1])
    return pem, f"no readable {CONFIG_MAP} or {TRUST_ROOTS_CONFIG_MAP} in {namespace}"


async def run_checks(options: CheckOptions) -> list[Category]:
    """Every check, source cluster first, then one category per Link (by name)."""
    import aiohttp

    from discovery.reflector import describe_error
    from mirror.links import LINK_API, project_link
    from mirror.naming import CLUSTER_NAME, MIRRORED_GATEWAY, MIRRORED_SERVICE

    from .api import ApiError, BodyTooLarge
    from .contexts import KubeconfigProblem, open_cluster
    from .link_checks import LinkContext, SourceView, check_link
    from .report import Category, Check

    network = (aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge, ApiError)
    source = Category("source cluster")
    categories = [source]
    try:
        api, access = await open_cluster(
            options.kubeconfig, options.context, timeout_s=options.timeout_s
        )
    except KubeconfigProblem as err:
        source.add(Check.error("the source cluster's kubeconfig can be used", str(err)))
        return categories
    source.name = f"source cluster (context {access.context}, {access.server})"
    try:
        description = "the Link CRD exists (links.multicluster.linkerd.io/v1alpha3)"
        crd_hint = "install it: kubectl apply -f deploy/crds/links.multicluster.linkerd.io.yaml"
        try:
            group = await api.get(LINK_API)
        except network as err:
            source.add(
                Check.error(description, f"cannot ask {access.server}: {describe_error(err)}")
            )
            return categories
        resources = (group or {}).get("resources") or []
        if not any(isinstance(r, dict) and r.get("name") == "links" for r in resources):
            source.add(
                Check.error(
                    description, f"{access.server} serves no {LINKS_CRD} v1alpha3", hint=crd_hint
                )
            )
            return categories
        source.add(Check.ok(description))

        namespaces: frozenset[str] | None
        try:
            namespaces = frozenset(
                str((n.get("metadata") or {}).get("name"))
                for n in await api.list("/api/v1/namespaces")
            )
        except network:
            namespaces = None
        for namespace, role, hint in (
            (
                options.namespace,
                "the Links'",
                f"create it (kubectl create namespace {options.namespace}) before applying "
                "link-gen's output, or pass --namespace",
            ),
            (
                options.linkerd_namespace,
                "the destination server's",
                "install the destination server there (deploy/), or pass --linkerd-namespace",
            ),
        ):
            description = f"{role} namespace {namespace} exists"
            if namespaces is None:
                try:
                    found = await api.get(f"/api/v1/namespaces/{namespace}") is not None
                except network as err:
                    source.add(Check.skipped(description, f"cannot read it: {describe_error(err)}"))
                    continue
            else:
                found = namespace in namespaces
            if found:
                source.add(Check.ok(description))
            else:
                source.add(
                    Check.error(description, f"namespace {namespace} does not exist", hint=hint)
                )

        description = f"the Links in {options.namespace} are valid"
        try:
            raw_links = await api.list(f"{LINK_API}/namespaces/{options.namespace}/links")
        except network as err:
            source.add(Check.error(description, f"cannot list them: {describe_error(err)}"))
            return categories
        links = [link for link in (project_link(r) for r in raw_links) if link is not None]
        statuses = {
            str((r.get("metadata") or {}).get("name")): r.get("status") or {} for r in raw_links
        }
        if options.cluster_name is not None:
            links = [
                link
                for link in links
                if link.name == options.cluster_name
                or (link.spec is not None and link.spec.target_cluster_name == options.cluster_name)
            ]
        links.sort(key=lambda link: link.name)
        invalid = [link for link in links if link.spec is None]
        if not links:
            which = f" for cluster {options.cluster_name}" if options.cluster_name else ""
            make = Check.error if options.cluster_name else Check.warning
            source.add(
                make(
                    description,
                    f"no Link{which} in namespace {options.namespace}",
                    hint="link a cluster: destination multicluster link-gen --cluster-name NAME "
                    "(against the target) | kubectl apply -f - (here)",
                )
            )
        elif invalid:
            source.add(
                Check.error(
                    description,
                    *(f"* {link.name}: {link.problem}" for link in invalid),
                    hint="correct these fields (kubectl edit link NAME), or generate the Link "
                    "again with link-gen; the mirror controller keeps their mirrors meanwhile",
                )
            )
        else:
            source.add(Check.ok(description, *(f"* {link.name}" for link in links)))

        description = "every mirror Service belongs to a Link"
        try:
            mirrors = await api.list("/api/v1/services", label_selector=f"{MIRRORED_SERVICE}=true")
        except network as err:
            mirrors = []
            source.add(Check.error(description, f"cannot list Services: {describe_error(err)}"))
        else:
            clusters = {link.spec.target_cluster_name for link in links if link.spec is not None}
            clusters |= {link.name for link in links if link.spec is None}
            if options.cluster_name is None:
                orphans = sorted(
                    (
                        str(labels.get(CLUSTER_NAME)),
                        f"{m['metadata'].get('namespace')}/{m['metadata'].get('name')}",
                    )
                    for m in mirrors
                    if isinstance(labels := (m.get("metadata") or {}).get("labels") or {}, dict)
                    and labels.get(CLUSTER_NAME)
                    and not labels.get(MIRRORED_GATEWAY)
                    and labels.get(CLUSTER_NAME) not in clusters
                )
                if orphans:
                    gone = sorted({cluster for cluster, _ in orphans})
                    source.add(
                        Check.warning(
                            description,
                            *(
                                f"* {ref} mirrors cluster {cluster}, which no Link targets"
                                for cluster, ref in orphans
                            ),
                            hint="remove what a removed link left: "
                            + "; ".join(
                                f"destination multicluster unlink --cluster-name {c}" for c in gone
                            ),
                        )
                    )
                else:
                    source.add(Check.ok(description))

        links_document, links_error = (None, None)
        if options.mirror_admin is not None:
            links_document, links_error = await _links_document(
                options.mirror_admin, options.timeout_s
            )
        anchors, anchors_source = await _local_anchors(api, options.linkerd_namespace)
        view = SourceView(
            link_namespace=options.namespace,
            linkerd_namespace=options.linkerd_namespace,
            namespaces=namespaces,
            mirror_services=mirrors,
            mirror_admin=options.mirror_admin,
            links_document=links_document,
            links_error=links_error,
            local_anchors=anchors,
            local_anchors_source=anchors_source,
        )
        contexts = [
            LinkContext(
                link=link,
                spec=link.spec,
                status=statuses.get(link.name, {}),
                source=api,
                view=view,
                timeout_s=options.timeout_s,
                category=Category(
                    f"Link {link.ref.namespace}/{link.name} (target cluster "
                    f"{link.spec.target_cluster_name})"
                ),
            )
            for link in links
            if link.spec is not None
        ]
        categories += await asyncio.gather(*(check_link(ctx) for ctx in contexts))
    finally:
        await api.close()
    return categories


def _check(args: argparse.Namespace) -> int:
    from .report import render_json, render_table, succeeded

    options = _options(args)
    categories = asyncio.run(run_checks(options))
    text = render_json(categories) if options.output == "json" else render_table(categories)
    sys.stdout.write(text)
    return EXIT_OK if succeeded(categories) else EXIT_FAILURE
