"""Commands a hostile or careless sender can put on the click2call queue, sent over raw
aiormq (aio-pika and pamqp refuse to encode some of them): a ``timestamp`` of 2^63 (pika
and other clients will send it), headers near ``frame_max``, a ``reply_to`` queue that
rejects every publish."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import aiormq
import orjson
from aio_pika.abc import AbstractChannel
from pamqp import commands

STAMP = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


class _RawProperties(commands.Basic.Properties):
    """Properties whose wire form is given (pamqp encodes nothing out of range)."""

    def __init__(self, wire: bytes) -> None:
        super().__init__()
        self._wire = wire

    def marshal(self) -> bytes:
        return self._wire


def timestamp_2_63(**properties: Any) -> commands.Basic.Properties:
    """``properties`` with a ``timestamp`` of 2^63 seconds, as pika sends it."""
    normal = commands.Basic.Properties(timestamp=STAMP, **properties).marshal()
    stamp = struct.pack(">Q", int(STAMP.timestamp()))
    at = normal.index(stamp)
    return _RawProperties(normal[:at] + struct.pack(">Q", 2**63) + normal[at + 8 :])


async def publish_raw(
    channel: AbstractChannel,
    queue: str,
    body: dict[str, Any],
    properties: commands.Basic.Properties,
) -> None:
    """Publish to the default exchange with these exact properties (confirmed when the
    channel has publisher confirms)."""
    raw = await channel.get_underlay_channel()
    assert isinstance(raw, aiormq.Channel)
    await raw.basic_publish(orjson.dumps(body), routing_key=queue, properties=properties)


def big_headers(limit: int) -> dict[str, str]:
    """Headers that fill a content header frame to a little under ``limit`` bytes."""
    return {f"h{n}": "x" * 1000 for n in range(max(1, limit // 1010 - 4))}


async def rejecting_queue(channel: AbstractChannel, name: str) -> str:
    """A queue that refuses every message (the broker nacks what is routed to it)."""
    await channel.declare_queue(
        name, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}, auto_delete=True
    )
    return name
