"""The click2call journal on the broker: a RabbitMQ stream every replica writes to and reads.

One :class:`JournalLink` serves one session of the command connection:

* :meth:`JournalLink.open` declares the stream ``<PHONET_CLICK2CALL_QUEUE>.journal``
  (``x-queue-type: stream``, kept a little longer than the journal's horizon), reads it
  from one horizon ago into the pure :class:`~producer.click2call.journal.Journal`, and
  returns once everything written before it opened has been read (a marker round trip);
* :meth:`claim`, :meth:`release` and :meth:`reply` write entries with publisher confirms;
  a reply is *one* publish to the caller's ``reply_to`` with the journal in its ``BCC``
  header, so the broker routes the reply and its journal copy together or not at all;
* :meth:`sync` returns once everything confirmed before the call has been read back: one
  marker serves every caller waiting at that moment.

Only entries written by the producer's own broker user are believed (RabbitMQ checks a
message's ``user_id`` against the publishing connection's user), so a sender who may write
to the default exchange cannot forge them. Everything is read with aiormq's raw consumer
and parsed defensively: a hostile message in the stream is skipped, never a crash.

Timeouts and cancellation: every write waits for its confirmation at most ``timeout``
seconds and raises :class:`JournalUnavailable` on a timeout, a nack or a closed channel;
:meth:`sync` likewise. Cancelling a call leaves the entry written or not (the stream's
order decides, see :meth:`claim`). :meth:`close` ends the reader and fails every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from producer.broker.topology import Queue, declare_queue
from producer.click2call.journal import HORIZON, Journal, Owner, Remembered
from producer.click2call.journal_wire import (
    CLAIM,
    KIND,
    NONCE,
    REPLY,
    dispatch_headers,
    entry_headers,
    read_entry,
    reply_headers,
)
from producer.core.errors import PhonetProducerError
from producer.telemetry.logs import BurstLog

log = logging.getLogger("producer.click2call")

TIMEOUT = 10.0
"""Seconds a journal write or a sync may take before the journal counts as unavailable."""
READ_PREFETCH = 1000


class JournalUnavailable(PhonetProducerError):
    """The journal could not be written or read back in time (no broker, no stream)."""


@dataclass(frozen=True)
class ReplyTo:
    """Where a reply goes: the caller's queue and correlation id (None: the journal only)."""

    queue: str | None
    correlation_id: str | None


