"""The baseline "afternoon" bridge: one socket per subscriber, and for each frame one
``exchange.publish`` whose confirmation is awaited before reading the next frame.

``python -m tests.bench.naive_bridge URL DOMAIN KEY AMQP_URL EXCHANGE SUB [SUB ...]``
prints ``ready`` once every socket is open, then bridges until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import urlencode

import aio_pika
from websockets.asyncio.client import connect


async def bridge(
    url: str, exchange: aio_pika.abc.AbstractExchange, subscriber: str, ready: asyncio.Event
) -> None:
    async with connect(url, max_size=2**20) as ws:
        ready.set()
        async for message in ws:
            event = json.loads(message)["event"]
            await exchange.publish(
                aio_pika.Message(
                    message.encode() if isinstance(message, str) else message,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=f"{event}.{subscriber}",
            )


async def main() -> None:
    base, domain, key, amqp_url, exchange_name, *subscribers = sys.argv[1:]
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    readies = []
    tasks = []
    for subscriber in subscribers:
        query = urlencode({"domain": domain, "apiKey": key, "subscriber": subscriber})
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(bridge(f"{base}?{query}", exchange, subscriber, ready)))
    await asyncio.gather(*(r.wait() for r in readies))
    print("ready", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
