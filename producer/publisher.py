"""The confirm pipeline: publish the outbox on one channel, in order, many in flight.

:class:`Publisher` runs for one broker session (see :class:`producer.amqp.BrokerLink`):

* :meth:`Publisher.pump` takes envelopes from the :class:`~producer.outbox.Outbox` in order
  and publishes them with up to ``window`` confirmations outstanding. Each batch is encoded
  in one pass (:mod:`producer.wire`) and handed to aiormq's connection writer as one frame
  group, with one confirmation future per message registered in aiormq's own table, so
  acks, nacks, returns and channel closure resolve them as for ``basic_publish`` (profiling
  showed ~45% of the producer's CPU in the per-message library path; see
  ``tests/bench/RESULTS.md``). If aiormq's internals ever change, it falls back to one
  ``basic_publish`` task per message.
* :meth:`Publisher.watchdog` ends the session when publishes wait and no confirmation came
  for ``publish_timeout`` seconds (a stalled link that TCP does not notice).

An ack confirms; a return (no queue bound for the key) is counted and not retried, since it
would be returned again; a nack is retried, with backoff (a full queue with
``overflow=reject-publish`` would otherwise be hammered). What was in flight when the
session ends is rewound by :meth:`Publisher.end_session` and sent again on the next one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec

from producer import wire
from producer.envelope import APP_ID, CONTENT_TYPE, Envelope
from producer.logs import BurstLog, safe_error
from producer.metrics import Metrics
from producer.outbox import Outbox

log = logging.getLogger("producer.amqp")


class SessionLost(Exception):
    """The connection or a channel closed, or confirmations stalled."""


def fast_path_available(channel: object) -> bool:
    """Whether aiormq still exposes what :meth:`Publisher._send_batch` relies on."""
    try:
        c: Any = channel
        return (
            isinstance(c.delivery_tag, int)
            and isinstance(c.confirmations, dict)
            and isinstance(c.message_id_delivery_tag, dict)
            and isinstance(c.write_queue, asyncio.Queue)
            and isinstance(c.connection.connection_tune.frame_max, int)
            and callable(c.create_future)
        )
    except AttributeError:
        return False


def properties(envelope: Envelope) -> spec.Basic.Properties:
    """AMQP properties for the library path (the fast path encodes the same in wire.py)."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        timestamp=datetime.fromtimestamp(envelope.timestamp, tz=UTC),
        app_id=APP_ID,
        message_type=wire.fit_shortstr(envelope.type),
        headers=envelope.headers,
    )


