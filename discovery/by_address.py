"""What lives at an IP address: the lookups of GetProfile by IP (reference §2.1, §6.2).

A proxy asks for the profile of an address it is about to connect to. The
answer depends on what is there: a Service's ClusterIP (the service-profile
flow), a pod's IP, a pod's host port on a node IP, an ExternalWorkload, or
nothing known. `AddressIndex` keeps those four reverse maps in step with the
cluster index, which calls `add_*`/`drop_*` on every upsert and delete.

Addresses are keyed in canonical text (`normalize_ip`): an IPv4-mapped IPv6
address (`::ffff:10.0.0.1`) is its IPv4 address, and IPv6 is compressed, so
`0:0::1` and `::1` find the same pod. Pods are indexed whatever their state;
the lookups filter out what the reference leaves out (host-network pods for
pod IPs, terminating and terminated pods everywhere), so a pod changing phase
needs no re-indexing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Iterable

from .models import ExternalWorkloadInfo, ObjectRef, PodInfo, ServiceInfo, ServiceRef

__all__ = ["AddressIndex", "normalize_ip"]


@functools.lru_cache(maxsize=65_536)  # pods' addresses come back with each of their events
def normalize_ip(text: str) -> str | None:
    """Canonical text of an IP address, IPv4-mapped IPv6 as IPv4; None if not an IP."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _normalized(ips: Iterable[str]) -> set[str]:
    return {ip for ip in (normalize_ip(text) for text in ips) if ip is not None}


def _discard(table: defaultdict[str, set[ObjectRef]], key: str, ref: ObjectRef) -> None:
    refs = table.get(key)
    if refs is not None:
        refs.discard(ref)
        if not refs:
            del table[key]


class AddressIndex:
    """Reverse maps from addresses to the objects found there. Event loop only."""

    def __init__(self) -> None:
        self._services: defaultdict[str, set[ServiceRef]] = defaultdict(set)
        self._pods: defaultdict[str, set[ObjectRef]] = defaultdict(set)
        self._host_ports: defaultdict[str, set[ObjectRef]] = defaultdict(set)  # "ip:port"
        self._workloads: defaultdict[str, set[ObjectRef]] = defaultdict(set)  # "ip:port"

    # -- maintenance (called by ClusterIndex) ----------------------------------

    def add_service(self, service: ServiceInfo) -> None:
        for ip in _normalized(service.cluster_ips):
            self._services[ip].add(service.ref)

    def drop_service(self, service: ServiceInfo) -> None:
        for ip in _normalized(service.cluster_ips):
            refs = self._services.get(ip)
            if refs is not None:
                refs.discard(service.ref)
                if not refs:
                    del self._services[ip]

    def add_pod(self, pod: PodInfo) -> None:
        for table, address in self._pod_keys(pod):
            table[address].add(pod.ref)

    def drop_pod(self, pod: PodInfo) -> None:
        for table, address in self._pod_keys(pod):
            _discard(table, address, pod.ref)

    def add_workload(self, workload: ExternalWorkloadInfo) -> None:
        for address in self._workload_keys(workload):
            self._workloads[address].add(workload.ref)

    def drop_workload(self, workload: ExternalWorkloadInfo) -> None:
        for address in self._workload_keys(workload):
            _discard(self._workloads, address, workload.ref)

    def _pod_keys(self, pod: PodInfo) -> list[tuple[defaultdict[str, set[ObjectRef]], str]]:
        keys = [(self._pods, ip) for ip in _normalized(pod.ips)]
        host_ports = {p.host_port for p in pod.container_ports if p.host_port}
        keys += [
            (self._host_ports, f"{ip}:{port}")
            for ip in _normalized(pod.host_ips)
            for port in host_ports
        ]
        return keys

    @staticmethod
    def _workload_keys(workload: ExternalWorkloadInfo) -> list[str]:
        return [f"{ip}:{p.port}" for ip in _normalized(workload.ips) for p in workload.ports]

    # -- lookups (refs only; ClusterIndex resolves and filters them) ---------

    def services_at(self, ip: str) -> list[ServiceRef]:
        return sorted(self._services.get(ip, ()))

    def pods_at(self, ip: str) -> list[ObjectRef]:
        return sorted(self._pods.get(ip, ()))

    def pods_at_host_port(self, ip: str, port: int) -> list[ObjectRef]:
        return sorted(self._host_ports.get(f"{ip}:{port}", ()))

    def workloads_at(self, ip: str, port: int) -> list[ObjectRef]:
        return sorted(self._workloads.get(f"{ip}:{port}", ()))
