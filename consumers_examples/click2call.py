#!/usr/bin/env python3
"""Ask the PBX to place a call through phonet-producer, and wait for the answer.

    python consumers_examples/click2call.py --subscriber 001 380991234567

Publishes ``{"subscriber": ..., "to": ..., "id": ...}`` to the click2call queue with a
private reply queue and a correlation id, waits for the reply, prints it and exits:

    0  the PBX placed the call          1  the PBX or the producer answered "error"
    2  no answer (timeout, no such queue, broker unreachable)

Settings: ``AMQP_URL`` and ``PHONET_CLICK2CALL_QUEUE`` from the environment, or
``--amqp-url`` / ``--queue``. Needs only aio-pika (``pip install aio-pika``). Commands are
at most once: if you get no answer, check before you retry.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

SUCCESS, ERROR, NO_ANSWER = 0, 1, 2


async def call(
    amqp_url: str,
    queue: str,
    subscriber: str,
    to: str,
    *,
    command_id: str | None = None,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Send one command and return the reply. Raises TimeoutError when none comes, LookupError
    when the queue does not exist (nobody consumes commands)."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        replies = await channel.declare_queue("", exclusive=True, auto_delete=True)
        correlation_id = uuid.uuid4().hex
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def on_reply(message: AbstractIncomingMessage) -> None:
            if message.correlation_id == correlation_id and not answer.done():
                answer.set_result(json.loads(message.body))

        await replies.consume(on_reply, no_ack=True)
        command: dict[str, Any] = {"subscriber": subscriber, "to": to}
        if command_id is not None:
            command["id"] = command_id
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(command).encode(),
                    content_type="application/json",
                    correlation_id=correlation_id,
                    reply_to=replies.name,
                    # Judged stale from here; dropped unread if nobody takes it in time.
                    timestamp=datetime.datetime.now(datetime.UTC),
                    expiration=datetime.timedelta(seconds=timeout),
                ),
                routing_key=queue,
                mandatory=True,
            )
        except aio_pika.exceptions.DeliveryError as exc:  # returned: no such queue
            raise LookupError(f"no queue {queue!r}: is phonet-producer running?") from exc
        async with asyncio.timeout(timeout):
            return await answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("to", help="the number to call, e.g. 380991234567")
    parser.add_argument("--subscriber", required=True, help="the employee placing the call")
    parser.add_argument("--id", help="your reference, echoed in the reply")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument(
        "--queue", default=os.environ.get("PHONET_CLICK2CALL_QUEUE", "phonet.click2call")
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (default 15)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    args = parser.parse_args(argv)
    # aiormq logs a failed connection itself; this tool reports it in one line of its own.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        reply = asyncio.run(
            call(
                args.amqp_url,
                args.queue,
                args.subscriber,
                args.to,
                command_id=args.id,
                timeout=args.timeout,
            )
        )
    except TimeoutError:
        print(
            f"no answer within {args.timeout:g}s (the call may still have been placed)",
            file=sys.stderr,
        )
        return NO_ANSWER
    except (LookupError, OSError, aio_pika.exceptions.AMQPException) as exc:
        print(f"no answer: {exc}", file=sys.stderr)
        return NO_ANSWER
    if args.json:
        print(json.dumps(reply, ensure_ascii=False))
    elif reply.get("event") == "success":
        print(f"calling {reply.get('to')} from {reply.get('subscriber')}")
    else:
        print(f"error: {reply.get('message')}", file=sys.stderr)
    return SUCCESS if reply.get("event") == "success" else ERROR


if __name__ == "__main__":
    raise SystemExit(main())
