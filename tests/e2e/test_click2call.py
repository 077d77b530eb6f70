"""click2call end to end: a command queue on RabbitMQ, the producer, the simulated PBX."""

from __future__ import annotations

import asyncio
import datetime
import random
import uuid
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator, Reply
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import Collector, RpcClient, http_get, metric_value, until

NUMBER = "380991234567"


def dialed(sim: PhonetSimulator) -> list[tuple[str, Any]]:
    return list(sim.actions)


async def test_success_is_dialed_once_and_answered(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient, collector: Collector
) -> None:
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    reply = await rpc.call({"subscriber": "001", "to": NUMBER, "id": "crm-42"})
    assert reply.json == {"event": "success", "subscriber": "001", "to": NUMBER, "id": "crm-42"}
    assert reply.content_type == "application/json"
    assert dialed(sim) == [("001", {"action": "call", "to": NUMBER})]
    (outcome,) = await collector.wait_count(1)
    assert outcome.routing_key == "click2call.success.001"
    assert outcome.json == reply.json
    assert outcome.headers["result"] == "success"
    assert outcome.headers["command_id"] == "crm-42"
    _, _, raw = await http_get(producer.http.port, "/metrics")
    text = raw.decode()
    assert metric_value(text, "phonet_click2call_commands_total", {"result": "success"}) == 1
    assert metric_value(text, "phonet_click2call_latency_seconds_count") == 1


