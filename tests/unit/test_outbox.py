"""The outbox: order, bounds, confirms, nacks, rewinds and the waits built on them."""

from __future__ import annotations

import asyncio

import pytest

from producer.envelope import Envelope
from producer.outbox import Outbox


def env(n: int) -> Envelope:
    return Envelope("x", f"k.{n}", str(n).encode(), f"m{n}", {}, "t", 0, "l", "event", 0.0)


def bodies(envelopes: list[Envelope]) -> list[int]:
    return [int(e.body) for e in envelopes]


def filled(n: int, capacity: int = 100, dropped: list[Envelope] | None = None) -> Outbox:
    box = Outbox(
        capacity, on_drop=(lambda e, _reason: dropped.append(e)) if dropped is not None else None
    )
    for i in range(n):
        box.put(env(i))
    return box


def test_take_is_in_order_and_marks_in_flight() -> None:
    box = filled(5)
    assert bodies(box.take(3)) == [0, 1, 2]
    assert box.inflight == 3
    assert bodies(box.take(10)) == [3, 4]
    assert box.take(10) == []
    assert len(box) == 5


def test_confirm_removes() -> None:
    box = filled(3)
    batch = box.take(3)
    assert box.confirm(batch[1])
    assert len(box) == 2
    assert not box.confirm(batch[1])


def test_rewind_resends_in_flight_first_in_order() -> None:
    box = filled(6)
    batch = box.take(4)
    box.confirm(batch[1])
    assert box.rewind() == 3
    assert bodies(box.take(10)) == [0, 2, 3, 4, 5]


def test_nack_retry_goes_before_newer() -> None:
    box = filled(5)
    batch = box.take(3)
    box.retry(batch[2])
    box.retry(batch[0])
    assert bodies(box.take(10)) == [0, 2, 3, 4]


def test_full_drops_oldest_waiting_not_in_flight() -> None:
    dropped: list[Envelope] = []
    box = filled(3, capacity=3, dropped=dropped)
    box.take(1)  # 0 in flight
    box.put(env(3))
    assert bodies(dropped) == [1]
    assert len(box) == 3
    assert bodies(box.take(10)) == [2, 3]


def test_full_with_everything_in_flight_drops_oldest() -> None:
    dropped: list[Envelope] = []
    box = filled(2, capacity=2, dropped=dropped)
    batch = box.take(2)
    box.put(env(2))
    assert bodies(dropped) == [0]
    assert not box.confirm(batch[0])  # already dropped: not counted twice
    assert box.confirm(batch[1])


@pytest.mark.parametrize("capacity", [1, 7, 100])
def test_bound_holds_under_any_load(capacity: int) -> None:
    dropped: list[Envelope] = []
    box = filled(1000, capacity=capacity, dropped=dropped)
    assert len(box) == capacity
    assert len(dropped) == 1000 - capacity
    assert bodies(box.take(2000)) == list(range(1000 - capacity, 1000))


def test_sequence_numbers_increase() -> None:
    box = filled(3)
    assert [e.seq for e in box.take(3)] == [1, 2, 3]


async def test_wait_ready_and_wait_empty() -> None:
    box = Outbox(10)
    waiter = asyncio.create_task(box.wait_ready())
    await asyncio.sleep(0)
    assert not waiter.done()
    box.put(env(1))
    await asyncio.wait_for(waiter, 1)
    empty = asyncio.create_task(box.wait_empty())
    await asyncio.sleep(0)
    assert not empty.done()
    (e,) = box.take(1)
    box.confirm(e)
    await asyncio.wait_for(empty, 1)


async def test_wait_ready_wakes_on_rewind() -> None:
    box = filled(1)
    box.take(1)
    waiter = asyncio.create_task(box.wait_ready())
    await asyncio.sleep(0)
    assert not waiter.done()
    box.rewind()
    await asyncio.wait_for(waiter, 1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Outbox(0)
