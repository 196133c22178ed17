"""A Link's status as the worker writes it (reference §1.2, Q15, Q21, #14433).

Scope: `mirror.status.link_status`: one entry per remote Service with exactly
one `Mirrored` condition; `localRef` only on success (never empty); the refs
leave `group` to the CRD's default (`core`), and a status read back with that
default is "unchanged" (no write); `lastTransitionTime` moves only when the
condition's status or reason does; dropping the last entry writes an empty
list. Also `mirror.selectors.selector_query`, the label query the local
federation sends to the API server.
"""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from discovery.models import LabelSelector, SelectorRequirement, ServiceRef
from mirror.desired import Condition
from mirror.selectors import parse_selector_text, selector_query
from mirror.status import link_status

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
WEB = ServiceRef("ns", "web")


def mirrored() -> Condition:
    return Condition(WEB, True, "Mirrored", local=ServiceRef("ns", "web-west"))


def missing() -> Condition:
    return Condition(WEB, False, "MissingNamespace", "Namespace does not exist")


def as_stored(status: dict[str, Any]) -> dict[str, Any]:
    """What the API server gives back: the CRD's default `group: core` filled in."""
    for entries in status.values():
        for entry in entries:
            entry["remoteRef"].setdefault("group", "core")
            for condition in entry["conditions"]:
                if "localRef" in condition:
                    condition["localRef"].setdefault("group", "core")
    return status


def test_a_mirrored_service_has_one_condition_with_its_local_ref() -> None:
    status = link_status({}, [mirrored()], [], now=T0)
    assert status == {
        "mirrorServices": [
            {
                "controllerName": "linkerd.io/service-mirror",
                "remoteRef": {"kind": "Service", "name": "web", "namespace": "ns"},
                "conditions": [
                    {
                        "type": "Mirrored",
                        "status": "True",
                        "reason": "Mirrored",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "localRef": {"kind": "Service", "name": "web-west", "namespace": "ns"},
                    }
                ],
            }
        ],
        "federatedServices": [],
    }


def test_a_failure_has_no_local_ref_at_all() -> None:
    status = link_status({}, [missing()], [], now=T0)
    assert status is not None
    (condition,) = status["mirrorServices"][0]["conditions"]
    assert "localRef" not in condition
    assert (condition["status"], condition["reason"]) == ("False", "MissingNamespace")


def test_a_status_read_back_with_defaults_is_not_written_again() -> None:
    """Regression: refs were written with `group: ""`, where the reference leaves the CRD's
    default (`core`) to fill it in."""
    stored = as_stored(link_status({}, [mirrored()], [mirrored()], now=T0) or {})
    assert stored["mirrorServices"][0]["remoteRef"]["group"] == "core"
    assert link_status(stored, [mirrored()], [mirrored()], now=T1) is None


def test_the_transition_time_moves_only_with_status_or_reason() -> None:
    stored = as_stored(link_status({}, [missing()], [], now=T0) or {})
    changed = link_status(stored, [mirrored()], [], now=T1)
    assert changed is not None
    assert changed["mirrorServices"][0]["conditions"][0]["lastTransitionTime"] == (
        "2026-01-01T00:05:00Z"
    )
    reworded = Condition(WEB, False, "MissingNamespace", "another message")
    status = link_status(stored, [reworded], [], now=T1)
    assert status is not None
    assert status["mirrorServices"][0]["conditions"][0]["lastTransitionTime"] == (
        "2026-01-01T00:00:00Z"
    )


def test_dropping_the_last_entry_writes_an_empty_list() -> None:
    stored = as_stored(link_status({}, [mirrored()], [mirrored()], now=T0) or {})
    assert link_status(stored, [], [], now=T1) == {"mirrorServices": [], "federatedServices": []}


_KEYS = st.sampled_from(["app", "mirror.linkerd.io/federated", "tier", "a.b/c-d"])
_VALUES = st.sampled_from(["member", "web", "x1", "a.b_c"])


@st.composite
def selectors(draw: st.DrawFn) -> LabelSelector:
    labels = draw(st.dictionaries(_KEYS, _VALUES, max_size=3))
    expressions = []
    for key in draw(st.lists(_KEYS, max_size=3)):
        operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        values = (
            frozenset(draw(st.sets(_VALUES, min_size=1, max_size=3)))
            if operator in ("In", "NotIn")
            else frozenset()
        )
        expressions.append(SelectorRequirement(key, operator, values))
    return LabelSelector(tuple(sorted(labels.items())), tuple(expressions))


@given(selectors(), st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_a_selector_query_reads_back_as_the_same_selector(
    selector: LabelSelector, labels: dict[str, str]
) -> None:
    assume(selector.match_labels or selector.expressions)  # an empty one is never sent
    again = parse_selector_text(selector_query(selector))
    assert again.matches(labels) == selector.matches(labels)
