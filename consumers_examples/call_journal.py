#!/usr/bin/env python3
"""A call journal: Phonet call events from RabbitMQ joined into call records in SQLite.

    python consumers_examples/call_journal.py --db calls.sqlite            # consume (Ctrl-C stops)
    python consumers_examples/call_journal.py --db calls.sqlite --summary  # today's summary
    python consumers_examples/call_journal.py --db calls.sqlite --summary 2026-11-27

It binds its own durable queue (``--queue``, default ``call-journal``) to every call event
on the events exchange, so nothing is lost while it is stopped — and the queue keeps
filling while it is: ``--transient`` uses a queue that goes with the journal instead (what
happens while it is stopped is then not recorded), ``--delete-queue`` removes the durable
one. It prints a line for every call that changes (masked numbers) as it goes. Every event
is stored once (its ``message_id`` is the key: redeliveries and Phonet's duplicates are
ignored) and the call it belongs to is rebuilt from all of its events, so events may arrive
in any order. A call is keyed by its ``uuid``, or by ``parentUuid`` for the per-employee
legs of a group call.

Records: direction, who (the employees whose phones rang, who answered), the client (number,
name, company from ``otherLegs``), rang for, talked for, answered or missed. Messages are
read with the toolkit (``phonet_client``): the producer's headers carry the normalised
times, so seconds-vs-milliseconds quirks are already handled.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import aio_pika

from phonet_client import CallEvent, binding_key, parse

SCHEMA = """
CREATE TABLE IF NOT EXISTS call_events (
    message_id TEXT PRIMARY KEY, call_id TEXT NOT NULL, event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_events_call ON call_events(call_id);
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    direction TEXT NOT NULL,
    employees TEXT NOT NULL,
    answered_by TEXT,
    client_number TEXT, client_name TEXT, client_company TEXT,
    started_ms INTEGER, answered_ms INTEGER, ended_ms INTEGER,
    rang_s REAL, talked_s REAL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_day ON calls(day);
"""
CALL_COLUMNS = [
    *("call_id", "day", "direction", "employees", "answered_by", "client_number"),
    *("client_name", "client_company", "started_ms", "answered_ms", "ended_ms", "rang_s"),
    *("talked_s", "status"),
]


def call_of(event: CallEvent) -> str:
    return event.call_id or event.message_id or ""


@dataclass
class CallRecord:
    call_id: str
    direction: str
    employees: list[str] = field(default_factory=list)
    answered_by: str | None = None
    client_number: str | None = None
    client_name: str | None = None
    client_company: str | None = None
    started_ms: int | None = None
    answered_ms: int | None = None
    ended_ms: int | None = None
    status: str = "ringing"

    @property
    def rang_s(self) -> float | None:
        end = self.answered_ms or self.ended_ms
        if self.started_ms is None or end is None:
            return None
        return max(0.0, (end - self.started_ms) / 1000)

    @property
    def talked_s(self) -> float | None:
        if self.answered_ms is None or self.ended_ms is None:
            return None
        return max(0.0, (self.ended_ms - self.answered_ms) / 1000)

    @property
    def day(self) -> str:
        if self.started_ms is None:
            return "unknown"
        return (
            datetime.datetime.fromtimestamp(self.started_ms / 1000, datetime.UTC).date().isoformat()
        )


def event_from_message(
    message_id: str, headers: dict[str, Any], body: bytes, routing_key: str = "call.dial.x"
) -> CallEvent | None:
    """The journal's view of one message, or None for what is not a call leg (pause and
    unpause ride on call events too, with direction pause/unpause)."""
    event = parse(routing_key, body, headers, message_id)
    if not isinstance(event, CallEvent) or event.direction in ("pause", "unpause"):
        return None
    return event


def build_record(events: Iterable[CallEvent]) -> CallRecord:
    """One call from all of its events, in whatever order and with whatever duplicates."""
    events = sorted(events, key=lambda e: (e.server_time_ms or 0, e.event))
    first = events[0]
    record = CallRecord(call_id=call_of(first), direction=first.direction)
    hung_up: set[str | None] = set()
    legs: set[str | None] = set()
    for e in events:
        if e.subscriber and e.subscriber not in record.employees:
            record.employees.append(e.subscriber)
        if record.direction == "unknown" and e.direction != "unknown":
            record.direction = e.direction
        legs.add(e.uuid)
        dial = e.dial_at_ms
        if dial is not None and (record.started_ms is None or dial < record.started_ms):
            record.started_ms = dial
        if e.bridge_at_ms is not None and (
            record.answered_ms is None or e.bridge_at_ms < record.answered_ms
        ):
            record.answered_ms = e.bridge_at_ms
            record.answered_by = e.subscriber
        if e.event == "call.hangup":
            hung_up.add(e.uuid)
            if e.server_time_ms is not None:
                record.ended_ms = max(record.ended_ms or 0, e.server_time_ms)
        client = _client(e.body)
        if client and record.client_number is None:
            record.client_number = client.get("num")
            record.client_name = client.get("name")
            record.client_company = client.get("companyName")
    if record.answered_ms is not None:
        record.status = "answered" if legs <= hung_up else "talking"
    elif legs <= hung_up:
        record.status = "missed" if record.direction == "incoming" else "not answered"
    if record.status in ("ringing", "talking"):
        record.ended_ms = None
    return record


def masked(number: str | None) -> str:
    """A phone number with all but its last four digits hidden."""
    if not number:
        return "-"
    return "*" * max(0, len(number) - 4) + number[-4:]


def _client(body: dict[str, Any]) -> dict[str, Any] | None:
    legs = body.get("otherLegs")
    if isinstance(legs, list) and legs and isinstance(legs[0], dict):
        return legs[0]
    return None


class Journal:
    """The SQLite store: events once each, calls rebuilt on every event."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(SCHEMA)

    def add(self, event: CallEvent) -> CallRecord | None:
        """Store ``event`` and rebuild its call: the call, or None for a duplicate."""
        with self.db:
            stored = json.dumps(asdict(event), ensure_ascii=False)
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO call_events VALUES (?,?,?)",
                (event.message_id, call_of(event), stored),
            )
            if cursor.rowcount == 0:
                return None
            record = build_record(self.events(call_of(event)))
            row = [getattr(record, column) for column in CALL_COLUMNS]
            row[CALL_COLUMNS.index("employees")] = ",".join(record.employees)
            marks = ",".join("?" * len(row))
            self.db.execute(f"INSERT OR REPLACE INTO calls VALUES ({marks})", row)
        return record

    def events(self, call_id: str) -> list[CallEvent]:
        rows = self.db.execute("SELECT event FROM call_events WHERE call_id = ?", (call_id,))
        return [CallEvent(**json.loads(text)) for (text,) in rows]

    def calls(self, day: str) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(
                "SELECT * FROM calls WHERE day = ? ORDER BY started_ms", (day,)
            ).fetchall()
        finally:
            self.db.row_factory = None


