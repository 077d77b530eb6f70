"""Nothing lost: broker outages, stalls, PBX drops, full buffers, nacks, hostile frames.

A :class:`~tests.proxy.TcpProxy` sits between the producer and RabbitMQ so links can be cut,
stalled and restored without touching the broker. Every test counts by unique event uuid.
"""

from __future__ import annotations

import asyncio
import random
import shutil

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from producer.app.service import Producer
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.proxy import TcpProxy
from tests.support import Collector, RpcClient, until


class Sender:
    """Sends uniquely numbered call events at a steady rate; remembers what was delivered."""

    def __init__(self, sim: PhonetSimulator, prefix: str = "u") -> None:
        self.sim, self.prefix = sim, prefix
        self.delivered: set[str] = set()
        self.missed: set[str] = set()
        self._n = 0

    async def send(self, count: int, interval: float = 0.0) -> None:
        for _ in range(count):
            uuid = f"{self.prefix}{self._n}"
            subscriber = SUBSCRIBERS[self._n % len(SUBSCRIBERS)]
            self._n += 1
            frame = {"event": "call.dial", "uuid": uuid, "lgDirection": 4, "dialAt": 1}
            if await self.sim.send(subscriber, frame):
                self.delivered.add(uuid)
            else:
                self.missed.add(uuid)
            await asyncio.sleep(interval)

    async def run(self, seconds: float, rate: float) -> None:
        await self.send(int(seconds * rate), 1 / rate)


async def all_arrive(collector: Collector, uuids: set[str], timeout: float = 30) -> None:
    await collector.wait_for(lambda _: uuids <= collector.uuids(), timeout)


def value(producer: Producer, name: str, labels: dict[str, str] | None = None) -> float:
    return producer.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_broker_link_cut_mid_stream(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
) -> None:
    producer = await start_producer(amqp_url=broker_proxy.url(amqp_url))
    await sim.wait_connected(SUBSCRIBERS)
    sender = Sender(sim)
    stream = asyncio.ensure_future(sender.send(3000))
    await until(
        lambda: value(producer, "phonet_events_published_total", {"event": "call.dial"}) > 500,
        what="publishing under way",
    )
    await broker_proxy.cut()  # in flight: unconfirmed publishes on a dead connection
    await asyncio.sleep(0.5)
    await broker_proxy.restore()
    await stream
    assert len(sender.delivered) == 3000
    await all_arrive(collector, sender.delivered)
    assert value(producer, "phonet_amqp_connects_total") >= 2
    assert value(producer, "phonet_publish_retries_total") > 0


async def test_three_second_outage_under_steady_traffic(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
) -> None:
    producer = await start_producer(amqp_url=broker_proxy.url(amqp_url))
    await sim.wait_connected(SUBSCRIBERS)
    sender = Sender(sim)
    traffic = asyncio.ensure_future(sender.run(seconds=6, rate=150))
    await asyncio.sleep(1)
    await broker_proxy.cut()
    await until(lambda: not producer.broker.connected, what="outage noticed")
    await asyncio.sleep(3)
    assert len(producer.pipeline) > 200  # the sockets kept reading into the buffer
    await broker_proxy.restore()
    await traffic
    await all_arrive(collector, sender.delivered)
    assert len(sender.delivered) == 900
    # in order per subscriber, duplicates aside
    for subscriber in SUBSCRIBERS:
        seen = [
            int(m.headers["uuid"][1:])
            for m in collector.messages
            if m.headers["subscriber"] == subscriber
        ]
        first_seen = list(dict.fromkeys(seen))
        assert first_seen == sorted(first_seen)


async def test_stalled_broker_is_detected_by_heartbeat(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
) -> None:
    url = broker_proxy.url(amqp_url) + "?heartbeat=1"
    producer = await start_producer(amqp_url=url, amqp_connect_timeout=1.0)
    await sim.wait_connected(SUBSCRIBERS)
    broker_proxy.stall()  # TCP stays open, nothing flows: only heartbeats can tell
    sender = Sender(sim)
    await sender.send(50)
    await until(lambda: not producer.broker.connected, timeout=15, what="heartbeat timeout")
    await broker_proxy.restore()
    await all_arrive(collector, sender.delivered)


