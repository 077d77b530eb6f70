"""click2call under the faults issue 21 found, one test each, on the local broker with the
simulator (the fault suite, ``tests/faults``, runs the same promises on a 3-node cluster):

* a command whose properties the client library cannot decode costs that command only:
  answered invalid, rejected, and neither the command link nor the event link reconnects;
* commands have a connection of their own: closing it interrupts no event publishing;
* a caller's retry (same ``message_id``, correlation id and body) gets the first answer
  again and is not dialed again — with two replicas, whose bounces mark messages
  redelivered;
* with a quorum queue's delivery limit, commands for a subscriber whose owner went silent
  are held, not bounced until the broker drops them.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from producer.app.service import Producer
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.hostile import publish_raw, timestamp_2_63
from tests.proxy import TcpProxy
from tests.support import Collector, RpcClient, call, until

NUMBER = "380991234567"


def value(producer: Producer, name: str) -> float:
    return producer.metrics.registry.get_sample_value(name) or 0.0


def expect(rpc: RpcClient, key: str) -> None:
    rpc.replies[key] = asyncio.get_running_loop().create_future()


async def test_an_undecodable_command_is_answered_invalid_and_nothing_reconnects(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp: AbstractConnection,
    command_queue: str,
    collector: Collector,
) -> None:
    """A ``timestamp`` of 2^63 (pika sends it): before, aiormq closed the whole broker
    connection on it, and every reconnect met it again."""
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    channel = await amqp.channel()
    key = uuid.uuid4().hex
    expect(rpc, key)
    properties = timestamp_2_63(message_id=key, correlation_id=key, reply_to=rpc.reply_queue.name)
    await publish_raw(channel, command_queue, {"subscriber": "001", "to": NUMBER}, properties)
    reply = await rpc.reply(key)
    assert reply.json["event"] == "error"
    assert reply.json["message"] == "invalid command: property timestamp cannot be decoded"
    assert reply.headers["result"] == "invalid"
    await sim.send("001", call(uuid="after-the-bad-command"))
    good = await rpc.call({"subscriber": "001", "to": NUMBER})  # the next one works
    assert good.json["event"] == "success"
    await collector.wait_for(lambda ms: any(m.headers.get("uuid") for m in ms))
    assert value(producer, "phonet_click2call_undecodable_total") == 1
    assert value(producer, "phonet_amqp_connects_total") == 1  # the event link stayed up
    assert producer.commands_link.connection is not None
    assert sim.actions == [("001", {"action": "call", "to": NUMBER})]  # never the bad one


async def test_commands_have_a_connection_of_their_own(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient, collector: Collector
) -> None:
    """The command link's connection closed by the broker (a channel error, say): events
    keep flowing on theirs, untouched; commands resume on a new connection."""
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    events, commands = producer.broker.connection, producer.commands_link.connection
    assert events is not None
    assert commands is not None
    assert events is not commands
    await commands.close()  # as a broker-side close would
    sent = [f"during-{n}" for n in range(20)]
    for uuid_ in sent:
        await sim.send("001", call(uuid=uuid_))
    await collector.wait_for(lambda ms: set(sent) <= {m.headers.get("uuid") for m in ms})
    reply = await rpc.call({"subscriber": "002", "to": NUMBER}, timeout=20)
    assert reply.json["event"] == "success"
    assert value(producer, "phonet_amqp_connects_total") == 1
    assert producer.broker.connection is events


async def test_a_retry_gets_the_first_answer_again_across_replicas(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    """The same command sent again (a CRM's retry button: same body, ``message_id`` and
    correlation id) eight times with two replicas: eight replies, the same success, one
    dial. Before, a bounce marked the message redelivered and a settled identity that
    arrived redelivered was settled without a reply."""
    sim.known = None
    for n in (1, 2):
        await start_producer(phonet_replica_id=f"r{n}")
    await until(lambda: all(sim.sockets_of(s) == 2 for s in SUBSCRIBERS), what="hot")
    key = uuid.uuid4().hex
    body = {"subscriber": "ivan.petrov@example.com", "to": NUMBER, "id": "crm-1"}
    replies: list[dict[str, Any]] = []
    for _ in range(8):
        await rpc.send(body, correlation_id=key, message_id=key)
        replies.append((await rpc.reply(key, timeout=20)).json)
    assert replies == [{**body, "event": "success"}] * 8
    assert collections.Counter(s for s, _ in sim.actions) == {"ivan.petrov@example.com": 1}


async def test_commands_for_a_silent_owner_are_held_not_bounced_to_the_delivery_limit(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    amqp_url: str,
    command_queue: str,
    broker_proxy: TcpProxy,
) -> None:
    """A quorum command queue with a delivery limit; the owner of a subscriber is cut off
    (dead, not yet timed out): its commands reach the other replica, which before bounced
    them every 50 ms until the broker dropped them unanswered. Now it holds them and hands
    them over through the journal; nobody answers the dispatch until it takes the
    subscriber over itself, and then dials them."""
    channel = await amqp.channel()
    await channel.declare_queue(
        command_queue,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 6, "x-message-ttl": 60_000},
    )
    sim.known = None
    timing = {"phonet_presence_interval": 0.5}  # gone after 2 s
    first = await start_producer(
        phonet_replica_id="a", amqp_url=broker_proxy.url(amqp_url), **timing
    )
    second = await start_producer(phonet_replica_id="b", **timing)
    await until(lambda: all(sim.sockets_of(s) == 2 for s in SUBSCRIBERS), what="hot")
    await until(lambda: bool(first.coordinator.roles.owned), what="a owns some")
    await asyncio.sleep(1.0)
    target = sorted(first.coordinator.roles.owned)[0]
    await broker_proxy.cut()  # a's broker links die; it still holds its sockets
    rpc = await RpcClient(amqp, command_queue).start()
    numbers = [f"38099000000{n}" for n in range(3)]
    replies = await asyncio.gather(
        *(rpc.call({"subscriber": target, "to": to}, timeout=30) for to in numbers)
    )
    assert [r.json["event"] for r in replies] == ["success"] * 3
    assert second.coordinator.owns(target)  # dialed by the replica that took over
    assert sorted(a["to"] for _, a in sim.actions) == numbers
