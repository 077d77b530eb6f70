"""Regressions for issue 21, over real sockets: what the broker returns (no queue bound) or
nacks (a reply queue that refuses everything) is the service's to handle and count, never
the library's to log, and never costs more than that one message.

1. returned messages fell to aiormq's fallback, which logged whole call records at ERROR,
   and a repeated frame (one message id twice in flight) was counted as published;
2. a click2call reply that its caller's queue refused was retried forever, pausing every
   event each round. Replies are now published over the command connection
   (:mod:`producer.click2call.answers`), out of the events' way, and given up there after
   a few refusals.

The seams alone on a real channel, without producer or simulator (the fast path's return
hook, a return after its session ended): ``tests/integration/producer/``.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from producer.broker.fastpath import FastPath
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import SAMPLE, Collector, leaked, until

NUMBERS = ("+380567777777", "380567777777", "+38099")  # the sample's, and the frames' below


def value(producer: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return producer.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def frames() -> tuple[str, list[str]]:
    """A frame the PBX repeats, and sixty distinct ones, each with a phone number."""
    repeated = orjson.dumps({**SAMPLE, "uuid": "twice"}).decode()
    distinct = [
        orjson.dumps({**SAMPLE, "uuid": f"r{n}", "otherLegs": [{"num": f"+38099{n:07d}"}]})
        for n in range(60)
    ]
    return repeated, [frame.decode() for frame in distinct]


async def send_unroutable(sim: PhonetSimulator, repeated: str, distinct: list[str]) -> int:
    """Each repeated pair goes out back to back: both copies are read, and in flight,
    before the broker answers the first."""
    for _ in range(3):
        await sim.send("001", repeated)
        await sim.send("001", repeated)
    for n, frame in enumerate(distinct):
        await sim.send(SUBSCRIBERS[n % 3], frame)
    return 6 + len(distinct)


async def drained(producer: Any, sent: int) -> None:
    await until(
        lambda: (
            value(producer, "phonet_events_received_total", {"event": "call.dial"}) == sent
            and len(producer.pipeline) == 0
        ),
        timeout=15,
        what="everything received and answered",
    )


# --- 1. returned messages --------------------------------------------------------------


async def test_returned_events_are_ours_counted_and_never_logged_with_their_body(
    sim: PhonetSimulator, start_producer: StartProducer, caplog: pytest.LogCaptureFixture
) -> None:
    """No queue bound: the broker returns every event. Each return completes its own
    envelope (a repeated frame's two copies each get one), is counted once as returned and
    never as published, and no log record of anyone, at any level, holds a body or a
    phone number."""
    caplog.set_level(logging.DEBUG)
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    repeated, distinct = frames()
    sent = await send_unroutable(sim, repeated, distinct)
    await drained(producer, sent)
    assert value(producer, "phonet_events_returned_total", {"event": "call.dial"}) == sent
    assert value(producer, "phonet_events_published_total", {"event": "call.dial"}) == 0
    assert value(producer, "phonet_events_returned_unmatched_total") == 0
    assert leaked(caplog.records, [repeated, *distinct, '"displayName"', *NUMBERS]) == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiormq.channel")] == []
    told = [r for r in caplog.records if "no queue is bound" in r.getMessage()]
    assert len(told) == 1  # the plain once-only hint stays


async def test_without_the_hook_aiormq_logs_returns_without_their_body(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiormq's internals changed (no fast path, no hook): aiormq matches returns itself,
    misses a repeated frame's second return and logs it at ERROR; the WithholdBodies
    filter leaves its routing key and message id in that line, not the call record.
    Every envelope is still answered once (returned or published)."""
    monkeypatch.setattr(FastPath, "attach", classmethod(lambda _cls, _channel, _on: None))
    caplog.set_level(logging.DEBUG)
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    repeated, distinct = frames()
    sent = await send_unroutable(sim, repeated, distinct)
    await drained(producer, sent)
    returned = value(producer, "phonet_events_returned_total", {"event": "call.dial"})
    published = value(producer, "phonet_events_published_total", {"event": "call.dial"})
    assert returned + published == sent
    assert returned >= len(distinct)
    unhandled = [r for r in caplog.records if r.getMessage().startswith("Unhandled message")]
    assert unhandled  # the repeats: aiormq keeps one delivery tag per message id
    assert "bytes withheld" in unhandled[0].getMessage()
    assert leaked(caplog.records, [repeated, *distinct, '"displayName"', *NUMBERS]) == []


# --- 2. a reply queue that refuses every reply -----------------------------------------


async def test_a_reply_its_queue_refuses_is_given_up_and_events_flow(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    """A sender names a reply queue declared ``x-max-length: 0, x-overflow:
    reject-publish``: the broker nacks every reply. Call events flow meanwhile. The command
    is dialed once and its outcome event published; the reply, published over the command
    connection, is given up after its refusals and counted; every event is published, none
    ever nacked (the events' pipeline never sees the reply); the command is settled."""
    channel = await amqp.channel()
    refusing = await channel.declare_queue(
        "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    await channel.default_exchange.publish(
        aio_pika.Message(
            orjson.dumps({"subscriber": "001", "to": "380991234567"}),
            correlation_id="refused-reply",
            reply_to=refusing.name,
            message_id="refused-reply-command",
            timestamp=datetime.datetime.now(datetime.UTC),
        ),
        routing_key=command_queue,
    )
    sent = set()
    for n in range(40):
        uuid = f"e{n}"
        await sim.send(SUBSCRIBERS[n % 3], {**SAMPLE, "uuid": uuid})
        sent.add(uuid)
    refused = "phonet_click2call_replies_refused_total"
    await until(lambda: value(producer, refused) == 1, timeout=20, what="reply given up")
    await collector.wait_for(
        lambda ms: (
            sent <= collector.uuids() and any(m.routing_key == "click2call.success.001" for m in ms)
        )
    )
    await until(lambda: len(producer.pipeline) == 0, what="nothing left held")
    assert list(sim.actions) == [("001", {"action": "call", "to": "380991234567"})]
    assert value(producer, "phonet_events_published_total", {"event": "click2call"}) == 1
    assert value(producer, "phonet_events_published_total", {"event": "call.dial"}) == len(sent)
    assert value(producer, "phonet_publish_retries_total") == 0  # no event was ever nacked
    await producer.stop()  # an unsettled command would go back to its queue now
    queue = await channel.declare_queue(command_queue, passive=True)
    assert queue.declaration_result.message_count == 0
    assert value(producer, refused) == 1  # given up once, not again at the stop


async def test_a_node_that_nacks_every_publish_is_left_for_the_next_url(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    amqp: AbstractConnection,
    amqp_url: str,
    exchange_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every publish nacked for a publish timeout (seen on a cluster node after another
    node stopped, while the third took publishes): the event link moves to the next URL of
    the list instead of retrying the same node, and nothing is lost once publishes are
    taken again. Here two proxies stand for two nodes, and a bound queue that rejects
    every publish (``x-overflow: reject-publish``) makes the nacks."""
    from urllib.parse import urlsplit

    from tests.proxy import TcpProxy

    parts = urlsplit(amqp_url)
    proxies = [
        await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start() for _ in range(2)
    ]
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    refusing = await channel.declare_queue(
        "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await refusing.bind(exchange, "#")
    try:
        urls = ",".join(p.url(amqp_url) for p in proxies)
        producer = await start_producer(amqp_url=urls, phonet_publish_timeout=1.0)
        await sim.wait_connected(SUBSCRIBERS)
        first = producer.broker.safe_url
        sent = set()
        for n in range(10):
            await sim.send(SUBSCRIBERS[n % 3], {**SAMPLE, "uuid": f"n{n}"})
            sent.add(f"n{n}")
        await until(
            lambda: producer.broker.connected and producer.broker.safe_url != first,
            timeout=20,
            what="the event link on the other URL",
        )
        assert any("trying another node" in r.getMessage() for r in caplog.records)
        await refusing.delete()
        await collector.wait_for(lambda _ms: sent <= collector.uuids())
        await until(lambda: len(producer.pipeline) == 0, what="nothing left held")
    finally:
        for proxy in proxies:
            await proxy.close()
