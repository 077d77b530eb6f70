"""Call records with hostile shapes in every field the producer reads (issue 21: an
``email`` that was a list stopped the backfill for good). Parsing must never raise: a value
of the wrong JSON type names nobody, dates nothing, and the row is skipped or kept as the
table says."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.subscribers.gaps import BackfillPlan, Gap, GapBook, missed
from producer.subscribers.records import call_records, calls_of

T = 1_700_000_000_000
HUGE = "0" * 1_000_000

NOT_A_NAME = [
    pytest.param(None, id="null"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(1.0, id="float"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param("", id="empty-string"),
    pytest.param("   ", id="blank-string"),
    pytest.param([], id="empty-list"),
    pytest.param(["001"], id="list-holding-the-name"),
    pytest.param([["001"], {"ext": "001"}], id="nested-list"),
    pytest.param({}, id="empty-object"),
    pytest.param({"ext": "001", "email": "001"}, id="object-holding-the-name"),
    pytest.param(10**5000, id="int-too-long-to-spell"),
]
"""Values of ``ext`` / ``email`` that must not match subscriber ``001`` (nor raise)."""

NOT_A_LEG = [
    pytest.param(None, id="null"),
    pytest.param("001", id="string"),
    pytest.param(1, id="int"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param([], id="empty-list"),
    pytest.param([{"ext": "001"}], id="list-of-legs"),
    pytest.param(HUGE, id="huge-string"),
]
"""Values of ``leg`` / ``leg2`` themselves that name nobody."""

GOOD_LEG = {"id": 2, "ext": "002", "email": "olena@example.com"}


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"uuid": "c1", "endAt": T, "leg": None, "leg2": None}
    base.update(fields)
    return base


def records(*rows: dict[str, Any]) -> list[Any]:
    parsed, _ = call_records(list(rows), "history")
    return parsed


@pytest.mark.parametrize("side", ["leg", "leg2"])
@pytest.mark.parametrize("field", ["ext", "email"])
@pytest.mark.parametrize("value", NOT_A_NAME)
def test_a_field_of_the_wrong_type_names_nobody(side: str, field: str, value: Any) -> None:
    other = "leg2" if side == "leg" else "leg"
    (record,) = records(row(**{side: {"id": 1, field: value}, other: GOOD_LEG}))
    assert not record.involves("001")
    assert not record.involves("ivan@example.com", ext="001")
    assert record.involves("002")  # the other leg still counts
    assert record.involves("olena@example.com")
    assert [r.uuid for r in calls_of([record], "002")] == ["c1"]


@pytest.mark.parametrize("side", ["leg", "leg2"])
@pytest.mark.parametrize("value", NOT_A_NAME)
def test_both_fields_odd_beside_a_good_one(side: str, value: Any) -> None:
    """The issue's row: ``ext`` is fine, ``email`` is a list (or any odd value)."""
    (record,) = records(row(**{side: {"ext": "001", "email": value}}))
    assert record.involves("001")
    (record,) = records(row(**{side: {"ext": value, "email": "ivan@example.com"}}))
    assert record.involves("ivan@example.com")
    assert not record.involves("001")


@pytest.mark.parametrize("side", ["leg", "leg2"])
@pytest.mark.parametrize("value", NOT_A_LEG)
def test_a_leg_that_is_not_an_object_names_nobody(side: str, value: Any) -> None:
    other = "leg2" if side == "leg" else "leg"
    (record,) = records(row(**{side: value}))
    assert not record.involves("001")
    assert not record.involves("x@example.com", ext="001")
    (record,) = records(row(**{side: value, other: GOOD_LEG}))
    assert record.involves("002")


@pytest.mark.parametrize(
    ("leg", "subscriber", "ext", "involved"),
    [
        pytest.param({"ext": "001"}, "001", None, True, id="ext-string"),
        pytest.param({"ext": 1}, "1", None, True, id="ext-int-spelled"),
        pytest.param({"ext": " 001 "}, "001", None, True, id="ext-padded"),
        pytest.param({"ext": 1}, "001", None, False, id="ext-int-is-not-zero-padded"),
        pytest.param({"email": "i@example.com"}, "i@example.com", None, True, id="email"),
        pytest.param({"ext": "901"}, "i@example.com", "901", True, id="email-by-its-ext"),
        pytest.param({"ext": "901"}, "i@example.com", None, False, id="email-ext-unknown"),
        pytest.param({"ext": HUGE}, HUGE, None, True, id="huge-string-is-a-string"),
        pytest.param({"ext": HUGE}, "001", None, False, id="huge-string-not-another"),
        pytest.param({"ext": "001"}, "002", None, False, id="someone-else"),
    ],
)
def test_names_that_count(
    leg: dict[str, Any], subscriber: str, ext: str | None, involved: bool
) -> None:
    (record,) = records(row(leg=leg))
    assert record.involves(subscriber, ext) is involved


