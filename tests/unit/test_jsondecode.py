"""discovery.jsondecode: the fast decoder gives what json.loads gives, or its error.

One documented difference: integers outside 64 bits come back as floats.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.jsondecode import loads
from discovery.project import valid_port

documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


def outcome(decode: Any, data: bytes) -> tuple[str, object]:
    try:
        return "value", decode(data)
    except ValueError as err:
        return "error", type(err).__mro__[-3].__name__  # ValueError either way


def beyond_64_bits_as_floats(value: object) -> object:
    """json.loads's value as loads gives it: integers outside 64 bits are floats."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value <= 2**64 - 1 else float(value)
    if isinstance(value, list):
        return [beyond_64_bits_as_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: beyond_64_bits_as_floats(v) for k, v in value.items()}
    return value


def same(a: object, b: object) -> bool:
    """Equal, NaN included (json decodes NaN, which is not equal to itself)."""
    return json.dumps(a, sort_keys=True) == json.dumps(beyond_64_bits_as_floats(b), sort_keys=True)


@given(documents)
@settings(max_examples=300)
def test_any_document_decodes_as_the_standard_library_decodes_it(value: object) -> None:
    data = json.dumps(value).encode()  # NaN, Infinity and big integers included
    assert same(loads(data), json.loads(data))


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
@settings(max_examples=300)
def test_any_bytes_give_the_standard_librarys_value_or_a_value_error(data: bytes) -> None:
    kind, value = outcome(loads, data)
    expected_kind, expected = outcome(json.loads, data)
    assert kind == expected_kind
    if kind == "value":
        assert same(value, expected)


def test_what_orjson_refuses_still_decodes() -> None:
    assert loads(b'{"s": "\\ud800"}') == {"s": "\ud800"}
    assert loads('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert same(loads(b'{"x": NaN}'), {"x": float("nan")})


@given(st.integers(max_value=-(2**63) - 1) | st.integers(min_value=2**64))
def test_an_integer_beyond_64_bits_is_a_float_and_no_port(value: int) -> None:
    decoded = loads(f'{{"port": {value}}}'.encode())["port"]
    assert isinstance(decoded, float)
    assert valid_port(decoded) is None
    assert valid_port(json.loads(str(value))) is None  # refused before, too
