#!/usr/bin/env python3
"""A call journal: Phonet call events from RabbitMQ joined into call records in SQLite.

    python consumers_examples/call_journal.py --db calls.sqlite            # consume (Ctrl-C stops)
    python consumers_examples/call_journal.py --db calls.sqlite --summary  # today's summary
    python consumers_examples/call_journal.py --db calls.sqlite --summary 2026-11-27

It binds its own durable queue (``--queue``, default ``call-journal``) to ``call.#`` on the
events exchange, so nothing is lost while it is stopped. Every event is stored once (its
``message_id`` is the key: redeliveries and Phonet's duplicates are ignored) and the call it
belongs to is rebuilt from all of its events, so events may arrive in any order. A call is
keyed by its ``uuid``, or by ``parentUuid`` for the per-employee legs of a group call.

Records: direction, who (the employees whose phones rang, who answered), the client (number,
name, company from ``otherLegs``), rang for, talked for, answered or missed. The producer's
headers carry the normalised times (``dial_at_ms``, ``bridge_at_ms``, ``server_time_ms``),
so seconds-vs-milliseconds quirks are already handled. Needs only aio-pika.
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
from dataclasses import dataclass, field
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    message_id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    uuid TEXT, parent_uuid TEXT, subscriber TEXT, event TEXT, direction TEXT,
    dial_at_ms INTEGER, bridge_at_ms INTEGER, server_time_ms INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_call ON events(call_id);
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


@dataclass
class Event:
    """One call event as the journal needs it (from the producer's headers and body)."""

    message_id: str
    uuid: str | None
    parent_uuid: str | None
    subscriber: str
    event: str
    direction: str
    dial_at_ms: int | None
    bridge_at_ms: int | None
    server_time_ms: int | None
    body: dict[str, Any]

    @property
    def call_id(self) -> str:
        return self.parent_uuid or self.uuid or self.message_id


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


def event_from_message(message_id: str, headers: dict[str, Any], body: bytes) -> Event | None:
    """The journal's view of one message, or None for what is not a call leg (pause and
    unpause ride on call events too, with direction pause/unpause)."""
    if headers.get("direction") in ("pause", "unpause"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return Event(
        message_id=message_id,
        uuid=headers.get("uuid"),
        parent_uuid=headers.get("parent_uuid"),
        subscriber=str(headers.get("subscriber", "")),
        event=str(headers.get("event", data.get("event", ""))),
        direction=str(headers.get("direction", "unknown")),
        dial_at_ms=headers.get("dial_at_ms"),
        bridge_at_ms=headers.get("bridge_at_ms"),
        server_time_ms=headers.get("server_time_ms"),
        body=data,
    )


def build_record(events: Iterable[Event]) -> CallRecord:
    """One call from all of its events, in whatever order and with whatever duplicates."""
    events = sorted(events, key=lambda e: (e.server_time_ms or 0, e.event))
    first = events[0]
    record = CallRecord(call_id=first.call_id, direction=first.direction)
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

    def add(self, event: Event) -> bool:
        """Store ``event`` and rebuild its call; False if it was a duplicate."""
        with self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    event.message_id,
                    event.call_id,
                    event.uuid,
                    event.parent_uuid,
                    event.subscriber,
                    event.event,
                    event.direction,
                    event.dial_at_ms,
                    event.bridge_at_ms,
                    event.server_time_ms,
                    json.dumps(event.body, ensure_ascii=False),
                ),
            )
            if cursor.rowcount == 0:
                return False
            record = build_record(self.events(event.call_id))
            self.db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.call_id,
                    record.day,
                    record.direction,
                    ",".join(record.employees),
                    record.answered_by,
                    record.client_number,
                    record.client_name,
                    record.client_company,
                    record.started_ms,
                    record.answered_ms,
                    record.ended_ms,
                    record.rang_s,
                    record.talked_s,
                    record.status,
                ),
            )
        return True

    def events(self, call_id: str) -> list[Event]:
        rows = self.db.execute(
            "SELECT message_id, uuid, parent_uuid, subscriber, event, direction, dial_at_ms,"
            " bridge_at_ms, server_time_ms, body FROM events WHERE call_id = ?",
            (call_id,),
        ).fetchall()
        return [
            Event(
                message_id=r[0],
                uuid=r[1],
                parent_uuid=r[2],
                subscriber=r[3],
                event=r[4],
                direction=r[5],
                dial_at_ms=r[6],
                bridge_at_ms=r[7],
                server_time_ms=r[8],
                body=json.loads(r[9]),
            )
            for r in rows
        ]

    def calls(self, day: str) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(
                "SELECT * FROM calls WHERE day = ? ORDER BY started_ms", (day,)
            ).fetchall()
        finally:
            self.db.row_factory = None


def summary(journal: Journal, day: str) -> str:
    """A daily summary as text."""
    calls = journal.calls(day)
    if not calls:
        return f"{day}: no calls"
    by_status = Counter((c["direction"], c["status"]) for c in calls)
    answered = [c for c in calls if c["status"] == "answered"]
    rang = [c["rang_s"] for c in calls if c["rang_s"] is not None]
    talked = [c["talked_s"] for c in answered if c["talked_s"] is not None]
    per_employee: Counter[str] = Counter(c["answered_by"] for c in answered)
    missed = Counter(c["client_number"] for c in calls if c["status"] == "missed")
    lines = [
        f"{day}: {len(calls)} calls",
        f"  incoming {by_status['incoming', 'answered']} answered, "
        f"{by_status['incoming', 'missed']} missed; outgoing "
        f"{sum(v for (d, _), v in by_status.items() if d == 'outgoing')}; internal "
        f"{sum(v for (d, _), v in by_status.items() if d == 'internal')}",
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


async def consume(
    amqp_url: str,
    exchange: str,
    queue: str,
    journal: Journal,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> int:
    """Consume until ``stop`` is set (``ready`` is set once the queue is bound and consumed);
    returns how many new events were stored."""
    import aio_pika

    stored = 0
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(queue, durable=True)
        await q.bind(events, "call.#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal stored
            async with message.process(requeue=False):
                event = event_from_message(
                    message.message_id or "", dict(message.headers), message.body
                )
                if event is not None and journal.add(event):
                    stored += 1

        tag = await q.consume(on_message)
        if ready is not None:
            ready.set()
        await stop.wait()
        await q.cancel(tag)
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="call-journal.sqlite", help="SQLite file")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument("--exchange", default=os.environ.get("PHONET_EXCHANGE", "phonet.events"))
    parser.add_argument("--queue", default="call-journal", help="this journal's durable queue")
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

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await consume(args.amqp_url, args.exchange, args.queue, journal, stop)

    stored = asyncio.run(run())
    print(f"stored {stored} new events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
