"""consumers_examples/call_journal.py: record building (tables, any order, duplicates) and an
end-to-end run: simulated calls → producer → RabbitMQ → journal → SQLite → summary."""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import sys
from pathlib import Path

import pytest

from consumers_examples.call_journal import (
    Journal,
    build_record,
    consume,
    event_from_message,
    summary,
)
from phonet_client import CallEvent
from phonet_simulator import CallFactory, PhonetSimulator, Quirks
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import until

T0 = 1_764_000_000_000  # 2025-11-24 16:00 UTC
CLIENT = [{"id": "7", "name": "Олена Коваль", "num": "+380671112233", "companyName": "Світанок"}]


def ev(
    event: str,
    uuid: str = "c1",
    subscriber: str = "001",
    direction: str = "incoming",
    *,
    at: int = 0,
    bridge: int | None = None,
    parent: str | None = None,
    n: int = 0,
) -> CallEvent:
    return CallEvent(
        message_id=f"{uuid}-{subscriber}-{event}-{n}",
        uuid=uuid,
        parent_uuid=parent,
        subscriber=subscriber,
        event=event,
        direction=direction,
        dial_at_ms=T0,
        bridge_at_ms=bridge,
        server_time_ms=T0 + at,
        received_at_ms=None,
        body={"event": event, "otherLegs": CLIENT},
    )


