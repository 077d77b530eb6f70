"""The publish adapter: drives the pure :class:`~producer.publish.pipeline.Pipeline` on a
channel, and turns what the broker says back into pipeline inputs and metrics.

One :class:`Publisher` lives as long as the producer; :meth:`Publisher.run` serves one broker
session (see :class:`producer.broker.link.BrokerLink`):

* the **pump** takes batches from the pipeline, encodes them (:mod:`producer.broker.wire`;
  an envelope that cannot be encoded is poisoned at once, never sent) and writes them
  through the fast path, or through ``basic_publish`` when aiormq's internals are not as
  expected (:mod:`producer.broker.fastpath`);
* the **watchdog** tells the pipeline when the broker blocks the connection (a resource
  alarm: confirmations stop, and that is not a dead link) and ends the session when
  publishes wait and no confirmation came for ``publish_timeout`` seconds otherwise.

Each confirmation carries the session it was sent in, so callbacks of a dead channel change
nothing. :meth:`Publisher.end_session` rewinds what was in flight; poisoned messages come
back from the pipeline and are republished under ``invalid.`` (events) or counted as
dropped (anything else), so one message the broker cannot take never blocks the others.

Returned messages (no queue took them) come from the fast path's hook as a message id and
are matched by the pipeline; each is counted in ``phonet_events_returned_total`` (never
as published), and one that matches nothing (a channel already given up) in
``phonet_events_returned_unmatched_total``. No body is ever logged.

A nack is retried by the pipeline after a pause of all sending (see
:mod:`producer.publish.pipeline`); click2call replies, which a caller's queue may refuse
for good, are not published here but over the command connection
(:mod:`producer.click2call.answers`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage

from producer.broker import wire
from producer.broker.fastpath import (
    Confirmation,
    FastPath,
    FastPathBroken,
    LibraryPath,
    Returned,
    blocked_probe,
)
from producer.broker.session import Session, SessionLost, refusal
from producer.broker.topology import Exchange, declare_exchange
from producer.core.envelope import Envelope, invalid_copy
from producer.core.events import InvalidReason
from producer.publish.pipeline import Pipeline
from producer.telemetry.logs import BurstLog, safe_error
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer.broker.link")

DROP_MESSAGES = {
    "buffer_full": "buffer full (PHONET_BUFFER_SIZE / PHONET_BUFFER_MAX_BYTES): dropping the"
    " oldest events",
    "spool_full": "spool full (PHONET_SPOOL_MAX_BYTES): dropping the oldest events",
}
OBSOLETE_KINDS = frozenset({"reply"})
"""Kinds an earlier version published here and may have left in the spool: click2call
replies, now published over the command connection with their journal copy. Sent from
here, one would bypass the journal, find no ``event`` label for its confirmation (a
KeyError in the callback), and, if its caller's queue refuses it, be retried forever with
every nack pausing the events."""


class Publisher:
    """Publishes the pipeline with confirms, one broker session at a time: the event
    link's first session hook (it declares the events exchange)."""

    name = "publisher"

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        publish_timeout: float,
        exchange: Exchange | None = None,
    ) -> None:
        self.exchange = exchange
        self.pipeline = pipeline
        self.metrics = metrics
        self.publish_timeout = publish_timeout
        self._session = 0
        self._lost: asyncio.Future[None] | None = None
        self._acked_at = self._nacked_at = 0.0  # loop times of the last ack and nack
        self._library: LibraryPath | None = None
        self._fast: FastPath | None = None
        self._fast_disabled = False
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._logs = {
            name: BurstLog(log) for name in ("drop", "nack", "poison", "fallback", "unmatched")
        }
        self._unroutable_told = False
        metrics.watch(pipeline)

    # --- feeding (synchronous: sockets and click2call call these) ---------------------
    def put(self, envelope: Envelope, *, recovered: bool = False) -> None:
        """Hold ``envelope`` until the broker confirms it (may drop the oldest: counted).
        ``recovered``: it was read back from the spool and keeps its sequence number; one of
        an :data:`OBSOLETE_KINDS` kind is dropped instead (counted, removed from the spool)."""
        if recovered and envelope.kind in OBSOLETE_KINDS:
            if self.pipeline.journal is not None:
                self.pipeline.journal.remove(envelope.seq)
            self.metrics.events_dropped.labels("obsolete").inc()
            # Expected once after an upgrade, and its caller stopped waiting long ago.
            self._logs["drop"](
                logging.WARNING,
                "a click2call reply left in the spool by an earlier version was dropped"
                " (replies are now published over the command connection)",
            )
            return
        for dropped in self.pipeline.put(envelope, journaled=recovered):
            self._dropped(dropped, "buffer_full")
        if self.pipeline:
            self._wake.set()
            self._empty.clear()

    def drop_range(self, first: int, last: int, reason: str) -> None:
        """The spool evicted ``first..last`` from disk: drop them here too (counted)."""
        for dropped in self.pipeline.drop_range(first, last):
            self._dropped(dropped, reason)
        self._check_empty()

    async def wait_empty(self) -> None:
        """Wait until everything held is confirmed or dropped (callers bound it with a
        timeout). Cancellation changes nothing."""
        await self._empty.wait()

    # --- one session ------------------------------------------------------------------
    async def open(self, session: Session) -> Awaitable[None]:
        """Session hook: a confirm channel whose close ends the session, the events
        exchange declared on it; the work is :meth:`run`."""
        channel = await session.connection.channel(publisher_confirms=True, on_return_raises=False)
        channel.close_callbacks.add(session.on_close)
        if self.exchange is not None:
            await declare_exchange(channel, self.exchange)
        raw = await channel.get_underlay_channel()
        assert isinstance(raw, aiormq.Channel)
        return self.run(raw, session.lost, blocked_probe(session.connection))

    async def closed(self, *, refused: bool) -> None:
        """Session hook: the session ended; see :meth:`end_session`."""
        await self.end_session(refused=refused)

    async def run(
        self,
        channel: aiormq.Channel,
        lost: asyncio.Future[None],
        blocked: Callable[[], bool] | None = None,
    ) -> None:
        """Publish on ``channel`` until ``lost`` is done; raises :class:`SessionLost` when
        the watchdog finds the link stalled. Cancellation stops at once; what was sent and
        not confirmed is rewound by :meth:`end_session`."""
        loop = asyncio.get_running_loop()
        self._session = self.pipeline.begin_session(loop.time())
        self._lost = lost
        self._acked_at, self._nacked_at = loop.time(), 0.0
        on_return = partial(self._returned, self._session)
        fast = None if self._fast_disabled else FastPath.attach(channel, on_return)
        self._fast = fast
        if fast is None:
            self._library = LibraryPath(channel)
            self._fallback("aiormq internals changed: publishing one message at a time (slower)")
        pump = loop.create_task(self._pump(self._session, channel, fast), name="publish:pump")
        watch = loop.create_task(self._watch(lost, blocked), name="publish:watch")
        try:
            done, _ = await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a SessionLost or a bug surfaces here
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.wait((pump, watch))

    async def end_session(self, *, refused: bool) -> int:
        """Forget the session: cancel library publishes, rewind everything unconfirmed so
        the next session sends it again in order, republish or count what the broker
        refused. Returns how many will be resent."""
        self._lost = None
        if self._library is not None:
            await self._library.close()
            self._library = None
        if self._fast is not None and self._fast.broken:
            self._fast_disabled = True  # its return hook met internals it did not expect
        self._fast = None
        now = asyncio.get_running_loop().time()
        ended = self.pipeline.end_session(self._session, refused=refused, now=now)
        if ended.rewound:
            self.metrics.publish_retries.inc(ended.rewound)
        for envelope in ended.poisoned:
            self._poisoned(envelope, InvalidReason.REFUSED, "the broker refused it")
        self.metrics.amqp_blocked.set(0)
        self._check_empty()
        return ended.rewound

    async def _pump(self, session: int, channel: aiormq.Channel, fast: FastPath | None) -> None:
        loop = asyncio.get_running_loop()
        pipeline = self.pipeline
        path: FastPath | LibraryPath
        if fast is not None:
            path = fast
        else:
            assert self._library is not None  # run() made it
            path = self._library
        on_result = partial(self._result, session)
        while True:
            now = loop.time()
            batch = pipeline.take(now)
            if not batch:
                self._wake.clear()
                ready_at = pipeline.ready_at(now)
                try:
                    async with asyncio.timeout(None if ready_at is None else ready_at - now):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            encoded: list[tuple[Envelope, bytes]] = []
            for envelope in batch:
                try:
                    encoded.append((envelope, wire.publish(envelope, path.number, path.frame_max)))
                except wire.EncodeError as exc:
                    poisoned = pipeline.unencodable(session, envelope.seq)
                    if poisoned is not None:
                        self._poisoned(poisoned, InvalidReason.UNENCODABLE, str(exc))
            if not encoded:
                continue
            try:
                await path.publish(encoded, on_result)
            except aiormq.exceptions.ChannelInvalidStateError:
                raise SessionLost("channel closed") from None
            except FastPathBroken as exc:
                self._fast_disabled = True
                self._fallback(
                    "aiormq fast path failed (%s): publishing one message at a time", exc
                )
                path = self._library = LibraryPath(channel)
                await path.publish(encoded, on_result)
            await asyncio.sleep(0)  # let confirmations arrive and frames be read

    async def _watch(self, lost: asyncio.Future[None], blocked: Callable[[], bool] | None) -> None:
        loop = asyncio.get_running_loop()
        pipeline, timeout = self.pipeline, self.publish_timeout
        tick = min(1.0, timeout / 4)
        while not lost.done():
            await asyncio.sleep(tick)
            now = loop.time()
            if blocked is not None and blocked() != pipeline.blocked:
                pipeline.set_blocked(not pipeline.blocked, now)
                self.metrics.amqp_blocked.set(int(pipeline.blocked))
                if pipeline.blocked:
                    log.warning(
                        "the broker blocked publishing (a memory or disk alarm): waiting for"
                        " it, not reconnecting"
                    )
                else:
                    log.info("the broker unblocked publishing")
            if pipeline.stalled(now, timeout):
                raise SessionLost(f"no publisher confirm for {timeout:.0f}s")
            if self._nacked_at > self._acked_at and now - self._acked_at > timeout:
                # Seen with a 3-node cluster after one node stopped: one of the others
                # nacked every publish for most of a minute while the third took them.
                raise SessionLost(
                    f"the broker nacked every publish for {timeout:.0f}s: trying another node",
                    other_node=True,
                )

    def _result(self, session: int, envelope: Envelope, confirmation: Confirmation) -> None:
        if confirmation.cancelled():
            return  # the session ended; end_session() rewinds it
        exc = confirmation.exception()
        now = asyncio.get_running_loop().time()
        if exc is None:
            # None also when the hook saw it returned already: the ack that follows.
            self._acked_at = now
            if self.pipeline.confirmed(session, envelope.seq, now) is not None:
                if isinstance(confirmation.result(), DeliveredMessage):
                    # Only without the hook: aiormq matched the return itself.
                    self._count_returned(envelope)
                else:
                    self.metrics.published[envelope.label].inc()
                    self.metrics.publish_latency.observe(now - envelope.received)
                self._check_empty()
        elif isinstance(exc, aiormq.exceptions.DeliveryError):
            self._nacked_at = now
            if self.pipeline.nacked(session, envelope.seq, now):
                self.metrics.publish_retries.inc()
                self._logs["nack"](logging.WARNING, "broker nacked a publish; retrying")
        elif session == self._session and self._lost is not None and not self._lost.done():
            # Channel or connection trouble: end the session; end_session() rewinds.
            self._lost.set_exception(
                SessionLost(f"publish failed: {safe_error(exc)}", refused=refusal(exc))
            )
        self._wake.set()

    def _returned(self, session: int, returned: Returned) -> None:
        """The fast path's hook read a ``basic.return``: the oldest envelope in flight with
        its message id is done, counted as returned; one that matches nothing is counted
        apart (and said once per burst), without its body either way."""
        now = asyncio.get_running_loop().time()
        envelope = None
        if returned.message_id is not None:
            envelope = self.pipeline.returned(session, returned.message_id, now)
        if envelope is None:
            self.metrics.returns_unmatched.inc()
            self._logs["unmatched"](
                logging.INFO,
                "the broker returned a message no publish awaits (its channel was given up,"
                " or it is not ours): counted in phonet_events_returned_unmatched_total",
                extra={
                    "message_id": (returned.message_id or "")[:64],
                    "routing_key": returned.routing_key[:100],
                    "reply_code": returned.reply_code,
                },
            )
            return
        self._count_returned(envelope)
        self._check_empty()
        self._wake.set()

    # --- outcomes ---------------------------------------------------------------------
    def _count_returned(self, envelope: Envelope) -> None:
        self.metrics.events_returned.labels(envelope.label).inc()
        self._warn_unroutable(envelope)

    def _dropped(self, envelope: Envelope, reason: str) -> None:
        self.metrics.events_dropped.labels(reason).inc()
        message = DROP_MESSAGES.get(reason, f"dropping messages ({reason})")
        self._logs["drop"](logging.ERROR, message)

    def _poisoned(self, envelope: Envelope, reason: InvalidReason, detail: str) -> None:
        """A message that cannot be published as it is: its ``invalid.`` copy takes its
        place (events), or it is counted as dropped (anything else)."""
        copy = invalid_copy(envelope, reason, detail)
        extra: dict[str, Any] = {"routing_key": envelope.routing_key[:100], "detail": detail}
        if copy is None:
            self.metrics.events_dropped.labels(reason.value).inc()
            self._logs["poison"](
                logging.ERROR,
                "a %s cannot be published (%s): dropped",
                envelope.kind,
                reason.value,
                extra=extra,
            )
        else:
            self.metrics.events_invalid.labels(reason.value).inc()
            self._logs["poison"](
                logging.ERROR,
                "an event cannot be published (%s): published as %s instead",
                reason.value,
                copy.routing_key,
                extra=extra,
            )
            self.put(copy)
        self._check_empty()

    def _fallback(self, message: str, *args: object) -> None:
        self.metrics.fallbacks["aiormq_publish"].inc()
        self._logs["fallback"](logging.WARNING, message, *args)

    def _check_empty(self) -> None:
        if not self.pipeline:
            self._empty.set()

    def _warn_unroutable(self, envelope: Envelope) -> None:
        """Say once, plainly, that nobody is bound yet (normal at a first start); the
        rest is in phonet_events_returned_total."""
        if self._unroutable_told:
            log.debug("returned as unroutable: %s", envelope.routing_key)
            return
        self._unroutable_told = True
        log.info(
            "no queue is bound for %s on exchange %s, so RabbitMQ returned it: such messages"
            " are counted in phonet_events_returned_total, not kept. Bind a queue to the"
            " exchange (for example to '#' for everything, or 'call.*.*' for call events)"
            " before the events you need arrive",
            envelope.routing_key,
            envelope.exchange or "(default)",
        )
