"""The producer's own publish path without sockets or parsing: envelopes put straight into
a :class:`~producer.publish.publisher.Publisher` and pumped by a
:class:`~producer.broker.link.BrokerLink`.
It shows what the broker takes from the batch publisher, i.e. the ceiling for the producer.

``python -m tests.bench.fast_publisher AMQP_URL EXCHANGE COUNT SUBSCRIBERS`` prints
``ready`` once connected, waits for a line on stdin, then publishes.
"""

from __future__ import annotations

import asyncio
import sys
import time

from producer.broker.link import BrokerLink
from producer.broker.topology import Exchange
from producer.core.envelope import event_envelope
from producer.core.events import parse_frame
from producer.publish.pipeline import Pipeline
from producer.publish.publisher import Publisher
from producer.telemetry.metrics import Metrics
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
    metrics = Metrics()
    pipeline = Pipeline(max_events=n + 1, max_bytes=2**40, window=1024)
    publisher = Publisher(
        pipeline, metrics, publish_timeout=30.0, exchange=Exchange(exchange, "topic")
    )
    link = BrokerLink(url=amqp_url, metrics=metrics)
    link.session_hooks.append(publisher)
    task = asyncio.create_task(link.run())
    await link.wait_connected(30)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.perf_counter()
    for envelope in envelopes:
        publisher.put(envelope)
    await publisher.wait_empty()
    print(f"{time.perf_counter() - started:.6f}", flush=True)
    link.stop()
    await task


if __name__ == "__main__":
    asyncio.run(main())
