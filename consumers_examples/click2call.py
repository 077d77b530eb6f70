#!/usr/bin/env python3
"""Ask the PBX to place a call through phonet-producer, and wait for the answer.

    python consumers_examples/click2call.py --subscriber 001 380991234567

Sends the command with the toolkit's client (``phonet_client.Click2Call``: direct reply-to,
a ``message_id`` that makes a retry the same command, your RabbitMQ user as ``user_id`` so
``PHONET_CLICK2CALL_ALLOWED_USERS`` can admit it), prints the answer and exits:

    0  the PBX placed the call          1  the PBX or the producer answered "error"
    2  no answer (timeout, no such queue, broker unreachable)

Settings: ``AMQP_URL`` and ``PHONET_CLICK2CALL_QUEUE`` from the environment, or
``--amqp-url`` / ``--queue``. No answer? Run it again with the same ``--message-id`` (and
the same subscriber, number and ``--id``: that is the same command): the producer answers
a retry from what it remembers, it never dials it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict
from urllib.parse import unquote, urlsplit

import aio_pika

from phonet_client import Click2Call, Click2CallError, Click2CallOutcome, NoQueue, NoReply

SUCCESS, ERROR, NO_ANSWER = 0, 1, 2


async def call(args: argparse.Namespace) -> Click2CallOutcome:
    """The answer of a placed call; raises the toolkit's Click2CallError otherwise."""
    async with await aio_pika.connect(args.amqp_url, timeout=10) as connection:
        client = Click2Call(connection, args.queue, user_id=args.user_id)
        return await client.call(
            args.subscriber,
            args.to,
            timeout=args.timeout,
            message_id=args.message_id,
            command_id=args.id,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("to", help="the number to call, e.g. 380991234567")
    parser.add_argument("--subscriber", required=True, help="the employee placing the call")
    parser.add_argument("--id", help="your reference, echoed in the reply")
    parser.add_argument("--message-id", help="repeat it to retry the same command")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument(
        "--queue", default=os.environ.get("PHONET_CLICK2CALL_QUEUE", "phonet.click2call")
    )
    parser.add_argument("--user-id", help="RabbitMQ user to name (default: the URL's user)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (default 15)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    args = parser.parse_args(argv)
    # RabbitMQ accepts only the connection's own user as user_id.
    args.user_id = args.user_id or unquote(urlsplit(args.amqp_url).username or "guest")
    # aiormq logs a failed connection itself; this tool reports it in one line of its own.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        answer = asyncio.run(call(args))
    except NoReply:
        print(
            f"no answer within {args.timeout:g}s (the call may still have been placed)",
            file=sys.stderr,
        )
        return NO_ANSWER
    except NoQueue as exc:
        print(f"no answer: {exc}", file=sys.stderr)
        return NO_ANSWER
    except Click2CallError as exc:
        if args.json and exc.outcome is not None:
            print(json.dumps(asdict(exc.outcome), ensure_ascii=False))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return ERROR
    except (OSError, aio_pika.exceptions.AMQPException) as exc:
        print(f"no answer: {exc}", file=sys.stderr)
        return NO_ANSWER
    if args.json:
        print(json.dumps(asdict(answer), ensure_ascii=False))
    else:
        print(f"calling {answer.to} from {answer.subscriber}")
    return SUCCESS


if __name__ == "__main__":
    raise SystemExit(main())
