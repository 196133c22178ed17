"""A Link's status: one `Mirrored` condition per remote Service it handles (§1.2).

`link_status` builds the whole status from the worker's conditions and the
status the Link holds now. Differences from the reference, each a fix it
recommends (§8.1): `lastTransitionTime` changes only when a condition's
status or reason does (Q15); both lists are always written, so dropping the
last entry really empties the list (Q21); `localRef` is absent on failure,
never an empty object (v1alpha2's bug, #14433). Nothing is written when the
computed status equals the current one. `group` is left out of both refs, so
the CRD's default (`core`) fills it, as for the reference (whose Go structs
omit the empty string).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from .desired import Condition

__all__ = ["CONTROLLER_NAME", "link_status"]

CONTROLLER_NAME = "linkerd.io/service-mirror"


def _key(entry: Mapping[str, Any]) -> tuple[str, str]:
    ref = entry.get("remoteRef") or {}
    return str(ref.get("namespace", "")), str(ref.get("name", ""))


def _entry(condition: Condition, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    status = "True" if condition.mirrored else "False"
    old = ((previous or {}).get("conditions") or [{}])[0]
    unchanged = old.get("status") == status and old.get("reason") == condition.reason
    entry_condition: dict[str, Any] = {
        "type": "Mirrored",
        "status": status,
        "reason": condition.reason,
        "message": condition.message,
        "lastTransitionTime": old.get("lastTransitionTime") if unchanged else now,
    }
    if condition.local is not None:
        entry_condition["localRef"] = {
            "kind": "Service",
            "name": condition.local.name,
            "namespace": condition.local.namespace,
        }
    return {
        "controllerName": CONTROLLER_NAME,
        "remoteRef": {
            "kind": "Service",
            "name": condition.remote.name,
            "namespace": condition.remote.namespace,
        },
        "conditions": [entry_condition],
    }


def _entries(
    conditions: Iterable[Condition], previous: Iterable[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    before = {_key(entry): entry for entry in previous if isinstance(entry, Mapping)}
    entries = [_entry(c, before.get((c.remote.namespace, c.remote.name)), now) for c in conditions]
    return sorted(entries, key=_key)


def _comparable(entries: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Entries without `lastTransitionTime` and with API-server defaults applied (group)."""
    result = []
    for entry in entries:
        conditions = []
        for condition in entry.get("conditions") or []:
            c = {k: v for k, v in condition.items() if k != "lastTransitionTime"}
            if "localRef" in c:
                c["localRef"] = {k: v for k, v in c["localRef"].items() if k != "group"}
            conditions.append(c)
        remote = {k: v for k, v in (entry.get("remoteRef") or {}).items() if k != "group"}
        result.append((entry.get("controllerName"), remote, conditions))
    return sorted(result, key=lambda item: (item[1].get("namespace", ""), item[1].get("name", "")))


def link_status(
    current: Mapping[str, Any],
    mirror_conditions: Iterable[Condition],
    federated_conditions: Iterable[Condition],
    *,
    now: datetime.datetime | None = None,
) -> dict[str, Any] | None:
    """The status to write, or None when the Link's status already says it."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    mirror = _entries(mirror_conditions, current.get("mirrorServices") or [], stamp)
    federated = _entries(federated_conditions, current.get("federatedServices") or [], stamp)
    if _comparable(mirror) == _comparable(current.get("mirrorServices") or []) and _comparable(
        federated
    ) == _comparable(current.get("federatedServices") or []):
        return None
    return {"mirrorServices": mirror, "federatedServices": federated}
