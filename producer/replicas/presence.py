"""Replicas find each other through RabbitMQ: heartbeats on a fanout exchange.

Each replica, on every session of its event connection, declares the fanout exchange
``<PHONET_EXCHANGE>.presence`` (not durable: it carries nothing worth keeping) and an
exclusive, server-named queue bound to it — the broker deletes that queue the moment the
connection dies — and publishes a heartbeat every ``interval`` seconds, expiring after the
presence timeout so a stale one is never read. What it hears goes to ``on_beat``.

A heartbeat is one JSON object (:func:`encode` / :func:`decode`, the one place that knows
the wire form)::

    {"v": 2, "replica": "r1", "instance": "a3f9…", "settings": "…", "roster": "…",
     "view": "…", "leaving": false, "warm": true,
     "down": [["001", 1764000000000, null], ...], "all_down_since": null}

``v`` is the protocol (a heartbeat without it is version 1, from an older release);
``settings``, ``roster`` and ``view`` are digests (see
:mod:`producer.replicas.membership`); ``down`` lists the owned subscribers whose socket is
or was just down (the standby publishes what it received meanwhile), at most
:data:`MAX_DOWN` of them — beyond that ``all_down_since`` says "all of them".
:func:`decode` never raises: anything else than a well-formed heartbeat is ignored.

While this replica has no broker session it hears nobody, and must not conclude it is
alone (it would take every subscriber): :attr:`Presence.connected` is False then, and the
caller keeps its last roles. Cancellation (the session ending) stops the heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from producer.broker.topology import (
    Binding,
    Exchange,
    Queue,
    declare_exchange,
    declare_queue,
)
from producer.replicas.membership import Beat, Down
from producer.telemetry.logs import safe_error

log = logging.getLogger("producer.replicas")

MAX_DOWN = 500
"""Down sockets listed in one heartbeat; past this, ``all_down_since``."""
MAX_BEAT_BYTES = 64 * 1024


def encode(beat: Beat) -> bytes:
    return orjson.dumps(
        {
            "v": beat.version,
            "replica": beat.replica,
            "instance": beat.instance,
            "settings": beat.settings,
            "roster": beat.roster,
            "view": beat.view,
            "leaving": beat.leaving,
            "warm": beat.warm,
            "down": [[d.subscriber, d.since_ms, d.until_ms] for d in beat.down[:MAX_DOWN]],
            "all_down_since": beat.all_down_since,
        }
    )


def _text(value: object, limit: int = 255) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _ms(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def decode(body: bytes) -> Beat | None:
    """The heartbeat in ``body``, or None when it is not one."""
    if len(body) > MAX_BEAT_BYTES:
        return None
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    replica = _text(data.get("replica"), 64)
    if replica is None:
        return None
    version = data.get("v", 1)
    instance = _text(data.get("instance"), 64) or ""
    down: list[Down] = []
    raw_down = data.get("down")
    for item in raw_down[:MAX_DOWN] if isinstance(raw_down, list) else ():
        if isinstance(item, list) and len(item) == 3:
            subscriber, since, until = _text(item[0]), _ms(item[1]), item[2]
            if subscriber is not None and since is not None:
                down.append(Down(subscriber, since, _ms(until)))

    def flag(name: str, default: bool) -> bool:
        value = data.get(name, default)
        return value if isinstance(value, bool) else default

    return Beat(
        replica=replica,
        instance=instance,
        version=version if isinstance(version, int) and not isinstance(version, bool) else -1,
        settings=_text(data.get("settings"), 64) or "",
        roster=_text(data.get("roster"), 64) or "",
        view=_text(data.get("view"), 64) or "",
        leaving=flag("leaving", False),
        warm=flag("warm", True),
        down=tuple(down),
        all_down_since=_ms(data.get("all_down_since")),
    )


def heard_queue(exchange: Exchange) -> Queue:
    """Each replica's own queue of heartbeats: server-named, gone with its connection."""
    return Queue(
        "", "presence queue", durable=False, exclusive=True, bindings=(Binding(exchange.name, ""),)
    )


class Presence:
    """The event connection's session hook that sends and hears heartbeats."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        interval: float,
        timeout: float,
        beat: Callable[[], Beat],
        on_beat: Callable[[Beat], None],
    ) -> None:
        self.spec, self.exchange = exchange, exchange.name
        self.interval = interval
        self.timeout = timeout
        self.make_beat = beat
        self.on_beat = on_beat
        self.connected = False
        self.since = 0.0
        """When the current session started hearing (monotonic)."""
        self._exchange: aio_pika.abc.AbstractExchange | None = None

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
        exchange = await declare_exchange(channel, self.spec)
        _, queue = await declare_queue(connection, heard_queue(self.spec), channel=channel)
        await queue.consume(self._heard, no_ack=True)
        self._exchange = exchange
        self.since = asyncio.get_running_loop().time()
        self.connected = True
        try:
            while not channel.is_closed:
                await self.beat()  # the coordinator's timer notices replicas timing out
                await asyncio.sleep(self.interval)
        finally:
            self.connected = False
            self._exchange = None

    async def beat(self) -> None:
        """Publish one heartbeat now; nothing without a session."""
        exchange = self._exchange
        if exchange is None:
            return
        message = aio_pika.Message(encode(self.make_beat()), expiration=max(0.001, self.timeout))
        with contextlib.suppress(Exception):  # a lost channel ends the session anyway
            await exchange.publish(message, routing_key="")

    async def _heard(self, message: AbstractIncomingMessage) -> None:
        beat = decode(message.body)
        if beat is not None:
            self.on_beat(beat)
