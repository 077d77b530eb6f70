"""Place a call through phonet-producer: an async RPC client over direct reply-to.

    async with await aio_pika.connect(url) as connection:
        client = Click2Call(connection)
        placed = await client.call("001", "380991234567", timeout=15)

:meth:`Click2Call.call` publishes the command to the click2call queue with ``reply_to``
``amq.rabbitmq.reply-to`` (RabbitMQ's direct reply-to: no queue to declare or clean up), a
``timestamp`` (staleness is judged from when you sent it) and a ``message_id`` that is also
its ``correlation_id``: the producer takes a command with the same ``message_id``,
``correlation_id`` and body for the same command, so a retry with the same ``message_id``
(and the same subscriber, number and ``command_id``) is answered again, **never dialed
twice**. It returns the
:class:`~phonet_client.messages.Click2CallOutcome` of a placed call, or raises the
:class:`Click2CallError` subclass of the documented ``result``.

Timeout: :class:`NoReply` when no reply came in ``timeout`` seconds — the call may still
have been placed; retry with the same ``message_id`` to learn its fate without dialing it
again. Cancellation stops waiting; the command stays sent.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid as uuidlib
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from phonet_client.messages import Click2CallOutcome, outcome
from phonet_client.results import Result

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEFAULT_QUEUE = "phonet.click2call"


class Click2CallError(Exception):
    """The command was answered with an error. ``outcome`` is the whole answer."""

    result: str = Result.UNKNOWN
    dialed: bool | None = False
    """Whether the PBX may have dialed: False (refused before), True, or None (maybe)."""

    def __init__(self, outcome: Click2CallOutcome | None, message: str | None = None) -> None:
        super().__init__(message or (outcome.message if outcome else None) or str(self.result))
        self.outcome = outcome


class PbxRefused(Click2CallError):
    """The PBX refused the call (its own text in ``str(exc)``)."""

    result, dialed = Result.PBX_ERROR, True


class InvalidCommand(Click2CallError):
    result = Result.INVALID


class UnknownSubscriber(Click2CallError):
    result = Result.UNKNOWN_SUBSCRIBER


class Forbidden(Click2CallError):
    """Your RabbitMQ user is not in ``PHONET_CLICK2CALL_ALLOWED_USERS``."""

    result = Result.FORBIDDEN


class NumberNotAllowed(Click2CallError):
    result = Result.NUMBER_NOT_ALLOWED


class RateLimited(Click2CallError):
    result = Result.RATE_LIMITED


class NotConnected(Click2CallError):
    """The subscriber's socket was down (or dropped before the PBX answered: then it may
    have been dialed, ``dialed`` None)."""

    result, dialed = Result.NOT_CONNECTED, None


class Expired(Click2CallError):
    """Older than ``PHONET_CLICK2CALL_MAX_AGE`` when its turn came: not dialed."""

    result = Result.EXPIRED


class PbxTimeout(Click2CallError):
    """The PBX did not answer in ``PHONET_CLICK2CALL_TIMEOUT``: it may have dialed."""

    result, dialed = Result.TIMEOUT, None


class OutcomeUnknown(Click2CallError):
    """A replica that stopped had claimed the command and never answered: maybe dialed."""

    result, dialed = Result.UNKNOWN, None


class NoQueue(Click2CallError, LookupError):
    """The broker has no such queue (RabbitMQ returned the command): is the producer
    running, and is ``queue`` its ``PHONET_CLICK2CALL_QUEUE``? Never dialed."""

    result = "no_queue"


class BrokerRefused(Click2CallError):
    """RabbitMQ nacked the command (the queue is full and refuses publishes, say): it was
    never taken, never dialed."""

    result = "broker_refused"


class NoReply(Click2CallError, TimeoutError):
    """No reply within the client's timeout: the call may still have been placed."""

    result, dialed = "no_reply", None


ERRORS: dict[str, type[Click2CallError]] = {
    cls.result: cls
    for cls in (
        PbxRefused,
        InvalidCommand,
        UnknownSubscriber,
        Forbidden,
        NumberNotAllowed,
        RateLimited,
        NotConnected,
        Expired,
        PbxTimeout,
        OutcomeUnknown,
    )
}


