"""All broker topology as values, and the one declarer that builds it.

Every exchange, queue and binding the service uses is a value here (:class:`Exchange`,
:class:`Queue`); :func:`producer.app.topology.topology` makes all of them from the
settings in one place, and the feature that uses one declares it with :func:`declare` on its
own channel when its session starts. A queue that exists with other arguments (an older
TTL, another retention) is either an error or, where the values say so
(``keep_existing``), used as it is with a warning: the operator deletes it to apply ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

log = logging.getLogger("producer.broker.topology")


@dataclass(frozen=True)
class Exchange:
    """An exchange: durable unless said otherwise."""

    name: str
    kind: Literal["topic", "fanout", "direct"]
    durable: bool = True


@dataclass(frozen=True)
class Binding:
    """Bind the queue it belongs to ``exchange`` with ``key`` (declared by its user)."""

    exchange: str
    key: str = "#"


@dataclass(frozen=True)
class Queue:
    """A queue; ``name`` empty: server-named (with ``exclusive``, one per connection)."""

    name: str
    what: str
    """What it is, for logs ("click2call queue")."""
    durable: bool = True
    exclusive: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    bindings: tuple[Binding, ...] = ()
    keep_existing: bool = False
    """With other arguments on the broker: use it as it is (warned) instead of failing."""


async def declare_exchange(channel: AbstractChannel, exchange: Exchange) -> AbstractExchange:
    """Declare ``exchange`` on ``channel``. A mismatch closes the channel and raises."""
    return await channel.declare_exchange(
        exchange.name, aio_pika.ExchangeType(exchange.kind), durable=exchange.durable
    )


async def declare_queue(
    connection: AbstractConnection, queue: Queue, *, channel: AbstractChannel | None = None
) -> tuple[AbstractChannel, AbstractQueue]:
    """Declare ``queue`` and its bindings on ``channel`` (default: a new one without
    confirms); return the channel and the queue.

    A queue that exists with other arguments raises, unless ``keep_existing``: then that
    channel is gone (the broker closed it) and a new one declares it passively.
    Cancellation propagates; the channel is the caller's to close."""
    if channel is None:
        channel = await connection.channel(publisher_confirms=False)
    arguments = dict(queue.arguments)
    try:
        declared = await channel.declare_queue(
            queue.name,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.exclusive,
            arguments=arguments or None,
        )
    except aiormq.exceptions.ChannelPreconditionFailed:
        if not queue.keep_existing:
            raise
        log.warning(
            "%s exists with other arguments; using it as it is",
            queue.what,
            extra={"queue": queue.name, "wanted": arguments},
        )
        channel = await connection.channel(publisher_confirms=False)
        declared = await channel.declare_queue(queue.name, passive=True)
    for binding in queue.bindings:
        # By name: the exchange's owner declares it before the hooks that bind to it run.
        await declared.bind(binding.exchange, binding.key)
    return channel, declared
