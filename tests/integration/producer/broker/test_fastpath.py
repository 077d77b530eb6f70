"""The fast path's return hook (:mod:`producer.broker.fastpath`) on a raw aiormq channel of
the real broker (issue 21: returns fell to aiormq's fallback, which logged whole call
records). The producer's handling of returns end to end: ``tests/e2e/test_broker_says_no.py``."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from producer.broker.fastpath import FastPath, Returned
from tests.conftest import Janitor, broker_name


async def test_the_hook_hands_over_each_return_in_order_without_its_body(
    amqp: AbstractConnection, janitor: Janitor
) -> None:
    """The seam itself, on a raw aiormq channel: two publishes with one message id to an
    exchange nothing is bound to come back as two returns naming that id, and their
    confirmations resolve with the acks (aiormq no longer matches returns)."""
    exchange = janitor.exchange(broker_name("returns"))
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=False)
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    raw = await channel.get_underlay_channel()
    got: list[Returned] = []
    fast = FastPath.attach(raw, got.append)
    assert fast is not None
    results = [
        await raw.basic_publish(
            b'{"num": "+380991112233"}',
            exchange=exchange,
            routing_key=f"call.dial.{n}",
            properties=spec.Basic.Properties(message_id="same"),
            mandatory=True,
        )
        for n in range(2)
    ]
    assert [type(r) for r in results] == [spec.Basic.Ack, spec.Basic.Ack]
    assert got == [
        Returned(message_id="same", reply_code=312, exchange=exchange, routing_key=f"call.dial.{n}")
        for n in range(2)
    ]
    await channel.close()
