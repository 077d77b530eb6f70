"""The raw limit: the same bodies published by aio-pika from one process, publisher
confirms on, many publishes in flight (no sockets, no parsing).

``python -m tests.bench.raw_publisher AMQP_URL EXCHANGE COUNT SUBSCRIBERS`` waits for a
line on stdin, publishes, and prints the seconds it took until every confirm arrived.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aio_pika

from tests.bench.simproc import frame

IN_FLIGHT = 1000


async def main() -> None:
    amqp_url, exchange_name, count, subscribers = sys.argv[1:]
    n, subs = int(count), int(subscribers)
    bodies = [(frame(f"s{i % subs}-{i}").encode(), f"call.dial.s{i % subs}") for i in range(n)]
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    window = asyncio.Semaphore(IN_FLIGHT)

    async def publish(body: bytes, key: str) -> None:
        try:
            await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=key,
            )
        finally:
            window.release()

    tasks = []
    for body, key in bodies:
        await window.acquire()
        tasks.append(asyncio.create_task(publish(body, key)))
    await asyncio.gather(*tasks)
    print(f"{time.perf_counter() - started:.6f}", flush=True)
    await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
