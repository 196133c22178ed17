"""Text from a remote party, made safe to show in statuses and logs.

A remote API server (or anything between us and it) chooses the bytes of its
error bodies, exception messages and event fields. What reaches an operator's
screen, a JSON status or a log line is reduced to a short, printable,
single-line string: control and format characters (terminal escapes, line
breaks, bidirectional overrides) become spaces, whitespace runs collapse,
and the length is capped with a visible ellipsis.
"""

from __future__ import annotations

import unicodedata

# Unicode categories never shown: Cc (controls: ESC, CR, LF, DEL...), Cf
# (format: bidi overrides, zero-width joiners), Cs/Co/Cn (surrogates, private
# use, unassigned), Zl/Zp (line and paragraph separators).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

ELLIPSIS = "…"


def printable(text: str, limit: int) -> str:
    """`text` on one line, without control characters, at most `limit` characters."""
    if limit <= 0:
        return ""
    # Only look at a bounded prefix: the input may be megabytes long.
    head = text[: limit * 4 + 16]
    cleaned = "".join(
        " " if unicodedata.category(char) in _HIDDEN_CATEGORIES else char for char in head
    )
    words = " ".join(cleaned.split())
    if len(words) <= limit and len(head) == len(text):
        return words
    return words[: limit - 1].rstrip() + ELLIPSIS


def printable_bytes(data: bytes, limit: int) -> str:
    """`printable` for raw bytes, decoded leniently as UTF-8."""
    return printable(data[: limit * 4 + 16].decode("utf-8", errors="replace"), limit)
