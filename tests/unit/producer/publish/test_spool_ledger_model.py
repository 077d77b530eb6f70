"""The spool's decisions, model-based (hypothesis stateful): drives the ledger like the spool
does — with files that open late or not at all, writes that fail, resumes that fail,
confirmations and evictions in any order — and checks after every step that no pending
record is lost track of, that counts match what the files hold, and the bounds."""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from producer.core.envelope import Envelope
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


class LedgerModel(RuleBasedStateMachine):
    """Drives the ledger as the spool does; the model is what each file holds."""

    def __init__(self) -> None:
        super().__init__()
        self.book = SegmentLedger(segment_bytes=600, max_bytes=2400)
        self.now = 0.0
        self.seq = 0
        self.pending: set[int] = set()
        self.files: dict[Segment, dict[int, int]] = {}  # what each file holds: seq -> size
        self.deleted: set[Segment] = set()
        self.names: set[int] = set()
        self.resumed_bytes: dict[Segment, int] = {}
        self.write_ok = True

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Open | Resume):
                assert effect.segment.name not in self.names  # never two files, one name
                self.names.add(effect.segment.name)
                self.files[effect.segment] = {}
            elif isinstance(effect, Delete):
                assert effect.segment not in self.deleted
                self.deleted.add(effect.segment)
            elif isinstance(effect, Evict):
                doomed = sorted(s for s in self.pending if effect.first <= s <= effect.last)
                for seq in doomed:  # the pipeline drops them, and tells the journal
                    self.pending.discard(seq)
                    self.run(self.book.remove(seq))
            elif isinstance(effect, Close) and effect.cut is not None:
                held = self.files[effect.segment]
                assert sum(held.values()) == effect.cut  # cut back to its whole records

    def write(self, envelope: Envelope, size: int) -> None:
        segment, effects = self.book.place(envelope, size, self.now)
        self.run(effects)
        if segment is None:
            return
        if not self.write_ok:
            self.run(self.book.write_failed(envelope, self.now))
            return
        self.files[segment][envelope.seq] = size
        self.run(self.book.written(envelope.seq, size))

    @rule(size=st.integers(50, 250))
    def append(self, size: int) -> None:
        self.seq += 1
        self.pending.add(self.seq)
        self.run(self.book.prepare(self.now))
        self.write(env(self.seq), size)

    @rule(ok=st.booleans())
    def disk_changes(self, ok: bool) -> None:
        self.write_ok = ok

    @precondition(lambda self: self.book.opening is not None)
    @rule(ok=st.booleans())
    def open_finishes(self, ok: bool) -> None:
        if ok:
            self.book.spare_opened()
        else:
            self.book.spare_failed(self.now)

    @precondition(lambda self: self.book.resuming is not None)
    @rule(ok=st.booleans())
    def resume_finishes(self, ok: bool) -> None:
        resume = self.book.resuming
        assert resume is not None
        if not ok:
            self.book.resume_failed(self.now)
            return
        self.files[resume.segment] = {e.seq: 100 for e in resume.envelopes}
        self.resumed_bytes[resume.segment] = 100 * len(resume.envelopes)
        effects, later = self.book.resumed(100 * len(resume.envelopes))
        self.run(effects)
        for envelope in later:
            if self.book.degraded:
                break
            self.write(envelope, 100)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.pending)))
        self.pending.discard(seq)
        self.run(self.book.remove(seq))

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def every_pending_record_is_held_or_in_exactly_one_live_file(self) -> None:
        for seq in self.pending:
            places = [s for s in self.book.segments if seq in self.files[s]]
            assert len(places) + (seq in self.book.missing) == 1, seq

    @invariant()
    def counts_match_the_files(self) -> None:
        book = self.book
        for segment in book.segments:
            held = self.files[segment]
            assert segment not in self.deleted
            assert segment.live == len(self.pending & held.keys())
            assert segment.size == sum(held.values())
        assert book.bytes == sum(s.size for s in book.segments)
        assert set(book.missing) <= self.pending
        for gone in self.deleted:
            assert not self.pending & self.files[gone].keys()

    @invariant()
    def segments_ascend_and_the_active_one_is_last(self) -> None:
        book = self.book
        ranges = [sorted(self.files[s]) for s in book.segments if self.files[s]]
        for earlier, later in itertools.pairwise(ranges):
            assert earlier[-1] < later[0]
        for segment in book.segments:
            assert all(segment.first_seq <= seq <= segment.last_seq for seq in self.files[segment])
        if book.active is not None:
            assert book.segments[-1] is book.active
        assert not (book.degraded and book.active is not None)
        assert book.spare is None or book.opening is None

    @invariant()
    def within_the_bound(self) -> None:
        book = self.book
        assert book.bytes <= book.max_bytes or len(book.segments) == 1 or book.missing
        for segment in book.segments:  # a full segment grows only up to the whole bound
            assert segment.size - self.resumed_bytes.get(segment, 0) <= book.max_bytes


TestLedgerModel = LedgerModel.TestCase
TestLedgerModel.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
