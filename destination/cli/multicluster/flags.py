"""Flags and messages the multicluster commands share."""

from __future__ import annotations

import argparse
import sys

from destination.cli.printable import printable

__all__ = [
    "DEFAULT_LINKERD_NAMESPACE",
    "DEFAULT_LINK_NAMESPACE",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_cluster_flags",
    "add_namespace_flags",
    "error",
    "note",
    "positive_seconds",
    "warning",
]

DEFAULT_LINK_NAMESPACE = "linkerd-multicluster"
DEFAULT_LINKERD_NAMESPACE = "linkerd"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_cluster_flags(parser: argparse.ArgumentParser, *, which: str) -> None:
    """``--kubeconfig``, ``--context`` and ``--timeout`` for the cluster the command works on."""
    parser.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help=f"kubeconfig of the {which} cluster. Default: $KUBECONFIG, else ~/.kube/config.",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help=f"kubeconfig context of the {which} cluster. Default: the current context.",
    )
    parser.add_argument(
        "--timeout",
        dest="timeout_s",
        metavar="S",
        type=positive_seconds,
        default=10.0,
        help="seconds to wait for each API request. Default: 10.",
    )


def add_namespace_flags(parser: argparse.ArgumentParser) -> None:
    """``--namespace`` (the Links') and ``--linkerd-namespace`` (the destination server's)."""
    parser.add_argument(
        "--namespace",
        metavar="NAMESPACE",
        default=DEFAULT_LINK_NAMESPACE,
        help=f"namespace of the Links. Default: {DEFAULT_LINK_NAMESPACE}.",
    )
    parser.add_argument(
        "--linkerd-namespace",
        "-L",
        metavar="NAMESPACE",
        default=DEFAULT_LINKERD_NAMESPACE,
        help=f"namespace of the destination server. Default: {DEFAULT_LINKERD_NAMESPACE}.",
    )


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be within (0, 3600] seconds, got {text}")
    return value


def error(message: str) -> None:
    print(printable(f"error: {message}"), file=sys.stderr)


def warning(message: str) -> None:
    print(printable(f"warning: {message}"), file=sys.stderr)


def note(message: str) -> None:
    print(printable(f"note: {message}"), file=sys.stderr)
