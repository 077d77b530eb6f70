"""The publisher (:mod:`producer.publish.publisher`) on a raw aiormq channel of the real
broker: a return that arrives after its session ended (broker-link churn) is counted apart,
said once without its body. The producer's handling of returns end to end:
``tests/e2e/test_broker_says_no.py``."""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from producer.publish.pipeline import Pipeline
from producer.publish.publisher import Publisher
from producer.telemetry.metrics import Metrics
from tests.conftest import Janitor, broker_name
from tests.support import leaked, until


async def test_a_return_after_its_session_ended_is_counted_apart(
    amqp: AbstractConnection, janitor: Janitor, caplog: pytest.LogCaptureFixture
) -> None:
    """Broker-link churn: a return arrives for a session the publisher already gave up.
    It matches nothing: counted in phonet_events_returned_unmatched_total, said once at
    INFO without its body, never counted as returned or published."""
    caplog.set_level(logging.DEBUG)
    exchange = janitor.exchange(broker_name("churn"))
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=False)
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    raw = await channel.get_underlay_channel()
    assert isinstance(raw, aiormq.Channel)
    metrics = Metrics()
    publisher = Publisher(
        Pipeline(max_events=10, max_bytes=10**6, window=10), metrics, publish_timeout=30.0
    )
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()
    session = loop.create_task(publisher.run(raw, lost))
    await until(lambda: publisher.pipeline.session == 1, what="session began (hook on)")
    session.cancel()
    await asyncio.wait([session])
    await publisher.end_session(refused=False)
    body = b'{"num": "+380991112233"}'
    for _ in range(2):  # a late return of the dead session (same channel, as in churn)
        await raw.basic_publish(
            body,
            exchange=exchange,
            routing_key="call.dial.001",
            properties=spec.Basic.Properties(message_id="late"),
            mandatory=True,
        )
    sample = metrics.registry.get_sample_value
    assert sample("phonet_events_returned_unmatched_total") == 2
    assert sample("phonet_events_returned_total", {"event": "call.dial"}) == 0
    said = [r for r in caplog.records if "no publish awaits" in r.getMessage()]
    assert [r.levelname for r in said] == ["INFO"]  # once per burst
    assert leaked(caplog.records, [body.decode(), "+380991112233"]) == []
    await channel.close()
