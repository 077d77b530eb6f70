"""The standby window (:mod:`producer.replicas.standby`): what a standby replica keeps of
a subscriber's events, bounded by age, count and bytes, and taken over once."""

from __future__ import annotations

import pytest

from producer.core.envelope import Envelope, footprint
from producer.replicas.standby import StandbyWindow


def envelope(received: float, size: int = 10, at_ms: int = 0) -> Envelope:
    return Envelope(
        "x",
        "call.dial.001",
        b"x" * size,
        f"id{received}",
        {"received_at_ms": at_ms or int(received * 1000)},
        "t",
        0,
        "l",
        "event",
        received,
    )


@pytest.mark.parametrize(
    ("pushes", "now", "kept"),
    [
        pytest.param([0.0, 1.0, 2.0], 2.0, [0.0, 1.0, 2.0], id="all-in-window"),
        pytest.param([0.0, 1.0, 12.0], 12.0, [12.0], id="old-dropped"),
        pytest.param([0.0, 5.0], 20.0, [], id="all-expired"),
        pytest.param([float(n) / 100 for n in range(10)], 0.1, [0.06, 0.07, 0.08, 0.09], id="cap"),
    ],
)
def test_standby_window(pushes: list[float], now: float, kept: list[float]) -> None:
    window = StandbyWindow(10.0, max_events=4)
    for at in pushes:
        window.push("001", envelope(at), at)
    assert [e.received for e in window.take("001", now)] == kept
    assert window.take("001", now) == []  # taken once
    assert (window.count, window.bytes) == (0, 0)


def test_the_standby_window_is_bounded_by_bytes_over_all_subscribers() -> None:
    """Large frames on many standby subscribers: the oldest go first, whoever they are."""
    one = footprint(envelope(0.0, size=100_000))
    window = StandbyWindow(60.0, max_bytes=5 * one)
    for n in range(8):
        window.push(f"s{n % 3}", envelope(float(n), size=100_000), float(n))
    assert window.bytes <= 5 * one
    assert window.count == 5
    assert window.dropped == 3
    kept = sorted(e.received for s in ("s0", "s1", "s2") for e in window.take(s, 8.0))
    assert kept == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert (window.count, window.bytes) == (0, 0)


def test_the_push_order_is_compacted_not_grown_without_bound() -> None:
    window = StandbyWindow(1.0)
    for n in range(20_000):
        window.push("001", envelope(n / 1000), n / 1000)
    assert window.count <= 1001
    assert window.order_entries <= 2 * window.count + 64


def test_a_takeover_keeps_nothing_alive_in_the_push_order() -> None:
    """Everything taken over or forgotten: the push order holds (next to) nothing, so
    the envelopes' memory goes back even if nothing is pushed again."""
    window = StandbyWindow(10.0)
    for n in range(3000):
        window.push(f"s{n % 300}", envelope(n / 1000), n / 1000)
    for s in range(300):
        if s % 2:
            window.forget(f"s{s}")
        else:
            window.take(f"s{s}", 3.0)
    assert (window.count, window.bytes) == (0, 0)
    assert window.order_entries <= 64


def test_forgotten_large_frames_are_not_kept_alive_by_the_push_order() -> None:
    """Many small events held while subscribers with large frames are forgotten (handed
    over, removed): what the push order keeps alive stays under 1.25 times the bound."""
    big = footprint(envelope(0.0, size=1_000_000))
    window = StandbyWindow(60.0, max_bytes=8 * big)
    for n in range(4000):
        window.push(f"s{n % 100}", envelope(n / 1000), n / 1000)
    for i in range(60):
        for _k in range(4):
            window.push(f"L{i}", envelope(4 + i / 100, size=1_000_000), 4 + i / 100)
        window.forget(f"L{i}")
        referenced = sum(footprint(e) for _, e in window._order)
        assert referenced == window.bytes + window.stale
        assert referenced <= 1.25 * window.max_bytes
    assert window.count > 3500  # the small ones stay (a few evicted by the bytes bound)


def test_the_push_order_drops_what_aged_out_everywhere() -> None:
    """Events on many subscribers, each pushed once in a while: what ages out of the
    window leaves the push order too, not only when its own subscriber is pushed again."""
    window = StandbyWindow(1.0)
    for n in range(5000):
        window.push(f"s{n % 2500}", envelope(n / 100), n / 100)
    assert window.count <= 101  # one second's worth: events 4900..4999
    assert window.order_entries <= window.count + 1
    window.expire(1000.0)
    assert (window.count, window.order_entries) == (0, 0)


@pytest.mark.parametrize(
    ("low", "high", "kept"),
    [
        pytest.param(1000, 3000, [1.0, 2.0, 3.0], id="closed"),
        pytest.param(2500, None, [3.0, 4.0], id="open-ended"),
        pytest.param(9000, None, [], id="none"),
    ],
)
def test_what_the_window_received_between(low: int, high: int | None, kept: list[float]) -> None:
    window = StandbyWindow(60.0)
    for n in range(5):
        window.push("001", envelope(float(n)), float(n))
    assert [e.received for e in window.between("001", low, high)] == kept
    assert window.count == 5  # between() keeps them
