"""The spool's decisions (pure): table tests of each rule. The model-based test is in
``test_spool_ledger_model.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from producer.publish.spool_ledger import (
    Close,
    Delete,
    Effect,
    Evict,
    Open,
    Resume,
    Segment,
    SegmentLedger,
)
from tests.unit.producer.publish.spooling import env

SEGMENT, MAX = 1000, 5000


def ledger(**kw: int) -> SegmentLedger:
    return SegmentLedger(
        segment_bytes=kw.get("segment_bytes", SEGMENT), max_bytes=kw.get("max_bytes", MAX)
    )


def fill(book: SegmentLedger, seqs: range, size: int = 100, now: float = 0.0) -> None:
    """Append ``seqs`` as the spool does, every file opening at once and every write
    succeeding."""
    for seq in seqs:
        for effect in book.prepare(now):
            if isinstance(effect, Open):
                book.spare_opened()
        segment, _ = book.place(env(seq), size, now)
        assert segment is not None
        book.written(seq, size)


def degraded(book: SegmentLedger, seq: int, now: float = 0.0) -> list[Effect]:
    book.prepare(now)
    book.place(env(seq), 100, now)
    return book.write_failed(env(seq), now)


# --- prepare: when to open a spare, when to resume ---------------------------------------


def fresh() -> SegmentLedger:
    return ledger()


def half_full() -> SegmentLedger:
    book = ledger()
    fill(book, range(1, 6))  # 500 bytes of 1000
    return book


def below_half() -> SegmentLedger:
    book = ledger()
    fill(book, range(1, 5))
    return book


def spare_ready() -> SegmentLedger:
    book = half_full()
    book.prepare(0.0)
    book.spare_opened()
    return book


def spare_opening() -> SegmentLedger:
    book = half_full()
    book.prepare(0.0)
    return book


def spare_failed_recently() -> SegmentLedger:
    book = half_full()
    book.prepare(0.0)
    book.spare_failed(0.0)
    return book


def degraded_with_held() -> SegmentLedger:
    book = below_half()
    degraded(book, 5)
    book.place(env(6), 100, 0.2)
    return book


def resume_under_way() -> SegmentLedger:
    book = degraded_with_held()
    book.prepare(1.0)
    return book


@pytest.mark.parametrize(
    ("build", "now", "expect"),
    [
        pytest.param(fresh, 0.0, "open 1", id="nothing-open-yet"),
        pytest.param(below_half, 0.0, "", id="active-below-half"),
        pytest.param(half_full, 0.0, "open 6", id="active-half-full"),
        pytest.param(spare_ready, 0.0, "", id="spare-ready"),
        pytest.param(spare_opening, 0.0, "", id="spare-being-opened"),
        pytest.param(spare_failed_recently, 0.5, "", id="spare-failed-wait"),
        pytest.param(spare_failed_recently, 1.0, "open 7", id="spare-failed-retry"),
        pytest.param(degraded_with_held, 0.5, "", id="degraded-wait"),
        pytest.param(degraded_with_held, 1.0, "resume 5 [5, 6]", id="degraded-retry"),
        pytest.param(resume_under_way, 5.0, "", id="resume-under-way"),
    ],
)
def test_prepare(build: Callable[[], SegmentLedger], now: float, expect: str) -> None:
    book = build()
    said = []
    for effect in book.prepare(now):
        if isinstance(effect, Open):
            said.append(f"open {effect.segment.name}")
        elif isinstance(effect, Resume):
            said.append(f"resume {effect.segment.name} {[e.seq for e in effect.envelopes]}")
        else:
            raise AssertionError(effect)
    assert " ".join(said) == expect


# --- place: where a record goes ----------------------------------------------------------


def full_with_spare() -> SegmentLedger:
    book = ledger()
    fill(book, range(1, 11))  # 1000 bytes: full; a spare was opened at half
    return book


def full_without_spare(max_bytes: int = MAX) -> SegmentLedger:
    book = ledger(max_bytes=max_bytes)
    fill(book, range(1, 6))
    book.prepare(0.0)  # the spare is being opened and stays so
    for seq in range(6, 11):
        segment, _ = book.place(env(seq), 100, 0.0)
        assert segment is not None
        book.written(seq, 100)
    return book


@pytest.mark.parametrize(
    ("build", "expect"),
    [
        pytest.param(below_half, "active", id="room-in-active"),
        pytest.param(full_with_spare, "rolled", id="full-rolls-to-spare"),
        pytest.param(full_without_spare, "active", id="full-grows-while-spare-opens"),
        pytest.param(lambda: full_without_spare(1050), "held", id="full-and-at-the-bound"),
        pytest.param(spare_failed_recently, "active", id="spare-failed-keeps-writing"),
        pytest.param(degraded_with_held, "held", id="degraded"),
    ],
)
def test_place(build: Callable[[], SegmentLedger], expect: str) -> None:
    book = build()
    before, was_degraded = book.active, book.degraded
    segment, effects = book.place(env(99), 100, 0.0)
    if expect == "active":
        assert segment is before
        assert effects == []
    elif expect == "rolled":
        assert segment is book.active
        assert segment is not before
        assert segment.first_seq == 99
        assert effects == [Close(before)]  # type: ignore[arg-type]
    else:
        assert segment is None
        assert 99 in book.missing
        assert book.degraded
        assert book.active is None
        assert effects == ([] if was_degraded else [Close(before)])  # type: ignore[arg-type]


def test_roll_deletes_an_active_segment_whose_records_are_all_done() -> None:
    book = full_with_spare()
    old = book.active
    for seq in range(1, 11):
        assert book.remove(seq) == []  # the active segment stays
    _, effects = book.place(env(11), 100, 0.0)
    assert effects == [Close(old), Delete(old)]  # type: ignore[arg-type]
    assert book.bytes == 0


def test_no_segment_at_all_degrades() -> None:
    book = ledger()
    book.prepare(0.0)
    book.spare_failed(0.0)
    segment, effects = book.place(env(1), 100, 0.0)
    assert segment is None
    assert effects == []
    assert book.degraded
    assert list(book.missing) == [1]


# --- written, write_failed, disk_failed: eviction and degrading --------------------------


def test_over_the_bound_the_oldest_segments_are_evicted() -> None:
    book = ledger(max_bytes=2500)
    fill(book, range(1, 21))  # two full segments of 10
    first = book.segments[0]
    for seq in range(1, 4):
        book.remove(seq)
    fill_effects: list[Effect] = []
    for seq in range(21, 27):
        book.prepare(0.0)
        book.place(env(seq), 100, 0.0)
        fill_effects += book.written(seq, 100)
    assert fill_effects == [Delete(first), Evict(1, 10)]  # at 2600 bytes
    assert book.bytes == 1600


@pytest.mark.parametrize(
    ("records", "expect"),
    [
        pytest.param(3, "cut", id="segment-keeps-its-records"),
        pytest.param(0, "cut+delete", id="empty-segment-goes"),
    ],
)
def test_a_failed_write_cuts_the_segment_back_and_degrades(records: int, expect: str) -> None:
    book = ledger()
    fill(book, range(1, records + 1))
    if records == 0:
        book.prepare(0.0)
        book.spare_opened()
    segment, _ = book.place(env(records + 1), 100, 0.0)
    assert segment is not None
    effects = book.write_failed(env(records + 1), 0.0)
    cut = [Close(segment, records * 100)]
    assert effects == (cut if expect == "cut" else [*cut, Delete(segment)])
    assert book.degraded
    assert list(book.missing) == [records + 1]


def test_a_failed_fsync_stops_using_the_segment() -> None:
    book = below_half()
    active = book.active
    assert book.disk_failed(0.0) == [Close(active)]  # type: ignore[arg-type]
    assert book.degraded
    assert book.disk_failed(0.0) == []  # nothing open any more


# --- remove -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "deleted"),
    [
        pytest.param(3, False, id="in-a-closed-segment"),
        pytest.param(15, False, id="in-the-active-segment"),
        pytest.param(99, False, id="unknown"),
        pytest.param(0, False, id="below-everything"),
    ],
)
def test_remove(seq: int, deleted: bool) -> None:
    book = ledger()
    fill(book, range(1, 16))
    assert book.remove(seq) == []
    assert book.remove(seq) == []  # twice is harmless


def test_the_last_pending_record_of_a_closed_segment_deletes_it() -> None:
    book = ledger()
    fill(book, range(1, 16))
    first = book.segments[0]
    for seq in range(1, 10):
        assert book.remove(seq) == []
    assert book.remove(10) == [Delete(first)]
    assert book.bytes == 500


def test_removing_a_held_record_forgets_it() -> None:
    book = degraded_with_held()
    assert book.remove(5) == []
    assert list(book.missing) == [6]


# --- resume -----------------------------------------------------------------------------


def test_a_resume_makes_its_segment_the_active_one() -> None:
    book = degraded_with_held()  # 5, 6 held
    (resume,) = book.prepare(1.0)
    assert isinstance(resume, Resume)
    book.place(env(7), 100, 1.0)  # appended while the resume is under way
    book.remove(6)  # confirmed meanwhile
    effects, later = book.resumed(200)
    assert effects == []
    assert [e.seq for e in later] == [7]
    segment = book.active
    assert segment is resume.segment
    assert (segment.first_seq, segment.last_seq, segment.live) == (5, 6, 1)
    assert not book.degraded
    segment_, _ = book.place(env(7), 100, 1.0)
    assert segment_ is segment
    book.written(7, 100)
    assert book.missing == {}
    assert book.remove(5) == []
    assert book.remove(7) == []  # the active segment stays


def test_a_failed_resume_waits_and_keeps_what_is_held() -> None:
    book = degraded_with_held()
    book.prepare(1.0)
    book.resume_failed(1.0)
    assert book.degraded
    assert list(book.missing) == [5, 6]
    assert book.prepare(1.5) == []
    (again,) = book.prepare(2.0)
    assert isinstance(again, Resume)


def test_file_names_are_never_reused() -> None:
    book = below_half()  # active segment named 1, next seq 5
    degraded(book, 5)
    (resume,) = book.prepare(1.0)
    book.resume_failed(1.0)
    (again,) = book.prepare(2.0)
    assert isinstance(resume, Resume)
    assert isinstance(again, Resume)
    assert [resume.segment.name, again.segment.name] == [5, 6]


def test_close_closes_and_deletes_what_holds_nothing() -> None:
    book = spare_ready()
    active, spare = book.active, book.spare
    assert book.close() == [Close(active), Close(spare), Delete(spare)]  # type: ignore[arg-type]
    book = ledger()
    fill(book, range(1, 3))
    active = book.active
    for seq in (1, 2):
        book.remove(seq)
    assert book.close() == [Close(active), Delete(active)]  # type: ignore[arg-type]


def test_at_close_what_is_held_gets_one_more_try() -> None:
    book = degraded_with_held()
    (resume,) = book.last_resume()  # even before the retry is due
    assert isinstance(resume, Resume)
    assert book.last_resume() == []


# --- recovered segments -----------------------------------------------------------------


def recovered_overlapping() -> tuple[SegmentLedger, Segment, Segment]:
    """Files 4 (a failed write-back: copies of 4, 5) and 5 (4..7 written back again); the
    replayed copies are 4, 5 from file 4 and 6, 7 from file 5."""
    book = ledger()
    early = Segment(4, first_seq=4, last_seq=5, size=200, live=2)
    late = Segment(5, first_seq=4, last_seq=7, size=400, live=2)
    book.recovered({4: early, 5: early, 6: late, 7: late}, next_seq=8, last_name=5)
    return book, early, late


@pytest.mark.parametrize(
    ("removed", "deleted"),
    [
        pytest.param([4], [], id="one-of-two"),
        pytest.param([4, 5], ["early"], id="all-of-the-early-copies"),
        pytest.param([6, 7], ["late"], id="all-of-the-late-file"),
        pytest.param([6, 7, 4, 5], ["late", "early"], id="everything"),
        pytest.param([4, 4, 4], [], id="the-same-twice"),
        pytest.param([3, 8], [], id="unknown"),
    ],
)
def test_recovered_records_are_tracked_by_number(removed: list[int], deleted: list[str]) -> None:
    book, early, late = recovered_overlapping()
    names = {id(early): "early", id(late): "late"}
    gone = []
    for seq in removed:
        for effect in book.remove(seq):
            assert isinstance(effect, Delete)
            gone.append(names[id(effect.segment)])
    assert gone == deleted
    assert book.bytes == 600 - sum(200 if name == "early" else 400 for name in deleted)


def test_after_recovery_new_files_get_new_names_and_numbers() -> None:
    book, _, _ = recovered_overlapping()
    (effect,) = book.prepare(0.0)
    assert isinstance(effect, Open)
    assert effect.segment.name == 8  # above the files (5) and the numbers used (7)
    book.spare_opened()
    segment, _ = book.place(env(8), 100, 0.0)
    assert segment is effect.segment
    assert book.segments[-1] is segment
