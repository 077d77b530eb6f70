"""The consumer toolkit against the producer, the simulator and the real broker: the
click2call client's typed answers, its retries recognised as the same command, and the
events exchange read through binding keys and :func:`phonet_client.parse`."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from phonet_client import (
    CallEvent,
    Click2Call,
    Forbidden,
    Gap,
    NoReply,
    PbxRefused,
    Seen,
    UnknownSubscriber,
    binding_key,
    parse,
)
from phonet_simulator import PhonetSimulator, Reply
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import SAMPLE, until

pytestmark = pytest.mark.e2e


async def test_a_call_is_placed_and_a_retry_is_answered_not_dialed_again(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    client = Click2Call(amqp, command_queue)
    placed = await client.call("001", "380991234567", message_id="crm-4711", command_id="c-1")
    assert (placed.success, placed.result, placed.to, placed.id) == (
        True,
        "success",
        "380991234567",
        "c-1",
    )
    again = await client.call("001", "380991234567", message_id="crm-4711", command_id="c-1")
    assert again == placed
    assert sim.actions == [("001", {"action": "call", "to": "380991234567"})]


@pytest.mark.parametrize(
    ("subscriber", "allowed", "user_id", "error"),
    [
        pytest.param("nobody", None, None, UnknownSubscriber, id="unknown-subscriber"),
        pytest.param("001", "crm", "guest", Forbidden, id="forbidden"),
    ],
)
async def test_a_refusal_is_its_typed_exception(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    command_queue: str,
    subscriber: str,
    allowed: str | None,
    user_id: str | None,
    error: type[Exception],
) -> None:
    overrides = {} if allowed is None else {"phonet_click2call_allowed_users": allowed}
    await start_producer(**overrides)
    await sim.wait_connected(SUBSCRIBERS)
    with pytest.raises(error) as caught:
        await Click2Call(amqp, command_queue, user_id=user_id).call(subscriber, "380991234567")
    assert caught.value.dialed is False  # type: ignore[attr-defined]
    assert sim.actions == []


async def test_an_allowed_user_sets_user_id_and_the_pbx_refusal_is_pbx_refused(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    """``PHONET_CLICK2CALL_ALLOWED_USERS`` followed: the client's ``user_id`` (checked by
    RabbitMQ) gets it dialed; the PBX's own refusal comes back as PbxRefused, dialed."""
    sim.on_action = lambda _subscriber, _action: Reply({"event": "error", "message": "busy"})
    await start_producer(phonet_click2call_allowed_users="crm, guest")
    await sim.wait_connected(SUBSCRIBERS)
    with pytest.raises(PbxRefused, match="busy") as caught:
        await Click2Call(amqp, command_queue, user_id="guest").call("002", "380991234567")
    assert caught.value.dialed is True
    assert len(sim.actions) == 1


async def test_a_consumer_reads_the_exchange_with_the_toolkit(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    exchange_name: str,
) -> None:
    """A queue bound with binding_key() gets only its subscriber's call events and gaps;
    parse() types them; Seen drops a copy sent again with the same message_id."""
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, binding_key("call.*", subscriber="002"))
    await queue.bind(exchange, binding_key("gap", subscriber="002"))
    got: list[object] = []
    seen = Seen()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if seen.first(message.message_id):
            got.append(
                parse(message.routing_key or "", message.body, message.headers, message.message_id)
            )

    await queue.consume(on_message, no_ack=True)
    await start_producer(phonet_backfill="off")
    await sim.wait_connected(SUBSCRIBERS)
    for subscriber in ("001", "002", "003"):
        await sim.send(subscriber, {**SAMPLE, "uuid": f"u-{subscriber}"})
    await until(lambda: len(got) == 1, what="002's event")
    await sim.drop("002")
    await until(lambda: len(got) == 2, timeout=10, what="002's gap")
    event, gap = got
    assert isinstance(event, CallEvent)
    assert (event.subscriber, event.uuid, event.event) == ("002", "u-002", "call.dial")
    assert isinstance(gap, Gap)
    assert gap.subscriber == "002"
    # The same message again (a takeover's copy): dropped by Seen.
    assert event.message_id is not None
    await exchange.publish(
        aio_pika.Message(b'{"event":"call.dial"}', message_id=event.message_id),
        routing_key="call.dial.002",
    )
    await asyncio.sleep(0.3)
    assert len(got) == 2
    assert seen.repeats == 1


async def test_two_waits_for_the_same_command_and_one_gives_up(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    """A retry sent while the first send still waits: the first gives up (NoReply) and the
    retry still gets the one answer; the PBX is asked once."""
    sim.on_action = lambda _s, _a: Reply({"event": "success"}, delay=1.0)
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    client = Click2Call(amqp, command_queue)
    first = asyncio.ensure_future(client.call("001", "380991234567", message_id="m-1", timeout=0.5))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(client.call("001", "380991234567", message_id="m-1", timeout=5))
    with pytest.raises(NoReply):
        await first
    placed = await second
    assert placed.success
    assert len(sim.actions) == 1


async def test_the_client_outlives_a_channel_the_broker_closed(
    sim: PhonetSimulator, start_producer: StartProducer, amqp_url: str, command_queue: str
) -> None:
    """On a robust connection, a command the broker refuses by closing the channel (a
    user_id that is not the connection's) does not leave the client without its reply
    consumer: the next call is answered."""
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    async with await aio_pika.connect_robust(amqp_url) as connection:
        client = Click2Call(connection, command_queue, user_id="somebody-else")
        with pytest.raises((aio_pika.exceptions.AMQPException, NoReply)):
            await client.call("001", "380991234567", timeout=2)
        client.user_id = "guest"
        await asyncio.sleep(1.0)  # the robust channel has reopened itself by now
        placed = await asyncio.wait_for(client.call("002", "380991234567", timeout=10), 20)
        assert placed.success
