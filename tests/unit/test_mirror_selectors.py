"""Link label selectors: "empty matches nothing", the four operators, and the text form.

Scope: `mirror.selectors`. `LinkSelector.from_spec` reads a Link's selector
objects (reference §1.1): absent or empty matches no Service, anything
Kubernetes would refuse raises SelectorError naming the field, and nothing
else is ever raised. `parse_selector_text` reads kubectl's label-query syntax
(`=`, `==`, `!=`, `in`, `notin`, `k`, `!k`) as kubectl would send it
(`k=v` as matchLabels, the rest as matchExpressions); hypothesis checks the
round trip text -> selector -> JSON -> selector, and that the parsed selector
matches exactly the label sets an independent reading of the text matches.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.models import LabelSelector, SelectorRequirement
from mirror.selectors import LinkSelector, SelectorError, parse_selector_text, selector_to_json

EXPORTED = "mirror.linkerd.io/exported"


def link_selector(raw: Any) -> LinkSelector:
    return LinkSelector.from_spec(raw, "selector")


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    item: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        item["values"] = list(values)
    return item


# -- absent and empty selectors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"matchLabels": {}},
        {"matchExpressions": []},
        {"matchLabels": None, "matchExpressions": None},
        {"matchLabels": {}, "matchExpressions": []},
    ],
)
def test_an_absent_or_empty_selector_matches_nothing(raw: Any) -> None:
    selector = link_selector(raw)
    assert selector.selector is None
    assert not selector.matches({})
    assert not selector.matches({EXPORTED: "true"})
    assert not selector.matches({"app": "web", "anything": "at-all"})


def test_match_labels_need_every_pair() -> None:
    selector = link_selector({"matchLabels": {EXPORTED: "true", "tier": "web"}})
    assert selector.matches({EXPORTED: "true", "tier": "web", "extra": "x"})
    assert not selector.matches({EXPORTED: "true"})
    assert not selector.matches({EXPORTED: "false", "tier": "web"})
    assert not selector.matches({})


def test_exported_false_is_not_exported() -> None:
    """#8734: the value counts, not only the key's presence."""
    selector = link_selector({"matchLabels": {EXPORTED: "true"}})
    assert not selector.matches({EXPORTED: "false"})
    assert not selector.matches({EXPORTED: "remote-discovery"})


@pytest.mark.parametrize(
    ("operator", "values", "matching", "not_matching"),
    [
        ("In", ("a", "b"), [{"k": "a"}, {"k": "b", "x": "y"}], [{}, {"k": "c"}, {"x": "a"}]),
        ("NotIn", ("a", "b"), [{}, {"k": "c"}, {"x": "a"}], [{"k": "a"}, {"k": "b"}]),
        ("Exists", (), [{"k": ""}, {"k": "a"}], [{}, {"x": "k"}]),
        ("DoesNotExist", (), [{}, {"x": "k"}], [{"k": ""}, {"k": "a"}]),
    ],
)
def test_expression_operators(
    operator: str,
    values: tuple[str, ...],
    matching: list[dict[str, str]],
    not_matching: list[dict[str, str]],
) -> None:
    selector = link_selector({"matchExpressions": [expression("k", operator, *values)]})
    for labels in matching:
        assert selector.matches(labels), labels
    for labels in not_matching:
        assert not selector.matches(labels), labels


def test_labels_and_expressions_must_all_hold() -> None:
    selector = link_selector(
        {
            "matchLabels": {EXPORTED: "true"},
            "matchExpressions": [
                expression("team", "In", "a"),
                expression("legacy", "DoesNotExist"),
            ],
        }
    )
    assert selector.matches({EXPORTED: "true", "team": "a"})
    assert not selector.matches({EXPORTED: "true", "team": "a", "legacy": "yes"})
    assert not selector.matches({EXPORTED: "true", "team": "b"})
    assert not selector.matches({"team": "a"})


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("mirror.linkerd.io/exported=true", "not an object"),
        (["matchLabels"], "not an object"),
        ({"matchLabels": "exported=true"}, "matchLabels"),
        ({"matchLabels": {"bad key!": "x"}}, "key"),
        ({"matchLabels": {"k": "has space"}}, "value"),
        ({"matchLabels": {"k": 1}}, "value"),
        ({"matchLabels": {"k": None}}, "value"),
        ({"matchExpressions": {"key": "k"}}, "matchExpressions"),
        ({"matchExpressions": "k in (a)"}, "matchExpressions"),
        ({"matchExpressions": ["k"]}, "matchExpressions"),
        ({"matchExpressions": [expression("k", "Gt", "1")]}, "operator"),
        ({"matchExpressions": [expression("k", "in", "a")]}, "operator"),
        ({"matchExpressions": [{"key": "k"}]}, "operator"),
        ({"matchExpressions": [expression("k", "In")]}, "values"),
        ({"matchExpressions": [expression("k", "Exists", "a")]}, "values"),
        ({"matchExpressions": [expression("", "Exists")]}, "key"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key"),
        ({"matchExpressions": [expression("k", "In", "a b")]}, "value"),
        ({"matchExpressions": [{"key": "k", "operator": "In", "values": "a"}]}, "values"),
        ({"matchExpressions": [{"key": "k", "operator": "In", "values": [1]}]}, "value"),
    ],
)
def test_a_selector_kubernetes_would_refuse_names_the_field(raw: Any, names: str) -> None:
    with pytest.raises(SelectorError) as caught:
        LinkSelector.from_spec(raw, "remoteDiscoverySelector")
    message = str(caught.value)
    assert message.startswith("spec.remoteDiscoverySelector: ")
    assert names in message


