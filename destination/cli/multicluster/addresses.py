"""API server addresses that other clusters cannot reach, and what to say about them.

The most reported multicluster failure (reference §7 item 1) is a link
kubeconfig holding the address the operator's workstation uses for the
target's API server: `127.0.0.1` or `localhost` (kind, k3d, a tunnel), a
link-local address, `0.0.0.0`. From the source cluster's pods that address
is the pod itself or nothing. `link-gen` warns when it copies such an
address, and `check` names it in the hint when a target cannot be reached.
Private (RFC 1918, ULA) addresses are common and fine on a flat network, so
they only get a hint when the target cannot be reached.
"""

from __future__ import annotations

import enum
import ipaddress
from urllib.parse import urlsplit

__all__ = ["Reach", "api_server_hint", "classify_server", "regenerate_hint", "server_host"]


class Reach(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"  # RFC 1918, IPv6 ULA, CGNAT: reachable on some networks only
    LOOPBACK = "loopback"  # 127.0.0.0/8, ::1, localhost: this machine, or the pod itself
    LINK_LOCAL = "link-local"  # 169.254.0.0/16, fe80::/10: one network segment
    UNSPECIFIED = "unspecified"  # 0.0.0.0, ::: not an address to connect to
    NAME = "name"  # a DNS name other than localhost: cannot tell without resolving

    @property
    def unreachable_from_other_hosts(self) -> bool:
        return self in (Reach.LOOPBACK, Reach.LINK_LOCAL, Reach.UNSPECIFIED)


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def server_host(server: str) -> str:
    """The host of an API server URL ("" when it has none)."""
    try:
        return urlsplit(server).hostname or ""
    except ValueError:
        return ""


def classify_server(server: str) -> Reach:
    """Where an API server URL's host can be reached from."""
    host = server_host(server).rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return Reach.LOOPBACK
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return Reach.NAME
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return Reach.UNSPECIFIED
    if ip.is_loopback:
        return Reach.LOOPBACK
    if ip.is_link_local:
        return Reach.LINK_LOCAL
    if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT):
        return Reach.PRIVATE
    return Reach.PUBLIC


def regenerate_hint(cluster: str) -> str:
    return (
        f"regenerate the link on the target cluster with "
        f"`destination multicluster link-gen --cluster-name {cluster} "
        f"--api-server-address https://<address reachable from the source cluster>:<port>` "
        f"and apply its output to the source cluster"
    )


def api_server_hint(server: str, *, cluster: str) -> str:
    """What to do about a target API server address that does not work (for `check`)."""
    reach = classify_server(server)
    regenerate = regenerate_hint(cluster)
    if reach.unreachable_from_other_hosts:
        return (
            f"{server} is a {reach.value} address: from the source cluster's pods it is not "
            f"the target's API server; {regenerate}"
        )
    if reach is Reach.PRIVATE:
        return (
            f"{server} is a private address, reachable only from networks routed to it; if "
            f"the source cluster cannot reach it, {regenerate}"
        )
    return (
        f"check that {server} is the target's API server and reachable (firewall, VPN); "
        f"{regenerate}"
    )
