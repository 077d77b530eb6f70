"""The click2call client (:mod:`phonet_client.click2call`) against the real broker with no
producer consuming its queue. The client against a running producer:
``tests/e2e/test_client.py``."""

from __future__ import annotations

import pytest
from aio_pika.abc import AbstractConnection

from phonet_client import Click2Call, NoReply


async def test_no_producer_is_no_reply_in_time(
    amqp: AbstractConnection, command_queue: str
) -> None:
    channel = await amqp.channel()
    await channel.declare_queue(command_queue, durable=True)  # nobody consumes it
    with pytest.raises(NoReply) as caught:
        await Click2Call(amqp, command_queue).call("001", "380991234567", timeout=0.5)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.dialed is None
