"""Port lists from annotations and flags, kept as ranges.

``config.linkerd.io/opaque-ports`` (on Services, Pods and ExternalWorkloads),
``config.linkerd.io/skip-inbound-ports`` (on Pods) and the
``-default-opaque-ports`` flag are comma lists of ports and ``lo-hi`` ranges;
the opaque-ports annotation may also name ports (reference §2.3, §6.4).

Why ranges and not sets of ints
-------------------------------
Upstream expands every range into a map with one entry per port. An
annotation such as ``1-65535`` is legal and common enough ("everything is
opaque"), and the same default set is held by every pod and service without an
annotation. A :class:`PortSet` stores sorted, merged ``(lo, hi)`` pairs
instead: ``1-65535`` is one tuple, membership is a binary search, and two sets
compare and hash by value, so equal sets can be shared and "did the set
change?" is a cheap ``==``.

Grammar (mirrors the reference, with the choices noted)
-------------------------------------------------------
* One trailing comma is dropped, the rest is split on ``,`` and each item is
  trimmed of surrounding whitespace. A remaining empty item (``80,,90`` or
  ``80,,``) is reported as invalid, like any other bad item.
* The empty string (or a lone ``,``) is the empty set with nothing reported:
  an annotation that is present but empty means "no ports". Upstream would log
  a bogus empty item for ``,``; we do not.
* An item is a port or a ``lo-hi`` range. Bounds are ASCII decimal digits in
  ``0..65535`` (the reference range for these lists; leading zeros allowed),
  and ``lo <= hi``. Unlike Go's ``strconv.Atoi`` we reject a ``+`` sign.
  Invalid items are skipped and returned so the caller can log them.
* With :func:`resolve_named_ports`, an item equal to a port *name* becomes that
  port's number. Names are checked first, as upstream does; Kubernetes port
  names must contain a letter, so a name can never look like a number or range.

This module is pure and imports nothing from gRPC, protobuf or ``destination``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "MAX_PORT",
    "PortSet",
    "parse_port_ranges",
    "resolve_named_ports",
]

MAX_PORT = 65535
_ASCII_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class PortSet:
    """An immutable set of TCP ports stored as sorted, merged, inclusive ranges.

    ``ranges`` is canonical: sorted, non-overlapping and non-adjacent
    (``(1, 5), (6, 9)`` is stored as ``(1, 9)``), so equality and hashing by
    value are exact. Build instances with :meth:`from_ranges`,
    :meth:`from_ports` or :meth:`parse`; the constructor rejects
    non-canonical input.
    """

    ranges: tuple[tuple[int, int], ...] = ()

    EMPTY: ClassVar[PortSet]

    def __post_init__(self) -> None:
        previous_hi = -2
        for lo, hi in self.ranges:
            if not 0 <= lo <= hi <= MAX_PORT:
                raise ValueError(f"invalid port range {lo}-{hi}")
            if lo <= previous_hi + 1:
                raise ValueError(f"ranges are not sorted and merged: {self.ranges!r}")
            previous_hi = hi

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> PortSet:
        """Build from inclusive ``(lo, hi)`` pairs in any order, overlapping or not."""
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if not 0 <= lo <= hi <= MAX_PORT:
                raise ValueError(f"invalid port range {lo}-{hi}")
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        if not merged:
            return cls.EMPTY
        return cls(tuple(merged))

    @classmethod
    def from_ports(cls, ports: Iterable[int]) -> PortSet:
        """Build from individual port numbers."""
        return cls.from_ranges((port, port) for port in ports)

    @classmethod
    def parse(cls, value: str) -> tuple[PortSet, list[str]]:
        """Parse a comma list of ports and ranges; return the set and the invalid items."""
        return resolve_named_ports(value, {})

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int) or isinstance(port, bool):
            return False
        # The last range starting at or before `port` is the only candidate.
        index = bisect.bisect_right(self.ranges, (port, MAX_PORT + 1)) - 1
        return index >= 0 and port <= self.ranges[index][1]

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __len__(self) -> int:
        """The number of ports (not ranges)."""
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __iter__(self) -> Iterator[int]:
        """The ports in ascending order, produced lazily."""
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __or__(self, other: PortSet) -> PortSet:
        if not isinstance(other, PortSet):
            return NotImplemented
        if not other.ranges:
            return self
        if not self.ranges:
            return other
        return PortSet.from_ranges(self.ranges + other.ranges)

    def __str__(self) -> str:
        """The set in annotation syntax, e.g. ``25,3306,8000-8999``."""
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


PortSet.EMPTY = PortSet()


def _parse_bound(text: str) -> int | None:
    """ASCII decimal digits in ``0..MAX_PORT`` (leading zeros allowed), else ``None``."""
    if not text or not set(text) <= _ASCII_DIGITS:
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(MAX_PORT)):
        return None
    value = int(significant)
    return value if value <= MAX_PORT else None


def _parse_item(item: str) -> tuple[int, int] | None:
    bounds = item.split("-")
    if len(bounds) > 2:
        return None
    lo = _parse_bound(bounds[0])
    hi = _parse_bound(bounds[-1])
    if lo is None or hi is None or hi < lo:
        return None
    return lo, hi


def _split_items(value: str) -> list[str]:
    return [item.strip() for item in value.removesuffix(",").split(",")]


def parse_port_ranges(value: str) -> tuple[PortSet, list[str]]:
    """Parse ``"25,443,8000-8999,"``; return the set and the (trimmed) invalid items.

    Used for ``config.linkerd.io/skip-inbound-ports`` and the
    ``-default-opaque-ports`` flag, which do not accept names.
    """
    return resolve_named_ports(value, {})


def resolve_named_ports(value: str, names: Mapping[str, int]) -> tuple[PortSet, list[str]]:
    """Like :func:`parse_port_ranges`, but items may also be port names.

    ``names`` maps a container, ExternalWorkload or Service port name to its
    number. An item that is a key of ``names`` resolves to that number (checked
    before number and range syntax); a name mapped to a number outside
    ``0..65535`` is reported as invalid.
    """
    if value.removesuffix(",") == "":
        return PortSet.EMPTY, []
    ranges: list[tuple[int, int]] = []
    invalid: list[str] = []
    for item in _split_items(value):
        named = names.get(item)
        if named is not None:
            if 0 <= named <= MAX_PORT:
                ranges.append((named, named))
            else:
                invalid.append(item)
            continue
        parsed = _parse_item(item)
        if parsed is None:
            invalid.append(item)
        else:
            ranges.append(parsed)
    return PortSet.from_ranges(ranges), invalid
