"""consumers_examples/faststream_callback.py: run as a service against the producer, the
simulator and the real broker. (Its AsyncAPI document checked against the producer's:
``tests/unit/consumers_examples/test_faststream_callback.py``.)"""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from tests.conftest import Janitor, broker_name
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import ROOT, SAMPLE, until


@pytest.mark.e2e
async def test_a_known_client_is_called_back_once_by_their_manager(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    amqp_url: str,
    exchange_name: str,
    command_queue: str,
    janitor: Janitor,
) -> None:
    """An incoming call from a client in the toy table rings 002: the service asks 001 (the
    client's manager) to call them back; the same event again (a takeover's copy, a PBX
    repeat) is not dialed twice; a call that rings the manager themself is left alone."""
    queue = janitor.queue(broker_name("crm-callback"))
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "PHONET_EXCHANGE": exchange_name,
        "PHONET_CLICK2CALL_QUEUE": command_queue,
        "CALLBACK_QUEUE": queue,
    }
    code = (
        "import asyncio; from consumers_examples.faststream_callback import app; "
        "asyncio.run(app.run())"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        channel = await amqp.channel()

        async def consumed() -> bool:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return bool(declared.declaration_result.consumer_count)

        for _ in range(200):
            if await consumed():
                break
            channel = await amqp.channel()
            await asyncio.sleep(0.1)
        client = {"id": "7", "name": "Olena", "num": "+380671112233"}
        ring = {**SAMPLE, "uuid": "c-42", "lgDirection": 4, "otherLegs": [client]}
        assert await sim.send("002", ring) == 1
        try:
            await until(lambda: len(sim.actions) == 1, timeout=15, what="the callback dialed")
        except AssertionError:
            proc.terminate()
            _, err = await proc.communicate()
            raise AssertionError(err.decode()[-3000:]) from None
        assert sim.actions == [("001", {"action": "call", "to": "+380671112233"})]
        await sim.send("002", ring)  # the same frame again
        await sim.send("001", {**ring, "uuid": "c-43"})  # rings the manager: nothing to do
        await asyncio.sleep(1.5)
        assert len(sim.actions) == 1
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
