"""Gaps in a subscriber's stream and the backfill that fills them. Pure: clocks passed in.

Phonet replays nothing: while a socket is down its events are gone. :class:`GapBook`
remembers when each socket stopped being known good and, when it is back, makes a
:class:`Gap` (published as ``gap.<token>``). It also remembers the calls recently seen to
*end* on each socket (:class:`~producer.subscribers.seen.SeenEnds`, only as long as a backfill
could ask), so that a backfill publishes only what the socket did not deliver.

:class:`BackfillPlan` schedules the history reads for each gap: history may lag behind a
call's end, so a window is read a few times over minutes (``RETRY_AFTER``) and each call
is published once (``history.call.<token>``, a stable message id per subscriber and uuid).
Everything is bounded: remembered calls per subscriber (by up-time and count), jobs in
the plan.

Memory: a down socket costs one ``_Down`` (about 220 bytes); the seen calls are counted in
:mod:`producer.subscribers.seen`; a job about 500 bytes plus the uuids it published (a set of
strings, for the 5 minutes its reads last), at most :data:`MAX_JOBS`.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import orjson

from producer.subscribers.records import CallRecord
from producer.subscribers.seen import PER_SUBSCRIBER, SeenEnds

ABNORMAL = frozenset({1006, 1011})
"""Close codes of a link that died silently (no close frame, or a keepalive timeout): the
stream may have stopped up to a keepalive period before the drop was noticed."""
RETRY_AFTER = (5.0, 60.0, 300.0)
"""Seconds after the gap ended at which its window is read (history lags behind calls)."""
MARGIN_MS = 60_000
"""The window read is the gap widened by this much on each side (clocks differ)."""
LATE_READ_MS = 300_000
"""How late a read may come (REST errors, a busy plan) and still know what was seen."""
MAX_JOBS = 10_000


@dataclass(frozen=True)
class Gap:
    """A stretch of time in which ``subscriber``'s socket delivered nothing."""

    subscriber: str
    from_ms: int
    to_ms: int
    reason: str

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "subscriber": self.subscriber,
                "from_ms": self.from_ms,
                "to_ms": self.to_ms,
                "reason": self.reason,
            }
        )


@dataclass
class _Down:
    since_ms: int
    reason: str


class GapBook:
    """Per subscriber: since when its socket is down, and the calls recently seen to end.

    ``keepalive_ms`` (ping interval + ping timeout) is how long a silently dead link can go
    unnoticed; a gap after an abnormal close starts that much before the drop was seen.
    A seen call is needed while a window may still be read: for the keepalive, the margin,
    the last read and :data:`LATE_READ_MS` of the socket's up-time.
    """

    def __init__(self, keepalive_ms: int, seen_per_subscriber: int = PER_SUBSCRIBER) -> None:
        self.keepalive_ms = keepalive_ms
        self._down: dict[str, _Down] = {}
        hold_ms = keepalive_ms + MARGIN_MS + int(max(RETRY_AFTER) * 1000) + LATE_READ_MS
        self.seen = SeenEnds(hold_ms, seen_per_subscriber)

    def down(self, subscriber: str, wall_ms: int, code: int | None) -> None:
        """The socket closed (``code`` its close code, None when it never opened)."""
        if subscriber in self._down:
            return  # still down since earlier (a failed reconnect)
        abnormal = code is None or code in ABNORMAL
        reason = f"closed {code or 1006}, link lost" if abnormal else f"closed {code}"
        self._down[subscriber] = _Down(self.last_good(wall_ms, code), reason)
        self.seen.down(subscriber, wall_ms)

    def last_good(self, wall_ms: int, code: int | None) -> int:
        """When a socket that closed with ``code`` (None: it never opened) at ``wall_ms``
        was last known good: a silently dead link may have delivered nothing for a whole
        keepalive period before the drop was noticed."""
        return wall_ms - self.keepalive_ms if code is None or code in ABNORMAL else wall_ms

    def up(self, subscriber: str, wall_ms: int) -> Gap | None:
        """The socket is open again: the gap since it went down, or None (first connect)."""
        was = self._down.pop(subscriber, None)
        if was is None:
            return None
        self.seen.up(subscriber, wall_ms)
        return Gap(subscriber, min(was.since_ms, wall_ms), wall_ms, was.reason)

    def seen_end(self, subscriber: str, uuid: str, wall_ms: int) -> None:
        """A ``call.hangup`` with this uuid arrived on the socket at ``wall_ms``."""
        self.seen.add(subscriber, uuid, wall_ms)

    def was_seen(self, subscriber: str, uuid: str) -> bool:
        return self.seen.contains(subscriber, uuid)

    def forget(self, subscriber: str) -> None:
        """The subscriber is no longer held: drop what is remembered of it."""
        self._down.pop(subscriber, None)
        self.seen.forget(subscriber)

    def is_down(self, subscriber: str) -> bool:
        return subscriber in self._down


