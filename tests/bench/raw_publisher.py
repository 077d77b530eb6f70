"""The raw limit: the same bodies published by aio-pika from one process, publisher
confirms on, many publishes in flight (no sockets, no parsing).

``python -m tests.bench.raw_publisher AMQP_URL EXCHANGE COUNT SUBSCRIBERS`` waits for a
line on stdin, publishes, and prints the seconds it took until every confirm arrived.

With a fifth argument, ``RATE``, it is the latency control instead: COUNT messages at RATE
a second, each stamped with ``simSentNs`` as it is published (as the simulator stamps its
frames), and it prints a JSON line with the exact publish → confirm p50 and p99 in ms.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aio_pika
import orjson

from tests.bench.simproc import frame

IN_FLIGHT = 1000


def message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )


async def at_rate(exchange: aio_pika.abc.AbstractExchange, n: int, subs: int, rate: float) -> None:
    confirms: list[float] = []

    async def publish(i: int) -> None:
        body = frame(f"raw{i}", simSentNs=time.time_ns()).encode()
        started = time.perf_counter()
        await exchange.publish(message(body), routing_key=f"call.dial.s{i % subs}")
        confirms.append((time.perf_counter() - started) * 1000)

    start = time.perf_counter()
    tasks = []
    for i in range(n):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(publish(i)))
    await asyncio.gather(*tasks)
    confirms.sort()
    p50, p99 = (confirms[min(n - 1, int(q * n))] for q in (0.5, 0.99))
    print(orjson.dumps({"confirm_p50": p50, "confirm_p99": p99}).decode(), flush=True)


async def main() -> None:
    amqp_url, exchange_name, count, subscribers, *rate = sys.argv[1:]
    n, subs = int(count), int(subscribers)
    bodies = [(frame(f"s{i % subs}-{i}").encode(), f"call.dial.s{i % subs}") for i in range(n)]
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    print("ready", flush=True)
    sys.stdin.readline()
    if rate:
        await at_rate(exchange, n, subs, float(rate[0]))
        await connection.close()
        return
    started = time.perf_counter()
    window = asyncio.Semaphore(IN_FLIGHT)

    async def publish(body: bytes, key: str) -> None:
        try:
            await exchange.publish(message(body), routing_key=key)
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
