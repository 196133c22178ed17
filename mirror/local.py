"""What the mirror controller reads from the local (source) cluster, kept current by watches.

One reflector per input, each with its own path and selector, all through
the local cluster's transport:

* Links, in the controller's namespace;
* credentials Secrets (type `mirror.linkerd.io/remote-kubeconfig`), there too;
* Namespaces (metadata only): a mirror waits for its namespace;
* our own Services and Endpoints, cluster-wide, by the label every mirror
  object carries (`mirror.linkerd.io/mirrored-service=true`): the "actual"
  side of every reconcile, so comparing costs no API request.

Every change is reported to `on_change(kind, ref)`; the controller turns
that into the Links (workers) that must reconcile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from discovery.metrics import DiscoveryMetrics
from discovery.models import ClusterName, ForeignRecord, Kind, ObjectRef
from discovery.project import CREDENTIALS_SECRET_TYPE, Invalid, Record, Warn, object_key
from discovery.reflector import Deleted, Listed, Reflector, ReflectorEvent, secrets_path
from discovery.transport import ApiTransport

from .links import LINK_API, Link, project_link
from .naming import MIRRORED_SERVICE
from .objects import LocalObject, project_local_object

__all__ = ["Credentials", "LinkRecord", "LocalState", "NamespaceRecord"]

log = structlog.get_logger("mirror.local")

MAX_KUBECONFIG_BYTES = 256 * 1024
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True, slots=True)
class LinkRecord(ForeignRecord):
    link: Link | None = None
    status: Mapping[str, Any] = field(default_factory=dict, hash=False)
    finalizers: tuple[str, ...] = ()
    deleting: bool = False
    # spec.targetClusterName when it is a DNS label, even if the rest of the spec
    # is unusable: a Link deleted while broken still names the mirrors it owns.
    cluster_hint: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials(ForeignRecord):
    """A credentials Secret: the kubeconfig bytes, or why there are none."""

    kubeconfig: bytes = field(default=b"", repr=False)
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceRecord(ForeignRecord):
    pass


def _project(kind: Kind, raw: Any, *, on_warning: Warn | None = None) -> Record | Invalid:
    """The mirror's projection of local objects (a `discovery.reflector.Projector`)."""
    del on_warning
    ref = object_key(raw) if isinstance(raw, Mapping) else None
    if ref is None:
        return Invalid(kind, "None", "object without metadata.name")
    if kind is Kind.LINK:
        link = project_link(raw)
        meta = raw.get("metadata") or {}
        status = raw.get("status")
        finalizers = meta.get("finalizers") if isinstance(meta, Mapping) else None
        spec = raw.get("spec")
        hint = spec.get("targetClusterName") if isinstance(spec, Mapping) else None
        return LinkRecord(
            ref=ref,
            link=link,
            cluster_hint=hint if isinstance(hint, str) and _DNS_LABEL_RE.match(hint) else None,
            status=status if isinstance(status, Mapping) else {},
            finalizers=tuple(f for f in finalizers if isinstance(f, str))
            if isinstance(finalizers, list)
            else (),
            deleting=isinstance(meta, Mapping) and meta.get("deletionTimestamp") is not None,
        )
    if kind is Kind.SECRET:
        data = raw.get("data") if isinstance(raw.get("data"), Mapping) else {}
        encoded = data.get("kubeconfig") if isinstance(data, Mapping) else None
        if raw.get("type") != CREDENTIALS_SECRET_TYPE:
            return Credentials(ref=ref, problem=f"type is not {CREDENTIALS_SECRET_TYPE}")
        if not isinstance(encoded, str) or not encoded:
            return Credentials(ref=ref, problem="data key 'kubeconfig' is missing or empty")
        if len(encoded) > MAX_KUBECONFIG_BYTES * 4 // 3 + 4:
            return Credentials(ref=ref, problem="data key 'kubeconfig' is too large")
        try:
            return Credentials(ref=ref, kubeconfig=base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            return Credentials(ref=ref, problem="data key 'kubeconfig' is not valid base64")
    if kind is Kind.NAMESPACE:
        return NamespaceRecord(ref=ObjectRef("", ref.name))
    local = project_local_object(kind.value, raw)
    return local if local is not None else Invalid(kind, str(ref), "malformed object")


class LocalState:
    """The controller's view of its namespace and of its own mirror objects."""

    def __init__(
        self,
        *,
        api: ApiTransport,
        namespace: str,
        metrics: DiscoveryMetrics,
        on_change: Callable[[Kind, ObjectRef], None],
        cluster: str = "local",
    ) -> None:
        self.namespace = namespace
        self.links: dict[ObjectRef, LinkRecord] = {}
        self.credentials: dict[ObjectRef, Credentials] = {}
        self.namespaces: set[str] = set()
        self.services: dict[ObjectRef, LocalObject] = {}
        self.endpoints: dict[ObjectRef, LocalObject] = {}
        self._on_change = on_change
        ours = [("labelSelector", f"{MIRRORED_SERVICE}=true")]
        inputs: list[tuple[Kind, str, list[tuple[str, str]]]] = [
            (Kind.LINK, f"{LINK_API}/namespaces/{namespace}/links", []),
            (
                Kind.SECRET,
                secrets_path(namespace),
                [("fieldSelector", f"type={CREDENTIALS_SECRET_TYPE}")],
            ),
            (Kind.NAMESPACE, "/api/v1/namespaces", []),
            (Kind.SERVICE, "/api/v1/services", ours),
            (Kind.ENDPOINTS, "/api/v1/endpoints", ours),
        ]
        self.reflectors = [
            Reflector(
                cluster=ClusterName(cluster),
                kind=kind,
                api=api,
                on_event=self.apply,
                metrics=metrics,
                path=path,
                selectors=selectors,
                projector=_project,
            )
            for kind, path, selectors in inputs
        ]

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    async def wait_synced(self) -> None:
        for reflector in self.reflectors:
            await reflector.synced.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for reflector in self.reflectors:
                group.create_task(reflector.run(), name=f"local {reflector.kind.value} watch")

    def _table(self, kind: Kind) -> dict[ObjectRef, Any] | None:
        tables: dict[Kind, dict[ObjectRef, Any]] = {
            Kind.LINK: self.links,
            Kind.SECRET: self.credentials,
            Kind.SERVICE: self.services,
            Kind.ENDPOINTS: self.endpoints,
        }
        return tables.get(kind)

    def apply(self, event: ReflectorEvent, received: float) -> None:
        del received
        kind = event.kind
        changed: list[ObjectRef] = []
        records: list[ForeignRecord] = []
        if isinstance(event, Listed):
            records = [r for r in event.records if isinstance(r, ForeignRecord)]
        elif not isinstance(event, Deleted) and isinstance(event.record, ForeignRecord):
            records = [event.record]
        elif not isinstance(event, Deleted):
            return  # not ours (cannot happen with our projector)
        if kind is Kind.NAMESPACE:
            if isinstance(event, Listed):
                names = {r.ref.name for r in records}
                changed = [ObjectRef("", n) for n in names ^ self.namespaces]
                self.namespaces = names
            elif isinstance(event, Deleted):
                self.namespaces.discard(event.ref.name)
                changed = [ObjectRef("", event.ref.name)]
            elif records[0].ref.name not in self.namespaces:
                self.namespaces.add(records[0].ref.name)
                changed = [ObjectRef("", records[0].ref.name)]
        else:
            table = self._table(kind)
            if table is None:
                return
            if isinstance(event, Listed):
                fresh = {r.ref: r for r in records}
                changed = [
                    ref for ref in fresh.keys() | table.keys() if fresh.get(ref) != table.get(ref)
                ]
                table.clear()
                table.update(fresh)
            elif isinstance(event, Deleted):
                if table.pop(event.ref, None) is not None:
                    changed = [event.ref]
            else:
                record = records[0]
                if table.get(record.ref) != record:
                    table[record.ref] = record
                    changed = [record.ref]
        for ref in changed:
            self._on_change(kind, ref)

    def owned(self, cluster: str, label: str) -> dict[tuple[str, ObjectRef], LocalObject]:
        """Our Services and Endpoints labelled `label=cluster`, keyed by (kind, ref)."""
        found: dict[tuple[str, ObjectRef], LocalObject] = {}
        for table in (self.services, self.endpoints):
            for ref, obj in table.items():
                if obj.labels.get(label) == cluster:
                    found[(obj.kind, ref)] = obj
        return found
