"""A stand-in for a module's structlog logger that records what it is asked to log.

Patched over a module's `log` (before the objects that bind it are built), it
keeps every call as a dict: `event`, `level`, the bound and given fields, and
for `exception` calls the exception being handled. Tests use it to check that
a failure reached a structured log line, with the cluster's name, whatever
the process-wide logging configuration is.
"""

from __future__ import annotations

import sys
from typing import Any


class LogRecorder:
    def __init__(self, records: list[dict[str, Any]] | None = None, **bound: Any) -> None:
        self.records: list[dict[str, Any]] = [] if records is None else records
        self._bound = bound

    def bind(self, **fields: Any) -> LogRecorder:
        return LogRecorder(self.records, **(self._bound | fields))

    def _record(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.records.append({"event": event, "level": level, **self._bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._record("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._record("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._record("error", event, {"exc_info": sys.exc_info()[1], **fields})

    def named(self, event: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record["event"] == event]
