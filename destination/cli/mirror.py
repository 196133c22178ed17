"""``destination mirror``: run the service-mirror controller (every Link of a namespace).

Each ``MirrorConfig`` field is a flag and a ``DESTINATION_MIRROR_*``
environment variable, as ``serve``'s are; the controller itself
(``mirror.app``) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

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
from destination.config import ConfigError
from destination.ops.logs import configure_logging
from mirror.config import MirrorConfig

if TYPE_CHECKING:
    from destination.cli.common import Subparsers

__all__ = ["ENV_PREFIX", "mirror_settings", "register"]

ENV_PREFIX = "DESTINATION_MIRROR_"
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

log = structlog.get_logger("destination.cli.mirror")

_FORMS: dict[str, tuple[str, Callable[[str], object]]] = {
    "namespace": ("NAMESPACE", text),
    "kubeconfig": ("PATH", optional_path),
    "admin_address": ("HOST:PORT", text),
    "identity": ("NAME", text),
    "enable_headless_services": ("BOOL", boolean),
    "enable_namespace_creation": ("BOOL", boolean),
    "delete_mirrors_with_link": ("BOOL", boolean),
    "federated_service_selector": ("SELECTOR", text),
    "excluded_labels": ("KEYS", text),
    "excluded_annotations": ("KEYS", text),
    "repair_period_s": ("SECONDS", seconds),
    "allow_insecure_remote_links": ("BOOL", boolean),
    "remote_max_objects_per_kind": ("N", integer),
    "lease_duration_s": ("SECONDS", seconds),
    "lease_renew_deadline_s": ("SECONDS", seconds),
    "lease_retry_s": ("SECONDS", seconds),
    "log_level": ("{debug,info,warning,error,critical}", text),
    "log_format": ("{json,console}", text),
}


def mirror_settings() -> tuple[Setting, ...]:
    return settings_of(MirrorConfig, _FORMS, ENV_PREFIX)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "mirror",
        help="run the service-mirror controller for every Link of a namespace",
        description=(
            "Mirror the Services that Links' target clusters export into this (source) "
            "cluster: gateway-mode mirrors and their Endpoints, remote-discovery mirrors and "
            "federated Services, kept in step with the targets, with Link status, Events, "
            "gateway probes and one writer per Link among replicas (a Lease per Link)."
        ),
        epilog=(
            f"Every flag can also be set with its environment variable ({ENV_PREFIX}"
            "<FLAG_IN_UPPER_SNAKE_CASE>). Exit status: 0 after a clean shutdown, 1 if the "
            "controller failed, 2 for a usage or configuration error."
        ),
    )
    add_setting_flags(parser, mirror_settings())
    parser.set_defaults(handler=_mirror)


def build_mirror_config(args: argparse.Namespace, *, environ: dict[str, str]) -> MirrorConfig:
    return build_settings(MirrorConfig, mirror_settings(), args, environ=environ)


def _mirror(args: argparse.Namespace) -> int:
    try:
        config = build_mirror_config(args, environ=dict(os.environ))
        configure_logging(level=config.log_level, fmt=config.log_format)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    app = importlib.import_module("mirror.app")
    run: Callable[[MirrorConfig], Coroutine[Any, Any, int]] = app.run
    try:
        status: int = asyncio.run(run(config))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        log.exception("mirror_failed")
        return EXIT_FAILURE
    return status
