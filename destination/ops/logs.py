"""Process-wide structured logging, configured once at startup by the CLI.

Every log line, ours or a library's, leaves the process through one handler on
the stdlib root logger, rendered by structlog: one JSON object per line in
production (``json``) or aligned, readable lines (``console``, coloured only
when the stream is a terminal). Each line carries ``timestamp`` (ISO 8601,
UTC), ``level``, ``logger`` (the module name) and ``event`` (a stable
snake_case name, see architecture §3.6 rule 10), plus the event's fields.

Design choices
--------------
* **Filter before any work.** Our loggers are
  :func:`structlog.make_filtering_bound_logger` wrappers: a call below the
  configured level is a no-op method and never builds an event dict.
  ``cache_logger_on_first_use=True`` makes each module-level
  ``structlog.get_logger(__name__)`` resolve its configuration once.
* **Through stdlib, for names and for foreign records.** structlog hands the
  finished event dict to a stdlib logger named after the module
  (:class:`structlog.stdlib.LoggerFactory`), and
  :class:`structlog.stdlib.ProcessorFormatter` renders it. Records from
  libraries that use stdlib :mod:`logging` (grpc's Python layer, aiohttp,
  kubernetes_asyncio) go through the same formatter with the same timestamp,
  level and logger-name processors, so they are JSON too. Those libraries'
  loggers are capped at WARNING (or the configured level, if higher): their
  INFO and DEBUG output is about their internals, not our service.
  gRPC core's own C logging does not use Python logging; it is controlled by
  ``GRPC_VERBOSITY`` and ``GRPC_TRACE``.
* **Exceptions are data.** In JSON, ``exc_info`` becomes a structured
  ``exception`` field (frames without their local variables, which may hold
  credentials), so a traceback is one line, not forty. Console tracebacks
  leave frame locals out too (``rich`` would print them, Authorization
  headers included).
* **Call it once, before the first log call.** Loggers cached before
  configuration keep the old settings. Calling again replaces this module's
  handler (tests do); handlers that others added to the root logger are kept.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import TextIO

import structlog
import structlog.tracebacks
from structlog.typing import Processor

from destination.config import LOG_LEVELS, ConfigError, LogFormat, normalize_log_level

__all__ = ["THIRD_PARTY_LOGGERS", "configure_logging"]

THIRD_PARTY_LOGGERS = ("grpc", "aiohttp", "kubernetes_asyncio")
"""Stdlib loggers of libraries, capped at WARNING."""

_LEVEL_NUMBERS = {name: logging.getLevelName(name.upper()) for name in LOG_LEVELS}


class _StructuredHandler(logging.StreamHandler[TextIO]):
    """The one root handler this module installs; its type marks it for replacement."""


def configure_logging(*, level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging for the process.

    ``level`` is one of ``debug``, ``info``, ``warning`` (or ``warn``),
    ``error``, ``critical``, case-insensitive; ``fmt`` is ``json`` or
    ``console``. Output goes to ``stream`` (default: ``sys.stderr`` at the
    time of the call). Raises :class:`~destination.config.ConfigError` for an
    unknown level or format, before changing anything.
    """
    level_number = _level_number(level)
    log_format = _log_format(fmt)
    out = sys.stderr if stream is None else stream

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format is LogFormat.JSON:
        # No frame locals: they can hold credentials (kubeconfigs, tokens) and are large.
        exceptions = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        rendering += [
            structlog.processors.ExceptionRenderer(exceptions),
            structlog.processors.JSONRenderer(),
        ]
    else:
        rendering.append(
            structlog.dev.ConsoleRenderer(
                colors=_is_terminal(out), exception_formatter=_console_exceptions()
            )
        )

    handler = _StructuredHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=rendering)
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _StructuredHandler)]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(level_number)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level_number))

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=True,
    )


def _console_exceptions() -> structlog.typing.ExceptionRenderer:
    """Readable tracebacks without frame locals: rich's when installed, else plain."""
    if importlib.util.find_spec("rich") is None:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def _level_number(level: str) -> int:
    return int(_LEVEL_NUMBERS[normalize_log_level(level)])


def _log_format(fmt: str) -> LogFormat:
    try:
        return LogFormat(fmt)
    except ValueError:
        choices = ", ".join(member.value for member in LogFormat)
        raise ConfigError("log_format", f"must be one of {choices}; got {fmt!r}") from None


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
