"""Reconnect delays: jittered exponential growth, healthy reset, slow auth retries; the
handshake token bucket; the garbage collector policy and its adapter."""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path

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


# --- the garbage collector policy ----------------------------------------------------

from producer.app.gcpolicy import GcAction, GcPolicy  # noqa: E402
from producer.app.loopwatch import apply, rss_bytes  # noqa: E402


def run_policy(policy: GcPolicy, script: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Feed ``(time, what)`` — ``open``, ``close`` or ``tick`` — and collect the actions."""
    actions = []
    for now, what in script:
        if what in ("open", "close"):
            policy.socket_changed(now, closed=what == "close")
        action = policy.decide(now)
        if action is not None:
            actions.append((now, action.value))
    return actions


@pytest.mark.parametrize(
    ("script", "actions"),
    [
        pytest.param(
            [(0, "tick"), (1, "open"), (2, "tick"), (11, "tick"), (12, "tick")],
            [(11, "freeze")],
            id="freeze-once-stable",
        ),
        pytest.param(
            [(0, "tick"), *((t / 10, "open") for t in range(1, 13)), (1.3, "tick")],
            [(0.5, "freeze"), (1.0, "freeze")],
            id="freeze-in-batches-while-opening",
        ),
        pytest.param(
            [(0, "tick"), (11, "tick"), (13, "tick"), (16, "tick"), (21, "tick")],
            [(11, "freeze"), (16, "freeze"), (21, "freeze")],
            id="refreeze-what-accumulates",
        ),
        pytest.param(
            [(0, "tick"), *((1 + t / 1000, "close") for t in range(6)), (5, "tick"), (12, "tick")],
            [(12, "thaw")],
            id="thaw-after-a-storm-once-stable",
        ),
    ],
)
def test_gc_policy(script: list[tuple[float, str]], actions: list[tuple[float, str]]) -> None:
    policy = GcPolicy(stable_after=10, freeze_every=5, refreeze_after=5, thaw_after=5)
    assert run_policy(policy, script) == actions


def test_gc_policy_thaws_anyway_when_sockets_never_settle() -> None:
    policy = GcPolicy(stable_after=10, freeze_every=5, refreeze_after=5, thaw_after=5)
    actions = run_policy(policy, [(0, "tick"), *((t, "close") for t in range(1, 700, 5))])
    assert [a for a in actions if a[1] == GcAction.THAW.value] == [(601, "thaw")]


def test_gc_policy_thaws_once_memory_grew_by_half() -> None:
    """A safety net for cyclic garbage that is not the sockets': memory measured once
    settled, a thaw when it grew by half (and the new size is the next baseline)."""
    policy = GcPolicy(stable_after=10, freeze_every=5, refreeze_after=5, thaw_after=5)
    heap = [(0, 1000), (11, 1000), (16, 1000), (21, 1400), (26, 1600), (27, 1600), (40, 2000)]
    actions = [(t, a.value) for t, memory in heap if (a := policy.decide(t, memory))]
    assert actions == [(11, "freeze"), (16, "freeze"), (21, "freeze"), (26, "thaw"), (40, "freeze")]
    assert policy.baseline == 1600


class Node:
    me: object = None


def cyclic_garbage() -> weakref.ref[Node]:
    """An object only a reference cycle keeps alive: reference counting never frees it."""
    node = Node()
    node.me = node
    return weakref.ref(node)


@pytest.mark.parametrize(
    ("frozen_before", "action"),
    [
        pytest.param(False, GcAction.FREEZE, id="freeze-collects-the-young-first"),
        pytest.param(True, GcAction.THAW, id="thaw-collects-what-was-frozen"),
    ],
)
def test_applying_the_gc_policy_leaves_no_cyclic_garbage(
    frozen_before: bool, action: GcAction
) -> None:
    gc.disable()  # no automatic pass may do the work for the adapter
    try:
        ref = cyclic_garbage()
        if frozen_before:
            gc.freeze()
        assert ref() is not None
        apply(action)
        assert ref() is None
        assert gc.get_freeze_count() > 0  # and the rest is frozen again
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_memory_the_policy_reads_is_the_process_rss() -> None:
    status = Path("/proc/self/status").read_text()
    kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    assert abs(rss_bytes() - kib * 1024) < 0.1 * kib * 1024