class JournalLink:
    """The journal stream for one session of the command connection."""

    def __init__(
        self,
        stream: Queue,
        journal: Journal,
        me: Owner,
        *,
        user: str | None,
        on_change: Callable[[], None] = lambda: None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.stream, self.name = stream, stream.name
        self.journal = journal
        self.me = me
        self.user = user
        self.on_change = on_change
        self.timeout = timeout
        self._writer: AbstractChannel | None = None
        self._reader: aiormq.abc.AbstractChannel | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._waiting: list[asyncio.Future[None]] = []
        self._kick = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None
        self._forged = BurstLog(log, interval=300.0)

    # --- the session ------------------------------------------------------------------
    async def open(self, connection: AbstractConnection) -> None:
        """Declare the stream, read it from one horizon ago, and return once it is read up
        to now. Raises JournalUnavailable (no stream support, no permission, too slow)."""
        try:
            self._writer = await connection.channel(publisher_confirms=True)
            await self._declare(connection)
            reader = await connection.channel(publisher_confirms=False)
            raw = await reader.get_underlay_channel()
            await raw.basic_qos(prefetch_count=READ_PREFETCH)
            since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=HORIZON)
            await raw.basic_consume(
                self.name,
                self._on_entry,
                no_ack=False,
                arguments={"x-stream-offset": since},
            )
            self._reader = raw
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException, OSError) as exc:
            raise JournalUnavailable(
                f"the click2call journal (a RabbitMQ stream, {self.name}) cannot be used:"
                f" {type(exc).__name__}: {str(exc)[:160]} (RabbitMQ 3.9 or later, and the"
                " producer's user needs configure, write and read on it)"
            ) from None
        self._syncer = asyncio.create_task(self._sync_loop(), name="click2call:journal-sync")
        await self.sync()

    async def _declare(self, connection: AbstractConnection) -> None:
        channel, _ = await declare_queue(connection, self.stream)
        with contextlib.suppress(Exception):
            await channel.close()

    async def close(self) -> None:
        """End the reader and the sync loop; every waiter fails with JournalUnavailable."""
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.wait([self._syncer])
            self._syncer = None
        gone = JournalUnavailable("the command connection closed")
        for future in (*self._waiting, *self._markers.values()):
            if not future.done():
                future.set_exception(gone)
        self._waiting.clear()
        self._markers.clear()

    # --- writing ----------------------------------------------------------------------
    async def claim(
        self,
        identity: str,
        token: str,
        alive: Callable[[Owner], bool],
        transparent: frozenset[str] = frozenset(),
    ) -> bool:
        """Claim ``identity`` for this replica (the claim named ``token``); True when, read
        back, this claim leads (the first of a live replica, ``transparent`` claims not
        counted), else False (the caller releases it). Raises JournalUnavailable (the
        claim may or may not be written: the caller releases it once the link is back)."""
        await self._write(identity, "claim", {CLAIM: token})
        await self.sync()
        return self.journal.leads(identity, token, alive, transparent)

    async def release(self, identity: str, token: str) -> None:
        """The claim ``token`` is void: it answered and dialed nothing."""
        await self._write(identity, "release", {CLAIM: token})

    async def settled(self, identity: str, reply_id: str) -> None:
        """The message the reply ``reply_id`` answered is settled for sure."""
        await self._write(identity, "settled", {REPLY: reply_id})

    async def orphaned(self, identity: str, reply_id: str) -> None:
        """The message the reply ``reply_id`` answered could not be settled (it comes
        again)."""
        await self._write(identity, "orphaned", {REPLY: reply_id})

    async def reply(
        self,
        identity: str,
        to: ReplyTo,
        body: bytes,
        headers: dict[str, Any],
        remembered: Remembered,
        concludes: tuple[str, ...],
        reply_id: str,
        dispatch: str = "",
        settler: Owner | None = None,
    ) -> None:
        """Publish the reply to ``to`` and its journal copy in one publish (``reply_id``
        tells it apart from another reply to the same command; ``dispatch`` names the
        dispatch it answers and ``settler`` the replica that holds its message). Raises
        JournalUnavailable, and aio_pika's DeliveryError when the broker nacked it (a
        caller's queue that refuses it)."""
        entry = reply_headers(headers, identity, remembered, concludes, reply_id, dispatch, settler)
        routing_key = self.name
        if to.queue is not None:
            routing_key, entry["BCC"] = to.queue, [self.name]
        await self._publish(body, entry, routing_key, correlation_id=to.correlation_id)

    async def dispatch(
        self,
        identity: str,
        dispatch: str,
        token: str,
        subscriber: str,
        body: bytes,
        properties: dict[str, Any],
    ) -> None:
        """Hand a command to its subscriber's owner: the holder keeps the message (its
        claim ``token``); ``properties`` are the command's (text values, and
        ``timestamp`` in seconds or None)."""
        headers = dispatch_headers(identity, dispatch, token, subscriber, properties)
        await self._publish(body, headers, self.name)

    async def _write(self, identity: str, kind: str, extra: dict[str, Any] | None = None) -> None:
        await self._publish(b"", entry_headers(kind, identity, **(extra or {})), self.name)

    async def _publish(
        self,
        body: bytes,
        headers: dict[str, Any],
        routing_key: str,
        *,
        correlation_id: str | None = None,
    ) -> None:
        writer = self._writer
        if writer is None or writer.is_closed:
            raise JournalUnavailable("the command connection is down")
        headers = {
            **headers,
            "x-phonet-replica": self.me[0],
            "x-phonet-instance": self.me[1],
        }
        message = aio_pika.Message(
            body,
            headers=headers,
            correlation_id=correlation_id,
            content_type="application/json",
            user_id=self.user,
            app_id="phonet-producer",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            async with asyncio.timeout(self.timeout):
                await writer.default_exchange.publish(message, routing_key=routing_key)
        except aio_pika.exceptions.DeliveryError:
            raise
        except (
            TimeoutError,
            aiormq.exceptions.AMQPError,
            aio_pika.exceptions.AMQPException,
        ) as exc:
            raise JournalUnavailable(f"journal write failed: {type(exc).__name__}") from None

    # --- reading ----------------------------------------------------------------------
    async def sync(self) -> None:
        """Return once every entry confirmed before this call has been read. Raises
        JournalUnavailable after ``timeout`` seconds. Cancellation is safe."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._kick.set()
        try:
            async with asyncio.timeout(self.timeout):
                await future
        except TimeoutError:
            raise JournalUnavailable("the journal was not read back in time") from None

    async def _sync_loop(self) -> None:
        """One marker for every sync waiting when it is written (until cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch, self._waiting = self._waiting, []
            nonce = secrets.token_hex(8)
            seen = self._markers[nonce] = loop.create_future()
            try:
                await self._publish(b"", {KIND: "marker", NONCE: nonce}, self.name)
                async with asyncio.timeout(self.timeout):
                    await seen
            except (JournalUnavailable, TimeoutError, aio_pika.exceptions.DeliveryError) as exc:
                for future in batch:
                    if not future.done():
                        future.set_exception(JournalUnavailable(f"sync failed: {exc}"))
                continue
            finally:
                self._markers.pop(nonce, None)
            for future in batch:
                if not future.done():
                    future.set_result(None)

    async def _on_entry(self, message: DeliveredMessage) -> None:
        """One stream entry: into the journal (never raises), then acked (flow control)."""
        try:
            self._read(message)
        except Exception:  # a hostile entry must never stop the reader
            log.exception("unreadable click2call journal entry skipped")
        raw = self._reader
        tag = getattr(message.delivery, "delivery_tag", None)
        if raw is not None and isinstance(tag, int):
            with contextlib.suppress(Exception):
                await raw.basic_ack(tag)

    def _read(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        read = read_entry(
            self.journal,
            properties.headers,
            properties.user_id,
            bytes(message.body),
            user=self.user,
            now=asyncio.get_running_loop().time(),
        )
        if read.marker is not None:
            future = self._markers.get(read.marker)
            if future is not None and not future.done():
                future.set_result(None)
        elif read.forged:
            self._forged(logging.WARNING, "click2call journal: an entry from another user ignored")
        elif read.changed:
            self.on_change()
