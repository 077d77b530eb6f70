"""A FastStream service on the call stream: a client's personal manager calls them back.

    AMQP_URL=amqp://guest:guest@localhost:5672/ \
        faststream run consumers_examples.faststream_callback:app
    faststream docs gen consumers_examples.faststream_callback:app    # its AsyncAPI document

It subscribes to ``call.dial`` of every employee with its own durable queue
(``crm-callback``: calls that ring while it is stopped are waiting for it), looks the
calling number up in a toy customer table, and when a known client's incoming call rings
someone other than their personal manager, asks the manager's phone to call the client
back — through the toolkit's click2call client, with a ``message_id`` made from the call,
so a redelivered event (or a takeover's copy) never dials twice.

Settings: ``AMQP_URL``, ``PHONET_EXCHANGE``, ``PHONET_CLICK2CALL_QUEUE``. The event is
read with :func:`phonet_client.parse` from the body and the producer's headers; FastStream
validates the body against :class:`CallDial` (the fields this service uses, as the
producer's AsyncAPI document describes them: a test checks that they agree).
"""

from __future__ import annotations

import logging
import os
from urllib.parse import unquote, urlsplit

import aio_pika
from faststream import FastStream
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel, ConfigDict

from phonet_client import CallEvent, Click2Call, Click2CallError, binding_key, parse

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
EXCHANGE = RabbitExchange(
    os.environ.get("PHONET_EXCHANGE", "phonet.events"), type=ExchangeType.TOPIC, durable=True
)
QUEUE = RabbitQueue(
    os.environ.get("CALLBACK_QUEUE", "crm-callback"),
    durable=True,
    routing_key=binding_key("call.dial"),
)
COMMANDS = os.environ.get("PHONET_CLICK2CALL_QUEUE", "phonet.click2call")

MANAGERS = {"+380671112233": "001", "+380501234567": "002"}
"""The toy customer table: a client's number → their personal manager (a subscriber)."""

log = logging.getLogger("crm-callback")


class Client(BaseModel):
    model_config = ConfigDict(extra="allow")
    num: str | None = None
    name: str | None = None


class CallDial(BaseModel):
    """The part of a ``call.dial`` frame this service reads (unknown fields are kept)."""

    model_config = ConfigDict(extra="allow")
    event: str
    uuid: str | int | None = None
    lgDirection: int | None = None  # the PBX's own names
    otherLegs: list[Client] = []


broker = RabbitBroker(AMQP_URL)
app = FastStream(broker)
state: dict[str, Click2Call] = {}


@app.on_startup
async def connect() -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    user = unquote(urlsplit(AMQP_URL).username or "guest")
    state["click2call"] = Click2Call(connection, COMMANDS, user_id=user)


@app.on_shutdown
async def disconnect() -> None:
    client = state.pop("click2call", None)
    if client is not None:
        await client.connection.close()


def callback_for(event: CallEvent) -> tuple[str, str] | None:
    """``(manager, number)`` to call back, or None: only an incoming call from a known
    client that rings someone else than their manager."""
    if event.event != "call.dial" or event.direction != "incoming":
        return None
    for number in event.client_numbers:
        manager = MANAGERS.get(number)
        if manager is not None and manager != event.subscriber:
            return manager, number
    return None


@broker.subscriber(
    QUEUE,
    EXCHANGE,
    title="callEvents:call.dial",
    description="call.dial of every employee (binding call.dial.*)",
)
async def on_dial(body: CallDial, message: RabbitMessage) -> None:
    raw = message.raw_message
    event = parse(raw.routing_key or "", raw.body, raw.headers, raw.message_id)
    if not isinstance(event, CallEvent) or event.call_id is None:
        return
    if (todo := callback_for(event)) is None:
        return
    manager, number = todo
    try:
        placed = await state["click2call"].call(
            manager, number, message_id=f"callback-{event.call_id}", command_id=event.call_id
        )
    except Click2CallError as exc:
        log.warning("callback of %s by %s: %s (%s)", event.call_id, manager, exc, exc.result)
        return
    log.info("callback of %s: %s is calling the client", event.call_id, placed.subscriber)
