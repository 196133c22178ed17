"""The ``destination`` command: argument parsing, configuration, logging, then the app.

``destination serve`` turns flags and ``DESTINATION_*`` environment variables
into one :class:`~destination.config.ServerConfig`, configures logging, and
runs ``asyncio.run(destination.app.run(config))``. Exit codes: 2 for a usage
or configuration error (``error: <message>`` on stderr), otherwise what the
app returns (0 after a clean shutdown); 1 if the app raises (logged as
``serve_failed`` with the exception), 130 after a Ctrl-C the app did not
handle.

Design choices
--------------
* **Flags come from the config's fields.** :func:`serve_settings` walks
  :func:`dataclasses.fields` of ``ServerConfig``: each field gets
  ``--kebab-case`` and ``DESTINATION_<UPPER_SNAKE>``, its help text and
  default from the field, and a string parser from :data:`_STRING_FORMS`
  (a new field without an entry there fails at the first parse, and in the
  unit tests). Booleans are ``--x/--no-x`` pairs.
* **Precedence: flag, then environment, then default.** Flags default to
  ``None`` in argparse, so "not given" is visible; :func:`build_config` then
  looks in the injected environment mapping, then leaves the dataclass
  default. The environment is a parameter, so tests never touch
  :data:`os.environ`.
* **Flags and variables parse the same way.** Both are strings handed to the
  same parser, and both are validated by ``ServerConfig``; an error names the
  flag or variable that supplied the bad value
  (``error: DESTINATION_STREAM_QUEUE_CAPACITY: must be an integer greater than
  0, got 0``). Only booleans differ: flags are presence-based, variables
  accept true/false, 1/0, yes/no, on/off.
* **Unknown ``DESTINATION_*`` variables are ignored, deliberately.**
  Kubernetes injects service-link variables such as ``DESTINATION_PORT`` and
  ``DESTINATION_SERVICE_HOST`` for a Service named ``destination``; rejecting
  unknown names would break such pods.
* **The app is imported lazily**, inside the ``serve`` handler, with
  :func:`importlib.import_module`: ``--help``, ``--version`` and configuration
  errors never import gRPC or the Kubernetes client, and tests can substitute
  ``sys.modules["destination.app"]``.
* **Subcommands register themselves.** Each one is a function
  ``register(subparsers)`` that adds its parser and sets ``handler`` (a
  :data:`SubcommandHandler`); :func:`build_parser` calls them in order.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from destination.cli import clusters, endpoints, mirror, multicluster, profile
from destination.cli.common import SubcommandHandler, Subparsers
from destination.cli.settings import (
    Setting,
    add_setting_flags,
    boolean,
    build_settings,
    integer,
    optional_path,
    seconds,
    settings_of,
    text,
)
from destination.config import (
    ConfigError,
    ServerConfig,
    parse_http2_client_params,
    parse_opaque_ports,
)
from destination.ops.logs import configure_logging

__all__ = [
    "ENV_PREFIX",
    "Setting",
    "SubcommandHandler",
    "Subparsers",
    "build_config",
    "build_parser",
    "main",
    "parse_serve_args",
    "register_serve",
    "serve_settings",
]

log: FilteringBoundLogger = structlog.get_logger(__name__)

PACKAGE = "multicluster-destination"
ENV_PREFIX = "DESTINATION_"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_STRING_FORMS: dict[str, tuple[str, Callable[[str], object]]] = {
    # field name: (metavar, parser of the flag or environment string)
    "listen_address": ("HOST:PORT", text),
    "admin_address": ("HOST:PORT", text),
    "kubeconfig": ("PATH", optional_path),
    "cluster_name": ("NAME", text),
    "controller_namespace": ("NAMESPACE", text),
    "cluster_domain": ("DOMAIN", text),
    "identity_trust_domain": ("DOMAIN", text),
    "default_opaque_ports": ("PORTS", parse_opaque_ports),
    "enable_h2_upgrade": ("BOOL", boolean),
    "outbound_transport_mode": ("{transparent,transport-header}", text),
    "enable_ipv6": ("BOOL", boolean),
    "stream_queue_capacity": ("N", integer),
    "max_streams_per_connection": ("N", integer),
    "stream_stuck_deadline_s": ("SECONDS", seconds),
    "meshed_http2_client_params": ("JSON", parse_http2_client_params),
    "ext_endpoint_zone_weights": ("BOOL", boolean),
    "enable_remote_discovery": ("BOOL", boolean),
    "remote_withdraw_after_s": ("SECONDS", seconds),
    "remote_max_objects_per_kind": ("N", integer),
    "allow_insecure_remote_links": ("BOOL", boolean),
    "log_level": ("{debug,info,warning,error,critical}", text),
    "log_format": ("{json,console}", text),
    "shutdown_grace_s": ("SECONDS", seconds),
    "gc_freeze": ("BOOL", boolean),
    "gc_thaw_period_s": ("SECONDS", seconds),
}


def serve_settings() -> tuple[Setting, ...]:
    """Every field of :class:`ServerConfig`, in declaration order, with its flag and variable."""
    return settings_of(ServerConfig, _STRING_FORMS, ENV_PREFIX)


def register_serve(subparsers: Subparsers) -> None:
    """Add the ``serve`` subcommand: every ``ServerConfig`` field as a flag."""
    parser = subparsers.add_parser(
        "serve",
        help="run the destination gRPC server and its admin server",
        description=(
            "Serve the Linkerd destination API (io.linkerd.proxy.destination.Destination) "
            "from the Kubernetes cluster the kubeconfig points at, with /metrics, /live, "
            "/ping and /ready on the admin address."
        ),
        epilog=(
            f"Every flag can also be set with the environment variable shown "
            f"({ENV_PREFIX}<FLAG_IN_UPPER_SNAKE_CASE>). A flag wins over its variable, "
            "a variable over the default. Boolean variables take true/false, 1/0, yes/no "
            "or on/off. Exit status: 0 after a clean shutdown, 1 if the server failed, "
            "2 for a usage or configuration error."
        ),
    )
    add_setting_flags(parser, serve_settings())
    parser.set_defaults(handler=_serve)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``destination`` parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="destination",
        description=("Multi-cluster service discovery speaking the Linkerd proxy destination API."),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _SUBCOMMANDS:
        register(subparsers)
    return parser


_SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    register_serve,
    endpoints.register,
    profile.register,
    clusters.register,
    mirror.register,
    multicluster.register,
)


def build_config(args: argparse.Namespace, *, environ: Mapping[str, str]) -> ServerConfig:
    """Resolve every setting (flag, then ``environ``, then default) into a ``ServerConfig``.

    Raises :class:`ConfigError` whose ``source`` is the flag or variable that
    gave the bad value (``None`` if a default was wrong, which is a bug).
    """
    return build_settings(ServerConfig, serve_settings(), args, environ=environ)


def parse_serve_args(argv: Sequence[str], *, environ: Mapping[str, str]) -> ServerConfig:
    """``destination serve ARGV...`` with ``environ`` as the environment, as a ``ServerConfig``.

    A usage error (unknown flag, missing value) exits through argparse with
    status 2, like the command.
    """
    args = build_parser().parse_args(["serve", *argv])
    return build_config(args, environ=environ)


def main(argv: list[str] | None = None) -> int:
    """The ``destination`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors
        return _exit_status(stop.code)
    handler: SubcommandHandler = args.handler
    return handler(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = build_config(args, environ=os.environ)
        configure_logging(level=config.log_level, fmt=config.log_format)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    log.info("serve_starting", version=_version(), **_loggable(config))
    app = importlib.import_module("destination.app")
    run: Callable[[ServerConfig], Coroutine[Any, Any, int]] = app.run
    try:
        status: int = asyncio.run(run(config))
    except KeyboardInterrupt:
        log.warning("serve_interrupted")
        return EXIT_INTERRUPTED
    except Exception:
        # One structured line instead of a raw traceback that log pipelines split apart.
        log.exception("serve_failed")
        return EXIT_FAILURE
    return status


def _loggable(config: ServerConfig) -> dict[str, object]:
    """The settings as log fields: ports and enums as their string forms."""
    fields: dict[str, object] = {}
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        fields[spec.name] = (
            value if value is None or isinstance(value, bool | int | float | dict) else str(value)
        )
    return fields


def _exit_status(code: str | int | None) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"