def summary(journal: Journal, day: str) -> str:
    """A daily summary as text: every call counted once, by direction then status (the
    parts add up to the total)."""
    calls = journal.calls(day)
    if not calls:
        return f"{day}: no calls"
    by_direction: dict[str, Counter[str]] = {}
    for c in calls:
        by_direction.setdefault(c["direction"], Counter())[c["status"]] += 1
    answered = [c for c in calls if c["status"] == "answered"]
    rang = [c["rang_s"] for c in calls if c["rang_s"] is not None]
    talked = [c["talked_s"] for c in answered if c["talked_s"] is not None]
    per_employee: Counter[str] = Counter(c["answered_by"] for c in answered)
    missed = Counter(masked(c["client_number"]) for c in calls if c["status"] == "missed")
    order = ["incoming", "outgoing", "internal"]
    order += sorted(set(by_direction) - set(order))
    parts = []
    for direction in order:
        statuses = by_direction.get(direction)
        if statuses:
            detail = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
            parts.append(f"{direction} {sum(statuses.values())} ({detail})")
    lines = [
        f"{day}: {len(calls)} calls",
        "  " + "; ".join(parts),
        f"  average ring {sum(rang) / len(rang):.1f}s" if rang else "  average ring -",
        f"  average talk {sum(talked) / len(talked):.1f}s" if talked else "  average talk -",
        "  answered by: "
        + (", ".join(f"{who} {n}" for who, n in per_employee.most_common()) or "nobody"),
    ]
    if missed:
        lines.append(
            "  missed clients: " + ", ".join(f"{num} ×{n}" for num, n in missed.most_common(5))
        )
    return "\n".join(lines)


