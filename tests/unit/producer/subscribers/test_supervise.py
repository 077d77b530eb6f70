"""The REST loops survive a bug (issue 21): a round that raises is logged with a trimmed
traceback that holds no data, counted, and followed by the next round after a backoff;
cancellation still stops the loop, during a round or during the wait."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from prometheus_client import CollectorRegistry, Counter

from producer.core.pacing import Backoff
from producer.subscribers.supervise import RETRY_MAX, RETRY_MIN, retry_backoff, supervised, where
from producer.telemetry.subscribers import LOOPS, RestMetrics

SECRET = "380991234567"  # call data a bug's message may carry: never logged


def counter() -> Counter:
    return Counter("failures", "test", registry=CollectorRegistry())


def count(failures: Counter) -> float:
    (metric,) = failures.collect()
    return sum(s.value for s in metric.samples if s.name.endswith("_total"))


def quick() -> Backoff:
    """The real policy, scaled down so the test waits milliseconds, not seconds."""
    return Backoff(min_delay=0.001, max_delay=0.004, initial=0.001, rng=random.Random(1))


class Rounds:
    """A loop body that fails on the rounds listed in ``failing`` (a bug holding call
    data in its message), and records each round."""

    def __init__(self, failing: set[int], stop_after: int) -> None:
        self.failing, self.stop_after = failing, stop_after
        self.done: list[int] = []
        self.finished = asyncio.Event()

    async def __call__(self) -> None:
        n = len(self.done) + 1
        self.done.append(n)
        if n >= self.stop_after:
            self.finished.set()
            await asyncio.Event().wait()  # parked here until cancelled
        if n in self.failing:
            raise KeyError(SECRET)  # a bug whose message is a phone number
        await asyncio.sleep(0)


async def run_until_finished(rounds: Rounds, failures: Counter) -> asyncio.Task[None]:
    task = asyncio.create_task(supervised("backfill", rounds, failures, quick()))
    async with asyncio.timeout(10):
        await rounds.finished.wait()
    return task


async def test_a_failing_round_is_logged_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = counter()
    rounds = Rounds(failing={2, 3, 5}, stop_after=7)
    with caplog.at_level(logging.DEBUG, logger="producer.subscribers"):
        task = await run_until_finished(rounds, failures)
    assert rounds.done == [1, 2, 3, 4, 5, 6, 7]  # every round after a failure still ran
    assert count(failures) == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3
    for record in errors:
        text = record.getMessage()
        assert text.startswith("REST backfill loop failed (KeyError at test_supervise.py:")
        assert "in __call__" in text
        assert SECRET not in text  # no message
        assert not record.exc_info  # no full traceback
        assert record.loop == "backfill"  # type: ignore[attr-defined]
    # The backoff grows while rounds fail in a row and is reset by one that completes.
    assert [r.failures_in_a_row for r in errors] == [1, 2, 1]  # type: ignore[attr-defined]
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()


async def test_cancellation_during_the_wait_stops_the_loop() -> None:
    failures = counter()
    rounds_started = asyncio.Event()

    async def always_failing() -> None:
        rounds_started.set()
        raise RuntimeError("bug")

    slow = Backoff(min_delay=3600.0, max_delay=3600.0, initial=3600.0)
    task = asyncio.create_task(supervised("discovery", always_failing, failures, slow))
    await rounds_started.wait()
    await asyncio.sleep(0)  # now in the hour-long wait
    assert count(failures) == 1
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()


async def test_cancellation_during_a_round_is_not_counted_as_a_failure() -> None:
    failures = counter()
    rounds = Rounds(failing=set(), stop_after=1)
    task = await run_until_finished(rounds, failures)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    assert count(failures) == 0


def test_where_names_the_frames_innermost_first_and_no_values() -> None:
    def inner(number: str) -> None:
        raise ValueError(f"bad number {number}")

    def outer() -> None:
        inner(SECRET)

    with pytest.raises(ValueError, match="bad number") as raised:
        outer()
    text = where(raised.value)
    assert text.startswith("test_supervise.py:")
    assert text.index("in inner") < text.index("in outer")
    assert SECRET not in text
    assert where(raised.value, frames=1).count(" < ") == 0


def test_the_backoff_is_bounded() -> None:
    backoff = retry_backoff()
    delays = [backoff.next_delay() for _ in range(20)]
    assert 0 <= delays[0] <= RETRY_MIN
    assert max(delays) <= RETRY_MAX
    assert delays[-1] >= RETRY_MAX / 2  # it does reach the cap (equal jitter)


def test_every_loop_has_its_counter() -> None:
    metrics = RestMetrics(CollectorRegistry())
    assert set(metrics.loop_failures) == set(LOOPS) == {"discovery", "file", "backfill"}
