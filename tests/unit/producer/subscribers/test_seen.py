"""The calls seen to end (producer/subscribers/seen.py): kept by socket up-time and count, compact,
and given back when a subscriber stops calling."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.subscribers.gaps import GapBook
from producer.subscribers.seen import SWEEP_EVERY_MS, SeenEnds

HOLD = 10_000


@pytest.mark.parametrize(
    ("steps", "asked", "seen"),
    [
        pytest.param([("add", "a", 0)], 10_000, True, id="kept-for-the-hold"),
        pytest.param([("add", "a", 0)], 10_001, False, id="dropped-after-the-hold"),
        pytest.param(
            [("add", "a", 0), ("down", 1_000), ("up", 3_601_000)],
            3_610_000,
            True,
            id="an-hour-down-does-not-count",
        ),
        pytest.param(
            [("add", "a", 0), ("down", 1_000), ("up", 3_601_000)],
            3_610_001,
            False,
            id="up-time-after-the-outage-counts",
        ),
        pytest.param(
            [("add", "a", 0), ("down", 1_000), ("down", 2_000), ("up", 5_000)],
            14_000,
            True,
            id="a-failed-reconnect-keeps-the-first-down",
        ),
        pytest.param(
            [("add", "a", 0), ("up", 5_000)],
            10_001,
            False,
            id="up-without-down-changes-nothing",
        ),
        pytest.param(
            [("add", "a", 0), ("add", "a", 9_000)], 10_001, False, id="a-repeat-is-not-renewed"
        ),
    ],
)
def test_a_seen_call_is_kept_for_the_hold_of_up_time(
    steps: list[tuple[str, ...]], asked: int, seen: bool
) -> None:
    ends = SeenEnds(HOLD)
    for step in steps:
        if step[0] == "add":
            ends.add("001", str(step[1]), int(step[2]))
        elif step[0] == "down":
            ends.down("001", int(step[1]))
        else:
            ends.up("001", int(step[1]))
    ends.sweep(asked)
    assert ends.contains("001", "a") is seen


def test_past_the_count_the_oldest_go_first() -> None:
    ends = SeenEnds(HOLD, per_subscriber=3)
    for n in range(5):
        ends.add("001", f"u{n}", n)
    assert [ends.contains("001", f"u{n}") for n in range(5)] == [False, False, True, True, True]
    assert len(ends) == 3


def test_subscribers_that_stop_calling_give_their_memory_back() -> None:
    ends = SeenEnds(HOLD)
    for n in range(1000):
        ends.add(f"s{n}", "a", 0)
    assert ends.subscribers == 1000
    # One hangup a sweep period later prunes everyone else.
    ends.add("other", "b", max(HOLD + 1, SWEEP_EVERY_MS))
    assert ends.subscribers == 1
    assert not ends.contains("s1", "a")


def test_an_entry_costs_two_integers() -> None:
    ends = SeenEnds(HOLD, per_subscriber=256)
    for n in range(256):
        ends.add("001", f"{n:08x}-2f6c-4a63-9a59-6c6e1f0a8b2d", n)
    seen = ends._of["001"]
    assert len(seen.stamps) == len(seen.digests) == 256
    assert (seen.stamps.itemsize, seen.digests.itemsize) == (4, 8)
    assert sys.getsizeof(seen.stamps) + sys.getsizeof(seen.digests) < 256 * 12 + 512


def test_a_record_alive_for_weeks_moves_its_base_and_keeps_its_order() -> None:
    """Stamps are 32-bit milliseconds from a base: past ~24 days of a record's life the
    base moves; what is held and its ages stay the same."""
    day = 86_400_000
    ends = SeenEnds(hold_ms=10 * day)
    ends.add("001", "x", 0)
    ends.add("001", "a", 20 * day)  # "x" is older than the hold: gone
    ends.add("001", "b", 26 * day)  # the clock passed 2^31 ms from the base: rebased
    ends.sweep(26 * day)
    assert [ends.contains("001", u) for u in ("x", "a", "b")] == [False, True, True]
    ends.sweep(30 * day + 1)  # "a" is now older than the hold
    assert not ends.contains("001", "a")
    assert ends.contains("001", "b")


def test_a_pending_backfill_job_keeps_what_was_seen_however_late_its_reads() -> None:
    """Pinned while the subscriber's job is pending: a read an hour late (10,000 gaps
    after a PBX restart, a failing REST API) still knows what the socket delivered."""
    ends = SeenEnds(HOLD)
    ends.add("001", "before", 0)
    ends.pin("001", 1_000)
    ends.add("001", "after", 2_000)
    ends.sweep(3_600_000)
    assert ends.contains("001", "before")
    assert ends.contains("001", "after")
    ends.unpin("001", 3_600_000)
    # The clock ran 1 s before the pin and runs again from the unpin: 10.5 s later,
    # "before" (seen at 0) is older than the hold, "after" (seen at 1 s) is not.
    ends.sweep(3_600_000 + 9_500)
    assert not ends.contains("001", "before")
    assert ends.contains("001", "after")


def test_the_book_keeps_what_was_seen_before_a_long_gap() -> None:
    """A gap of two hours: the call that ended just before it is still known when its
    window is read five minutes after the socket is back."""
    book = GapBook(keepalive_ms=40_000)
    book.seen_end("001", "before", 1_000_000)
    book.down("001", 1_010_000, 1006)
    gap = book.up("001", 1_010_000 + 7_200_000)
    assert gap is not None
    assert gap.from_ms == 970_000
    book.seen.sweep(gap.to_ms + 300_000)
    assert book.was_seen("001", "before")
    book.forget("001")
    assert not book.was_seen("001", "before")


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from("ab"), st.sampled_from("uvwxyz")),
        st.tuples(
            st.sampled_from(["down", "up", "pin", "unpin", "forget"]),
            st.sampled_from("ab"),
            st.just(""),
        ),
        st.tuples(st.just("sweep"), st.just(""), st.just("")),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(ops=OPS, steps=st.lists(st.integers(0, 6_000), min_size=40, max_size=40))
def test_matches_a_model_that_keeps_everything(
    ops: list[tuple[str, str, str]], steps: list[int]
) -> None:
    """Against a model that keeps every (clock, uuid) forever and asks "seen within the
    hold of a clock that stops while the socket is down or a job is pending?": the same
    answer for every subscriber and uuid, at every step. As in the service, nothing is
    seen and no job is made while the socket is down."""
    ends = SeenEnds(HOLD, per_subscriber=1000)
    model: dict[str, dict[str, int]] = {}  # subscriber -> uuid -> clock when first seen
    paused = dict.fromkeys("ab", 0)
    frozen_at: dict[str, int | None] = dict.fromkeys("ab")
    down = dict.fromkeys("ab", False)
    pins = dict.fromkeys("ab", 0)
    wall = 0

    def clock(s: str) -> int:
        at = frozen_at[s]
        return (wall if at is None else at) - paused[s]

    def refreeze(s: str) -> None:
        frozen = down[s] or pins[s] > 0
        at = frozen_at[s]
        if frozen and at is None:
            frozen_at[s] = wall
        elif not frozen and at is not None:
            paused[s] += wall - at
            frozen_at[s] = None

    for (op, s, uuid), step in zip(ops, steps, strict=False):
        wall += step
        if op == "add" and not down[s]:
            held = model.setdefault(s, {})
            if uuid not in held or clock(s) - held[uuid] > HOLD:
                held[uuid] = clock(s)
            ends.add(s, uuid, wall)
        elif op == "down" and not down[s]:
            down[s] = True
            refreeze(s)
            ends.down(s, wall)
        elif op == "up" and down[s]:
            down[s] = False
            refreeze(s)
            ends.up(s, wall)
        elif op == "pin" and not down[s]:
            pins[s] += 1
            refreeze(s)
            ends.pin(s, wall)
        elif op == "unpin" and pins[s]:
            pins[s] -= 1
            refreeze(s)
            ends.unpin(s, wall)
        elif op == "sweep":
            ends.sweep(wall)
        elif op == "forget":
            model.pop(s, None)
            pins[s] = 0
            refreeze(s)
            ends.forget(s)
        ends.sweep(wall)  # contains() answers from what is held; a sweep drops the old
        for sub in "ab":
            for u in "uvwxyz":
                first = model.get(sub, {}).get(u)
                expected = first is not None and clock(sub) - first <= HOLD
                assert ends.contains(sub, u) is expected, (sub, u, wall)
