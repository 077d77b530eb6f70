"""The producer's own publish path without sockets or parsing: envelopes put straight
into an :class:`~producer.outbox.Outbox` and pumped by a :class:`~producer.amqp.BrokerLink`.
It shows what the broker takes from the batch publisher, i.e. the ceiling for the producer.

``python -m tests.bench.fast_publisher AMQP_URL EXCHANGE COUNT SUBSCRIBERS`` prints
``ready`` once connected, waits for a line on stdin, then publishes.
"""

from __future__ import annotations

import asyncio
import sys
import time

from producer.amqp import BrokerLink
from producer.envelope import event_envelope
from producer.events import parse_frame
from producer.metrics import Metrics
from producer.outbox import Outbox
from tests.bench.simproc import frame


async def main() -> None:
    amqp_url, exchange, count, subscribers = sys.argv[1:]
    n, subs = int(count), int(subscribers)
    envelopes = []
    for i in range(n):
        body = frame(f"s{i % subs}-{i}").encode()
        envelopes.append(
            event_envelope(
                exchange, f"s{i % subs}", parse_frame(body), body, received=0.0, wall_ms=0
            )
        )
    outbox = Outbox(n + 1)
    link = BrokerLink(
        url=amqp_url, safe_url="", exchange=exchange, outbox=outbox, metrics=Metrics()
    )
    task = asyncio.create_task(link.run())
    await link.wait_connected(30)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.perf_counter()
    for envelope in envelopes:
        outbox.put(envelope)
    await outbox.wait_empty()
    print(f"{time.perf_counter() - started:.6f}", flush=True)
    link.stop()
    await task


if __name__ == "__main__":
    asyncio.run(main())
