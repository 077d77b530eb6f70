"""The spool's decisions, pure: which segment holds which sequence number, how many of its
records are still pending, when to open and roll to a new segment, what to evict and
delete, what to hold in memory while the disk fails, and when to try it again.

No I/O and no clock of its own (``now`` is passed in). :class:`~producer.publish.spool.Spool`
carries out the :data:`Effect`\\ s each method returns — opening, closing and deleting
files off the event loop — and reports back how the slow ones went
(:meth:`SegmentLedger.spare_opened`, :meth:`SegmentLedger.resumed`, …).

The rules:

* records go to the *active* segment, the newest; sequence numbers ascend within a segment
  and from one segment to the next, so the owner of a number is found by bisection;
* a *spare* segment is opened ahead (once the active one is half full), so rolling to a new
  segment never waits for the disk. Until it is ready a full active segment keeps growing,
  up to the spool's whole bound; beyond that there is nowhere to write: degraded;
* a segment none of whose records is pending is deleted, except the active one (it is
  deleted when it is rolled or closed); past ``max_bytes`` the oldest segments are evicted
  and their pending records reported;
* degraded (a write failed, or no segment to write to): records are held in memory
  (:attr:`SegmentLedger.missing`); at most every ``retry_after`` seconds an append asks for a
  *resume*: what is held is written into a new segment that becomes the active one.

Segment files are named by a number that is unique in the directory and grows with each new
file; it is the segment's lowest possible sequence number when it is created, but only the
records inside say which numbers a segment holds (recovery reads them).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from producer.core.envelope import Envelope

RETRY_AFTER = 1.0
"""Seconds a degraded spool waits before it tries the disk again."""


@dataclass(eq=False)
class Segment:
    """One segment file. Compared by identity: two segments are never the same file."""

    name: int
    first_seq: int = 0
    """Its lowest sequence number: its first record's (or, while empty and active, the
    lowest number that may still come)."""
    last_seq: int = 0
    size: int = 0
    live: int = 0
    """Its records still pending (neither confirmed nor dropped)."""


@dataclass(frozen=True)
class Open:
    """Create ``segment``'s file (off the loop); answer :meth:`SegmentLedger.spare_opened`
    or :meth:`SegmentLedger.spare_failed`."""

    segment: Segment


@dataclass(frozen=True)
class Close:
    """Close ``segment``'s file, first cutting it to ``cut`` bytes when not None (a record
    half written by a failed write)."""

    segment: Segment
    cut: int | None = None


@dataclass(frozen=True)
class Delete:
    """Unlink ``segment``'s file (best effort: records below the checkpoint are not replayed
    anyway)."""

    segment: Segment


@dataclass(frozen=True)
class Evict:
    """Pending records ``first..last`` were deleted from disk: the pipeline must drop them."""

    first: int
    last: int


@dataclass(frozen=True)
class Resume:
    """Write ``envelopes`` (ascending) into a new file for ``segment`` and keep it open as the
    active segment (off the loop); answer :meth:`SegmentLedger.resumed` or
    :meth:`SegmentLedger.resume_failed`."""

    segment: Segment
    envelopes: list[Envelope] = field(hash=False)


Effect = Open | Close | Delete | Evict | Resume


class SegmentLedger:
    """The segments of one spool and its health. One thread; not thread-safe."""

    def __init__(
        self, *, segment_bytes: int, max_bytes: int, retry_after: float = RETRY_AFTER
    ) -> None:
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        self.segments: list[Segment] = []  # on disk, ascending; the active one is last
        self._firsts: list[int] = []
        self.active: Segment | None = None
        self.spare: Segment | None = None
        self.opening: Segment | None = None
        self.resuming: Resume | None = None
        self.missing: dict[int, Envelope] = {}  # held in memory only; ascending
        self.degraded = False
        self.bytes = 0
        self.next_seq = 1
        self._retry_at = 0.0
        self._spare_at = 0.0
        self._last_name = 0
        self._owners: dict[int, Segment] = {}  # recovered records: seq -> its segment
        self._recovered_below = 0  # numbers below are recovered ones

    # --- recovery -------------------------------------------------------------------
    def recovered(self, owners: dict[int, Segment], *, next_seq: int, last_name: int) -> None:
        """What an earlier run left: the segment holding each pending record; sequence
        numbers from ``next_seq`` on are unused, file names up to ``last_name`` are taken.

        Recovered records are looked up by number, not by bisection: files left by a failed
        write-back may hold copies of records that are in a later file too."""
        for segment in sorted(set(owners.values()), key=lambda s: s.first_seq):
            self._add(segment)
        self._owners.update(owners)
        self._recovered_below = next_seq
        self.next_seq = max(self.next_seq, next_seq)
        self._last_name = max(self._last_name, last_name)

    # --- appending ------------------------------------------------------------------
    def prepare(self, now: float) -> list[Effect]:
        """Before an append: ask for a spare segment or a resume when one is due."""
        if self.degraded:
            if self.resuming is None and now >= self._retry_at:
                return [self._resume()]
            return []
        active = self.active
        if (
            self.spare is None
            and self.opening is None
            and now >= self._spare_at
            and (active is None or active.size >= self.segment_bytes // 2)
        ):
            self.opening = Segment(self._name(self.next_seq))
            return [Open(self.opening)]
        return []

    def place(
        self, envelope: Envelope, size: int, now: float
    ) -> tuple[Segment | None, list[Effect]]:
        """Where to write ``envelope``'s record of ``size`` bytes: a segment (after the
        effects, which roll to a new one when due), or None: it is held in memory."""
        self.next_seq = max(self.next_seq, envelope.seq + 1)
        if self.degraded:
            self.missing[envelope.seq] = envelope
            return None, []
        active = self.active
        if active is not None and active.size < self.segment_bytes:
            return active, []
        if self.spare is not None:
            return self._roll(envelope.seq)
        if active is not None and active.size + size <= self.max_bytes:
            return active, []  # a new segment is being opened: grow this one meanwhile
        self.missing[envelope.seq] = envelope
        return None, self._degrade(now, cut=None)

    def written(self, seq: int, size: int) -> list[Effect]:
        """The record of ``seq`` is in the active segment."""
        active = self.active
        assert active is not None
        active.size += size
        active.live += 1
        active.last_seq = seq
        self.bytes += size
        if self.missing:  # written late, after a resume
            self.missing.pop(seq, None)
        return self._evict() if self.bytes > self.max_bytes else []

    def write_failed(self, envelope: Envelope, now: float) -> list[Effect]:
        """Writing ``envelope`` to the active segment failed: hold it, stop using that file
        (cut back to its last whole record), degrade."""
        self.missing[envelope.seq] = envelope
        return self._degrade(now, cut=None if self.active is None else self.active.size)

    def disk_failed(self, now: float) -> list[Effect]:
        """An fsync of the active segment failed: what was written may not be on disk, so
        stop using that file and degrade."""
        if self.active is None:
            return []
        return self._degrade(now, cut=None)

    # --- what the pipeline reports --------------------------------------------------
    def remove(self, seq: int) -> list[Effect]:
        """``seq`` was confirmed or dropped: it need not be replayed."""
        if self.missing.pop(seq, None) is not None:
            return []
        if seq < self._recovered_below:
            owner = self._owners.pop(seq, None)
            if owner is None or owner.live <= 0 or owner not in self.segments:
                return []  # not replayed, or already gone with its segment
            index = self.segments.index(owner)
        else:
            index = bisect.bisect_right(self._firsts, seq) - 1
            if index < 0 or seq > self.segments[index].last_seq:
                return []  # already gone with its segment
        segment = self.segments[index]
        if segment.live <= 0:
            return []
        segment.live -= 1
        if segment.live == 0 and segment is not self.active:
            return self._delete(index)
        return []

    # --- answers to slow effects ----------------------------------------------------
    def spare_opened(self) -> None:
        """The :class:`Open` succeeded: the spare is ready for the next roll."""
        self.spare, self.opening = self.opening, None

    def spare_failed(self, now: float) -> None:
        """The :class:`Open` failed: try again in ``retry_after`` seconds."""
        self.opening = None
        self._spare_at = now + self.retry_after

    def resumed(self, size: int) -> tuple[list[Effect], list[Envelope]]:
        """The :class:`Resume` wrote ``size`` bytes: its segment is the active one. Returns
        effects (evictions) and what was appended meanwhile, to write now, in order."""
        resume, self.resuming = self.resuming, None
        assert resume is not None
        segment = resume.segment
        batch = [e.seq for e in resume.envelopes]
        segment.size = size
        segment.live = sum(1 for seq in batch if self.missing.pop(seq, None) is not None)
        later = list(self.missing.values())
        segment.first_seq = batch[0] if batch else later[0].seq if later else self.next_seq
        segment.last_seq = batch[-1] if batch else segment.first_seq - 1
        self._add(segment)
        self.active = segment
        self.degraded = False
        return self._evict(), later

    def resume_failed(self, now: float) -> None:
        """The :class:`Resume` failed: still degraded; try again in ``retry_after`` s."""
        self.resuming = None
        self._retry_at = now + self.retry_after

    # --- closing --------------------------------------------------------------------
    def last_resume(self) -> list[Effect]:
        """At close: one more try to put what is held in memory on disk, now."""
        if not self.missing or self.resuming is not None:
            return []
        effects = self._degrade(0.0, cut=None) if self.active is not None else []
        return [*effects, self._resume()]

    def close(self) -> list[Effect]:
        """Close the open files; delete those holding nothing pending."""
        effects: list[Effect] = []
        active, self.active = self.active, None
        if active is not None:
            effects.append(Close(active))
            if active.live == 0:
                effects += self._delete(self.segments.index(active))
        spare, self.spare = self.spare, None
        if spare is not None:
            effects += [Close(spare), Delete(spare)]
        return effects

    # --- internals ------------------------------------------------------------------
    def _name(self, lowest_seq: int) -> int:
        """A file name never used in this directory, near ``lowest_seq``."""
        self._last_name = max(lowest_seq, self._last_name + 1)
        return self._last_name

    def _add(self, segment: Segment) -> None:
        self.segments.append(segment)
        self._firsts.append(segment.first_seq)
        self.bytes += segment.size

    def _roll(self, seq: int) -> tuple[Segment, list[Effect]]:
        effects: list[Effect] = []
        old = self.active
        if old is not None:
            effects.append(Close(old))
            if old.live == 0:
                effects += self._delete(len(self.segments) - 1)
        new, self.spare = self.spare, None
        assert new is not None
        new.first_seq, new.last_seq = seq, seq - 1
        self._add(new)
        self.active = new
        return new, effects

    def _degrade(self, now: float, *, cut: int | None) -> list[Effect]:
        effects: list[Effect] = []
        active, self.active = self.active, None
        if active is not None:
            effects.append(Close(active, cut))
            if active.live == 0:
                effects += self._delete(self.segments.index(active))
        self.degraded = True
        self._retry_at = now + self.retry_after
        return effects

    def _resume(self) -> Resume:
        held = sorted(self.missing.values(), key=lambda e: e.seq)
        segment = Segment(self._name(held[0].seq if held else self.next_seq))
        self.resuming = Resume(segment, held)
        return self.resuming

    def _delete(self, index: int) -> list[Effect]:
        segment = self.segments.pop(index)
        self._firsts.pop(index)
        self.bytes -= segment.size
        return [Delete(segment)]

    def _evict(self) -> list[Effect]:
        effects: list[Effect] = []
        while self.bytes > self.max_bytes and len(self.segments) > 1:
            oldest = self.segments[0]
            effects += self._delete(0)
            if oldest.live:
                effects.append(Evict(oldest.first_seq, oldest.last_seq))
                oldest.live = 0
        return effects
