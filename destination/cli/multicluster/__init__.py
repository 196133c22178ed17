"""``destination multicluster``: link clusters, check links, see gateways, unlink.

One module per command, each with its own ``register(subparsers)``:

* ``link-gen`` (`link_gen.py`), run against the TARGET cluster: a reader
  identity and its token there, then the Secrets and the Link to apply on
  the SOURCE cluster;
* ``check`` (`check.py`), against the SOURCE cluster: every step of linking,
  verified, with a precise message and a hint for each failure;
* ``gateways`` (`gateways.py`): each Link's gateway, alive or not, from the
  mirror controller's admin server;
* ``unlink`` (`unlink.py`), against the SOURCE cluster: a Link and
  everything it made, and nothing else.

These commands read and write Kubernetes objects; they never touch the gRPC
side of the project (an import-linter contract keeps it so). The shared
parts: `api` (JSON requests), `contexts` (the operator's kubeconfig),
`access` (the target's reader identity and its permissions), `addresses`
(API server addresses other clusters cannot reach), `documents` (what
link-gen prints), `linkerd_config` (domains and trust anchors a cluster
publishes), `report` (check results as a table or JSON).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import check, gateways, link_gen, unlink

if TYPE_CHECKING:
    from destination.cli.common import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``multicluster`` and its subcommands."""
    parser = subparsers.add_parser(
        "multicluster",
        aliases=["mc"],
        help="link clusters, check links, show gateways, unlink",
        description=(
            "Link a target cluster to a source cluster (link-gen, run against the target), "
            "verify every link (check) and gateway (gateways), and remove a link with all "
            "it made (unlink), on the source cluster."
        ),
    )
    commands = parser.add_subparsers(dest="multicluster_command", metavar="COMMAND", required=True)
    for module in (link_gen, check, gateways, unlink):
        module.register(commands)
