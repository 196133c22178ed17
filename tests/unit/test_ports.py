"""Unit tests for discovery.ports: port lists from annotations and flags.

Scope: the grammar of ``config.linkerd.io/opaque-ports``,
``config.linkerd.io/skip-inbound-ports`` and ``-default-opaque-ports``
(reference §2.3, §6.4): ports, ``lo-hi`` ranges, trimming, one trailing comma,
invalid items reported and skipped, named ports; and the PortSet value type
(canonical ranges, membership, equality, hashing).
"""

from __future__ import annotations

import sys

import pytest

from discovery.ports import MAX_PORT, PortSet, parse_port_ranges, resolve_named_ports

# --------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        pytest.param("", (), id="empty-string-is-empty-set"),
        pytest.param("80", ((80, 80),), id="single-port"),
        pytest.param("25,587,3306", ((25, 25), (587, 587), (3306, 3306)), id="port-list"),
        pytest.param("8000-8999", ((8000, 8999),), id="range"),
        pytest.param("4000-4000", ((4000, 4000),), id="one-port-range"),
        pytest.param("80,", ((80, 80),), id="one-trailing-comma"),
        pytest.param(" 80 , 443-444 ,", ((80, 80), (443, 444)), id="items-trimmed"),
        pytest.param("\t80\n", ((80, 80),), id="tabs-and-newlines-trimmed"),
        pytest.param("0", ((0, 0),), id="port-zero-is-allowed-in-lists"),
        pytest.param("0-65535", ((0, 65535),), id="full-range"),
        pytest.param("080,00443", ((80, 80), (443, 443)), id="leading-zeros"),
        pytest.param("10-20,15-30,31,5", ((5, 5), (10, 31)), id="overlapping-and-adjacent-merged"),
        pytest.param("443,80,443", ((80, 80), (443, 443)), id="duplicates-and-order"),
        pytest.param(
            "25,587,3306,4444,5432,6379,9300,11211",
            (
                (25, 25),
                (587, 587),
                (3306, 3306),
                (4444, 4444),
                (5432, 5432),
                (6379, 6379),
                (9300, 9300),
                (11211, 11211),
            ),
            id="helm-default-opaque-ports",
        ),
    ],
)
def test_a_valid_port_list_parses_to_canonical_ranges(
    value: str, ranges: tuple[tuple[int, int], ...]
) -> None:
    ports, invalid = parse_port_ranges(value)
    assert ports.ranges == ranges
    assert invalid == []


@pytest.mark.parametrize(
    ("value", "ranges", "invalid"),
    [
        pytest.param("80,http", ((80, 80),), ["http"], id="name-without-name-map"),
        pytest.param("90-80", (), ["90-80"], id="lo-greater-than-hi"),
        pytest.param("65536", (), ["65536"], id="port-over-65535"),
        pytest.param("1-65536", (), ["1-65536"], id="range-over-65535"),
        pytest.param("99999999999999999999999", (), ["99999999999999999999999"], id="huge"),
        pytest.param("-1", (), ["-1"], id="negative"),
        pytest.param("+80", (), ["+80"], id="plus-sign"),
        pytest.param("1-2-3", (), ["1-2-3"], id="three-bounds"),
        pytest.param("80-", (), ["80-"], id="open-upper-bound"),
        pytest.param("-80", (), ["-80"], id="open-lower-bound"),
        pytest.param("80 - 90", (), ["80 - 90"], id="spaces-inside-range"),
        pytest.param("8_0", (), ["8_0"], id="underscore"),
        pytest.param("0x50", (), ["0x50"], id="hex"),
        pytest.param("\u0668\u0660", (), ["\u0668\u0660"], id="non-ascii-digits"),
        pytest.param("80,,443", ((80, 80), (443, 443)), [""], id="empty-middle-item"),
        pytest.param("80,,", ((80, 80),), [""], id="two-trailing-commas"),
        pytest.param(",", (), [], id="lone-comma-is-one-trailing-comma"),
        pytest.param("  ", (), [""], id="whitespace-only"),
        pytest.param(" bad , 22 ,oops", ((22, 22),), ["bad", "oops"], id="invalid-items-trimmed"),
    ],
)
def test_invalid_items_are_skipped_and_reported(
    value: str, ranges: tuple[tuple[int, int], ...], invalid: list[str]
) -> None:
    ports, reported = parse_port_ranges(value)
    assert ports.ranges == ranges
    assert reported == invalid


def test_port_set_parse_is_the_same_as_parse_port_ranges() -> None:
    assert PortSet.parse("1-3,x,") == parse_port_ranges("1-3,x,")


