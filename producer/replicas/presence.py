"""Replicas find each other through RabbitMQ: heartbeats on a fanout exchange.

Each replica, on every broker session, declares the fanout exchange
``<PHONET_EXCHANGE>.presence`` (not durable: it carries nothing worth keeping) and an
exclusive, server-named queue bound to it — the broker deletes that queue the moment the
connection dies — and publishes a heartbeat every ``interval`` seconds (``{"replica",
"leaving"}``, expiring after ``timeout`` so a stale one is never read). What it hears
feeds :class:`~producer.replicas.membership.Membership`; ``on_change`` runs (on the loop)
whenever the live set may have changed.

While this replica has no broker session it hears nobody, and must not conclude it is
alone (it would take every subscriber): :attr:`Presence.connected` is False then, and the
caller keeps its last roles. The cost: a heartbeat a replica every ``interval`` (a few
dozen bytes), one exclusive queue per replica. Cancellation (the session ending) stops the
heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from producer.logs import BurstLog, safe_error
from producer.replicas.membership import Membership

log = logging.getLogger("producer.replicas")


class Presence:
    """The broker session hook that sends and hears heartbeats."""

    def __init__(
        self,
        exchange: str,
        membership: Membership,
        on_change: Callable[[], None],
        *,
        interval: float,
    ) -> None:
        self.exchange = f"{exchange}.presence"
        self.membership = membership
        self.on_change = on_change
        self.interval = interval
        self.is_warm: Callable[[], bool] = lambda: True
        """Whether every socket this replica holds is up (told in the heartbeat)."""
        self.instance = secrets.token_hex(4)
        self._twin_log = BurstLog(log, interval=300.0)
        self.connected = False
        self.since = 0.0
        """When the current session started hearing (monotonic)."""
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._now: Callable[[], float] = lambda: asyncio.get_running_loop().time()

    async def session(self, connection: AbstractConnection) -> None:
        """Session hook: heartbeats until the channel closes (or cancellation). A failure
        here (say, a user without rights on the presence exchange) never ends the
        publishing session: it is logged, and this replica keeps its roles (or acts alone)
        until the next session."""
        try:
            await self._session(connection)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.connected = False
            log.error(
                "replica presence unavailable (%s): acting on the last roles; check the"
                " user's permissions on %s",
                safe_error(exc),
                self.exchange,
            )
            await asyncio.Event().wait()  # hold the session hook until it is cancelled

    async def _session(self, connection: AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.FANOUT, durable=False
        )
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._heard, no_ack=True)
        self._exchange = exchange
        self.since = self._now()
        self.connected = True
        try:
            while not channel.is_closed:
                await self.beat()  # the coordinator's timer notices replicas timing out
                self.membership.expire(self._now())
                await asyncio.sleep(self.interval)
        finally:
            self.connected = False
            self._exchange = None

    async def beat(self) -> None:
        """Publish one heartbeat (``leaving`` when this replica is shutting down); nothing
        without a session."""
        exchange = self._exchange
        if exchange is None:
            return
        body = orjson.dumps(
            {
                "replica": self.membership.me,
                "instance": self.instance,
                "leaving": self.membership.me_leaving,
                "warm": self.is_warm(),
            }
        )
        expiration = max(0.001, self.membership.timeout)
        with contextlib.suppress(Exception):  # a lost channel ends the session anyway
            await exchange.publish(aio_pika.Message(body, expiration=expiration), routing_key="")

    async def _heard(self, message: AbstractIncomingMessage) -> None:
        try:
            data = orjson.loads(message.body)
            replica, leaving = data["replica"], bool(data.get("leaving"))
            warm, instance = bool(data.get("warm", True)), data.get("instance")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        if not isinstance(replica, str) or not replica or len(replica) > 64:
            return
        if replica == self.membership.me and instance != self.instance:
            self._twin_log(
                logging.ERROR,
                "another replica uses PHONET_REPLICA_ID %r: both act as one (give each its"
                " own id; the default, the host name, is unique per pod)",
                replica,
            )
            return
        if self.membership.heard(replica, self._now(), leaving=leaving, warm=warm):
            self.on_change()
