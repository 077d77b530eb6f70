"""The REST side of the producer: subscribers that follow the company, gaps made visible,
missed calls filled in. The adapter between the REST client, the socket pool and the
publisher; the decisions are pure (:mod:`.records`, :mod:`.gaps`).

Three loops, each started only when configured, each stopped by :meth:`RestService.close`,
each a sequence of rounds run by :func:`~producer.subscribers.supervise.supervised` (a round that
fails on a bug is logged, counted and retried after a backoff: the loop never dies):

* **discovery** (``PHONET_SUBSCRIBERS=auto``): every ``PHONET_DISCOVERY_INTERVAL`` seconds
  (sooner, with backoff, until the first list arrives) list the employees and make the
  pool hold exactly them, through :class:`~producer.subscribers.records.Directory`;
* **subscribers file** (``PHONET_SUBSCRIBERS_FILE``): looked at every 2 s, applied when its
  content changes and parses;
* **backfill** (``PHONET_BACKFILL=on``): the gaps' windows and the reconnected sockets'
  calls in progress, read in batches (one company-wide read serves every gap it covers).

A failing or odd REST answer never touches the sockets already held: the last good list
stays, the failure is counted and logged once per burst, and ``/readyz`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from producer.core.clock import now as _now
from producer.core.envelope import rest_envelope
from producer.core.errors import RestUnavailable
from producer.core.events import stable_id
from producer.core.routing import made_key
from producer.core.rules import read_subscribers_file
from producer.phonet.keys import ApiKey
from producer.publish.publisher import Publisher
from producer.subscribers.client import RestClient
from producer.subscribers.gaps import BackfillPlan, Gap, GapBook, Job, missed
from producer.subscribers.records import (
    MAX_PAGES,
    PAGE_LIMIT,
    BadAnswer,
    CallRecord,
    Directory,
    call_records,
    calls_of,
    employees,
)
from producer.subscribers.settings import SubscriberSettings
from producer.subscribers.supervise import supervised
from producer.telemetry.logs import BurstLog
from producer.telemetry.subscribers import RestMetrics

log = logging.getLogger("producer.subscribers")

FILE_CHECK_INTERVAL = 2.0
LOOK_AGAIN_EVERY = 10.0
"""Seconds between employee lists asked for by replicas that disagree, at least."""
FIRST_CONNECT_GRACE_MS = 10_000
"""A socket that takes longer than this to open for the first time leaves a gap too."""
BATCH = 1000
"""Gaps read together at most (one window covering them all)."""

ApplySubscribers = Callable[[tuple[str, ...]], Awaitable[None]]


class RestService:
    """Discovery, the subscribers file, gaps and backfill (see the module docstring)."""

    def __init__(
        self,
        settings: SubscriberSettings,
        publisher: Publisher,
        metrics: RestMetrics,
        key: ApiKey,
        apply: ApplySubscribers,
        *,
        domain: str,
        exchange: str,
        gap_after: float,
    ) -> None:
        """``domain``: the PBX's (the REST API's default host and its login);
        ``exchange``: where gaps and backfilled calls are published; ``gap_after``: seconds
        of silence on a socket that its drop can hide (a keepalive round)."""
        s = self.settings = settings
        self.exchange = exchange
        self.publisher = publisher
        self.apply = apply
        self.metrics = metrics
        self.client = RestClient(
            s.rest_base_url(domain), domain, key, metrics, timeout=s.phonet_rest_timeout
        )
        self.book = GapBook(int(gap_after * 1000))
        self.plan = BackfillPlan()
        self.directory = Directory()
        self.backfill = s.phonet_backfill == "on"
        self.discovery_error: str | None = None
        self.file_error: str | None = None
        self._ext_of: dict[str, str] = {}  # e-mail subscriber → extension (discovery)
        self._first: dict[str, int] = {}  # subscriber → when added, until its first connect
        self._active: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._logs = {k: BurstLog(log, interval=60.0) for k in ("discovery", "file", "backfill")}
        self._discovery_retry = 1.0
        self._look = asyncio.Event()
        self._looked = 0.0
        self._file_last: tuple[str, ...] | None = None

    # --- from the app -----------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        if s.discovery:
            self._loop("discovery", self._discover)
        if s.phonet_subscribers_file is not None:
            path = s.phonet_subscribers_file
            self._file_last = s.subscribers  # what the app applied (read once, at start)
            self._loop("file", lambda: self._watch_file(path))
        self._loop("backfill", self._fill)

    def _loop(self, name: str, one_round: Callable[[], Awaitable[None]]) -> None:
        failures = self.metrics.loop_failures[name]
        task = asyncio.create_task(supervised(name, one_round, failures), name=f"rest:{name}")
        self._tasks.append(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()

    def added(self, subscriber: str) -> None:
        self._first[subscriber] = _wall_ms()

    def removed(self, subscriber: str) -> None:
        self._first.pop(subscriber, None)
        self._active.discard(subscriber)
        self.book.forget(subscriber)
        self.plan.forget(subscriber)

    def socket_state(
        self, subscriber: str, up: bool, code: int | None, publishing: bool = True
    ) -> None:
        """A socket opened or closed: note the gap; when back, publish it and plan its fill
        (only when this replica publishes the subscriber: a standby's gap is none)."""
        now = _wall_ms()
        if not up:
            self.book.down(subscriber, now, code)
            return
        added = self._first.pop(subscriber, None)
        gap = self.book.up(subscriber, now)
        if gap is None and added is not None and now - added > FIRST_CONNECT_GRACE_MS:
            gap = Gap(subscriber, added, now, "not connected since start")
        if gap is not None and publishing:
            self._gap(gap)

    def seen_end(self, subscriber: str, uuid: str) -> None:
        self.book.seen_end(subscriber, uuid, _wall_ms())

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: what discovery and backfill are doing (no secret, bounded)."""
        return {
            "discovery": self.settings.discovery,
            "discovery_error": self.discovery_error,
            "discovery_held": self.directory.held,
            "subscribers_file_error": self.file_error,
            "backfill": self.backfill,
            "backfill_pending": len(self.plan),
        }

    # --- gaps -------------------------------------------------------------------------
    def _gap(self, gap: Gap) -> None:
        self.metrics.gaps.inc()
        key = made_key("gap", gap.subscriber)
        if key is not None:
            self._publish(
                key,
                "gap",
                gap.body(),
                {"subscriber": gap.subscriber, "reason": gap.reason[:100]},
                stable_id("gap", gap.subscriber, str(gap.from_ms), str(gap.to_ms)),
            )
        if self.backfill:
            # What the socket saw around the gap is kept until the job's last read.
            wall = _wall_ms()
            self.book.seen.pin(gap.subscriber, wall)
            dropped = self.plan.add(gap, _now())
            if dropped is not None:
                self.book.seen.unpin(dropped.gap.subscriber, wall)
            self._active.add(gap.subscriber)
            self._wake.set()

    def _publish(
        self, key: str, kind: str, body: bytes, headers: dict[str, Any], message_id: str
    ) -> None:
        self.publisher.put(
            rest_envelope(
                self.exchange,
                key,
                kind,
                body,
                headers,
                message_id=message_id,
                received=_now(),
                wall_ms=_wall_ms(),
            )
        )

    # --- backfill ---------------------------------------------------------------------
    async def _fill(self) -> None:
        """One round: read calls in progress for reconnected sockets and the due gap
        windows (batched); when nothing is due, sleep until something is (or a gap wakes
        it). Cancellation stops it; the jobs it held are rescheduled."""
        if self._active:
            await self._fill_active()
        jobs: list[Job] = []
        while len(jobs) < BATCH and (job := self.plan.take(_now())) is not None:
            jobs.append(job)
        if jobs:
            await self._fill_history(jobs)
            return
        due = self.plan.next_due()
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if due is None else max(0.0, due - _now())):
                await self._wake.wait()

    async def _fill_active(self) -> None:
        subscribers, self._active = self._active, set()
        try:
            records, _ = call_records(
                await self.client.get("active", "rest/calls/active/v3"), "active"
            )
        except (RestUnavailable, BadAnswer) as exc:
            self._failed(exc, "calls in progress")
            return
        for subscriber in subscribers:
            key = made_key("active.call", subscriber)
            for record in (
                calls_of(records, subscriber, self._ext_of.get(subscriber)) if key else ()
            ):
                self.metrics.filled["active"].inc()
                self._publish(
                    key or "",
                    "active",
                    _body(record),
                    {"subscriber": subscriber, "uuid": record.uuid, "source": "rest"},
                    stable_id("active", subscriber, record.uuid, str(_wall_ms())),
                )

    async def _fill_history(self, jobs: list[Job]) -> None:
        started = _now()
        low = min(job.window[0] for job in jobs)
        high = max(job.window[1] for job in jobs)
        try:
            records = await self._history(low, high)
        except (RestUnavailable, BadAnswer) as exc:
            self._failed(exc, "call history")
        else:
            for job in jobs:
                key = made_key("history.call", job.gap.subscriber)
                sub = job.gap.subscriber
                found = calls_of(records, sub, self._ext_of.get(sub))
                for record in missed(job, found, self.book) if key else ():
                    self.metrics.filled["history"].inc()
                    self._publish(
                        key or "",
                        "history",
                        _body(record),
                        {"subscriber": job.gap.subscriber, "uuid": record.uuid, "source": "rest"},
                        stable_id("history", job.gap.subscriber, record.uuid),
                    )
        finally:
            # Also after a bug or a cancellation: each job keeps its bounded next reads.
            for job in jobs:
                if not self.plan.done(job, started):
                    self.book.seen.unpin(job.gap.subscriber, _wall_ms())

    async def _history(self, low: int, high: int) -> list[CallRecord]:
        """Every finished call in ``[low, high]`` ms, paged (pages may shift while calls
        arrive: the pages overlap nothing, duplicates are removed by uuid later)."""
        records: list[CallRecord] = []
        for page in range(MAX_PAGES):
            query = {
                "timeFrom": low,
                "timeTo": high,
                "limit": PAGE_LIMIT,
                "offset": page * PAGE_LIMIT,
            }
            data = await self.client.get("history", "rest/calls/company.api", query)
            rows, _ = call_records(data, "history")
            records.extend(rows)
            if len(data if isinstance(data, list) else rows) < PAGE_LIMIT:
                return records
        log.warning("call history window larger than %d pages; read the first", MAX_PAGES)
        return records

    def _failed(self, exc: Exception, what: str) -> None:
        self.metrics.failures.inc()
        self._logs["backfill"](logging.WARNING, "cannot read %s: %s", what, str(exc)[:200])

    # --- the subscriber list ----------------------------------------------------------
    async def _discover(self) -> None:
        """One round: list the employees and apply the list (see Directory), then wait
        for the next poll (sooner, doubling, after a failure). Cancellation stops it."""
        s = self.settings
        try:
            data = await self.client.get("users", "rest/users")
            found = employees(data, s.phonet_discovery_field, s.phonet_subscribers_exclude)
        except (RestUnavailable, BadAnswer) as exc:
            self.discovery_error = str(exc)[:200]
            self._logs["discovery"](
                logging.WARNING,
                "cannot list employees (%s); keeping the current %d subscribers",
                self.discovery_error,
                len(self.directory.current),
            )
            retry = self._discovery_retry
            self._discovery_retry = min(retry * 2, s.phonet_discovery_interval)
            await asyncio.sleep(min(retry, s.phonet_discovery_interval))
            return
        self._discovery_retry, self.discovery_error = 1.0, None
        self._ext_of = found.ext_of
        before = self.directory.current
        wanted = self.directory.offer(found.subscribers)
        if self.directory.held:
            self._logs["discovery"](logging.WARNING, "%s", self.directory.held)
        if wanted is not None:
            try:
                await self.apply(wanted)
            except BaseException:
                self.directory.current = before  # not applied: offered again next round
                raise
            log.info(
                "subscribers discovered",
                extra={
                    "subscribers": len(wanted),
                    "added": len(set(wanted) - set(before)),
                    "removed": len(set(before) - set(wanted)),
                    "skipped": found.skipped,
                    "excluded": found.excluded,
                },
            )
        self._look.clear()
        asked = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(s.phonet_discovery_interval):
                await self._look.wait()
                asked = True
        if asked:  # by another replica that lists other subscribers: at most so often
            await asyncio.sleep(max(0.0, self._looked + LOOK_AGAIN_EVERY - _now()))
            self._looked = _now()

    def look_again(self) -> None:
        """Another replica has another subscriber list: list the employees again soon (at
        most every ``LOOK_AGAIN_EVERY`` seconds), so the replicas agree quickly. The
        subscribers file is looked at every 2 s anyway."""
        self._look.set()

    async def _watch_file(self, path: Path) -> None:
        """One round: wait ``FILE_CHECK_INTERVAL`` seconds, then apply the file's
        subscribers if its content changed. Cancellation stops it."""
        await asyncio.sleep(FILE_CHECK_INTERVAL)
        try:
            wanted = read_subscribers_file(path)
        except ValueError as exc:
            self.file_error = str(exc)[:200]
            self._logs["file"](
                logging.WARNING,
                "PHONET_SUBSCRIBERS_FILE: %s; keeping the current subscribers",
                self.file_error,
            )
            return
        self.file_error = None
        if wanted != self._file_last:
            await self.apply(wanted)
            log.info("subscribers file changed", extra={"subscribers": len(wanted)})
            self._file_last = wanted


def _body(record: CallRecord) -> bytes:
    return orjson.dumps(record.raw)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
