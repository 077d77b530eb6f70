#!/usr/bin/env python3
"""Yesterday's calls of one employee, replayed from the producer's history stream.

    python -m consumers_examples.yesterdays_calls --subscriber 001
    python -m consumers_examples.yesterdays_calls --subscriber 001 --since 2026-12-05T09:00

Reads ``PHONET_HISTORY_STREAM`` (the producer keeps every event there when it is set) from
yesterday 00:00 UTC to today 00:00 UTC — or from ``--since`` to now — with the toolkit's
``History``, joins each call's events (``call_journal.build_record``) and prints one line per
call, the client's number masked. Nothing is taken from the stream: run it as often as you
like. Settings: ``AMQP_URL``, ``PHONET_HISTORY_STREAM`` or the matching options.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from collections import defaultdict

import aio_pika

from consumers_examples.call_journal import build_record, call_of, line
from phonet_client import CallEvent
from phonet_client.history import History


async def calls(
    amqp_url: str, stream: str, subscriber: str, since: datetime.datetime, until: datetime.datetime
) -> list[str]:
    """One line per call of ``subscriber`` received in ``[since, until]``, oldest first."""
    by_call: dict[str, list[CallEvent]] = defaultdict(list)
    async with await aio_pika.connect(amqp_url) as connection:
        history = History(connection, stream)
        async for item in history.since(since, until=until, subscriber=subscriber, event="call"):
            event = item.message
            if isinstance(event, CallEvent) and event.direction not in ("pause", "unpause"):
                by_call[call_of(event)].append(event)
    records = sorted(
        (build_record(events) for events in by_call.values()), key=lambda r: r.started_ms or 0
    )
    return [line(record) for record in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriber", required=True, help="the employee")
    parser.add_argument("--since", help="ISO moment (UTC unless it says), default yesterday 00:00")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument(
        "--stream", default=os.environ.get("PHONET_HISTORY_STREAM", "phonet.history")
    )
    args = parser.parse_args(argv)
    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if args.since:
        since = datetime.datetime.fromisoformat(args.since)
        since = since if since.tzinfo else since.replace(tzinfo=datetime.UTC)
        until = datetime.datetime.now(datetime.UTC)
    else:
        since, until = today - datetime.timedelta(days=1), today
    try:
        found = asyncio.run(calls(args.amqp_url, args.stream, args.subscriber, since, until))
    except (OSError, aio_pika.exceptions.AMQPException) as exc:
        print(f"cannot read the history: {exc}", file=sys.stderr)
        return 2
    print(f"{args.subscriber}: {len(found)} calls from {since:%Y-%m-%d %H:%M} to {until:%H:%M} UTC")
    for text in found:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
