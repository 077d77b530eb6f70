"""consumers_examples/call_journal.py without a broker: record building (tables, any order,
duplicates), the messages it skips, its SQLite journal and the summary. (The end-to-end
run: ``tests/e2e/test_example_call_journal.py``.)"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from consumers_examples.call_journal import (
    Journal,
    build_record,
    event_from_message,
    summary,
)
from phonet_client import CallEvent

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
