"""The private network namespace the end-to-end check runs in.

Two things the proxy needs cannot be had on the host's own network without
changing it for everyone:

* Every connection the proxy accepts on its outbound listener must have an
  original destination (``SO_ORIGINAL_DST``), which the kernel only knows for
  connections that connection tracking follows; on a host with no NAT rule it
  follows none, and the proxy drops each connection with "No such file or
  directory". That holds in ingress mode too.
* The proxy refuses to connect to loopback endpoints, so the backends need
  addresses of their own.

deploy/local/proxy-e2e.sh therefore starts the check in a fresh network
namespace (``unshare --net``, with a user namespace when not root), and this
module sets it up: loopback up, the backends' pod addresses on it, and one NAT
rule that sends TCP to the cluster's Service range to the proxy's outbound
port, like Linkerd's proxy-init does for a meshed pod. That rule also makes the
kernel track every connection in the namespace, which is what ingress mode
needs. Nothing outside the namespace is touched, and the module refuses to run
anywhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

PRIVATE_NETNS_ENV = "MCD_E2E_PRIVATE_NETNS"


class NotPrivate(RuntimeError):
    """We are not in a namespace of our own: refuse to change the network."""


def _interfaces() -> list[str]:
    """Interfaces of this process's network namespace (/proc/net follows the netns)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def check_private() -> None:
    """Raise NotPrivate unless this is a fresh namespace made for the check."""
    if os.environ.get(PRIVATE_NETNS_ENV) != "1":
        raise NotPrivate(
            "run the check through deploy/local/proxy-e2e.sh, which starts it in a private "
            f"network namespace (it sets {PRIVATE_NETNS_ENV}=1)"
        )
    try:
        if os.readlink("/proc/self/ns/net") == os.readlink("/proc/1/ns/net"):
            raise NotPrivate("this process shares the network namespace of PID 1")
    except PermissionError:
        pass  # in a user namespace PID 1's is not readable; the interface check decides
    interfaces = _interfaces()
    if interfaces != ["lo"]:
        raise NotPrivate(f"expected only lo in a fresh network namespace, found {interfaces}")


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def set_up(*, pod_addresses: Iterable[str], service_cidr: str, outbound_port: int) -> None:
    """Loopback with the backends' addresses, and the Service range sent to the proxy."""
    check_private()
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is required (iproute2, iptables)")
    _run("ip", "link", "set", "lo", "up")
    for address in pod_addresses:
        _run("ip", "address", "add", f"{address}/32", "dev", "lo")
    # A route, so connecting to a Service address gets as far as the NAT rule.
    _run("ip", "route", "add", service_cidr, "dev", "lo")
    _run(
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        service_cidr,
        "-j",
        "REDIRECT",
        "--to-ports",
        str(outbound_port),
    )
