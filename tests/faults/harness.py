"""What every fault scenario runs: the PBX simulator, producer replicas as real processes,
a tap queue and a command sender on a real RabbitMQ cluster, steady load, and the faults.

* Each replica reaches the PBX through a TCP proxy of its own (``cut_pbx``) and every
  broker node through a proxy of its own (``cut_broker``); ``AMQP_URL`` lists its proxies,
  so a node stopped or killed behind a proxy is exactly a node gone.
* The load: call events at a fixed rate over :data:`SUBS`, each with its own uuid, and
  click2call commands throughout, a fifth of them sent again (same ``message_id``,
  ``correlation_id`` and body) as a CRM's retry button does; a send the broker did not
  confirm is sent again on the next connection (a retry too).
* The tap (a quorum queue bound to ``#``) and the replies (a quorum queue) are read by a
  consumer that survives node loss (manual acks; redelivered tap copies are not the
  service's copies and are not counted as such).
* :meth:`Harness.finish` stops the load, waits for everything to land (bounded), stops the
  replicas with SIGTERM and hands all of it to :func:`tests.faults.checker.check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from phonet_simulator import PhonetSimulator, Quirks
from tests.faults.checker import Answer, Delivered, Report, Sent, Tapped, check
from tests.faults.cluster import Node, RabbitCluster
from tests.proxy import TcpProxy
from tests.support import BASE_ENV, Service, http_get, until

log = logging.getLogger("tests.faults")
AMQP_ERRORS = (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException)

SUBS = [f"{n:03d}" for n in range(1, 25)]
EVENT_RATE = 300.0
"""Call events a second over all subscribers."""
COMMAND_RATE = 10.0
"""New click2call commands a second."""
RETRY_SHARE = 0.2
INTERVAL = 0.15
"""PHONET_PRESENCE_INTERVAL here: a replica is gone after 0.6 s, a handover lasts 1.5 s."""
WINDOW = 20 * INTERVAL
"""The standby window that follows (20 heartbeats): a takeover publishes this much again
(expected copies)."""
STEADY = 4.0
"""Seconds of load before a scenario's fault; the copies of frames older than the standby
window before the fault must be none (copies only around a takeover or failover)."""
SAMPLE = {
    "event": "call.dial",
    "lgDirection": 4,
    "leg": {"id": 1, "type": 1, "displayName": "Agent", "ext": "001"},
    "otherLegs": [{"num": "+380990000000"}],
    "dialAt": 1_764_000_000_000,
}


def now() -> float:
    return time.monotonic()


class Broker:
    """The test's own connection to the cluster: any live node, reopened when lost."""

    def __init__(self, cluster: RabbitCluster) -> None:
        self.cluster = cluster
        self.connection: AbstractConnection | None = None

    async def channel(self, *, confirms: bool = True) -> AbstractChannel:
        """A channel on a live node (TimeoutError after 30 s without one)."""
        async with asyncio.timeout(30):
            while True:
                if self.connection is None or self.connection.is_closed:
                    self.connection = None
                    for node in random.sample(self.cluster.live, len(self.cluster.live)):
                        with contextlib.suppress(Exception):
                            self.connection = await aio_pika.connect(node.url, timeout=3)
                            break
                if self.connection is not None:
                    with contextlib.suppress(Exception):
                        return await self.connection.channel(publisher_confirms=confirms)
                    with contextlib.suppress(Exception):
                        await self.connection.close()
                    self.connection = None
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()


class Reader:
    """Consumes one queue with manual acks, reconnecting when its node goes."""

    def __init__(
        self, broker: Broker, queue: str, on_message: Callable[[AbstractIncomingMessage], None]
    ):
        self.broker, self.queue, self.on_message = broker, queue, on_message
        self.task: asyncio.Task[None] | None = None
        self._seen: set[tuple[str | None, str | None, int]] = set()
        self.redelivered = 0
        """Messages the broker delivered to this reader again (its ack was lost): read
        once, so the checker counts only what the producer published twice."""

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"reader:{self.queue}")

    async def _run(self) -> None:
        while True:
            try:
                channel = await self.broker.channel(confirms=False)
                await channel.set_qos(prefetch_count=500)
                queue = await channel.get_queue(self.queue, ensure=False)

                async def take(message: AbstractIncomingMessage) -> None:
                    key = (message.message_id, message.correlation_id, hash(message.body))
                    if message.redelivered and key in self._seen:
                        self.redelivered += 1
                    else:
                        self._seen.add(key)
                        self.on_message(message)
                    await message.ack()

                await queue.consume(take)
                await channel.closed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("reader %s: %s", self.queue, exc)
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])


