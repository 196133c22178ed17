"""Go durations and Kubernetes quantities, parsed as the Go tools that write them do.

ServiceProfiles carry values written for Go code: route timeouts and the retry
budget's ttl are Go durations (``"200ms"``, ``"1.5s"``, ``"1h30m"``), and a
traffic split's weight is a Kubernetes Quantity (``"1"``, ``"500m"``,
``"0.5"``). Proxies must receive exactly what Linkerd's controller would send
for the same text, so the grammars below follow Go's ``time.ParseDuration``
and apimachinery's ``resource.ParseQuantity``; where they are only partly
followed, the docstring says so.

Results are exact integers (nanoseconds, milli-units): no floating point, so
``0.1s`` is 100,000,000 ns and never 99,999,999.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

__all__ = ["UnitError", "go_duration_ns", "quantity_milli"]

# Go's int64 nanoseconds: about 292 years.
_MAX_DURATION_NS = (1 << 63) - 1
_MAX_TEXT = 64  # nothing legitimate is longer; bounds the work on hostile input

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# One "<number><unit>" element: digits with an optional fraction (either side
# may be empty, not both), then a unit; longest units first.
_DURATION_ELEMENT = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class UnitError(ValueError):
    """A duration or quantity that does not parse; the message quotes the input."""


def go_duration_ns(text: str) -> int:
    """Nanoseconds of a Go duration string, as ``time.ParseDuration`` reads it.

    A sign, then one or more ``<decimal><unit>`` elements (``1h30m``,
    ``1.5s``, ``.5s``, ``300ms``); the bare string ``"0"`` is zero. Units:
    ns, us (or µs), ms, s, m, h: there are no days. Overflow past Go's int64
    is an error, as in Go. Negative durations parse (``-1s``); callers decide
    whether they make sense.
    """
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise UnitError(f"invalid duration {_quote(text)}")
    body = text
    negative = False
    if body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise UnitError(f"invalid duration {_quote(text)}")
    total = 0
    position = 0
    while position < len(body):
        match = _DURATION_ELEMENT.match(body, position)
        if match is None or match.end() == position:
            raise UnitError(f"invalid duration {_quote(text)}")
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise UnitError(f"invalid duration {_quote(text)}")
        scale = _DURATION_UNITS_NS[unit]
        value = int(whole or "0") * scale
        if fraction:
            # Go truncates what falls below a nanosecond; so do we.
            value += int(fraction) * scale // 10 ** len(fraction)
        total += value
        if total > _MAX_DURATION_NS + (1 if negative else 0):
            raise UnitError(f"invalid duration {_quote(text)}: out of range")
        position = match.end()
    return -total if negative else total


# resource.Quantity: <signed decimal><suffix>, suffix binary (Ki..Ei), decimal
# (n u m "" k M G T P E) or a decimal exponent (e3, E-2).
_QUANTITY = re.compile(
    r"([+-]?)(\d+(?:\.\d*)?|\.\d+)"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_EXPONENT = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity_milli(value: object) -> int:
    """``Quantity.MilliValue()`` of an int-or-string field: milli-units, rounded up.

    ``1`` is 1000, ``"500m"`` is 500, ``"0.5"`` is 500, ``"1k"`` is 1,000,000.
    Like apimachinery, a value with more precision than a milli-unit rounds
    up (``"1u"`` is 1). JSON integers are accepted as the field's int form;
    booleans, floats and anything else are errors.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UnitError(f"invalid quantity {_quote(value)}: not an integer or a string")
    text = str(value)
    if len(text) > _MAX_TEXT:
        raise UnitError(f"invalid quantity {_quote(text)}")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise UnitError(f"invalid quantity {_quote(text)}")
    sign, number, suffix = match.group(1), match.group(2), match.group(3) or ""
    try:
        amount = Decimal(number)
        if suffix in _BINARY:
            amount *= _BINARY[suffix]
        elif suffix[:1] in ("e", "E"):
            exponent = int(suffix[1:])
            if abs(exponent) > 30:
                raise UnitError(f"invalid quantity {_quote(text)}: exponent out of range")
            amount = amount.scaleb(exponent)
        elif suffix:
            amount = amount.scaleb(_DECIMAL_EXPONENT[suffix])
        milli = int((amount * 1000).to_integral_value(rounding=ROUND_CEILING))
    except InvalidOperation:
        raise UnitError(f"invalid quantity {_quote(text)}") from None
    return -milli if sign == "-" else milli


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