def test_malformed_match_expressions_raise_selector_error_not_type_error() -> None:
    """Regression: a non-list matchExpressions escaped as TypeError (through project_link)."""
    for raw in ({"matchExpressions": "x"}, {"matchExpressions": [3]}, {"matchExpressions": 7}):
        with pytest.raises(SelectorError):
            link_selector(raw)


def test_an_invalid_match_labels_value_is_refused_not_dropped() -> None:
    """Regression: an over-long or non-string value was dropped, widening the selector.

    `{exported: "true", tier: <70 characters>}` used to match every exported
    Service whatever its tier: no Service can carry such a value, so the
    selector Kubernetes would refuse must not become a broader one.
    """
    for bad in ("x" * 70, 5, None, True):
        with pytest.raises(SelectorError):
            link_selector({"matchLabels": {EXPORTED: "true", "tier": bad}})


def test_too_many_requirements_are_refused() -> None:
    labels = {f"k{i}": "v" for i in range(257)}
    with pytest.raises(SelectorError, match="more than 256"):
        link_selector({"matchLabels": labels})
    values = [f"v{i}" for i in range(257)]
    with pytest.raises(SelectorError, match="more than 256"):
        link_selector({"matchExpressions": [expression("k", "In", *values)]})


# -- text form ---------------------------------------------------------------------------------


def req(key: str, operator: str, *values: str) -> SelectorRequirement:
    return SelectorRequirement(key, operator, frozenset(values))


@pytest.mark.parametrize(
    ("text", "labels", "expressions"),
    [
        ("mirror.linkerd.io/exported=true", {EXPORTED: "true"}, ()),
        ("mirror.linkerd.io/exported==true", {EXPORTED: "true"}, ()),
        ("app = web", {"app": "web"}, ()),
        ("app=", {"app": ""}, ()),
        ("app!=web", {}, (req("app", "NotIn", "web"),)),
        ("app != web", {}, (req("app", "NotIn", "web"),)),
        ("tier in (a, b)", {}, (req("tier", "In", "a", "b"),)),
        ("tier in(a)", {}, (req("tier", "In", "a"),)),
        ("tier notin (a,b,a)", {}, (req("tier", "NotIn", "a", "b"),)),
        ("legacy", {}, (req("legacy", "Exists"),)),
        ("!legacy", {}, (req("legacy", "DoesNotExist"),)),
        ("! legacy", {}, (req("legacy", "DoesNotExist"),)),
        (
            "a=b, c in (x,y), !d, e, f!=g, h notin (i)",
            {"a": "b"},
            (
                req("c", "In", "x", "y"),
                req("d", "DoesNotExist"),
                req("e", "Exists"),
                req("f", "NotIn", "g"),
                req("h", "NotIn", "i"),
            ),
        ),
        ("a=b,a=b", {"a": "b"}, ()),
        ("in in (in)", {}, (req("in", "In", "in"),)),
    ],
)
def test_text_is_read_as_kubectl_sends_it(
    text: str, labels: dict[str, str], expressions: tuple[SelectorRequirement, ...]
) -> None:
    assert parse_selector_text(text) == LabelSelector(
        match_labels=tuple(sorted(labels.items())), expressions=expressions
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "a=b,",
        ",a=b",
        "a=b,,c",
        "a in ()",
        "a in (,)",
        "a in (x",
        "a in x)",
        "a in (x))",
        "a=b=c",
        "a===b",
        "a b",
        "!a=b",
        "!",
        "a>1",
        "a<1",
        "a=b,a=c",
        "a=has space",
        "a in (has space)",
        "-a=b",
        "a-=b",
        "UPPER.prefix/a=b",
        "a/b/c=d",
        "a=" + "v" * 64,
        "k" * 64,
        "a=b," * 1100,
    ],
)
def test_malformed_text_raises_selector_error(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector_text(text)


def test_text_selectors_serialize_as_a_link_spec_writes_them() -> None:
    selector = parse_selector_text("mirror.linkerd.io/exported=true,tier in (b,a),!legacy")
    assert selector_to_json(selector) == {
        "matchLabels": {EXPORTED: "true"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }


# -- properties --------------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,6}[a-z0-9])?", fullmatch=True)
PREFIXES = st.sampled_from(["", "mirror.linkerd.io/", "app.kubernetes.io/", "a-b.c/", "x/"])
KEYS = st.builds(lambda prefix, name: prefix + name, PREFIXES, NAMES)
VALUES = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,4}[A-Za-z0-9])?)?", fullmatch=True)
SET_VALUES = st.lists(VALUES.filter(bool), min_size=1, max_size=3)
SPACE = st.sampled_from(["", " ", "  "])