@dataclass
class Replica:
    """One producer process, its PBX proxy and its broker proxies (one per node)."""

    name: str
    env: dict[str, str]
    pbx: TcpProxy
    brokers: list[TcpProxy]
    service: Service | None = None
    generations: list[Service] = field(default_factory=list)

    async def start(self) -> None:
        self.service = await Service(self.env).start()
        self.generations.append(self.service)

    @property
    def proc(self) -> asyncio.subprocess.Process:
        assert self.service is not None
        return self.service.proc

    async def port(self) -> int:
        assert self.service is not None
        return await self.service.metrics_port()

    async def readyz(self) -> dict[str, Any]:
        _, _, body = await http_get(await self.port(), "/readyz")
        return dict(orjson.loads(body))

    async def node_port(self) -> int | None:
        """The cluster node behind the broker proxy this replica is connected through."""
        node = (await self.readyz()).get("amqp_node") or ""
        for proxy in self.brokers:
            if f":{proxy.port}/" in node:
                return proxy.target[1]
        return None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self.service is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen replica must hear it
            self.proc.send_signal(signal.SIGTERM)
        return await self.service.wait(timeout)

    async def cut_broker(self) -> None:
        for proxy in self.brokers:
            await proxy.cut()

    async def restore_broker(self) -> None:
        for proxy in self.brokers:
            await proxy.restore()

    async def close(self) -> None:
        for service in self.generations:
            with contextlib.suppress(Exception):
                service.proc.send_signal(signal.SIGCONT)
            await service.kill()
        for proxy in (self.pbx, *self.brokers):
            await proxy.close()