@pytest.mark.parametrize(
    ("uuid", "kept_as"),
    [
        pytest.param("abc", "abc", id="string"),
        pytest.param(" abc ", "abc", id="padded"),
        pytest.param(42, "42", id="int"),
        pytest.param("x" * 200, "x" * 200, id="longest"),
        pytest.param("x" * 201, None, id="too-long"),
        pytest.param(HUGE, None, id="huge"),
        pytest.param(10**5000, None, id="int-too-long-to-spell"),
        pytest.param(None, None, id="null"),
        pytest.param(True, None, id="bool"),
        pytest.param(1.5, None, id="float"),
        pytest.param("", None, id="empty"),
        pytest.param([], None, id="list"),
        pytest.param(["abc"], None, id="list-holding-one"),
        pytest.param({"uuid": "abc"}, None, id="object"),
    ],
)
def test_uuid_of_any_type(uuid: Any, kept_as: str | None) -> None:
    parsed, skipped = call_records([row(uuid=uuid), row(uuid="other")], "history")
    assert [r.uuid for r in parsed] == ([kept_as] if kept_as else []) + ["other"]
    assert skipped == (0 if kept_as else 1)


@pytest.mark.parametrize(
    ("end", "end_ms"),
    [
        pytest.param(T, T, id="millis"),
        pytest.param(T // 1000, T, id="seconds"),
        pytest.param(float(T) + 0.5, T, id="float-millis"),
        pytest.param(0, 0, id="zero"),
        pytest.param(-5, -5, id="negative"),
        pytest.param(10**30, 10**30, id="far-future"),
        pytest.param(1e308, int(1e308), id="largest-float"),
        pytest.param(None, None, id="null-in-progress"),
        pytest.param(True, None, id="bool"),
        pytest.param(str(T), None, id="digits-string"),
        pytest.param(HUGE, None, id="huge-string"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param(float("inf"), None, id="inf"),
        pytest.param(float("-inf"), None, id="minus-inf"),
        pytest.param([T], None, id="list"),
        pytest.param({"ms": T}, None, id="object"),
    ],
)
def test_end_of_any_type(end: Any, end_ms: int | None) -> None:
    (record,) = records(row(endAt=end, leg={"ext": "001"}))
    assert record.end_ms == end_ms
    assert [r.uuid for r in calls_of([record], "001")] == ["c1"]


def test_rows_that_are_not_objects_are_left_out() -> None:
    parsed, skipped = call_records([None, 1, "row", [row()], row(uuid="kept")], "history")
    assert [r.uuid for r in parsed] == ["kept"]
    assert skipped == 0  # not rows at all: nothing to count as a skipped call


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["001", "x@example.com", " 001 "]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["ext", "email", "id", "uuid"]), inner, max_size=3)
    ),
    max_leaves=8,
)
ROW = st.dictionaries(st.sampled_from(["uuid", "endAt", "leg", "leg2", "extra"]), JSON)


@settings(max_examples=500, deadline=None)
@given(rows=st.lists(ROW | JSON, max_size=6))
def test_no_row_makes_the_backfill_raise(rows: list[Any]) -> None:
    """Whatever the rows hold, parsing, matching and choosing what to publish return."""
    parsed, skipped = call_records(rows, "history")
    assert skipped + len(parsed) == sum(isinstance(r, dict) for r in rows)
    plan = BackfillPlan(retry_after=(0.0,))
    plan.add(Gap("001", -(10**40), 10**40, "closed 1006"), now=0.0)
    job = plan.take(0.0)
    assert job is not None
    for subscriber, ext in (("001", None), ("x@example.com", "001")):
        found = calls_of(parsed, subscriber, ext)
        assert all(r.involves(subscriber, ext) for r in found)
        missed(job, found, GapBook(keepalive_ms=0))