async def test_stalled_confirms_are_detected_by_publish_timeout(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
) -> None:
    producer = await start_producer(
        amqp_url=broker_proxy.url(amqp_url) + "?heartbeat=600",
        phonet_publish_timeout=1.0,
        amqp_connect_timeout=1.0,
    )
    await sim.wait_connected(SUBSCRIBERS)
    broker_proxy.stall()
    sender = Sender(sim)
    await sender.send(50)
    await until(lambda: not producer.broker.connected, timeout=10, what="watchdog fired")
    await broker_proxy.restore()
    await all_arrive(collector, sender.delivered)


async def test_pbx_closing_every_socket_under_traffic(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    """What Phonet delivered arrives; what it sent while our socket was down is lost at the
    source (the simulator records it as missed), which the README says plainly."""
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    sender = Sender(sim)
    traffic = asyncio.ensure_future(sender.run(seconds=3, rate=200))
    for code in (1012, 1011, 1001):
        await asyncio.sleep(0.6)
        await sim.drop(code=code)
    await traffic
    await all_arrive(collector, sender.delivered)
    assert sender.delivered
    assert not sender.missed & collector.uuids()


async def test_abrupt_tcp_loss_of_every_socket(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    """A reset connection: the sockets come back and traffic flows again. (Frames still in
    flight at the instant of a TCP reset are lost in the network by TCP itself, so the
    traffic pauses around the reset.)"""
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    sender = Sender(sim)
    await sender.send(200)
    await until(
        lambda: value(producer, "phonet_events_received_total", {"event": "call.dial"}) == 200,
        what="all read before the reset",
    )
    assert await sim.drop(code=None) == 3
    await sim.wait_disconnected(SUBSCRIBERS, timeout=5)
    await sim.wait_connected(SUBSCRIBERS, timeout=10)
    await sender.send(200)
    await all_arrive(collector, sender.delivered)
    assert len(sender.delivered) == 400


async def test_full_buffer_drops_the_oldest_and_counts_each(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = await start_producer(amqp_url=broker_proxy.url(amqp_url), phonet_buffer_size=20)
    await sim.wait_connected(SUBSCRIBERS)
    await broker_proxy.cut()
    await until(lambda: not producer.broker.connected, what="outage noticed")
    sender = Sender(sim)
    await sender.send(100)
    await until(
        lambda: value(producer, "phonet_events_received_total", {"event": "call.dial"}) == 100,
        what="all read",
    )
    assert len(producer.pipeline) == 20
    assert value(producer, "phonet_events_dropped_total", {"reason": "buffer_full"}) == 80
    assert value(producer, "phonet_buffer_events") == 20
    await broker_proxy.restore()
    newest = {f"u{n}" for n in range(80, 100)}
    await all_arrive(collector, newest)
    assert collector.uuids() == newest
    burst = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(burst) == 1  # once per burst, not 80 lines


async def test_nacked_publishes_are_retried_until_accepted(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    exchange_name: str,
) -> None:
    """A bounded queue with overflow=reject-publish makes the broker nack; the producer
    retries with backoff until a consumer makes room."""
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        "", exclusive=True, arguments={"x-max-length": 5, "x-overflow": "reject-publish"}
    )
    await queue.bind(exchange, "#")
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    sender = Sender(sim)
    await sender.send(30)
    await until(lambda: value(producer, "phonet_publish_retries_total") > 0, what="a nack")
    got: set[str] = set()
    async with asyncio.timeout(30):
        while got != sender.delivered:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            got.add(message.headers["uuid"])  # type: ignore[arg-type]
            await message.ack()
    await until(lambda: len(producer.pipeline) == 0, what="pipeline drained")


async def test_channel_closed_by_an_error_recovers(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    amqp: AbstractConnection,
    exchange_name: str,
) -> None:
    """Someone deletes the exchange: the next publish closes the channel (404); the producer
    reconnects, declares the exchange again and goes on."""
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    channel = await amqp.channel()
    await channel.exchange_delete(exchange_name)
    sender = Sender(sim)
    await sender.send(5)
    await until(lambda: value(producer, "phonet_amqp_connects_total") >= 2, what="reconnect")
    await until(lambda: producer.broker.connected, what="connected again")
    await collector.queue.bind(exchange_name, "#")  # the binding went with the exchange
    later = Sender(sim, prefix="v")
    await later.send(5)
    await all_arrive(collector, later.delivered)


async def ctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, args
    return out.decode()


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_connection_closed_by_the_server_recovers(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    amqp_url: str,
    rpc: RpcClient,
) -> None:
    if "localhost" not in amqp_url and "127.0.0.1" not in amqp_url:
        pytest.skip("the broker is not local")
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    listing = await ctl("list_connections", "pid", "client_properties")
    ours = [
        line.split("\t")[0]
        for line in listing.splitlines()
        if "phonet-producer@" in line and "connection_name" in line
    ]
    assert ours
    for pid in ours:
        await ctl("close_connection", pid, "closed by the test")
    await until(
        lambda: value(producer, "phonet_amqp_connects_total") >= 2, timeout=15, what="reconnect"
    )
    sender = Sender(sim)
    await sender.send(20)
    await all_arrive(collector, sender.delivered)
    await until(lambda: producer.click2call.consuming, what="command consumer resumed")
    reply = await rpc.call({"subscriber": "001", "to": "380991234567"})
    assert reply.json["event"] == "success"


HOSTILE: list[tuple[str, bytes | str, bool | None, str]] = [
    ("nesting-1mb", "[" * 1_000_000, None, "invalid"),
    ("nested-objects", '{"a":' * 5000 + "1" + "}" * 5000, None, "invalid"),
    (
        "huge-string",
        orjson.dumps({"event": "call.dial", "uuid": "h1", "x": "y" * 900_000}).decode(),
        None,
        "call.dial",
    ),
    ("wildcards", '{"event":"#.*.#","uuid":"h2"}', None, "%23.%2A.%23"),
    (
        "numbers-for-strings",
        '{"event":"call.dial","uuid":7,"leg":{"ext":5},"serverTime":"x"}',
        None,
        "call.dial",
    ),
    ("invalid-utf8", b'{"event":"call.dial","uuid":"\xff\xfe"}', True, "invalid"),
    ("binary", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), None, "invalid"),
    ("null-bytes", '{"event":"call.dial\\u0000x","uuid":"h3"}', None, "call"),
    ("empty-text", "", None, "invalid"),
]


async def test_hostile_frames_never_stop_the_socket(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    for _, payload, text, _ in HOSTILE:
        assert await sim.send("001", payload, text=text) == 1
    await sim.send("001", {"event": "call.hangup", "uuid": "last"})
    messages = await collector.wait_count(len(HOSTILE) + 1, timeout=20)
    for (name, payload, _, prefix), message in zip(HOSTILE, messages, strict=False):
        assert message.routing_key.startswith(prefix), name
        assert message.body == (payload if isinstance(payload, bytes) else payload.encode()), name
    assert messages[-1].headers["uuid"] == "last"
    assert sim.handshakes["001"] == 1


def random_json(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(
            [
                None,
                True,
                0,
                -1,
                2**63,
                1.5,
                "",
                "call.dial",
                "#",
                "*",
                "é\u0000",
                rng.randbytes(8).decode("latin-1"),
                1473973201000,
                "1473973201000",
            ]
        )
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return random_object(rng, depth + 1)


def random_object(rng: random.Random, depth: int = 0) -> dict[str, object]:
    keys = ["event", "uuid", "lgDirection", "serverTime", "dialAt", "leg", "x"]
    return {rng.choice(keys): random_json(rng, depth) for _ in range(rng.randint(0, 5))}


async def test_fuzzed_frames_through_the_socket_each_become_one_message(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    """Thousands of random frames — junk bytes, random JSON, mangled events — over a real
    socket: each one is published exactly once (as an event or as invalid), the socket
    never reconnects and the order holds."""
    rng = random.Random(20261127)
    frames: list[tuple[bytes | str, bool | None]] = []
    for n in range(3000):
        kind = rng.random()
        if kind < 0.3:
            frames.append((rng.randbytes(rng.randint(0, 200)), None))
        elif kind < 0.4:
            frames.append((rng.randbytes(rng.randint(1, 200)), True))  # text frame, any bytes
        else:
            data = random_object(rng) if kind < 0.8 else {"event": f"call.{n}", "uuid": str(n)}
            frames.append((orjson.dumps(data).decode(), None))
    await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    for payload, text in frames:
        await sim.send("001", payload, text=text)
    messages = await collector.wait_count(len(frames), timeout=60)
    assert len(messages) == len(frames)
    for (payload, _), message in zip(frames, messages, strict=True):
        assert message.body == (payload if isinstance(payload, bytes) else payload.encode())
    assert sim.handshakes["001"] == 1
