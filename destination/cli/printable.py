"""Text that came from a server (or a remote cluster through it), made safe for a terminal.

`destination clusters` and `destination endpoints` print names, labels,
identities and error messages that another party chose: a remote API server's
error text, a pod label, a gRPC status message. Printed raw, an escape
sequence in one of them can rewrite the operator's screen, hide lines or set
the window title, and a bidirectional override can make text read differently
from what it is. Every such string goes through `printable` first.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """`text` with every non-printable character shown as its escape (``\\x1b``, ``\\u202e``).

    Non-printable is Python's `str.isprintable`: Unicode's control, format,
    surrogate, private-use and unassigned characters and every separator but
    the ASCII space; so newlines and tabs are escaped too (a table cell stays
    on its line).
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