def line(record: CallRecord) -> str:
    """One call as it changes (printed while consuming; the client's number masked)."""
    who = record.answered_by or ",".join(record.employees) or "-"
    return (
        f"{record.call_id[:24]:24} {record.direction:9} {record.status:12} "
        f"{masked(record.client_number):>14} {who}"
    )


async def consume(
    amqp_url: str,
    exchange: str,
    queue: str | None,
    journal: Journal,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    out: Any = None,
) -> int:
    """Consume until ``stop`` is set (``ready`` is set once the queue is bound and consumed);
    ``queue`` None is a transient queue of this run only. Prints a line per changed call
    to ``out`` (a file; None: quiet). Returns how many new events were stored."""
    stored = 0
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        if queue is None:
            q = await channel.declare_queue("", exclusive=True)
        else:
            q = await channel.declare_queue(queue, durable=True)
        await q.bind(events, binding_key("call.#"))

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal stored
            async with message.process(requeue=False):
                event = event_from_message(
                    message.message_id or "",
                    dict(message.headers),
                    message.body,
                    message.routing_key or "",
                )
                record = journal.add(event) if event is not None else None
                if record is not None:
                    stored += 1
                    if out is not None:
                        print(line(record), file=out, flush=True)

        tag = await q.consume(on_message)
        if ready is not None:
            ready.set()
        await stop.wait()
        await q.cancel(tag)
    return stored


async def delete_queue(amqp_url: str, queue: str) -> None:
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="call-journal.sqlite", help="SQLite file")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument("--exchange", default=os.environ.get("PHONET_EXCHANGE", "phonet.events"))
    parser.add_argument("--queue", default="call-journal", help="this journal's durable queue")
    parser.add_argument(
        "--transient",
        action="store_true",
        help="a queue that goes with this run (nothing is kept for the journal while stopped)",
    )
    parser.add_argument(
        "--delete-queue", action="store_true", help="delete the durable --queue and exit"
    )
    parser.add_argument(
        "--summary",
        nargs="?",
        const="today",
        metavar="DATE",
        help="print the summary of DATE (YYYY-MM-DD, default today, UTC) and exit",
    )
    args = parser.parse_args(argv)
    journal = Journal(args.db)
    if args.summary:
        day = (
            datetime.datetime.now(datetime.UTC).date().isoformat()
            if args.summary == "today"
            else args.summary
        )
        print(summary(journal, day))
        return 0

    if args.delete_queue:
        asyncio.run(delete_queue(args.amqp_url, args.queue))
        print(f"deleted queue {args.queue!r}", file=sys.stderr)
        return 0
    queue = None if args.transient else args.queue
    if queue is not None:
        print(
            f"reading queue {queue!r}: it keeps collecting call events while this journal is"
            " stopped (--delete-queue removes it; --transient uses none)",
            file=sys.stderr,
        )

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await consume(args.amqp_url, args.exchange, queue, journal, stop, out=sys.stdout)

    stored = asyncio.run(run())
    print(f"stored {stored} new events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
