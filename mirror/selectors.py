"""Label selectors of a Link: which target Services are exported, discovered or federated.

A Link's `selector`, `remoteDiscoverySelector` and `federatedServiceSelector`
are Kubernetes label selectors with one twist (reference §1.1): a selector
that is absent, or has no `matchLabels` and no `matchExpressions`, matches
**nothing**. (An empty selector used to export every Service of a target
cluster after an upgrade; nothing is the only safe reading.)

A selector Kubernetes would refuse (bad key or value, unknown operator,
`In` without values) raises SelectorError, which makes the whole Link a
`problem` (see `links`). The reference instead logs it and lets that one
selector match nothing, which unexports every Service it used to select: a
typo in an edit would take exported services away.

The CLI takes selectors as text in Kubernetes' label-query syntax
(`parse_selector_text`): `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`,
`k`, `!k`, comma-separated. `k=v` becomes `matchLabels`, the rest
`matchExpressions`, as kubectl would send them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from discovery.models import LabelSelector, SelectorRequirement
from discovery.project import label_selector

__all__ = [
    "LinkSelector",
    "SelectorError",
    "parse_selector_text",
    "selector_query",
    "selector_to_json",
]

# Label keys and values (Kubernetes validation, simplified to what matters here).
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_KEY_RE = re.compile(rf"({_PREFIX}/)?{_NAME}\Z")
_VALUE_RE = re.compile(rf"({_NAME})?\Z")
MAX_REQUIREMENTS = 256  # per selector, and values per requirement


class SelectorError(ValueError):
    """A selector that cannot be read; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class LinkSelector:
    """A Link selector: None (absent or empty) matches no Service."""

    selector: LabelSelector | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.selector is not None and self.selector.matches(labels)

    @classmethod
    def from_spec(cls, raw: Any, field: str) -> LinkSelector:
        """The selector at `spec.<field>`; SelectorError when Kubernetes would refuse it.

        Keys and values are checked here, before `label_selector` reads them:
        it drops an over-long or non-string `matchLabels` value, and a
        requirement dropped from a selector makes it match *more* Services.
        """
        if raw is None:
            return cls(None)
        try:
            _check_spec(raw)
            selector = label_selector(raw)
        except (ValueError, TypeError) as err:  # SelectorError is a ValueError
            raise SelectorError(f"spec.{field}: {err}") from None
        if not selector.match_labels and not selector.expressions:
            return cls(None)
        return cls(selector)


def _check_spec(raw: Any) -> None:
    """Raise SelectorError unless every key and value of a selector object is well formed."""
    if not isinstance(raw, Mapping):
        raise SelectorError("selector is not an object")
    labels = raw.get("matchLabels")
    expressions = raw.get("matchExpressions")
    if labels is not None and not isinstance(labels, Mapping):
        raise SelectorError("matchLabels is not an object")
    if expressions is not None and not isinstance(expressions, list):
        raise SelectorError("matchExpressions is not a list")
    if len(labels or ()) + len(expressions or ()) > MAX_REQUIREMENTS:
        raise SelectorError(f"more than {MAX_REQUIREMENTS} requirements")
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise SelectorError(f"matchLabels key {_short(key)} is not a label key")
        if not isinstance(value, str) or not _VALUE_RE.match(value):
            raise SelectorError(f"matchLabels value {_short(value)} is not a label value")
    for item in expressions or ():
        if not isinstance(item, Mapping):
            raise SelectorError("a matchExpressions entry is not an object")
        key = item.get("key")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise SelectorError(f"matchExpressions key {_short(key)} is not a label key")
        values = item.get("values")
        if values is not None and not isinstance(values, list):
            raise SelectorError(f"values of {key!r} are not a list")
        if len(values or ()) > MAX_REQUIREMENTS:
            raise SelectorError(f"more than {MAX_REQUIREMENTS} values for {key!r}")
        for value in values or ():
            if not isinstance(value, str) or not _VALUE_RE.match(value):
                raise SelectorError(f"value {_short(value)} of {key!r} is not a label value")


def _short(value: object) -> str:
    return repr(value)[:80]


def _check_key(key: str, text: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"{key!r} in {text!r} is not a label key")
    return key


def _check_value(value: str, text: str) -> str:
    if not _VALUE_RE.match(value):
        raise SelectorError(f"{value!r} in {text!r} is not a label value")
    return value


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError(f"unbalanced parentheses in {text!r}")
    parts.append("".join(current))
    return [part.strip() for part in parts]


_SET_RE = re.compile(r"(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\Z")


def parse_selector_text(text: str) -> LabelSelector:
    """A label query (`a=b,c in (x,y),!d`) as a LabelSelector; SelectorError if malformed."""
    if len(text) > 4096:
        raise SelectorError("selector is longer than 4096 characters")
    if not text.strip():
        raise SelectorError("selector is empty: it would match nothing")
    labels: dict[str, str] = {}
    expressions: list[SelectorRequirement] = []
    for part in _split_requirements(text):
        if not part:
            raise SelectorError(f"empty requirement in {text!r}")
        match = _SET_RE.match(part)
        if match is not None:
            key = _check_key(match["key"], text)
            values = frozenset(
                _check_value(v.strip(), text) for v in match["values"].split(",") if v.strip()
            )
            if not values:
                raise SelectorError(f"{part!r} needs at least one value")
            operator = "In" if match["op"] == "in" else "NotIn"
            expressions.append(SelectorRequirement(key, operator, values))
        elif "!=" in part:
            key, value = (s.strip() for s in part.split("!=", 1))
            values = frozenset({_check_value(value, text)})
            expressions.append(SelectorRequirement(_check_key(key, text), "NotIn", values))
        elif "=" in part:
            key, value = (s.strip() for s in part.replace("==", "=", 1).split("=", 1))
            key = _check_key(key, text)
            if key in labels and labels[key] != value:
                raise SelectorError(f"{key!r} is given two values in {text!r}")
            labels[key] = _check_value(value, text)
        elif part.startswith("!"):
            expressions.append(
                SelectorRequirement(_check_key(part[1:].strip(), text), "DoesNotExist", frozenset())
            )
        else:
            expressions.append(SelectorRequirement(_check_key(part, text), "Exists", frozenset()))
    return LabelSelector(match_labels=tuple(sorted(labels.items())), expressions=tuple(expressions))


def selector_to_json(selector: LabelSelector) -> dict[str, Any]:
    """The selector as a Link spec writes it (`matchLabels`, `matchExpressions`)."""
    document: dict[str, Any] = {}
    if selector.match_labels:
        document["matchLabels"] = dict(selector.match_labels)
    if selector.expressions:
        document["matchExpressions"] = [
            {"key": e.key, "operator": e.operator}
            | ({"values": sorted(e.values)} if e.values else {})
            for e in selector.expressions
        ]
    return document


def selector_query(selector: LabelSelector) -> str:
    """The selector as the API's `labelSelector` query parameter (what `parse_selector_text`
    reads back): the API server then sends only the Services it selects."""
    parts = [f"{key}={value}" for key, value in selector.match_labels]
    for requirement in selector.expressions:
        values = ",".join(sorted(requirement.values))
        if requirement.operator == "In":
            parts.append(f"{requirement.key} in ({values})")
        elif requirement.operator == "NotIn":
            parts.append(f"{requirement.key} notin ({values})")
        elif requirement.operator == "Exists":
            parts.append(requirement.key)
        else:
            parts.append(f"!{requirement.key}")
    return ",".join(parts)