@dataclass(order=True)
class Job:
    """One gap's backfill: read its window at ``due`` (monotonic seconds)."""

    due: float
    order: int
    gap: Gap = field(compare=False)
    base: float = field(default=0.0, compare=False)
    """When the gap ended (monotonic): reads are due ``RETRY_AFTER`` seconds after it."""
    attempt: int = field(default=0, compare=False)
    published: set[str] = field(default_factory=set, compare=False)

    @property
    def window(self) -> tuple[int, int]:
        """``(from_ms, to_ms)`` to read: the gap with a margin on each side."""
        return self.gap.from_ms - MARGIN_MS, self.gap.to_ms + MARGIN_MS


class BackfillPlan:
    """The gaps still to be read, soonest first, each ``len(RETRY_AFTER)`` times at most."""

    def __init__(self, retry_after: tuple[float, ...] = RETRY_AFTER, max_jobs: int = MAX_JOBS):
        self.retry_after = retry_after
        self.max_jobs = max_jobs
        self._jobs: list[Job] = []
        self._order = itertools.count()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, gap: Gap, now: float) -> Job | None:
        """Schedule ``gap``'s first read. Past ``max_jobs`` the job due last is dropped
        (counted in :attr:`dropped`) and returned: a bound, reached only after a very long
        outage."""
        job = Job(now + self.retry_after[0], next(self._order), gap, base=now)
        heapq.heappush(self._jobs, job)
        if len(self._jobs) > self.max_jobs:
            last = max(self._jobs)
            self._jobs.remove(last)
            heapq.heapify(self._jobs)
            self.dropped += 1
            return last
        return None

    def next_due(self) -> float | None:
        return self._jobs[0].due if self._jobs else None

    def take(self, now: float) -> Job | None:
        """The job due by ``now`` (removed from the plan), or None."""
        if self._jobs and self._jobs[0].due <= now:
            return heapq.heappop(self._jobs)
        return None

    def done(self, job: Job, started: float) -> bool:
        """``job`` was read (successfully or not) at ``started``; schedule its next read.
        False when it has had all its reads (it is finished)."""
        job.attempt += 1
        if job.attempt >= len(self.retry_after):
            return False
        job.due = max(started, job.base + self.retry_after[job.attempt])
        job.order = next(self._order)
        heapq.heappush(self._jobs, job)
        return True

    def forget(self, subscriber: str) -> None:
        """Drop the jobs of a subscriber no longer held."""
        self._jobs = [j for j in self._jobs if j.gap.subscriber != subscriber]
        heapq.heapify(self._jobs)


def missed(job: Job, records: list[CallRecord], book: GapBook) -> list[CallRecord]:
    """The finished calls of ``job``'s window not seen to end on the socket and not yet
    published for this gap; marks them published."""
    low, high = job.window
    subscriber = job.gap.subscriber
    out: list[CallRecord] = []
    for record in records:
        if record.end_ms is None or not low <= record.end_ms <= high:
            continue
        if record.uuid in job.published or book.was_seen(subscriber, record.uuid):
            continue
        job.published.add(record.uuid)
        out.append(record)
    return out