ANSWERED = [
    ev("call.dial"),
    ev("call.bridge", at=4000, bridge=T0 + 4000),
    ev("call.hangup", at=64000, bridge=T0 + 4000),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_answered_call_in_any_order(order: tuple[int, ...]) -> None:
    record = build_record([ANSWERED[i] for i in order])
    assert record.status == "answered"
    assert record.direction == "incoming"
    assert record.answered_by == "001"
    assert (record.rang_s, record.talked_s) == (4.0, 60.0)
    assert (record.client_number, record.client_name, record.client_company) == (
        "+380671112233",
        "Олена Коваль",
        "Світанок",
    )
    assert record.day == "2025-11-24"


@pytest.mark.parametrize(
    ("events", "status", "rang", "talked"),
    [
        pytest.param(
            [ev("call.dial"), ev("call.hangup", at=9000)], "missed", 9.0, None, id="missed"
        ),
        pytest.param([ev("call.dial")], "ringing", None, None, id="still-ringing"),
        pytest.param(ANSWERED[:2], "talking", 4.0, None, id="still-talking"),
        pytest.param(
            [
                ev("call.dial", direction="outgoing"),
                ev("call.hangup", direction="outgoing", at=30000),
            ],
            "not answered",
            30.0,
            None,
            id="outgoing-unanswered",
        ),
        pytest.param(ANSWERED + ANSWERED, "answered", 4.0, 60.0, id="every-event-twice"),
        pytest.param(
            [ev("call.hangup", at=9000), ev("call.dial")], "missed", 9.0, None, id="hangup-first"
        ),
    ],
)
def test_call_states(
    events: list[CallEvent], status: str, rang: float | None, talked: float | None
) -> None:
    record = build_record(events)
    assert (record.status, record.rang_s, record.talked_s) == (status, rang, talked)


def test_group_call_joins_its_legs_by_parent_uuid() -> None:
    legs = []
    for i, who in enumerate(("001", "002", "003")):
        legs.append(ev("call.dial", f"leg{i}", who, parent="group", n=i))
        if who == "002":
            legs.append(
                ev("call.bridge", f"leg{i}", who, at=3000, bridge=T0 + 3000, parent="group")
            )
        legs.append(
            ev(
                "call.hangup",
                f"leg{i}",
                who,
                at=50000 if who == "002" else 3000,
                bridge=T0 + 3000 if who == "002" else None,
                parent="group",
                n=i,
            )
        )
    random.Random(1).shuffle(legs)
    record = build_record(legs)
    assert record.call_id == "group"
    assert sorted(record.employees) == ["001", "002", "003"]
    assert record.answered_by == "002"
    assert (record.status, record.rang_s, record.talked_s) == ("answered", 3.0, 47.0)


def test_internal_call_seen_by_both_employees_is_one_call() -> None:
    events = [
        ev(e, "in1", who, "internal", at=at, bridge=T0 + 2000 if e != "call.dial" else None)
        for who in ("001", "002")
        for e, at in (("call.dial", 0), ("call.bridge", 2000), ("call.hangup", 12000))
    ]
    record = build_record(events)
    assert (record.direction, record.status, record.talked_s) == ("internal", "answered", 10.0)
    assert record.employees == ["001", "002"]


def test_messages_the_journal_skips() -> None:
    assert event_from_message("m", {"direction": "pause", "uuid": "p"}, b"{}") is None
    assert event_from_message("m", {"direction": "incoming"}, b"not json") is None
    assert event_from_message("m", {"direction": "incoming"}, b"[1]") is None


def test_journal_stores_each_event_once(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.sqlite"))
    assert [journal.add(e) is not None for e in ANSWERED] == [True, True, True]
    assert [journal.add(e) for e in ANSWERED] == [None, None, None]
    (row,) = journal.calls("2025-11-24")
    assert (row["status"], row["talked_s"]) == ("answered", 60.0)
    text = summary(journal, "2025-11-24")
    assert "1 calls" in text
    assert "incoming 1 (1 answered)" in text
    assert summary(journal, "2025-11-25") == "2025-11-25: no calls"


def test_the_summary_breakdown_adds_up_to_the_total(tmp_path: Path) -> None:
    """Every call counted once, whatever its status (ringing, talking, not answered...):
    the per-direction counts add up to the total the first line gives."""
    journal = Journal(str(tmp_path / "j.sqlite"))
    calls = [
        [ev("call.dial", "a")],  # ringing
        [ev("call.dial", "b"), ev("call.bridge", "b", at=1, bridge=T0 + 1)],  # talking
        [ev("call.dial", "c"), ev("call.hangup", "c", at=5)],  # missed
        [ev("call.dial", "d", direction="outgoing"), ev("call.hangup", "d", "001", "outgoing")],
        [ev("call.dial", "e", direction="unknown")],
        ANSWERED,
    ]
    for events in calls:
        for event in events:
            journal.add(event)
    first, parts = summary(journal, "2025-11-24").splitlines()[:2]
    assert first == "2025-11-24: 6 calls"
    counts = [int(part.split()[1]) for part in parts.strip().split("; ")]
    assert sum(counts) == 6, parts
    assert "incoming 4 (" in parts
    assert "unknown 1 (1 ringing)" in parts


async def test_end_to_end_with_simulated_calls(
    start_producer: StartProducer, amqp_url: str, exchange_name: str, tmp_path: Path
) -> None:
    """Realistic calls with duplicates and timestamp quirks: one record per call, each with
    the outcome its script had."""
    factory = CallFactory(
        list(SUBSCRIBERS), seed=11, quirks=Quirks(0.5, 0.2, 0.3, 0.1), time_scale=0.01
    )
    scripts = [
        factory.make(T0 + i * 60_000, kind)
        for i, kind in enumerate(["incoming"] * 6 + ["outgoing", "internal", "group", "pause"])
    ]
    expected: dict[str, str] = {}
    for script in scripts:
        if script.kind == "pause":
            continue
        frames = [f for _, _, f in script.steps]
        call_id = frames[0]["parentUuid"] or frames[0]["uuid"]
        answered = any(f["event"] == "call.bridge" for f in frames)
        direction = {1: "internal", 2: "outgoing", 4: "incoming"}[frames[0]["lgDirection"]]
        expected[call_id] = (
            "answered" if answered else ("missed" if direction == "incoming" else "not answered")
        )

    journal = Journal(str(tmp_path / "journal.sqlite"))
    stop, ready = asyncio.Event(), asyncio.Event()
    printed = io.StringIO()
    consumer = asyncio.ensure_future(
        consume(amqp_url, exchange_name, None, journal, stop, ready, out=printed)
    )
    await asyncio.wait_for(ready.wait(), 10)
    async with PhonetSimulator(subscribers=SUBSCRIBERS, quirks=Quirks.none()) as busy:
        await start_producer(
            phonet_url=busy.url, phonet_api_key=busy.api_key, phonet_domain=busy.domain
        )
        await busy.wait_connected(SUBSCRIBERS)
        for script in scripts:
            for _, subscriber, frame in script.sorted():
                await busy.send(subscriber, frame)

        def done() -> bool:
            rows = {r[0]: r[1] for r in journal.db.execute("SELECT call_id, status FROM calls")}
            return rows == expected

        await until(done, timeout=20, what="every call recorded with its outcome")
    stop.set()
    stored = await consumer
    frames = sum(1 for s in scripts if s.kind != "pause" for _ in s.steps)
    assert stored < frames  # the duplicates were ignored
    lines = printed.getvalue().splitlines()
    assert len(lines) == stored  # a line per stored event, as it went
    assert not any("+380" in text for text in lines)  # numbers masked
    days = {r[0] for r in journal.db.execute("SELECT DISTINCT day FROM calls")}
    assert days == {"2025-11-24"}

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "consumers_examples/call_journal.py",
        "--db",
        str(tmp_path / "journal.sqlite"),
        "--summary",
        "2025-11-24",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode()
    assert text.startswith(f"2025-11-24: {len(expected)} calls")
    assert "answered by: " in text
    assert sum(1 for s in expected.values() if s == "answered") > 0