# (kind, key, values): kinds are the seven spellings of the text syntax.
REQUIREMENT = st.one_of(
    st.tuples(st.sampled_from(["=", "==", "!="]), KEYS, VALUES.map(lambda v: [v])),
    st.tuples(st.sampled_from(["in", "notin"]), KEYS, SET_VALUES),
    st.tuples(st.sampled_from(["exists", "!"]), KEYS, st.just([])),
)
REQUIREMENTS = st.lists(REQUIREMENT, min_size=1, max_size=6, unique_by=lambda r: r[1])


def render(requirement: tuple[str, str, list[str]], space: str) -> str:
    kind, key, values = requirement
    if kind in ("=", "==", "!="):
        return f"{key}{space}{kind}{space}{values[0]}"
    if kind in ("in", "notin"):
        return f"{key} {kind}{space}({f',{space}'.join(values)})"
    return key if kind == "exists" else f"!{space}{key}"


def holds(requirement: tuple[str, str, list[str]], labels: dict[str, str]) -> bool:
    """An independent reading of one requirement of the text syntax."""
    kind, key, values = requirement
    present = key in labels
    if kind in ("=", "=="):
        return present and labels[key] == values[0]
    if kind == "!=":
        return not present or labels[key] != values[0]
    if kind == "in":
        return present and labels[key] in values
    if kind == "notin":
        return not present or labels[key] not in values
    return present if kind == "exists" else not present


@settings(max_examples=200)
@given(REQUIREMENTS, SPACE, st.data())
def test_text_round_trips_and_matches_what_it_says(
    requirements: list[tuple[str, str, list[str]]], space: str, data: st.DataObject
) -> None:
    text = f",{space}".join(render(r, space) for r in requirements)
    parsed = parse_selector_text(text)

    # text -> selector -> JSON -> selector
    document = json.loads(json.dumps(selector_to_json(parsed)))
    assert link_selector(document).selector == parsed
    assert parse_selector_text(text) == parsed  # deterministic

    # `=`/`==` became matchLabels, everything else an expression, in order
    equalities = {k: v[0] for kind, k, v in requirements if kind in ("=", "==")}
    assert dict(parsed.match_labels) == equalities
    assert [e.key for e in parsed.expressions] == [
        k for kind, k, _ in requirements if kind not in ("=", "==")
    ]

    keys = [key for _, key, _ in requirements]
    candidates = [v for _, _, values in requirements for v in values] + ["", "other"]
    labels = data.draw(
        st.dictionaries(st.sampled_from([*keys, "unrelated"]), st.sampled_from(candidates))
    )
    expected = all(holds(r, labels) for r in requirements)
    assert parsed.matches(labels) == expected
    assert LinkSelector(parsed).matches(labels) == expected


TEXT_ALPHABET = st.sampled_from([*"ab=!(), inotx/.-_ \t", "in", "notin", "==", "!="])


@settings(max_examples=200)
@given(st.lists(TEXT_ALPHABET, max_size=30).map("".join) | st.text(max_size=60))
def test_any_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        parsed = parse_selector_text(text)
    except SelectorError as err:
        assert len(str(err)) < 400 + 2 * len(text)
        return
    assert parsed.match_labels or parsed.expressions  # parsed text never means "nothing"
    assert link_selector(selector_to_json(parsed)).selector == parsed


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["matchLabels", "matchExpressions", "key", "operator", "values", "k", "a/b"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)
OPERATORS = st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "in", ""])
SELECTOR_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(KEYS | st.text(max_size=5), VALUES | JSON, max_size=3),
        "matchExpressions": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "key": KEYS | JSON,
                    "operator": OPERATORS | JSON,
                    "values": st.lists(VALUES | JSON, max_size=3) | JSON,
                },
            )
            | JSON,
            max_size=3,
        )
        | JSON,
    },
)


@settings(max_examples=200)
@given(SELECTOR_LIKE | JSON)
def test_any_json_is_a_selector_or_a_selector_error(raw: Any) -> None:
    try:
        selector = link_selector(raw)
    except SelectorError as err:
        assert str(err).startswith("spec.selector: ")
        return
    if selector.selector is None:
        assert not selector.matches({})
    else:
        # What was accepted serializes back to the same selector.
        assert link_selector(selector_to_json(selector.selector)) == selector