@pytest.mark.parametrize(
    ("value", "names", "ranges", "invalid"),
    [
        pytest.param("http", {"http": 8080}, ((8080, 8080),), [], id="name-resolves"),
        pytest.param(
            " admin , 80,",
            {"admin": 9990},
            ((80, 80), (9990, 9990)),
            [],
            id="names-trimmed-and-mixed-with-numbers",
        ),
        pytest.param(
            "grpc,missing",
            {"grpc": 50051},
            ((50051, 50051),),
            ["missing"],
            id="unknown-name-reported",
        ),
        pytest.param("Http", {"http": 8080}, (), ["Http"], id="names-are-case-sensitive"),
        pytest.param(
            "mysql,3306",
            {"mysql": 3306},
            ((3306, 3306),),
            [],
            id="name-and-number-for-the-same-port",
        ),
        pytest.param(
            "broken", {"broken": 70000}, (), ["broken"], id="name-mapped-out-of-range-reported"
        ),
        pytest.param("", {"http": 80}, (), [], id="empty-value"),
    ],
)
def test_named_ports_resolve_through_the_name_map(
    value: str,
    names: dict[str, int],
    ranges: tuple[tuple[int, int], ...],
    invalid: list[str],
) -> None:
    ports, reported = resolve_named_ports(value, names)
    assert ports.ranges == ranges
    assert reported == invalid


def test_a_name_is_checked_before_number_syntax() -> None:
    # Kubernetes forbids such names, but the lookup order is still "names first".
    ports, invalid = resolve_named_ports("80", {"80": 9000})
    assert (ports, invalid) == (PortSet.from_ports([9000]), [])


# --------------------------------------------------------------------------
# PortSet


def test_a_huge_range_is_one_pair_and_answers_membership() -> None:
    ports, _ = parse_port_ranges("1-65535")
    assert ports.ranges == ((1, 65535),)
    assert 1 in ports
    assert 4143 in ports
    assert 65535 in ports
    assert 0 not in ports
    assert 65536 not in ports
    assert len(ports) == 65535
    assert sys.getsizeof(ports.ranges) < 100


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        pytest.param(4, False, id="below-first-range"),
        pytest.param(5, True, id="first-range-lower-bound"),
        pytest.param(10, True, id="first-range-upper-bound"),
        pytest.param(11, False, id="gap"),
        pytest.param(20, True, id="single-port"),
        pytest.param(29, False, id="before-last-range"),
        pytest.param(30, True, id="last-range-lower-bound"),
        pytest.param(40, True, id="last-range-upper-bound"),
        pytest.param(41, False, id="after-last-range"),
        pytest.param(-1, False, id="negative"),
        pytest.param("20", False, id="string-is-never-a-member"),
        pytest.param(True, False, id="bool-is-never-a-member"),
        pytest.param(None, False, id="none-is-never-a-member"),
    ],
)
def test_membership_is_exact_at_range_edges(port: object, expected: bool) -> None:
    ports = PortSet.from_ranges([(30, 40), (5, 10), (20, 20)])
    assert (port in ports) is expected


def test_the_empty_set_is_falsy_and_contains_nothing() -> None:
    assert not PortSet.EMPTY
    assert 80 not in PortSet.EMPTY
    assert len(PortSet.EMPTY) == 0
    assert list(PortSet.EMPTY) == []
    assert parse_port_ranges("")[0] is PortSet.EMPTY
    assert PortSet() == PortSet.EMPTY


def test_a_non_empty_set_is_truthy_even_when_it_holds_only_port_zero() -> None:
    assert PortSet.from_ports([0])


def test_equal_sets_compare_and_hash_equal_however_they_were_written() -> None:
    a, _ = parse_port_ranges("1-5,6-10,20")
    b, _ = parse_port_ranges("20,10,9,1-8")
    c = PortSet.from_ports([*range(1, 11), 20])
    assert a == b == c
    assert hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    assert a != PortSet.from_ports([1])


def test_iteration_yields_every_port_in_order() -> None:
    assert list(PortSet.from_ranges([(8, 9), (1, 2)])) == [1, 2, 8, 9]


def test_union_merges_ranges() -> None:
    left = PortSet.from_ranges([(1, 5)])
    right = PortSet.from_ranges([(6, 10), (20, 20)])
    assert (left | right).ranges == ((1, 10), (20, 20))
    assert (left | PortSet.EMPTY) is left
    assert (PortSet.EMPTY | right) is right


def test_a_set_prints_in_annotation_syntax() -> None:
    assert str(PortSet.from_ranges([(8000, 8999), (25, 25)])) == "25,8000-8999"
    assert str(PortSet.EMPTY) == ""


@pytest.mark.parametrize(
    "ranges",
    [
        pytest.param(((5, 1),), id="reversed"),
        pytest.param(((-1, 3),), id="negative"),
        pytest.param(((1, MAX_PORT + 1),), id="over-max"),
    ],
)
def test_from_ranges_rejects_impossible_ranges(ranges: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValueError, match="invalid port range"):
        PortSet.from_ranges(ranges)


@pytest.mark.parametrize(
    "ranges",
    [
        pytest.param(((10, 20), (1, 5)), id="unsorted"),
        pytest.param(((1, 5), (4, 8)), id="overlapping"),
        pytest.param(((1, 5), (6, 8)), id="adjacent"),
        pytest.param(((3, 1),), id="reversed"),
    ],
)
def test_the_constructor_rejects_non_canonical_ranges(
    ranges: tuple[tuple[int, int], ...],
) -> None:
    with pytest.raises(ValueError):
        PortSet(ranges)


def test_a_port_set_is_immutable() -> None:
    ports = PortSet.from_ports([80])
    with pytest.raises(AttributeError):
        ports.ranges = ()  # type: ignore[misc]
