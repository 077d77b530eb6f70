"""The REST side without sockets (:mod:`producer.subscribers.records`, then
:mod:`producer.subscribers.gaps`): lenient parsing, the discovery rule, gaps and the backfill
schedule — table tests, and model-based tests of the two stateful pieces."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from producer.subscribers.gaps import RETRY_AFTER, BackfillPlan, Gap, GapBook, missed
from producer.subscribers.records import BadAnswer, Directory, call_records, calls_of, employees

USERS = [
    {"id": 1, "displayName": "Іван", "ext": "001", "email": "ivan@example.com"},
    {"id": 2, "displayName": "Олена", "ext": 2, "email": "olena@example.com"},
    {"id": 3, "displayName": "IVR", "ext": None, "email": None},
    {"id": 4, "displayName": "Night", "ext": "900", "email": "night@example.com"},
    "not an object",
]


@pytest.mark.parametrize(
    ("data", "field", "exclude", "found", "skipped", "excluded"),
    [
        pytest.param(USERS, "ext", (), ("001", "2", "900"), 1, 0, id="ext"),
        pytest.param(
            USERS,
            "email",
            (),
            ("ivan@example.com", "night@example.com", "olena@example.com"),
            1,
            0,
            id="email",
        ),
        pytest.param(USERS, "ext", ("9*",), ("001", "2"), 1, 1, id="exclude-pattern"),
        pytest.param({"items": USERS[:1]}, "ext", (), ("001",), 0, 0, id="wrapped"),
        pytest.param([], "ext", (), (), 0, 0, id="empty"),
        pytest.param([{"ext": "x" * 300}], "ext", (), (), 1, 0, id="unusable-name"),
        pytest.param([{"ext": True}], "ext", (), (), 1, 0, id="bool-is-not-a-name"),
    ],
)
def test_employees(
    data: Any,
    field: str,
    exclude: tuple[str, ...],
    found: tuple[str, ...],
    skipped: int,
    excluded: int,
) -> None:
    result = employees(data, field, exclude)
    assert (result.subscribers, result.skipped, result.excluded) == (found, skipped, excluded)


def test_employees_map_emails_to_extensions() -> None:
    result = employees(USERS, "email")
    assert result.ext_of["ivan@example.com"] == "001"
    assert result.ext_of["olena@example.com"] == "2"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"error": "x"}, id="object"),
        pytest.param("<html>", id="text"),
        pytest.param(None, id="null"),
    ],
)
def test_an_answer_that_is_not_a_list_is_bad(data: Any) -> None:
    with pytest.raises(BadAnswer):
        employees(data, "ext")
    with pytest.raises(BadAnswer):
        call_records(data, "history")


@pytest.mark.parametrize(
    ("current", "offers", "applied"),
    [
        pytest.param((), [["1", "2"]], [("1", "2")], id="first-list"),
        pytest.param(("1", "2"), [["1", "2", "3"]], [("1", "2", "3")], id="growth-at-once"),
        pytest.param(("1", "2", "3", "4"), [["1", "2"]], [("1", "2")], id="half-at-once"),
        pytest.param(("1", "2", "3", "4"), [["1"]], [None], id="over-half-held"),
        pytest.param(("1", "2", "3", "4"), [["1"], ["1"]], [None, ("1",)], id="confirmed"),
        pytest.param(
            ("1", "2", "3", "4"), [["1"], ["2"], ["2"]], [None, None, ("2",)], id="must-repeat"
        ),
        pytest.param(("1", "2"), [[], []], [None, None], id="empty-never"),
        pytest.param(("1", "2"), [["2", "1"]], [None], id="same-set"),
    ],
)
def test_directory(
    current: tuple[str, ...], offers: list[list[str]], applied: list[tuple[str, ...] | None]
) -> None:
    directory = Directory(current)
    assert [directory.offer(offer) for offer in offers] == applied


def record(uuid: str, end: int | None, leg: str = "001", leg2: str | None = None) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "endAt": end,
        "leg": {"id": 1, "ext": leg},
        "leg2": {"id": 2, "ext": leg2} if leg2 else None,
        "extra": {"kept": True},
    }


def test_calls_of_matches_both_legs_once_in_end_order() -> None:
    rows, skipped = call_records(
        [
            record("b", T + 2_000),
            record("a", T + 1_000, leg="002", leg2="001"),
            record("b", T + 2_000),  # pages overlap
            record("c", None),  # in progress
            record("d", T + 500, leg="003"),
            {"endAt": 1},  # no uuid
        ],
        "history",
    )
    assert skipped == 1
    assert [r.uuid for r in calls_of(rows, "001")] == ["a", "b", "c"]
    assert calls_of(rows, "001")[0].raw["extra"] == {"kept": True}
    assert [r.uuid for r in calls_of(rows, "x@example.com", ext="003")] == ["d"]


def test_seconds_are_read_as_milliseconds() -> None:
    (row,), _ = call_records([record("a", 1_700_000_000)], "history")
    assert row.end_ms == 1_700_000_000_000


@pytest.mark.parametrize(
    ("code", "from_ms", "reason"),
    [
        pytest.param(1012, 100_000, "closed 1012", id="clean-close"),
        pytest.param(1001, 100_000, "closed 1001", id="going-away"),
        pytest.param(1006, 60_000, "closed 1006, link lost", id="abnormal"),
        pytest.param(1011, 60_000, "closed 1011, link lost", id="keepalive"),
        pytest.param(None, 60_000, "closed 1006, link lost", id="unknown"),
    ],
)
def test_gap_dates_a_silent_loss_back(code: int | None, from_ms: int, reason: str) -> None:
    book = GapBook(keepalive_ms=40_000)
    assert book.up("001", 90_000) is None  # first connect: no gap
    book.down("001", 100_000, code)
    book.down("001", 105_000, 1006)  # a failed reconnect: still down since the first
    assert book.up("001", 130_000) == Gap("001", from_ms, 130_000, reason)
    assert book.up("001", 140_000) is None


T = 1_700_000_000_000  # epoch milliseconds (smaller numbers read as seconds)


def test_missed_skips_what_the_socket_saw_and_what_was_published() -> None:
    book = GapBook(keepalive_ms=0)
    plan = BackfillPlan(retry_after=(0.0, 1.0))
    plan.add(Gap("001", T + 100_000, T + 200_000, "closed 1012"), now=0.0)
    job = plan.take(0.0)
    assert job is not None
    book.seen_end("001", "seen", T + 150_000)
    rows, _ = call_records(
        [
            record("in", T + 150_000),
            record("seen", T + 150_000),
            record("early", T + 10_000),  # before the window (gap - margin)
            record("margin", T + 260_000),  # within the margin after the gap
            record("open", None),
        ],
        "history",
    )
    assert [r.uuid for r in missed(job, rows, book)] == ["in", "margin"]
    assert missed(job, rows, book) == []  # published once


class BackfillMachine(RuleBasedStateMachine):
    """Random gaps, reads and clock steps: each job is read at most len(RETRY_AFTER)
    times, never before it is due, soonest first; the plan stays bounded."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = BackfillPlan(max_jobs=20)
        self.now = 0.0
        self.reads: dict[int, int] = {}
        self.added = 0

    @rule(subscriber=st.sampled_from(["001", "002", "003"]))
    def gap(self, subscriber: str) -> None:
        self.added += 1
        self.plan.add(Gap(subscriber, self.added, self.added + 1, "closed 1006"), self.now)

    @rule(seconds=st.floats(min_value=0, max_value=400))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def read_due(self) -> None:
        previous = float("-inf")
        while (job := self.plan.take(self.now)) is not None:
            assert job.due <= self.now
            assert job.due >= previous  # soonest first
            previous = job.due
            n = self.reads[job.gap.from_ms] = self.reads.get(job.gap.from_ms, 0) + 1
            assert n <= len(RETRY_AFTER)
            self.plan.done(job, self.now)

    @precondition(lambda self: len(self.plan) > 0)
    @rule(subscriber=st.sampled_from(["001", "002", "003"]))
    def forget(self, subscriber: str) -> None:
        self.plan.forget(subscriber)
        for job in list(self.plan._jobs):
            assert job.gap.subscriber != subscriber

    @invariant()
    def bounded(self) -> None:
        assert len(self.plan) <= self.plan.max_jobs
        due = self.plan.next_due()
        if due is not None:
            assert due == min(job.due for job in self.plan._jobs)


class DirectoryMachine(RuleBasedStateMachine):
    """Random employee lists: an empty list is never applied; a list closing more than
    half the sockets is applied only when offered twice in a row; otherwise at once."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Directory()
        self.previous_offer: frozenset[str] | None = None

    @rule(found=st.sets(st.sampled_from([f"{n:03d}" for n in range(8)]), max_size=8))
    def offer(self, found: set[str]) -> None:
        before = self.directory.current
        applied = self.directory.offer(found)
        removed = len(set(before) - found)
        held = False
        if not found or tuple(sorted(found)) == before:
            assert applied is None
        elif before and removed * 2 > len(before):
            assert (applied is not None) == (self.previous_offer == frozenset(found))
            held = applied is None
        else:
            assert applied == tuple(sorted(found))
        self.previous_offer = frozenset(found) if held else None
        if applied is not None:
            assert self.directory.current == applied

    @invariant()
    def current_is_a_sorted_set(self) -> None:
        current = self.directory.current
        assert current == tuple(sorted(set(current)))


TestBackfill = BackfillMachine.TestCase
TestBackfill.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestDirectory = DirectoryMachine.TestCase
TestDirectory.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
