"""What a target cluster says about its Services, slim and checked (hostile input).

The mirror controller reads two kinds from a target cluster, through the
same least-privileged identity as remote discovery (list/watch Services and
EndpointSlices): `RemoteService` keeps what a mirror copies (labels,
annotations, ports, whether it is headless, its resourceVersion), and the
EndpointSlices (discovery's own `SliceInfo` records) say whether a Service
has ready endpoints and, for headless Services, which pods stand behind
which hostnames. `RemoteView` indexes both for the desired-state function.

Bounds: 64 labels and 64 annotations per Service (others are dropped and the
problem reported), keys and values as Kubernetes limits them, annotation
values up to 64 KiB, 100 ports; ports out of range are dropped. Names are
checked as the target's API server should have: a Service whose name or
namespace is not a DNS label, or an endpoint hostname that is not one, is
ignored. They become local object names and API paths (`a/../../x`
must never reach a URL).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from discovery.models import ForeignRecord, ObjectRef, ServiceRef, SliceInfo
from discovery.project import valid_port

__all__ = [
    "RemotePort",
    "RemoteService",
    "RemoteView",
    "project_remote_service",
]

MAX_METADATA_ENTRIES = 512  # far above real use; what bounds a hostile target's memory
MAX_KEY = 317  # prefix (253) + "/" + name (63)
MAX_LABEL_VALUE = 63
MAX_ANNOTATION_VALUE = 64 * 1024
MAX_PORTS = 100
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True, slots=True)
class RemotePort:
    name: str
    protocol: str
    port: int
    target_port: int | str | None
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteService(ForeignRecord):
    """A target cluster's Service (its `ref` is a ServiceRef)."""

    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    ports: tuple[RemotePort, ...] = ()
    headless: bool = False  # clusterIP: None
    resource_version: str = field(default="", compare=False)
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def service(self) -> ServiceRef:
        return ServiceRef(*self.ref)

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def annotation_map(self) -> dict[str, str]:
        return dict(self.annotations)


def _pairs(
    raw: Any, *, value_limit: int, what: str, problems: list[str]
) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        return ()
    kept = []
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            problems.append(f"{what} with a non-string key or value dropped")
            continue
        if not key or len(key) > MAX_KEY or len(value) > value_limit:
            problems.append(f"{what} {key[:64]!r} over Kubernetes' limits dropped")
            continue
        kept.append((key, value))
    if len(kept) > MAX_METADATA_ENTRIES:
        problems.append(f"more than {MAX_METADATA_ENTRIES} {what}s: the rest dropped")
        kept = sorted(kept)[:MAX_METADATA_ENTRIES]
    return tuple(sorted(kept))


def _ports(raw: Any, problems: list[str]) -> tuple[RemotePort, ...]:
    if not isinstance(raw, list):
        return ()
    ports = []
    for item in raw[:MAX_PORTS]:
        if not isinstance(item, Mapping):
            continue
        number = valid_port(item.get("port"))
        if number is None:
            problems.append(f"port {str(item.get('port'))[:20]!r} out of range dropped")
            continue
        raw_name = item.get("name")
        name = raw_name if isinstance(raw_name, str) else ""
        raw_protocol = item.get("protocol")
        protocol = raw_protocol if raw_protocol in ("UDP", "SCTP") else "TCP"
        target = item.get("targetPort")
        if (
            isinstance(target, bool)
            or not isinstance(target, int | str)
            or (isinstance(target, int) and valid_port(target) is None)
            or (isinstance(target, str) and not 0 < len(target) <= 15)
        ):
            target = None
        app = item.get("appProtocol")
        ports.append(
            RemotePort(
                name=name[:63],
                protocol=protocol,
                port=number,
                target_port=target,
                app_protocol=app if isinstance(app, str) and len(app) <= 253 else None,
            )
        )
    if len(raw) > MAX_PORTS:
        problems.append(f"more than {MAX_PORTS} ports: the rest dropped")
    return tuple(ports)


def project_remote_service(raw: Any) -> RemoteService | None:
    """A target cluster's Service, or None without a name and namespace that are DNS labels."""
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    if not _DNS_LABEL_RE.match(name) or not _DNS_LABEL_RE.match(namespace):
        return None
    spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
    problems: list[str] = []
    version = meta.get("resourceVersion")
    return RemoteService(
        ref=ServiceRef(namespace, name),
        labels=_pairs(
            meta.get("labels"), value_limit=MAX_LABEL_VALUE, what="label", problems=problems
        ),
        annotations=_pairs(
            meta.get("annotations"),
            value_limit=MAX_ANNOTATION_VALUE,
            what="annotation",
            problems=problems,
        ),
        ports=_ports(spec.get("ports"), problems),
        headless=spec.get("clusterIP") == "None",
        resource_version=version if isinstance(version, str) else "",
        problems=tuple(problems),
    )


