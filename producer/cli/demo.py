"""``phonet-producer demo``: simulator → producer → RabbitMQ → a consumer printing events.

Everything runs in one process on an embedded default: the simulator on a free local port,
the producer pointed at it and at the broker, and a consumer with its own exclusive queue
bound to ``#`` on the events exchange that prints each message as it arrives. If the broker
cannot be reached the demo says so in one line (password masked) and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any, TextIO

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from phonet_simulator import PhonetSimulator
from producer import __version__
from producer.app.service import Producer
from producer.app.settings import DEFAULT_AMQP_URL, load_settings
from producer.broker.link import check_broker, open_connection
from producer.core.errors import BrokerUnavailable
from producer.core.rules import mask_url

DEMO_SUBSCRIBERS = ("001", "002", "ivan.petrov@example.com")


def describe(routing_key: str, headers: dict[str, Any], body: bytes) -> str:
    """One human line for a consumed message (pure; used by the demo and its test)."""
    parts = [f"{routing_key:<40}"]
    if "invalid_reason" in headers:
        parts.append(f"invalid: {headers['invalid_reason']}")
        return "  ".join(parts)
    parts.append(f"{headers.get('direction', ''):<9}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = {}
    if isinstance(data, dict):
        if data.get("message"):
            parts.append(str(data["message"]))
        legs = data.get("otherLegs") or []
        client = legs[0] if legs and isinstance(legs[0], dict) else {}
        if client.get("num"):
            who = client.get("name") or "unknown client"
            company = client.get("companyName")
            parts.append(f"{client['num']} {who}" + (f" ({company})" if company else ""))
        leg2 = data.get("leg2")
        if isinstance(leg2, dict) and leg2.get("ext"):
            parts.append(f"→ ext {leg2['ext']}")
    if headers.get("uuid"):
        parts.append(f"uuid={headers['uuid']}")
    return "  ".join(parts)


async def run_demo(
    *,
    amqp_url: str | None = None,
    seconds: float | None = None,
    max_events: int | None = None,
    calls_per_second: float = 1.0,
    exchange: str = "phonet.events",
    click2call_queue: str = "phonet.click2call",
    metrics_port: int = 0,
    out: TextIO = sys.stdout,
) -> int:
    """Run the demo until Ctrl-C, ``seconds`` elapsed or ``max_events`` printed."""
    url = amqp_url or os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL
    safe = mask_url(url)
    try:
        await check_broker(url, safe, timeout=5.0)
    except BrokerUnavailable as exc:
        print(
            f"phonet-producer demo: {exc}. Start RabbitMQ with `rabbitmq-server -detached`"
            " (apt-get install rabbitmq-server) or `docker run -d -p 5672:5672 rabbitmq:3`,"
            " or point AMQP_URL at one.",
            file=sys.stderr,
        )
        return 1

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, done.set)

    printed = 0

    async with PhonetSimulator(
        subscribers=DEMO_SUBSCRIBERS, calls_per_second=calls_per_second
    ) as sim:
        settings = load_settings(
            phonet_domain=sim.domain,
            phonet_api_key=sim.api_key,
            phonet_api_key_file=None,
            phonet_subscribers=",".join(DEMO_SUBSCRIBERS),
            phonet_url=sim.url,
            phonet_rest_url=sim.rest_url,
            amqp_url=url,
            phonet_exchange=exchange,
            phonet_click2call_queue=click2call_queue,
            metrics_host="127.0.0.1",
            metrics_port=metrics_port,
        )
        connection = await open_connection(url, timeout=5.0, name="phonet-producer demo consumer")
        async with connection:
            channel = await connection.channel()
            events = await channel.declare_exchange(
                exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await queue.bind(events, "#")

            async def show(message: AbstractIncomingMessage) -> None:
                nonlocal printed
                async with message.process():
                    line = describe(message.routing_key or "", dict(message.headers), message.body)
                    print(line, file=out, flush=True)
                    printed += 1
                    if max_events is not None and printed >= max_events:
                        done.set()

            await queue.consume(show)
            async with Producer(settings) as producer:
                print(
                    f"simulator  {sim.url}  subscribers {', '.join(DEMO_SUBSCRIBERS)}\n"
                    f"producer   {__version__} (replica {settings.replica_id})  metrics"
                    f" http://127.0.0.1:{producer.http.port}/metrics\n"
                    f"consumer   queue bound to '#' on exchange {exchange!r} at {safe}\n"
                    "Ctrl-C stops. Events as RabbitMQ delivers them:",
                    file=out,
                    flush=True,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await done.wait()
    print(f"demo stopped after {printed} events", file=out, flush=True)
    return 0