def raise_for(answer: Click2CallOutcome) -> Click2CallOutcome:
    """``answer`` when the call was placed, else its typed exception."""
    if answer.success:
        return answer
    raise ERRORS.get(answer.result, Click2CallError)(answer)


class Click2Call:
    """Commands over one channel of ``connection``; replies by direct reply-to.

    ``queue``: the producer's ``PHONET_CLICK2CALL_QUEUE``. ``user_id``: your RabbitMQ user
    name, which RabbitMQ checks; set it when the producer only dials for allowed users
    (``PHONET_CLICK2CALL_ALLOWED_USERS``). One client serves many concurrent calls.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        queue: str = DEFAULT_QUEUE,
        *,
        user_id: str | None = None,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.user_id = user_id
        self._channel: AbstractChannel | None = None
        self._waiting: dict[str, tuple[asyncio.Future[Click2CallOutcome], int]] = {}
        """correlation id → (the answer, how many calls await it)."""
        self._lock = asyncio.Lock()

    async def _open(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                channel = await self.connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                await self._consume_replies(channel)
                reopened = getattr(channel, "reopen_callbacks", None)
                if reopened is not None:
                    # A robust channel reopens itself (reconnect, channel error) without
                    # the reply consumer, which it does not track: consume again.
                    reopened.add(self._consume_replies)
                else:
                    channel.close_callbacks.add(self._forget)
                self._channel = channel
            return self._channel

    async def _consume_replies(self, channel: AbstractChannel) -> None:
        # Direct reply-to: consume the pseudo-queue (no-ack) before publishing.
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)

    def _forget(self, channel: object, *_: object) -> None:
        if self._channel is channel:
            self._channel = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(message.correlation_id or "")
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(outcome(message.body, message.headers))

    async def call(
        self,
        subscriber: str,
        to: str,
        *,
        timeout: float = 15.0,
        message_id: str | None = None,
        command_id: str | int | None = None,
    ) -> Click2CallOutcome:
        """Ask the PBX to call ``to`` from ``subscriber``'s phone; see the module
        docstring. ``message_id``: reuse it to retry the same command (a new one is made
        when None); ``command_id``: your reference, echoed in the answer. Raises the
        :class:`Click2CallError` of the answer's ``result``, :class:`NoReply` after
        ``timeout``, :class:`NoQueue` when the queue does not exist, and aio-pika's errors
        when the broker is unreachable."""
        channel = await self._open()
        # One id for both: a retry must repeat the correlation id too to be the same command.
        correlation_id = message_id or uuidlib.uuid4().hex
        body: dict[str, Any] = {"subscriber": subscriber, "to": to}
        if command_id is not None:
            body["id"] = command_id
        waiter, count = self._waiting.get(correlation_id, (None, 0))
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = (waiter, count + 1)
        try:
            try:
                # Bounded too: a broker in a memory alarm blocks publishers.
                async with asyncio.timeout(timeout):
                    await self._publish(channel, body, correlation_id, timeout)
            except TimeoutError:
                raise NoReply(None, f"not even sent within {timeout:g}s") from None
            except aio_pika.exceptions.DeliveryError as exc:
                if exc.message is None:  # a nack: the queue refused it (full, an alarm)
                    raise BrokerRefused(None, "the broker refused the command") from exc
                raise NoQueue(None, f"no queue {self.queue!r}: is phonet-producer running?") from (
                    exc
                )
            try:
                async with asyncio.timeout(timeout):
                    # Shielded: another call awaiting the same id keeps its answer when
                    # this one times out or is cancelled.
                    answer = await asyncio.shield(waiter)
            except TimeoutError:
                raise NoReply(None, f"no reply within {timeout:g}s") from None
        finally:
            current, count = self._waiting[correlation_id]
            if count > 1:
                self._waiting[correlation_id] = (current, count - 1)
            else:
                del self._waiting[correlation_id]
        return raise_for(answer)

    async def _publish(
        self, channel: AbstractChannel, body: dict[str, Any], correlation_id: str, timeout: float
    ) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                correlation_id=correlation_id,
                message_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
                user_id=self.user_id,
                timestamp=datetime.datetime.now(datetime.UTC),
                # Nobody took it in time: the broker drops it, it is never dialed late.
                expiration=datetime.timedelta(seconds=timeout),
            ),
            routing_key=self.queue,
            mandatory=True,
        )

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
