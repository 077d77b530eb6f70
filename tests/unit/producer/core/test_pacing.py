"""Reconnect delays: jittered exponential growth, healthy reset, slow auth retries; the
handshake token bucket."""

from __future__ import annotations

import random

import pytest

from producer.core.pacing import Backoff, TokenBucket


def policy(**kw: float) -> Backoff:
    return Backoff(rng=random.Random(7), **kw)


def test_an_isolated_drop_reconnects_at_once() -> None:
    b = Backoff(rng=random.Random(1))
    assert b.next_delay() == 0.0
    assert b.next_delay() > 0.0  # but a second failure in a row waits


def test_first_delay_spreads_over_initial_window() -> None:
    delays = [Backoff(initial=5.0, rng=random.Random(i)).next_delay() for i in range(500)]
    assert all(0 <= d <= 5.0 for d in delays)
    # spread: every fifth of the window gets a share
    buckets = {int(d) for d in delays}
    assert buckets == {0, 1, 2, 3, 4}


def test_growth_is_exponential_with_equal_jitter_and_capped() -> None:
    b = policy(min_delay=1.0, max_delay=8.0, initial=0.0)
    delays = [b.next_delay() for _ in range(8)]
    assert delays[0] == 0.0
    bases = [1, 2, 4, 8, 8, 8, 8]
    for delay, base in zip(delays[1:], bases, strict=True):
        assert base / 2 <= delay <= base


@pytest.mark.parametrize(
    ("lasted", "resets"),
    [
        pytest.param(9.99, False, id="short-session-keeps-growing"),
        pytest.param(10.0, True, id="healthy-session-resets"),
    ],
)
def test_reset_only_after_healthy_session(lasted: float, resets: bool) -> None:
    b = policy(healthy_after=10.0)
    for _ in range(5):
        b.next_delay()
    b.session_ended(lasted)
    assert (b.failures == 0) is resets


def test_server_that_accepts_then_closes_is_not_a_hot_loop() -> None:
    b = policy(min_delay=1.0, max_delay=60.0, healthy_after=10.0)
    total = 0.0
    for _ in range(10):  # connect, dropped after 0.1 s, again and again
        total += b.next_delay()
        b.session_ended(0.1)
    assert total > 60


def test_auth_failure_waits_at_least_auth_delay() -> None:
    b = policy(auth_delay=60.0)
    assert b.next_delay(auth_failed=True) >= 60.0
    assert b.next_delay(auth_failed=True) >= 60.0
    b.reset()
    assert b.next_delay() <= 5.0


@pytest.mark.parametrize(
    ("rate", "burst", "times", "waits"),
    [
        pytest.param(10.0, 3.0, [0, 0, 0, 0, 0], [0, 0, 0, 0.1, 0.2], id="burst-then-paced"),
        pytest.param(10.0, 1.0, [0, 0.1, 0.2], [0, 0, 0], id="at-the-rate-no-wait"),
        pytest.param(10.0, 2.0, [0, 0, 0, 10, 10], [0, 0, 0.1, 0, 0], id="refills-over-time"),
        pytest.param(100.0, 1.0, [5, 5, 5], [0, 0.01, 0.02], id="first-use-is-full"),
    ],
)
def test_token_bucket_paces_in_order(
    rate: float, burst: float, times: list[float], waits: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    assert [bucket.take(t) for t in times] == pytest.approx(waits)


def test_ten_thousand_handshakes_at_two_hundred_a_second_take_under_a_minute() -> None:
    bucket = TokenBucket(rate=200.0, burst=50.0)
    last = max(bucket.take(0.0) for _ in range(10_000))
    assert 49 < last < 50
