"""``destination multicluster unlink``: remove a link and everything it made, nothing else.

Run against the SOURCE cluster. For ``--cluster-name NAME`` it removes, in
this order:

1. every Link in ``--namespace`` whose ``spec.targetClusterName`` is NAME (a
   Link the mirror controller serves carries its finalizer
   ``multicluster.linkerd.io/mirrors``, so it stays, terminating, until step 6;
   deleting it first stops the controller's worker for it, so that mirrors
   are not re-created while they are being removed);
2. every Service and Endpoints labelled ``mirror.linkerd.io/mirrored-service=true``
   and ``mirror.linkerd.io/cluster-name=NAME``, in every namespace (gateway
   and remote-discovery mirrors, per-pod mirrors of headless Services);
3. NAME's entries (``svc@NAME``) in the ``multicluster.linkerd.io/remote-discovery``
   annotation of federated Services, deleting a federated Service left with
   no member (Linkerd's unlink leaves these behind);
4. the Link's credentials Secret (``spec.clusterCredentialsSecret`` in the
   Link's namespace, ``cluster-credentials-NAME`` when no Link is left) and
   the destination server's copy (Secrets of type
   ``mirror.linkerd.io/remote-kubeconfig`` labelled
   ``multicluster.linkerd.io/cluster-name=NAME`` in ``--linkerd-namespace``):
   the destination server forgets the cluster at once;
5. the Link's Lease (``service-mirror-write-<link>``);
6. mirrors re-created meanwhile by a controller that had not yet seen the
   deletion (checked again), then the finalizer, so the Link goes away.

Only objects that carry these names and labels are touched; a Secret of
another type, a Service without the labels, another cluster's member of a
federated Service stay. Every delete is conditional on the object's uid (a
federated Service's change on its resourceVersion, re-read and retried on a
conflict), so an object replaced since it was read is not removed. Works
also when the Link is already gone: what it left is found by its labels.

``--dry-run`` prints what it would do and changes nothing. The credentials
stay valid on the target: revoke them there (delete the token Secret
``<sa>-token``, or the ServiceAccount).

Exit status: 0 when everything found was removed (or nothing was found, which
it says); 1 when some removal failed (the others are still done); 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .flags import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_cluster_flags,
    add_namespace_flags,
    error,
)

if TYPE_CHECKING:
    from .api import Api

__all__ = ["Step", "UnlinkInputs", "plan", "register", "without_cluster"]

FINALIZER = "multicluster.linkerd.io/mirrors"  # mirror.controller.FINALIZER
MAX_CONFLICT_RETRIES = 5
RECREATED_PASSES = 3


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "unlink",
        help="remove a Link and everything it made (run against the source)",
        description=(
            "Run against the SOURCE cluster: delete the Links targeting --cluster-name, their "
            "mirrors, their members of federated Services, their credentials Secrets (the "
            "mirror's and the destination server's), their Leases and finalizers; nothing else."
        ),
        epilog=(
            "Exit status: 0 when everything found was removed (or nothing was found); 1 when "
            "a removal failed; 2 for a usage error. The credentials stay valid on the target "
            "cluster until you delete its token Secret or ServiceAccount there."
        ),
    )
    parser.add_argument("--cluster-name", required=True, metavar="NAME")
    add_cluster_flags(parser, which="SOURCE")
    add_namespace_flags(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be removed; change nothing"
    )
    parser.set_defaults(handler=_unlink)


@dataclass(frozen=True, slots=True)
class Step:
    """One change: `delete` an object, `unfederate` a federated Service, `release` a finalizer."""

    action: str
    kind: str
    namespace: str
    name: str
    path: str
    uid: str = ""
    detail: str = ""

    def describe(self, *, done: bool) -> str:
        verb = {
            "delete": ("delete", "deleted"),
            "unfederate": ("remove the member from", "removed the member from"),
            "release": ("remove the finalizer of", "removed the finalizer of"),
        }[self.action][done]
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        suffix = f" ({self.detail})" if self.detail else ""
        return f"{verb} {self.kind} {where}{suffix}"


@dataclass
class UnlinkInputs:
    """What the source cluster holds that may belong to the cluster being unlinked."""

    cluster: str
    link_namespace: str
    linkerd_namespace: str
    links: Sequence[Mapping[str, Any]] = ()
    services: Sequence[Mapping[str, Any]] = ()  # labelled mirrored-service=true
    endpoints: Sequence[Mapping[str, Any]] = ()  # labelled mirrored-service=true, cluster-name
    link_secrets: Sequence[Mapping[str, Any]] = ()  # of the Links' namespace
    destination_secrets: Sequence[Mapping[str, Any]] = ()  # labelled cluster-name, linkerd ns
    leases: Sequence[Mapping[str, Any]] = ()  # of the Links' namespace
    notes: list[str] = field(default_factory=list)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = _meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = _meta(obj).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def _target(link: Mapping[str, Any]) -> str:
    spec = link.get("spec")
    value = spec.get("targetClusterName") if isinstance(spec, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def _credentials_secret(link: Mapping[str, Any], cluster: str) -> str:
    spec = link.get("spec")
    value = spec.get("clusterCredentialsSecret") if isinstance(spec, Mapping) else None
    return (
        value.strip()
        if isinstance(value, str) and value.strip()
        else f"cluster-credentials-{cluster}"
    )


def _step(action: str, kind: str, path: str, obj: Mapping[str, Any], detail: str = "") -> Step:
    meta = _meta(obj)
    return Step(
        action=action,
        kind=kind,
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        path=path,
        uid=str(meta.get("uid") or ""),
        detail=detail,
    )


def without_cluster(service: Mapping[str, Any], cluster: str) -> tuple[str, dict[str, Any]] | None:
    """What removing `cluster` from a federated Service means: ("delete" | "patch", patch).

    None when `cluster` is not a member. The patch is a JSON merge patch of
    the membership annotation alone, conditional on the resourceVersion read.
    """
    from mirror.federation import parse_remote_members
    from mirror.naming import LOCAL_DISCOVERY, REMOTE_DISCOVERY

    annotations = _annotations(service)
    members = parse_remote_members(annotations.get(REMOTE_DISCOVERY))
    if not any(c == cluster for _, c in members):
        return None
    left = [(svc, c) for svc, c in members if c != cluster]
    if not left and not annotations.get(LOCAL_DISCOVERY):
        return "delete", {}
    value = ",".join(f"{svc}@{c}" for svc, c in left) if left else None
    return "patch", {
        "metadata": {
            "annotations": {REMOTE_DISCOVERY: value},
            "resourceVersion": _meta(service).get("resourceVersion"),
        }
    }


def plan(inputs: UnlinkInputs) -> list[Step]:
    """The steps of an unlink, in order (see the module docstring), from what was read."""
    from mirror.links import LINK_API
    from mirror.naming import CLUSTER_NAME, REMOTE_DISCOVERY, lease_name

    cluster = inputs.cluster
    steps: list[Step] = []
    links = [link for link in inputs.links if _target(link) == cluster]
    for link in links:
        steps.append(
            _step(
                "delete",
                "Link",
                f"{LINK_API}/namespaces/{inputs.link_namespace}/links/{_meta(link).get('name')}",
                link,
            )
        )
    for kind, plural, objects in (
        ("Service", "services", inputs.services),
        ("Endpoints", "endpoints", inputs.endpoints),
    ):
        for obj in sorted(
            objects, key=lambda o: (str(_meta(o).get("namespace")), str(_meta(o).get("name")))
        ):
            if _labels(obj).get(CLUSTER_NAME) != cluster:
                continue
            meta = _meta(obj)
            steps.append(
                _step(
                    "delete",
                    kind,
                    f"/api/v1/namespaces/{meta.get('namespace')}/{plural}/{meta.get('name')}",
                    obj,
                )
            )
    for service in sorted(
        inputs.services, key=lambda o: (str(_meta(o).get("namespace")), str(_meta(o).get("name")))
    ):
        change = without_cluster(service, cluster)
        if change is None:
            continue
        meta = _meta(service)
        before = str(_annotations(service).get(REMOTE_DISCOVERY))
        steps.append(
            _step(
                "unfederate",
                "Service",
                f"/api/v1/namespaces/{meta.get('namespace')}/services/{meta.get('name')}",
                service,
                detail=f"{REMOTE_DISCOVERY}: {before}; deleted when no member is left",
            )
        )
    secret_names = {_credentials_secret(link, cluster) for link in links} or {
        f"cluster-credentials-{cluster}"
    }
    from discovery.project import CLUSTER_NAME_LABEL, CREDENTIALS_SECRET_TYPE

    for secret in inputs.link_secrets:
        if (
            _meta(secret).get("name") in secret_names
            and secret.get("type") == CREDENTIALS_SECRET_TYPE
        ):
            steps.append(
                _step(
                    "delete",
                    "Secret",
                    f"/api/v1/namespaces/{inputs.link_namespace}/secrets/{_meta(secret).get('name')}",
                    secret,
                )
            )
    for secret in inputs.destination_secrets:
        if (
            _labels(secret).get(CLUSTER_NAME_LABEL) == cluster
            and secret.get("type") == CREDENTIALS_SECRET_TYPE
        ):
            meta = _meta(secret)
            if (meta.get("namespace"), meta.get("name")) in {
                (s.namespace, s.name) for s in steps if s.kind == "Secret"
            }:
                continue  # one Secret serving both (link and destination namespaces are one)
            steps.append(
                _step(
                    "delete",
                    "Secret",
                    f"/api/v1/namespaces/{meta.get('namespace')}/secrets/{meta.get('name')}",
                    secret,
                )
            )
    lease_names = {lease_name(str(_meta(link).get("name"))) for link in links} or {
        lease_name(cluster)
    }
    for lease in inputs.leases:
        if _meta(lease).get("name") in lease_names:
            steps.append(
                _step(
                    "delete",
                    "Lease",
                    f"/apis/coordination.k8s.io/v1/namespaces/{inputs.link_namespace}/leases/"
                    f"{_meta(lease).get('name')}",
                    lease,
                )
            )
    for link in links:
        finalizers = _meta(link).get("finalizers")
        if isinstance(finalizers, list) and FINALIZER in finalizers:
            steps.append(
                _step(
                    "release",
                    "Link",
                    f"{LINK_API}/namespaces/{inputs.link_namespace}/links/{_meta(link).get('name')}",
                    link,
                    detail=FINALIZER,
                )
            )
    return steps


async def read_inputs(
    api: Api, cluster: str, link_namespace: str, linkerd_namespace: str
) -> UnlinkInputs:
    from discovery.project import CLUSTER_NAME_LABEL
    from mirror.links import LINK_API
    from mirror.naming import CLUSTER_NAME, MIRRORED_SERVICE

    from .api import ApiError

    async def optional(path: str, **selectors: str) -> list[dict[str, Any]]:
        try:
            return await api.list(path, **selectors)
        except ApiError as err:
            if err.status == 404:  # no such namespace, or no Link CRD
                return []
            raise

    mirrors = f"{MIRRORED_SERVICE}=true"
    return UnlinkInputs(
        cluster=cluster,
        link_namespace=link_namespace,
        linkerd_namespace=linkerd_namespace,
        links=await optional(f"{LINK_API}/namespaces/{link_namespace}/links"),
        services=await api.list("/api/v1/services", label_selector=mirrors),
        endpoints=await api.list(
            "/api/v1/endpoints", label_selector=f"{mirrors},{CLUSTER_NAME}={cluster}"
        ),
        link_secrets=await optional(f"/api/v1/namespaces/{link_namespace}/secrets"),
        destination_secrets=await optional(
            f"/api/v1/namespaces/{linkerd_namespace}/secrets",
            label_selector=f"{CLUSTER_NAME_LABEL}={cluster}",
        ),
        leases=await optional(f"/apis/coordination.k8s.io/v1/namespaces/{link_namespace}/leases"),
    )


async def _unfederate(api: Api, step: Step, cluster: str) -> str:
    """Remove `cluster` from one federated Service, re-reading it on each conflict."""
    from .api import ApiError

    for _ in range(MAX_CONFLICT_RETRIES):
        service = await api.get(step.path)
        if service is None:
            return "already gone"
        change = without_cluster(service, cluster)
        if change is None:
            return "no longer a member"
        action, patch = change
        try:
            if action == "delete":
                meta = _meta(service)
                await api.delete(
                    step.path,
                    preconditions={
                        "uid": str(meta.get("uid")),
                        "resourceVersion": str(meta.get("resourceVersion")),
                    },
                )
                return "deleted: no member left"
            await api.merge_patch(step.path, patch)
            return "member removed"
        except ApiError as err:
            if err.status != 409:
                raise
    raise RuntimeError(f"still changing after {MAX_CONFLICT_RETRIES} attempts")


async def _release(api: Api, step: Step) -> str:
    from .api import ApiError

    for _ in range(MAX_CONFLICT_RETRIES):
        link = await api.get(step.path)
        if link is None:
            return "already gone"
        meta = _meta(link)
        finalizers = meta.get("finalizers")
        if (
            str(meta.get("uid")) != step.uid
            or not isinstance(finalizers, list)
            or FINALIZER not in finalizers
        ):
            return "already released"
        try:
            await api.merge_patch(
                step.path,
                {
                    "metadata": {
                        "finalizers": [f for f in finalizers if f != FINALIZER],
                        "resourceVersion": meta.get("resourceVersion"),
                    }
                },
            )
            return "released"
        except ApiError as err:
            if err.status != 409:
                raise
    raise RuntimeError(f"still changing after {MAX_CONFLICT_RETRIES} attempts")


async def execute(api: Api, steps: Sequence[Step], inputs: UnlinkInputs, *, say: Any) -> int:
    """Run the steps in order, each failure reported and the rest still done; failures."""
    import aiohttp

    from discovery.reflector import describe_error
    from mirror.naming import CLUSTER_NAME, MIRRORED_SERVICE

    from .api import ApiError, BodyTooLarge

    failures = 0

    async def run(step: Step) -> None:
        nonlocal failures
        try:
            if step.action == "unfederate":
                outcome = await _unfederate(api, step, inputs.cluster)
                say(f"{step.describe(done=True).split(' (')[0]}: {outcome}")
                return
            if step.action == "release":
                outcome = await _release(api, step)
                say(f"{step.describe(done=True)}: {outcome}")
                return
            gone = not await api.delete(
                step.path, preconditions={"uid": step.uid} if step.uid else None
            )
            say(step.describe(done=True) + (" (already gone)" if gone else ""))
        except (
            ApiError,
            aiohttp.ClientError,
            TimeoutError,
            OSError,
            BodyTooLarge,
            RuntimeError,
        ) as err:
            failures += 1
            error(f"cannot {step.describe(done=False)}: {describe_error(err)}")

    release = [s for s in steps if s.action == "release"]
    for step in steps:
        if step.action != "release":
            await run(step)
    # A controller that had not yet seen the Link's deletion may have re-created a mirror.
    selector = f"{MIRRORED_SERVICE}=true,{CLUSTER_NAME}={inputs.cluster}"
    for _ in range(RECREATED_PASSES):
        try:
            again = [
                *(
                    ("Service", "services", o)
                    for o in await api.list("/api/v1/services", label_selector=selector)
                ),
                *(
                    ("Endpoints", "endpoints", o)
                    for o in await api.list("/api/v1/endpoints", label_selector=selector)
                ),
            ]
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge) as err:
            failures += 1
            error(f"cannot list mirrors again: {describe_error(err)}")
            break
        if not again:
            break
        for kind, plural, obj in again:
            meta = _meta(obj)
            await run(
                _step(
                    "delete",
                    kind,
                    f"/api/v1/namespaces/{meta.get('namespace')}/{plural}/{meta.get('name')}",
                    obj,
                    detail="re-created meanwhile",
                )
            )
        await asyncio.sleep(0.5)
    for step in release:
        await run(step)
    return failures


async def unlink(args: argparse.Namespace, *, say: Any) -> int:
    import aiohttp

    from discovery.reflector import describe_error

    from .api import ApiError, BodyTooLarge
    from .contexts import KubeconfigProblem, open_cluster

    try:
        api, access = await open_cluster(args.kubeconfig, args.context, timeout_s=args.timeout_s)
    except KubeconfigProblem as err:
        error(str(err))
        return EXIT_FAILURE
    try:
        try:
            inputs = await read_inputs(
                api, args.cluster_name, args.namespace, args.linkerd_namespace
            )
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge) as err:
            error(f"cannot read the source cluster at {access.server}: {describe_error(err)}")
            return EXIT_FAILURE
        steps = plan(inputs)
        if not steps:
            say(
                f"nothing to remove for cluster {args.cluster_name} in context {access.context}: "
                f"no Link targets it in {args.namespace}, and no mirror, federated member, "
                "Secret or Lease of it was found"
            )
            return EXIT_OK
        if args.dry_run:
            for step in steps:
                say(f"would {step.describe(done=False)}")
            return EXIT_OK
        failures = await execute(api, steps, inputs, say=say)
    finally:
        await api.close()
    return EXIT_FAILURE if failures else EXIT_OK


def _unlink(args: argparse.Namespace) -> int:
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", args.cluster_name):
        error(f"--cluster-name {args.cluster_name!r} must be a DNS label")
        return EXIT_USAGE

    def say(line: str) -> None:
        from destination.cli.printable import printable

        sys.stdout.write(printable(line) + "\n")

    return asyncio.run(unlink(args, say=say))
