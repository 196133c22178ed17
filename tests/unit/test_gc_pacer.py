"""The GC pacer: it collects and freezes once a period, thaws once a long one, measures pauses.

These tests change the interpreter's collector state (the permanent
generation and gc.callbacks) and restore it, whatever happens.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from destination.ops.gc import GcPacer


class Node:
    """A container object the collector tracks, able to form cycles."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def pacer() -> Iterator[GcPacer]:
    gc.unfreeze()
    pacer = GcPacer(CollectorRegistry(), thaw_period_s=600.0)
    gc.callbacks.append(pacer._on_collection)
    try:
        yield pacer
    finally:
        gc.callbacks.remove(pacer._on_collection)
        gc.unfreeze()


def pauses(pacer: GcPacer, generation: str) -> float:
    return pacer.pauses.labels(generation)._sum.get()  # type: ignore[attr-defined, no-any-return]


def count(pacer: GcPacer, generation: str) -> float:
    samples = {
        (sample.name, sample.labels.get("generation")): sample.value
        for metric in pacer.pauses.collect()
        for sample in metric.samples
    }
    return samples[("destination_gc_pause_seconds_count", generation)]


def test_a_tick_collects_and_freezes_the_survivors(pacer: GcPacer) -> None:
    live = [Node() for _ in range(5_000)]
    pacer.tick(now=0.0)
    frozen = gc.get_freeze_count()
    assert frozen >= len(live)
    assert pacer.freezes._value.get() == 1  # type: ignore[attr-defined]
    # A full collection no longer walks them: they are not in any generation.
    ids = {id(node) for node in live}
    assert not ids & {id(o) for o in gc.get_objects(generation=2)}


def test_the_next_collection_walks_only_what_came_since(pacer: GcPacer) -> None:
    pacer.tick(now=0.0)
    a, b = Node(), Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    pacer.tick(now=0.5)  # within the period: nothing collected, nothing frozen
    assert pacer.freezes._value.get() == 1  # type: ignore[attr-defined]
    assert id(a) in _node_ids(), "still in a generation, not frozen"
    del a, b  # a cycle, garbage, not frozen: the next collection frees it
    pacer.tick(now=1.0)
    assert probe() is None
    assert pacer.freezes._value.get() == 2  # type: ignore[attr-defined]


def test_frozen_objects_are_still_freed_by_reference_counting(pacer: GcPacer) -> None:
    live = [Node() for _ in range(5_000)]
    pacer.tick(now=1.0)
    frozen = gc.get_freeze_count()
    del live
    assert gc.get_freeze_count() <= frozen - 5_000


def test_a_cycle_among_frozen_objects_is_freed_after_the_thaw(pacer: GcPacer) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    pacer.tick(now=1.0)
    probe = id(a)
    del a, b  # garbage now, but frozen: no collection finds it
    pacer.tick(now=2.0)
    gc.collect()
    assert probe in _frozen_node_ids()
    pacer.tick(now=1.0 + 600.0)  # the thaw: that tick's collection walks everything
    assert pacer.thaws._value.get() == 1  # type: ignore[attr-defined]
    assert probe not in _node_ids()
    assert probe not in _frozen_node_ids()
    assert gc.get_freeze_count() > 0  # and what survived is frozen again


def _node_ids() -> set[int]:
    return {id(o) for o in gc.get_objects() if isinstance(o, Node)}


def _frozen_node_ids() -> set[int]:
    gc.unfreeze()
    try:
        return _node_ids()
    finally:
        gc.freeze()


def test_pauses_are_recorded_by_generation_at_the_tick_not_in_the_callback(
    pacer: GcPacer,
) -> None:
    before = count(pacer, "2")
    gc.collect()
    gc.collect(0)
    assert count(pacer, "2") == before, "the collector's callback touches no metric"
    pacer.tick(now=1.0)
    assert count(pacer, "2") == before + 1
    assert count(pacer, "0") >= 1
    assert pauses(pacer, "2") > 0


def test_without_freeze_nothing_is_frozen_but_pauses_are_measured() -> None:
    gc.unfreeze()
    pacer = GcPacer(CollectorRegistry(), freeze=False)
    gc.callbacks.append(pacer._on_collection)
    try:
        gc.collect()
        pacer.tick(now=1.0)
        assert gc.get_freeze_count() == 0
        assert count(pacer, "2") == 1
    finally:
        gc.callbacks.remove(pacer._on_collection)


async def test_run_installs_its_hook_and_leaves_nothing_behind() -> None:
    gc.unfreeze()
    pacer = GcPacer(CollectorRegistry(), tick_s=0.01, collect_period_s=0.01)
    task = asyncio.create_task(pacer.run())
    await asyncio.sleep(0.02)
    assert pacer._on_collection in gc.callbacks
    gc.collect()
    await asyncio.sleep(0.05)
    assert gc.get_freeze_count() > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pacer._on_collection not in gc.callbacks
    assert gc.get_freeze_count() == 0


def test_a_tick_never_walks_the_permanent_generation(
    pacer: GcPacer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc.get_freeze_count() walks every frozen object: with 20,000 streams a
    million of them, tens of milliseconds of a stalled loop, once a second."""

    def walk() -> int:
        raise AssertionError("the pacer walked the permanent generation")

    monkeypatch.setattr(gc, "get_freeze_count", walk)
    gc.collect()
    pacer.tick(now=1.0)  # freezes
    pacer.tick(now=2.0)
    pacer.tick(now=1.0 + 600.0)  # thaws
    assert pacer.freezes._value.get() == 3  # type: ignore[attr-defined]
    assert pacer.thaws._value.get() == 1  # type: ignore[attr-defined]