class Harness:
    """One scenario's world. ``async with Harness(cluster, "name") as h:`` sets it up, hot and
    settled, with the load running; the scenario injects its fault; ``await h.finish()``."""

    def __init__(
        self,
        cluster: RabbitCluster,
        scenario: str,
        *,
        replicas: int = 3,
        env: dict[str, str] | None = None,
        per_replica: dict[int, dict[str, str]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.scenario = scenario
        self.count = replicas
        tag = uuid.uuid4().hex[:8]
        self.exchange = f"test.faults.{tag}.events"
        self.queue = f"{self.exchange}.click2call"
        self.tap_queue = f"{self.exchange}.tap"
        self.reply_queue = f"{self.exchange}.replies"
        self.extra_env = env or {}
        self.per_replica = per_replica or {}
        self.sim = PhonetSimulator(subscribers=SUBS, quirks=Quirks.none(), seed=7, record=False)
        self.broker = Broker(cluster)
        self.replicas: list[Replica] = []
        self.delivered: list[Delivered] = []
        self.tapped: list[Tapped] = []
        self.sent: list[Sent] = []
        self.answers: list[Answer] = []
        self.steady: tuple[float, float] | None = None
        self._steady_from = 0.0
        self._stop = asyncio.Event()
        self._load: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self._readers: list[Reader] = []
        self._numbers = itertools.count(1)
        self._seen_tap: set[tuple[str, str]] = set()
        self.faults: list[tuple[float, str]] = []
        self.left_in_queue = 0

    # --- set-up -----------------------------------------------------------------------
    async def __aenter__(self) -> Harness:
        await self.sim.start()
        channel = await self.broker.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        quorum = {"x-queue-type": "quorum"}
        tap = await channel.declare_queue(self.tap_queue, durable=True, arguments=quorum)
        await tap.bind(exchange, "#")
        await channel.declare_queue(self.reply_queue, durable=True, arguments=quorum)
        self._readers = [
            Reader(self.broker, self.tap_queue, self._on_tap),
            Reader(self.broker, self.reply_queue, self._on_reply),
        ]
        for reader in self._readers:
            reader.start()
        for n in range(self.count):
            await self.add_replica(n)
        await self.settle()
        self._load = [
            asyncio.create_task(self._events(), name="load:events"),
            asyncio.create_task(self._commands(), name="load:commands"),
        ]
        await asyncio.sleep(0.5)
        self._steady_from = now()
        await asyncio.sleep(STEADY)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._end_load()
        for reader in self._readers:
            await reader.stop()
        for replica in self.replicas:
            await replica.close()
        await self._clean_broker()
        await self.broker.close()
        await self.sim.close()

    def replica_env(
        self, n: int, replica_id: str, pbx: TcpProxy, brokers: list[TcpProxy]
    ) -> dict[str, str]:
        urls = ",".join(f"amqp://guest:guest@127.0.0.1:{p.port}/?heartbeat=4" for p in brokers)
        env = {
            **BASE_ENV,
            "PHONET_DOMAIN": self.sim.domain,
            "PHONET_API_KEY": self.sim.api_key,
            "PHONET_SUBSCRIBERS": ",".join(SUBS),
            "PHONET_URL": f"ws://127.0.0.1:{pbx.port}/live/connector/v3/easy",
            "PHONET_REST_URL": self.sim.rest_url,
            "AMQP_URL": urls,
            "PHONET_EXCHANGE": self.exchange,
            "PHONET_CLICK2CALL_QUEUE": self.queue,
            "PHONET_CLICK2CALL_QUEUE_TYPE": "quorum",
            "PHONET_CLICK2CALL_TIMEOUT": "5",
            "PHONET_REPLICA_ID": replica_id,
            "PHONET_PRESENCE_INTERVAL": str(INTERVAL),
            "PHONET_RECONNECT_MIN_DELAY": "0.05",
            "PHONET_RECONNECT_MAX_DELAY": "0.5",
            "AMQP_RECONNECT_MIN_DELAY": "0.1",
            "AMQP_RECONNECT_MAX_DELAY": "1",
            "PHONET_SHUTDOWN_TIMEOUT": "4",
            "METRICS_HOST": "127.0.0.1",
            "METRICS_PORT": "0",
            "LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "INFO"),
            **self.extra_env,
            **self.per_replica.get(n, {}),
        }
        return {k: v for k, v in env.items() if v != ""}  # "": the setting is not set

    async def add_replica(self, n: int, replica_id: str | None = None) -> Replica:
        """Start replica ``n`` (a new process, proxies of its own)."""
        pbx = await TcpProxy("127.0.0.1", self.sim.port).start()
        brokers = [await TcpProxy("127.0.0.1", node.port).start() for node in self.cluster.nodes]
        name = replica_id or f"r{n}"
        replica = Replica(name, self.replica_env(n, name, pbx, brokers), pbx, brokers)
        await replica.start()
        self.replicas.append(replica)
        return replica

    async def settle(self, timeout: float = 40.0) -> None:
        """Every subscriber held hot (two sockets with two or more replicas), owned once
        by the running replicas, no handover left, and every replica taking commands."""
        running = [r for r in self.replicas if r.proc.returncode is None]
        sockets = 2 if len(running) > 1 else 1

        async def settled() -> bool:
            if not all(self.sim.sockets_of(s) == sockets for s in SUBS):
                return False
            owned = handing = 0
            for replica in running:
                ready = await replica.readyz()
                if not (ready.get("click2call") or {}).get("consuming"):
                    return False
                block = ready.get("replicas") or {}
                owned += int(block.get("owned", 0))
                handing += int(block.get("handing_over", 0))
            return owned == len(SUBS) and handing == 0

        async with asyncio.timeout(timeout):
            while not await settled():
                await asyncio.sleep(0.2)

    def fault(self, what: str) -> None:
        """Mark the start of a fault: the steady span ends here."""
        at = now()
        self.faults.append((at, what))
        if self.steady is None:
            self.steady = (self._steady_from, at - WINDOW - 0.3)

    # --- load -------------------------------------------------------------------------
    async def _events(self) -> None:
        interval = 1.0 / EVENT_RATE
        due = now()
        for n in itertools.count():
            if self._stop.is_set():
                return
            subscriber = SUBS[n % len(SUBS)]
            call_id = f"{self.scenario}-{n}"
            frame = orjson.dumps({**SAMPLE, "uuid": call_id, "serverTime": time.time_ns() // 10**6})
            at = now()
            sockets = await self.sim.send(subscriber, frame.decode())
            self.delivered.append(Delivered(call_id, at, sockets))
            due += interval
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
            elif n % 50 == 0:
                await asyncio.sleep(0)

    async def _commands(self) -> None:
        channel: AbstractChannel | None = None
        while not self._stop.is_set():
            key = uuid.uuid4().hex
            to = f"38067{next(self._numbers):07d}"
            body = {"subscriber": random.choice(SUBS), "to": to, "id": key[:12]}
            channel = await self._send(channel, key, to, body)
            if random.random() < RETRY_SHARE:
                task = asyncio.create_task(self._retry(key, to, body))
                self._retries.add(task)
                task.add_done_callback(self._retries.discard)
            await asyncio.sleep(1.0 / COMMAND_RATE)

    async def _retry(self, key: str, to: str, body: dict[str, Any]) -> None:
        await asyncio.sleep(random.uniform(0.3, 1.5))
        await self._send(None, key, to, body)

    async def _send(
        self, channel: AbstractChannel | None, key: str, to: str, body: dict[str, Any]
    ) -> AbstractChannel | None:
        """One send; a send the broker did not confirm is sent again on a new channel."""
        for _ in range(5):
            if channel is None or channel.is_closed:
                channel = await self.broker.channel()
            message = aio_pika.Message(
                orjson.dumps(body),
                message_id=key,
                correlation_id=key,
                reply_to=self.reply_queue,
                content_type="application/json",
                timestamp=datetime.datetime.now(datetime.UTC),
            )
            try:
                async with asyncio.timeout(5):
                    result = await channel.default_exchange.publish(message, routing_key=self.queue)
            except (TimeoutError, OSError, *AMQP_ERRORS):
                self.sent.append(Sent(key, to, confirmed=False))
                channel = None
                continue
            if isinstance(result, DeliveredMessage):  # returned: no queue took it
                self.sent.append(Sent(key, to, confirmed=False))
                await asyncio.sleep(0.2)
                continue
            self.sent.append(Sent(key, to, confirmed=True))
            return channel
        return channel

    def _on_tap(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        call_id = headers.get("uuid")
        if not (message.routing_key or "").startswith("call.") or not isinstance(call_id, str):
            return
        seen = (call_id, message.message_id or "")
        if message.redelivered and seen in self._seen_tap:
            return  # the tap's own redelivery after its connection went, not a copy
        self._seen_tap.add(seen)
        self.tapped.append(Tapped(call_id, message.message_id or ""))

    def _on_reply(self, message: AbstractIncomingMessage) -> None:
        self.answers.append(Answer(message.correlation_id or "", orjson.loads(message.body)))

    async def _end_load(self) -> None:
        self._stop.set()
        for task in (*self._load, *self._retries):
            task.cancel()
        await asyncio.gather(*self._load, *self._retries, return_exceptions=True)
        self._load = []

    # --- the end ----------------------------------------------------------------------
    async def finish(self, timeout: float = 40.0) -> Report:
        """Stop the load, wait (bounded) until every delivered event and every reply has
        landed, stop the replicas with SIGTERM, and check. Asserts the checker holds."""
        self._stop.set()
        await asyncio.gather(*self._load, *list(self._retries), return_exceptions=True)
        wanted = {d.uuid for d in self.delivered if d.sockets}

        def landed() -> bool:
            tapped = {t.uuid for t in self.tapped}
            replied = collections_count(a.key for a in self.answers)
            sends = collections_count(s.key for s in self.sent if s.confirmed)
            return wanted <= tapped and all(replied.get(k, 0) >= n for k, n in sends.items())

        with contextlib.suppress(AssertionError):
            await until(landed, timeout=timeout, what="events and replies landed")
        await asyncio.sleep(1.0)  # late copies and extra replies, if any, show up too
        self.left_in_queue = await self._queue_depth()
        stopped_at = len(self.tapped)
        for replica in self.replicas:
            if replica.service is not None and replica.proc.returncode is None:
                await replica.terminate()
        self._keep_logs()
        dialed = [a["to"] for _, a in self.sim.actions if isinstance(a, dict) and "to" in a]
        report = check(
            self.scenario,
            self.delivered,
            self.tapped,
            self.sent,
            self.answers,
            dialed,
            steady=self.steady,
            stopped_at=stopped_at,
        )
        again = sum(reader.redelivered for reader in self._readers)
        print(report.line(), f"| read again {again}" if again else "")
        return report

    async def _queue_depth(self) -> int:
        """Commands still in the command queue (every one should be settled by now)."""
        with contextlib.suppress(Exception):
            channel = await self.broker.channel(confirms=False)
            queue = await channel.declare_queue(self.queue, passive=True)
            count = queue.declaration_result.message_count or 0
            await channel.close()
            return int(count)
        return -1

    async def command(
        self, body: dict[str, Any], *, expect_reply: bool = True, **properties: Any
    ) -> str:
        """Send one command with these properties (a hostile one, say); when a reply to
        the test's reply queue is expected, it counts as a send the checker follows."""
        key = uuid.uuid4().hex
        channel = await self.broker.channel()
        message = aio_pika.Message(
            orjson.dumps(body),
            message_id=key,
            correlation_id=key,
            reply_to=properties.pop("reply_to", self.reply_queue),
            **properties,
        )
        await channel.default_exchange.publish(message, routing_key=self.queue)
        if expect_reply:
            self.sent.append(Sent(key, str(body.get("to")), confirmed=True))
        return key

    def expect_reply(self, key: str, to: str) -> None:
        """A command sent by the scenario itself that must be answered once (its reply
        carries ``to``)."""
        self.sent.append(Sent(key, to, confirmed=True))

    def number(self) -> str:
        """A number no other command dials."""
        return f"38067{next(self._numbers):07d}"

    async def node_of(self, replica: Replica) -> Node:
        """The cluster node the replica's event connection uses."""
        port = await replica.node_port()
        assert port is not None, "the replica is not connected"
        return self.cluster.node_at(port)

    def _keep_logs(self) -> None:
        """With FAULTS_LOGS=<dir>, each replica process's log lines go to a file there
        (``<scenario>-<replica>-<n>.log``), with what the test sent and received."""
        where = os.environ.get("FAULTS_LOGS")
        if not where:
            return
        base = Path(where)
        base.mkdir(parents=True, exist_ok=True)
        for replica in self.replicas:
            for n, service in enumerate(replica.generations):
                name = f"{self.scenario}-{replica.name}-{n}.log"
                (base / name).write_text("\n".join(service.lines))
        (base / f"{self.scenario}-test.json").write_bytes(
            orjson.dumps(
                {
                    "sent": [s.__dict__ for s in self.sent],
                    "answers": [a.__dict__ for a in self.answers],
                    "dialed": [a for _, a in self.sim.actions],
                    "faults": self.faults,
                    "delivered": [d.__dict__ for d in self.delivered],
                    "wall_minus_clock": time.time() - now(),
                }
            )
        )

    async def _clean_broker(self) -> None:
        for kind, name in (
            ("queue", self.queue),
            ("queue", f"{self.queue}.journal"),
            ("queue", self.tap_queue),
            ("queue", self.reply_queue),
            ("exchange", self.exchange),
            ("exchange", f"{self.exchange}.presence"),
        ):
            with contextlib.suppress(Exception):
                channel = await self.broker.channel(confirms=False)
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
                await channel.close()


def collections_count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


Fault = Callable[[Harness], Awaitable[None]]