class Publisher:
    """Publishes an outbox with confirms. One per broker link; one session at a time."""

    def __init__(
        self, outbox: Outbox, metrics: Metrics, *, window: int, publish_timeout: float
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.window = window
        self.publish_timeout = publish_timeout
        self._lost: asyncio.Future[None] | None = None
        self._slot_freed = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._last_progress = 0.0
        # After a nack, pause before the next batch: doubling per round, reset by an ack.
        self._nack_delay = 0.0
        self._paused_until = 0.0
        self._nack_log = BurstLog(log)
        self._unroutable_warned: set[str] = set()

    async def pump(self, channel: aiormq.Channel, lost: asyncio.Future[None]) -> None:
        """Publish until ``lost`` is done (the session ended). Cancellation stops at once;
        what was sent and not confirmed is left for :meth:`end_session`."""
        outbox, window = self.outbox, self.window
        loop = asyncio.get_running_loop()
        self._lost = lost
        self._last_progress = loop.time()
        fast = fast_path_available(channel)
        send = self._send_batch if fast else self._send_each
        if not fast:
            log.warning("aiormq internals changed: publishing one message at a time (slower)")
        while not lost.done():
            await outbox.wait_ready()
            pause = self._paused_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            free = window - outbox.inflight
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            if outbox.inflight == 0:
                self._last_progress = loop.time()
            await send(channel, outbox.take(free))
            # Let confirms arrive and frames be read before taking more.
            await asyncio.sleep(0)

    async def watchdog(self, lost: asyncio.Future[None]) -> None:
        """End the session when publishes wait and no confirm came for publish_timeout."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.publish_timeout / 4)
        while not lost.done():
            await asyncio.sleep(tick)
            stalled = loop.time() - self._last_progress > self.publish_timeout
            if self.outbox.inflight and stalled and not lost.done():
                lost.set_exception(
                    SessionLost(f"no publisher confirm for {self.publish_timeout:.0f}s")
                )

    async def end_session(self) -> int:
        """Forget the session: cancel library-path publishes, rewind everything unconfirmed
        so the next session sends it again in order. Returns how many will be resent."""
        self._lost = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._tasks.clear()
        resent = self.outbox.rewind()
        if resent:
            self.metrics.publish_retries.inc(resent)
        return resent

    async def _send_batch(self, channel: aiormq.Channel, batch: list[Envelope]) -> None:
        number = channel.number
        frame_max = channel.connection.connection_tune.frame_max
        frames = []
        async with channel.lock:  # delivery tags and frame order must match
            for envelope in batch:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[envelope.message_id] = tag
                confirmation.add_done_callback(partial(self._confirmed, envelope, channel, tag))
                frames.append(wire.publish(envelope, number, frame_max))
            await channel.write_queue.put(
                ChannelFrame(payload=b"".join(frames), should_close=False)
            )

    async def _send_each(self, channel: aiormq.Channel, batch: list[Envelope]) -> None:
        loop = asyncio.get_running_loop()
        for envelope in batch:
            task = loop.create_task(
                channel.basic_publish(
                    envelope.body,
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    properties=properties(envelope),
                    mandatory=True,
                    wait=False,
                )
            )
            self._tasks.add(task)
            task.add_done_callback(partial(self._confirmed, envelope, None, 0))

    def _confirmed(
        self,
        envelope: Envelope,
        channel: aiormq.Channel | None,
        tag: int,
        confirmation: asyncio.Future[Any],
    ) -> None:
        if channel is not None:
            if channel.message_id_delivery_tag.get(envelope.message_id) == tag:
                del channel.message_id_delivery_tag[envelope.message_id]
        else:
            self._tasks.discard(confirmation)
        if confirmation.cancelled():
            return  # the session ended; end_session() rewinds it
        exc = confirmation.exception()
        loop = asyncio.get_running_loop()
        if exc is None:
            self._last_progress = loop.time()
            self._nack_delay = 0.0
            if self.outbox.confirm(envelope):
                if isinstance(confirmation.result(), DeliveredMessage):
                    self.metrics.events_returned.labels(envelope.label).inc()
                    self._warn_unroutable(envelope)
                else:
                    self.metrics.published[envelope.label].inc()
                    self.metrics.publish_latency.observe(loop.time() - envelope.received)
        elif isinstance(exc, aiormq.exceptions.DeliveryError):
            self._last_progress = loop.time()
            self.metrics.publish_retries.inc()
            self.outbox.retry(envelope)
            if loop.time() >= self._paused_until:  # one step per round, not per message
                self._nack_delay = min(5.0, max(0.05, self._nack_delay * 2))
                self._paused_until = loop.time() + self._nack_delay
            self._nack_log(
                logging.WARNING, "broker nacked a publish; retrying in %.2fs", self._nack_delay
            )
        elif self._lost is not None and not self._lost.done():
            # Channel or connection trouble: end the session; end_session() rewinds it.
            self._lost.set_exception(SessionLost(f"publish failed: {safe_error(exc)}"))
        self._slot_freed.set()

    def _warn_unroutable(self, envelope: Envelope) -> None:
        """Warn once per routing-key prefix: nobody is bound to receive these messages."""
        prefix = envelope.routing_key.rsplit(".", 1)[0]
        if prefix not in self._unroutable_warned and len(self._unroutable_warned) < 100:
            self._unroutable_warned.add(prefix)
            log.warning(
                "broker returned a message as unroutable: no queue is bound for %s",
                envelope.routing_key,
                extra={"exchange": envelope.exchange},
            )
