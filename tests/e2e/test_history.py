"""The replayable call history (PHONET_HISTORY_STREAM): the producer keeps every event in a
RabbitMQ stream, and the toolkit replays it from a moment, typed and filtered."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection

from phonet_client import CallEvent
from phonet_client.history import History
from phonet_simulator import PhonetSimulator
from tests.conftest import Janitor, broker_name
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import SAMPLE, http_get, until

pytestmark = pytest.mark.e2e


async def replay(history: History, **kwargs: Any) -> list[Any]:
    return [r async for r in history.since(**kwargs)]


async def test_the_history_replays_from_a_moment(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    janitor: Janitor,
) -> None:
    stream = janitor.queue(broker_name("history"))
    producer = await start_producer(phonet_history_stream=stream, phonet_history_max_age=3600)
    await sim.wait_connected(SUBSCRIBERS)
    await until(lambda: producer.history is not None and producer.history.declared)
    morning = datetime.datetime.now(datetime.UTC)
    for n in range(6):
        await sim.send(SUBSCRIBERS[n % 2], {**SAMPLE, "uuid": f"early-{n}"})
    await until(lambda: len(producer.pipeline) == 0)
    await asyncio.sleep(1.1)
    noon = datetime.datetime.now(datetime.UTC)
    for n in range(4):
        await sim.send(SUBSCRIBERS[n % 2], {**SAMPLE, "uuid": f"late-{n}"})
    await until(lambda: len(producer.pipeline) == 0)
    await asyncio.sleep(0.3)

    history = History(amqp, stream)
    everything = await replay(history, when=morning)
    # Each subscriber's events in the order received (two sockets may interleave).
    for subscriber in SUBSCRIBERS[:2]:
        theirs = [r.message.uuid for r in everything if r.message.subscriber == subscriber]
        start = 0 if subscriber == SUBSCRIBERS[0] else 1
        assert theirs == [f"early-{n}" for n in range(start, 6, 2)] + [
            f"late-{n}" for n in range(start, 4, 2)
        ]
    assert all(isinstance(r.message, CallEvent) for r in everything)
    offsets = [r.offset for r in everything]
    assert offsets == sorted(offsets)
    later = await replay(history, when=noon)
    assert sorted(r.message.uuid for r in later) == [f"late-{n}" for n in range(4)]
    mine = await replay(history, when=morning, subscriber="001", event="call")
    assert [r.message.uuid for r in mine] == ["early-0", "early-2", "early-4", "late-0", "late-2"]
    # Replaying takes nothing away: a second reader sees it all again.
    assert len(await replay(history, when=morning)) == 10
    _, _, raw = await http_get(producer.http.port, "/readyz")
    assert f'"stream":"{stream}"'.encode() in raw.replace(b" ", b"")


async def test_a_queue_of_that_name_that_is_not_a_stream_is_said_plainly(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    janitor: Janitor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events flow on; the history is not kept and the log and /readyz say why."""
    stream = janitor.queue(broker_name("history"))
    channel = await amqp.channel()
    await channel.declare_queue(stream, durable=True)  # a classic queue in the way
    producer = await start_producer(phonet_history_stream=stream)
    await sim.wait_connected(SUBSCRIBERS)
    await until(lambda: producer.history is not None and producer.history.error is not None)
    assert producer.history is not None
    assert producer.history.error is not None
    assert "needs RabbitMQ 3.9 or later with streams" in producer.history.error
    assert any(stream in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    await sim.send("001", {**SAMPLE, "uuid": "still-flows"})
    await until(lambda: len(producer.pipeline) == 0)
    assert producer.broker.connected


async def test_the_example_prints_one_employees_calls_from_the_history(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp_url: str,
    janitor: Janitor,
) -> None:
    """consumers_examples/yesterdays_calls.py, run as a user would (with --since, as
    yesterday cannot be waited for): 001's two calls, joined from their events, masked."""
    import os
    import sys
    from pathlib import Path

    stream = janitor.queue(broker_name("history"))
    producer = await start_producer(phonet_history_stream=stream)
    await sim.wait_connected(SUBSCRIBERS)
    await until(lambda: producer.history is not None and producer.history.declared)
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    client = [{"num": "+380671112233", "name": "Olena"}]
    for uuid, subscriber in (("a", "001"), ("b", "002"), ("c", "001")):
        for event in ("call.dial", "call.hangup"):
            frame = {**SAMPLE, "event": event, "uuid": uuid, "lgDirection": 4, "otherLegs": client}
            await sim.send(subscriber, frame)
    await until(lambda: len(producer.pipeline) == 0)
    await asyncio.sleep(0.3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers_examples.yesterdays_calls",
        "--subscriber",
        "001",
        "--since",
        since.isoformat(),
        "--stream",
        stream,
        "--amqp-url",
        amqp_url,
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("001: 2 calls from ")
    assert [text.split()[0] for text in lines[1:]] == ["a", "c"]
    assert all("incoming" in text and "missed" in text for text in lines[1:])
    assert "+380671112233" not in out.decode()
    assert "*********2233" in lines[1]
