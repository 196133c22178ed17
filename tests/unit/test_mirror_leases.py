"""One writer per Link: the Lease protocol of `mirror.leases.Leadership` (reference §3.1).

Scope: `try_acquire_or_renew` and `release` over an in-memory transport that
answers in order and records every request: a missing Lease is created for
this identity; a Lease another live replica holds is left alone; an expired
one, or a released one (no holder), is taken with one more transition, as a
compare-and-swap on its resourceVersion; a replica releases only its own.
"""

from __future__ import annotations

import datetime
from typing import Any

from mirror.leases import Leadership, LeaseSettings
from tests.unit.scripted_api import RecordingTransport as Transport
from tests.unit.scripted_api import reply, status_body

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
PATH = "/apis/coordination.k8s.io/v1/namespaces/mc/leases"


def leadership(transport: Transport, duration_s: float = 30.0) -> Leadership:
    return Leadership(
        api=transport,  # type: ignore[arg-type]
        namespace="mc",
        name="service-mirror-write-west",
        identity="me",
        settings=LeaseSettings(duration_s=duration_s, renew_deadline_s=1.0, retry_s=0.5),
        clock=lambda: NOW,
    )


def lease(holder: str | None, renewed: datetime.datetime, duration: int = 30) -> dict[str, Any]:
    return {
        "metadata": {"name": "service-mirror-write-west", "resourceVersion": "42"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "acquireTime": "2026-01-01T11:00:00.000000Z",
            "leaseTransitions": 2,
        },
    }


async def test_a_missing_lease_is_created_with_a_duration_rounded_up() -> None:
    """Regression: a 2.5 s duration was written as 2 s, so other replicas could take the
    Lease before its holder's own renew deadline said it had lost it."""
    transport = Transport(reply(404, status_body(404, "NotFound", "")), reply(201, {}))
    assert await leadership(transport, duration_s=2.5).try_acquire_or_renew()
    (_, (method, path, body)) = transport.requests
    assert (method, path) == ("POST", PATH)
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseDurationSeconds"] == 3
    assert body["spec"]["leaseTransitions"] == 0


async def test_a_lease_another_live_replica_holds_is_left_alone() -> None:
    held = lease("other", NOW - datetime.timedelta(seconds=10))
    transport = Transport(reply(200, held))
    assert not await leadership(transport).try_acquire_or_renew()
    assert [r[0] for r in transport.requests] == ["GET"]


async def test_an_expired_or_released_lease_is_taken_as_a_compare_and_swap() -> None:
    for holder, age in (("other", 31), (None, 1)):
        stale = lease(holder, NOW - datetime.timedelta(seconds=age))
        transport = Transport(reply(200, stale), reply(200, {}))
        assert await leadership(transport).try_acquire_or_renew()
        (_, (method, path, body)) = transport.requests
        assert (method, path) == ("PUT", f"{PATH}/service-mirror-write-west")
        assert body["metadata"]["resourceVersion"] == "42"
        assert body["spec"]["holderIdentity"] == "me"
        assert body["spec"]["leaseTransitions"] == 3


async def test_a_conflicting_take_over_fails() -> None:
    stale = lease("other", NOW - datetime.timedelta(seconds=31))
    transport = Transport(reply(200, stale), reply(409, status_body(409, "Conflict", "")))
    assert not await leadership(transport).try_acquire_or_renew()


async def test_release_gives_up_only_our_own_lease() -> None:
    transport = Transport(reply(200, lease("other", NOW)))
    await leadership(transport).release()
    assert [r[0] for r in transport.requests] == ["GET"]
    transport = Transport(reply(200, lease("me", NOW)), reply(200, {}))
    await leadership(transport).release()
    (_, (method, _, body)) = transport.requests
    assert method == "PUT" and body["spec"]["holderIdentity"] is None