async def test_pbx_refusal_is_an_error_reply_with_its_message(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient, collector: Collector
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    reply = await rpc.call({"subscriber": "ivan.petrov@example.com", "to": "000123"})
    assert reply.json == {
        "event": "error",
        "message": "number unreachable",
        "subscriber": "ivan.petrov@example.com",
        "to": "000123",
    }
    (outcome,) = await collector.wait_count(1)
    assert outcome.routing_key == "click2call.error.ivan%2Epetrov@example%2Ecom"
    assert outcome.headers["result"] == "pbx_error"
    # The PBX's answer frame is consumed as the reply, never republished as an event.
    await asyncio.sleep(0.2)
    assert [m.routing_key for m in collector.messages] == [outcome.routing_key]


async def test_number_is_normalised_before_dialing(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    reply = await rpc.call({"subscriber": "002", "to": "+38 (099) 123-45-67"})
    assert reply.json["event"] == "success"
    assert reply.json["to"] == "+38 (099) 123-45-67"
    assert dialed(sim) == [("002", {"action": "call", "to": "+380991234567"})]


@pytest.mark.parametrize(
    ("body", "message", "result"),
    [
        pytest.param(
            b"dial 001 please", "invalid command: body is not JSON", "invalid", id="not-json"
        ),
        pytest.param(
            b'["001", "380991234567"]',
            "invalid command: body must be a JSON object",
            "invalid",
            id="not-object",
        ),
        pytest.param(
            b'{"to": "380991234567"}',
            "invalid command: 'subscriber' must be a non-empty string",
            "invalid",
            id="missing-subscriber",
        ),
        pytest.param(
            b'{"subscriber": "001"}',
            "invalid command: 'to' must be a non-empty string",
            "invalid",
            id="missing-to",
        ),
        pytest.param(
            b'{"subscriber": "001", "to": "call mom"}',
            "invalid command: 'to' is not a phone number",
            "invalid",
            id="bad-number",
        ),
        pytest.param(
            b'{"subscriber": "001", "to": "1234567890123456789012"}',
            "invalid command: 'to' is not a phone number",
            "invalid",
            id="too-long",
        ),
        pytest.param(
            b'{"subscriber": "007", "to": "380991234567"}',
            "unknown subscriber",
            "unknown_subscriber",
            id="unknown-subscriber",
        ),
    ],
)
async def test_bad_commands_get_an_error_and_are_never_dialed(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    collector: Collector,
    body: bytes,
    message: str,
    result: str,
) -> None:
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    reply = await rpc.call(body)
    assert reply.json["event"] == "error"
    assert reply.json["message"] == message
    assert dialed(sim) == []
    (outcome,) = await collector.wait_count(1)
    assert outcome.routing_key.startswith("click2call.error.")
    assert outcome.headers["result"] == result
    _, _, raw = await http_get(producer.http.port, "/metrics")
    assert metric_value(raw.decode(), "phonet_click2call_commands_total", {"result": result}) == 1


async def test_socket_down_waits_briefly_then_not_connected(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    """``003`` is configured on the producer but the PBX refuses its socket."""
    await start_producer(subscribers="001,003", phonet_click2call_connect_wait=0.3)
    await sim.wait_connected(["001"])
    reply = await rpc.call({"subscriber": "003", "to": NUMBER})
    assert reply.json == {
        "event": "error",
        "message": "not connected",
        "subscriber": "003",
        "to": NUMBER,
    }
    assert dialed(sim) == []


async def test_stale_command_is_expired_not_dialed(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    await start_producer(phonet_click2call_max_age=30)
    await sim.wait_connected(SUBSCRIBERS)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=45)
    reply = await rpc.call({"subscriber": "001", "to": NUMBER}, timestamp=old)
    assert reply.json["message"] == "expired"
    fresh = await rpc.call({"subscriber": "001", "to": NUMBER})
    assert fresh.json["event"] == "success"
    assert dialed(sim) == [("001", {"action": "call", "to": NUMBER})]


async def test_a_full_queue_from_downtime_does_not_ring_phones(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    """Commands that piled up while the producer was down are older than the max age when it
    starts: each is answered 'expired' and none is dialed. (The queue here was made without
    the producer's TTL, so the commands are still in it and judged by their timestamps.)"""
    channel = await amqp.channel()
    await channel.declare_queue(command_queue, durable=True)
    stamp = datetime.datetime.now(datetime.UTC)
    ids = [uuid.uuid4().hex for _ in range(20)]
    for cid in ids:
        await rpc.send({"subscriber": "001", "to": NUMBER}, correlation_id=cid, timestamp=stamp)
    await asyncio.sleep(2.1)  # "down" for longer than the max age
    await start_producer(phonet_click2call_max_age=2)
    await sim.wait_connected(SUBSCRIBERS)
    stale = await asyncio.gather(*(rpc.reply(cid) for cid in ids))
    assert {r.json["message"] for r in stale} == {"expired"}
    fresh = await rpc.call({"subscriber": "001", "to": NUMBER})
    assert fresh.json["event"] == "success"
    assert dialed(sim) == [("001", {"action": "call", "to": NUMBER})]


async def test_five_concurrent_commands_on_one_subscriber_get_their_own_replies(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    rng = random.Random(3)
    in_flight: list[str] = []
    overlaps: list[tuple[str, str]] = []

    async def pbx(subscriber: str, action: dict[str, Any]) -> Reply:
        if in_flight:
            overlaps.append((in_flight[-1], action["to"]))
        in_flight.append(action["to"])
        await asyncio.sleep(rng.uniform(0.01, 0.08))
        in_flight.remove(action["to"])
        if int(action["to"][-1]) % 2:
            return Reply({"event": "error", "message": f"busy {action['to']}"})
        return Reply({"event": "success"})

    sim.on_action = pbx
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    numbers = [f"38099000000{n}" for n in range(5)]
    replies = await asyncio.gather(
        *(rpc.call({"subscriber": "001", "to": to, "id": n}) for n, to in enumerate(numbers))
    )
    for n, (to, reply) in enumerate(zip(numbers, replies, strict=True)):
        assert reply.json["id"] == n
        assert reply.json["to"] == to
        if int(to[-1]) % 2:
            assert reply.json == {
                "event": "error",
                "message": f"busy {to}",
                "subscriber": "001",
                "to": to,
                "id": n,
            }
        else:
            assert reply.json["event"] == "success"
    assert overlaps == []  # one command in flight per socket
    assert sorted(a["to"] for _, a in dialed(sim)) == numbers


async def test_commands_for_two_subscribers_run_in_parallel(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    """The PBX holds 001's answer until 002's action has arrived: serialised handling would
    never get there and 001 would time out."""
    arrived = {s: asyncio.Event() for s in ("001", "002")}

    async def pbx(subscriber: str, action: dict[str, Any]) -> Reply:
        arrived[subscriber].set()
        other = "002" if subscriber == "001" else "001"
        try:
            await asyncio.wait_for(arrived[other].wait(), 3)
        except TimeoutError:
            return Reply({"event": "error", "message": "ran alone"})
        return Reply({"event": "success"})

    sim.on_action = pbx
    await start_producer(phonet_click2call_timeout=5)
    await sim.wait_connected(SUBSCRIBERS)
    a, b = await asyncio.gather(
        rpc.call({"subscriber": "001", "to": NUMBER}), rpc.call({"subscriber": "002", "to": NUMBER})
    )
    assert (a.json["event"], b.json["event"]) == ("success", "success")


async def test_timeout_while_call_events_keep_flowing(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient, collector: Collector
) -> None:
    answers = {"380990000001": None, "380990000002": Reply({"event": "success"})}
    late: list[asyncio.Task[int]] = []

    def pbx(subscriber: str, action: dict[str, Any]) -> Reply | None:
        if action["to"] == "380990000001":  # silent now, answers after the timeout
            late.append(asyncio.ensure_future(_answer_later(sim, subscriber)))
        return answers[action["to"]]

    sim.on_action = pbx
    await start_producer(phonet_click2call_timeout=0.6)
    await sim.wait_connected(SUBSCRIBERS)
    pending = asyncio.ensure_future(rpc.call({"subscriber": "001", "to": "380990000001"}))
    for n in range(5):  # call events on the same socket while the command waits
        await sim.send("001", {"event": "call.dial", "uuid": f"e{n}", "lgDirection": 4})
        await asyncio.sleep(0.05)
    await collector.wait_for(
        lambda ms: {f"e{n}" for n in range(5)} <= {m.headers.get("uuid") for m in ms}
    )
    first = await pending
    assert first.json["message"] == "timeout"
    second = await rpc.call({"subscriber": "001", "to": "380990000002"})
    assert second.json["event"] == "success"  # the late 'error' was not taken for this one
    await asyncio.gather(*late)
    routing_keys = [m.routing_key for m in collector.messages]
    assert "error.001" not in routing_keys
    assert "success.001" not in routing_keys


async def _answer_later(sim: PhonetSimulator, subscriber: str) -> int:
    await asyncio.sleep(0.8)
    return await sim.send(subscriber, {"event": "error", "message": "late answer"})


async def test_rejected_commands_are_dead_lettered_when_configured(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp: AbstractConnection,
    exchange_name: str,
) -> None:
    channel = await amqp.channel()
    dlx = await channel.declare_exchange(
        f"{exchange_name}.dlx", aio_pika.ExchangeType.FANOUT, auto_delete=True
    )
    dead = await channel.declare_queue("", exclusive=True)
    await dead.bind(dlx)
    await start_producer(phonet_click2call_dead_letter_exchange=dlx.name)
    await sim.wait_connected(SUBSCRIBERS)
    assert (await rpc.call(b"junk")).json["event"] == "error"
    assert (await rpc.call({"subscriber": "001", "to": NUMBER})).json["event"] == "success"
    message = await dead.get(timeout=5, fail=True)
    assert message is not None
    assert message.body == b"junk"
    await message.ack()
    await asyncio.sleep(0.2)
    assert await dead.get(fail=False) is None  # the dialed command was acked, not rejected


async def test_quorum_queue_by_setting(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    await start_producer(phonet_click2call_queue_type="quorum")
    await sim.wait_connected(SUBSCRIBERS)
    assert (await rpc.call({"subscriber": "002", "to": NUMBER})).json["event"] == "success"


async def test_existing_queue_with_other_arguments_is_used_as_it_is(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    channel = await amqp.channel()
    await channel.declare_queue(command_queue, durable=True)  # no TTL argument
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    assert (await rpc.call({"subscriber": "001", "to": NUMBER})).json["event"] == "success"


async def test_consumer_resumes_after_the_broker_connection_is_closed(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    assert (await rpc.call({"subscriber": "001", "to": NUMBER})).json["event"] == "success"
    assert producer.broker.connection is not None
    await producer.broker.connection.close()  # as if the server had closed it
    registry = producer.metrics.registry
    await until(
        lambda: (registry.get_sample_value("phonet_amqp_connects_total") or 0) >= 2,
        what="reconnected",
    )
    await until(lambda: producer.click2call.consuming, what="consuming again")
    assert (await rpc.call({"subscriber": "002", "to": NUMBER})).json["event"] == "success"


async def test_shutdown_finishes_the_command_in_flight_and_gives_back_the_waiting_ones(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    async def slow_pbx(subscriber: str, action: dict[str, Any]) -> Reply:
        await asyncio.sleep(0.8)
        return Reply({"event": "success"})

    sim.on_action = slow_pbx
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    first = asyncio.ensure_future(rpc.call({"subscriber": "001", "to": "380990000001"}))
    await until(lambda: len(sim.actions) == 1, what="the first command dialed")
    for n in (2, 3):
        await rpc.send({"subscriber": "001", "to": f"38099000000{n}"}, correlation_id=f"w{n}")
    await asyncio.sleep(0.2)  # both taken off the queue, waiting their turn
    await producer.stop()
    assert (await first).json["event"] == "success"
    assert [a["to"] for _, a in sim.actions] == ["380990000001"]
    channel = await amqp.channel()
    queue = await channel.declare_queue(command_queue, passive=True)
    assert queue.declaration_result.message_count == 2  # given back, undialed
    assert not rpc.replies["w2"].done()
    assert not rpc.replies["w3"].done()
