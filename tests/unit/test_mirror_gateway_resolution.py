"""Gateway addresses: IP literals and DNS names, resolved at each use (reference §3.6).

Scope: `mirror.worker.resolve_gateway`, which every reconcile and every
probe calls: IPs are themselves, names resolve (here through the host's
resolver, `localhost`) to every address they have, the whole set sorted as
text and deduplicated; a name that does not resolve gives None (the gateway
Endpoints are then kept as they are, and the Link's status says why).
"""

from __future__ import annotations

from mirror.worker import resolve_gateway


async def test_ip_literals_are_themselves_sorted_as_text() -> None:
    assert await resolve_gateway(("192.0.2.77", "192.0.2.7", "192.0.2.7")) == (
        "192.0.2.7",
        "192.0.2.77",
    )


async def test_a_name_resolves_at_each_use() -> None:
    resolved = await resolve_gateway(("localhost", "192.0.2.9"))
    assert resolved is not None
    assert "192.0.2.9" in resolved and "127.0.0.1" in resolved
    assert list(resolved) == sorted(resolved)


async def test_a_name_that_does_not_resolve_is_no_answer() -> None:
    assert await resolve_gateway(("gateway.invalid",)) is None
