"""Go durations and Kubernetes quantities (discovery.units).

The expected values are what Go's `time.ParseDuration` and apimachinery's
`resource.Quantity.MilliValue()` give for the same text; hypothesis checks the
parsers against an independent computation and that hostile text only ever
raises `UnitError`.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.units import UnitError, go_duration_ns, quantity_milli

MS = 1_000_000
S = 1_000 * MS


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("0s", 0),
        ("200ms", 200 * MS),
        ("1.5s", 1_500 * MS),
        (".5s", 500 * MS),
        ("1.s", S),
        ("1m", 60 * S),
        ("1h30m", 5_400 * S),
        ("1h0.5m", 3_630 * S),
        ("10us", 10_000),
        ("10\u00b5s", 10_000),
        ("10\u03bcs", 10_000),
        ("7ns", 7),
        ("0.1s", 100 * MS),
        ("+3s", 3 * S),
        ("-1s", -S),
        ("1.0000000009s", S),  # below a nanosecond: truncated, as Go does
        ("2562047h47m16.854775807s", (1 << 63) - 1),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize(
    "text",
    ["", "s", ".s", "1", "10", "1d", "1 s", " 1s", "1s ", "1S", "-", "+", "1.2.3s", "1e3s",
     "2562047h47m16.854775808s", "1" * 100 + "s", "1sm", "ms1"],
)  # fmt: skip
def test_invalid_go_durations(text: str) -> None:
    with pytest.raises(UnitError):
        go_duration_ns(text)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=9)),
            st.sampled_from(["ns", "us", "ms", "s", "m", "h"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_duration_elements_add_up(elements: list[tuple[int, str | None, str]]) -> None:
    scale = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    text = "".join(f"{whole}{'.' + frac if frac else ''}{unit}" for whole, frac, unit in elements)
    expected = sum(
        whole * scale[unit] + (int(frac) * scale[unit] // 10 ** len(frac) if frac else 0)
        for whole, frac, unit in elements
    )
    if len(text) > 64:  # longer than anything legitimate: refused, whatever it says
        with pytest.raises(UnitError):
            go_duration_ns(text)
        return
    assert go_duration_ns(text) == expected


@given(st.text(max_size=80))
def test_any_text_parses_or_raises_unit_error(text: str) -> None:
    try:
        value = go_duration_ns(text)
    except UnitError:
        return
    assert isinstance(value, int)


@pytest.mark.parametrize(
    ("value", "milli"),
    [
        (1, 1_000),
        (0, 0),
        ("1", 1_000),
        ("500m", 500),
        ("0.5", 500),
        ("1k", 1_000_000),
        ("1Ki", 1_024_000),
        ("1e3", 1_000_000),
        ("1E-3", 1),
        ("1u", 1),  # below a milli-unit: rounded up, as MilliValue does
        ("1n", 1),
        ("+2", 2_000),
        ("-1", -1_000),
        (".5", 500),
        ("5.", 5_000),
    ],
)
def test_quantities(value: int | str, milli: int) -> None:
    assert quantity_milli(value) == milli


@pytest.mark.parametrize(
    "value", ["", "m", "1x", "1 k", "1.2.3", "0x10", "1KiB", "e3", None, True, 0.5, [1], "1e99"]
)
def test_invalid_quantities(value: object) -> None:
    with pytest.raises(UnitError):
        quantity_milli(value)


@given(st.integers(0, 10**9), st.integers(0, 999), st.sampled_from(["", "m", "k", "Ki", "M"]))
def test_quantity_matches_exact_arithmetic(whole: int, thousandths: int, suffix: str) -> None:
    factor = {"": 1, "m": Fraction(1, 1000), "k": 1000, "Ki": 1024, "M": 10**6}[suffix]
    amount = (whole + Fraction(thousandths, 1000)) * factor * 1000
    expected = -((-amount.numerator) // amount.denominator)  # ceiling
    assert quantity_milli(f"{whole}.{thousandths:03d}{suffix}") == expected


@given(st.one_of(st.text(max_size=80), st.integers(), st.floats(), st.booleans(), st.none()))
def test_any_value_is_a_quantity_or_unit_error(value: object) -> None:
    try:
        result = quantity_milli(value)
    except UnitError:
        return
    assert isinstance(result, int)
