"""Results of `check`: a table as `linkerd check` prints it, or JSON.

Each check has a result (√ success, ‼ warning, a cross for an error, - skipped with the
reason), detail lines and a hint. The table groups checks by category (the
source cluster, then one per Link) and ends with `Status check results are
√` or a cross; warnings and skips do not fail. The JSON has the shape of
`linkerd check -o json` (`success`, `categories[].categoryName`,
`checks[].description/result/error/hint`), plus `details`.

Every text may quote a remote API server or a Link (names, error messages),
so the table escapes non-printable characters (`printable`); JSON escapes
them itself.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from destination.cli.printable import printable

__all__ = ["Category", "Check", "Result", "render_json", "render_table", "succeeded"]


class Result(enum.Enum):
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {Result.SUCCESS: "√", Result.WARNING: "‼", Result.ERROR: "\u00d7", Result.SKIPPED: "-"}
MAX_DETAILS = 20  # lines under one check; more are counted, not shown


@dataclass(frozen=True, slots=True)
class Check:
    description: str
    result: Result
    details: tuple[str, ...] = ()
    hint: str | None = None

    @classmethod
    def ok(cls, description: str, *details: str) -> Check:
        return cls(description, Result.SUCCESS, tuple(details))

    @classmethod
    def error(cls, description: str, *details: str, hint: str | None = None) -> Check:
        return cls(description, Result.ERROR, tuple(details), hint)

    @classmethod
    def warning(cls, description: str, *details: str, hint: str | None = None) -> Check:
        return cls(description, Result.WARNING, tuple(details), hint)

    @classmethod
    def skipped(cls, description: str, reason: str) -> Check:
        return cls(description, Result.SKIPPED, (f"skipped: {reason}",))


@dataclass
class Category:
    name: str
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check


def succeeded(categories: Sequence[Category]) -> bool:
    return all(c.result is not Result.ERROR for category in categories for c in category.checks)


def _shown_details(details: Sequence[str]) -> list[str]:
    if len(details) <= MAX_DETAILS:
        return list(details)
    return [*details[:MAX_DETAILS], f"... and {len(details) - MAX_DETAILS} more"]


def render_table(categories: Sequence[Category]) -> str:
    lines: list[str] = []
    for category in categories:
        title = printable(category.name)
        lines += [title, "-" * len(title)]
        for check in category.checks:
            lines.append(f"{check.result.symbol} {printable(check.description)}")
            lines += [f"    {printable(line)}" for line in _shown_details(check.details)]
            if check.hint and check.result in (Result.ERROR, Result.WARNING):
                lines.append(f"    hint: {printable(check.hint)}")
        lines.append("")
    status = Result.SUCCESS if succeeded(categories) else Result.ERROR
    lines.append(f"Status check results are {status.symbol}")
    return "\n".join(lines) + "\n"


def render_json(categories: Sequence[Category]) -> str:
    document = {
        "success": succeeded(categories),
        "categories": [
            {
                "categoryName": category.name,
                "checks": [
                    {
                        "description": check.description,
                        "result": check.result.value,
                        **(
                            {"error": "\n".join(check.details)}
                            if check.result in (Result.ERROR, Result.WARNING) and check.details
                            else {}
                        ),
                        **({"hint": check.hint} if check.hint else {}),
                        "details": list(check.details),
                    }
                    for check in category.checks
                ],
            }
            for category in categories
        ],
    }
    return json.dumps(document, indent=2) + "\n"