@dataclass(frozen=True, slots=True)
class HeadlessEndpoint:
    """One ready endpoint of a headless Service that has a hostname (a StatefulSet pod)."""

    hostname: str
    pod: str | None  # the targetRef's name, when a Pod
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol) as the remote slice says


class RemoteView:
    """The target cluster's Services and EndpointSlices, as one Link's worker holds them.

    At most `limit` objects of each kind are kept (`--remote-max-objects-per-kind`):
    a target that invents objects must not exhaust the controller's memory. A new
    object past the limit is refused (`refused` counts them), a list is cut to
    its first `limit` objects by name; objects already held are always updated.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.services: dict[ServiceRef, RemoteService] = {}
        self.slices: dict[ObjectRef, SliceInfo] = {}
        self._slices_by_service: defaultdict[ServiceRef, set[ObjectRef]] = defaultdict(set)
        self.limit = limit
        self.refused = 0

    def _full(self, table: Mapping[Any, Any], key: Any) -> bool:
        if self.limit is None or key in table or len(table) < self.limit:
            return False
        self.refused += 1
        return True

    def _cut(self, items: dict[Any, Any]) -> dict[Any, Any]:
        if self.limit is None or len(items) <= self.limit:
            return items
        self.refused += len(items) - self.limit
        return {key: items[key] for key in sorted(items)[: self.limit]}

    def put_service(self, service: RemoteService) -> None:
        if self._full(self.services, service.service):
            return
        self.services[service.service] = service

    def drop_service(self, ref: ServiceRef) -> None:
        self.services.pop(ref, None)

    def put_slice(self, info: SliceInfo) -> None:
        if self._full(self.slices, info.ref):
            return
        self.drop_slice(info.ref)
        self.slices[info.ref] = info
        self._slices_by_service[info.service].add(info.ref)

    def drop_slice(self, ref: ObjectRef) -> None:
        old = self.slices.pop(ref, None)
        if old is not None:
            refs = self._slices_by_service.get(old.service)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._slices_by_service[old.service]

    def replace_services(self, services: Iterable[RemoteService]) -> None:
        self.services = self._cut({s.service: s for s in services})

    def replace_slices(self, slices: Iterable[SliceInfo]) -> None:
        self.slices = {}
        self._slices_by_service = defaultdict(set)
        for info in self._cut({info.ref: info for info in slices}).values():
            self.put_slice(info)

    def slices_of(self, service: ServiceRef) -> list[SliceInfo]:
        return [self.slices[ref] for ref in sorted(self._slices_by_service.get(service, ()))]

    def has_ready_endpoints(self, service: ServiceRef) -> bool:
        """The reference's "not empty": some endpoint is ready (reference §3.6)."""
        return any(
            endpoint.ready and endpoint.addresses
            for info in self.slices_of(service)
            for endpoint in info.endpoints
        )

    def has_hostnames(self, service: ServiceRef) -> bool:
        """Whether some endpoint, ready or not, has a hostname (reference §3.8: a headless
        mirror then gets per-pod mirrors; without, it is mirrored as a ClusterIP Service)."""
        return any(
            endpoint.hostname and _DNS_LABEL_RE.match(endpoint.hostname) and endpoint.addresses
            for info in self.slices_of(service)
            if info.address_type != "FQDN"
            for endpoint in info.endpoints
        )

    def headless_endpoints(self, service: ServiceRef) -> list[HeadlessEndpoint]:
        """Ready endpoints with hostnames, one per hostname, in hostname order.

        Slices do not say a port's protocol; the Service's port of the same
        name does (the EndpointSlice controller copies names from it).
        """
        remote = self.services.get(service)
        protocols = {port.name: port.protocol for port in remote.ports} if remote else {}
        found: dict[str, HeadlessEndpoint] = {}
        for info in self.slices_of(service):
            if info.address_type == "FQDN":
                continue
            ports = tuple(
                (port.name, port.port, protocols.get(port.name, "TCP"))
                for port in (info.ports or ())
            )
            for endpoint in info.endpoints:
                if not endpoint.ready or not endpoint.addresses:
                    continue
                if not endpoint.hostname or not _DNS_LABEL_RE.match(endpoint.hostname):
                    continue
                target = endpoint.target
                pod = target.name if target is not None and target.kind == "Pod" else None
                found.setdefault(endpoint.hostname, HeadlessEndpoint(endpoint.hostname, pod, ports))
        return [found[name] for name in sorted(found)]
