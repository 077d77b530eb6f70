"""The disk spool: unconfirmed envelopes survive a crash of the producer.

When ``PHONET_SPOOL_DIR`` is set, the pipeline journals every envelope here before it can be
published, and reports each one confirmed or dropped. After a ``kill -9`` (or a power loss,
with ``PHONET_SPOOL_FSYNC``), the next start with the same directory :meth:`Spool.recover`\\ s
what was never confirmed and publishes it.

Format — append-only segment files (``<first seq>.seg``) of CRC-checked records
(:mod:`producer.publish.spool_format`), a ``checkpoint`` file holding the oldest unconfirmed
sequence number, and a ``format`` file naming the format's version (``phonet-spool 1``). The
version lives in the directory rather than in each segment: one file read once at start,
before anything else is touched, and the hot path and the segment bytes stay as they were. A
directory without it holds version 1 (written before the file existed) and gets it; one
naming another version stops the start with a :class:`~producer.errors.SpoolError` and is
left untouched. Segments were chosen by measuring (``tests/bench/spool_formats.py``): they
took ~300k appends/s against ~72k for SQLite in WAL mode with ``synchronous=OFF`` and ~40k
with ``NORMAL``, with the same crash safety (one write reaching the OS per event, no fsync);
a confirmation costs nothing on disk (a count per segment, a segment file is deleted when
none of its records is pending) where SQLite needs a DELETE per event.

Guarantees and bounds:

* every :meth:`append` is one ``os.write`` (no user-space buffer): a killed process loses
  nothing that was appended. ``fsync`` runs in a background thread
  (:class:`~producer.publish.spool_disk.Syncer`), never
  on the event loop: ``never`` (default), ``batch`` (at most once a second) or ``always``
  (continuously: each fsync covers everything written before it, so at most one fsync's
  worth of events is at risk of a power loss);
* records below the checkpoint are not replayed; others may be published twice after a
  crash (same ``message_id``), never lost. The checkpoint is written by the same thread;
* damage costs only the bytes it covers, never fatal: the decoder finds the next good record
  after a bad one by its magic and CRC (:func:`~producer.publish.spool_format.decode`). Each
  damaged region (a run of bad bytes between good records; it may have held several) counts
  once in ``phonet_spool_damaged_records_total``, and each damaged segment gets one log line
  with byte counts. A torn tail (damage with nothing good after it: the last write cut short
  by a crash) is truncated away. Damage in the middle is left in place and skipped at every
  start until the segment's records are confirmed and the file is deleted: rewriting the
  segment would mean writing up to a segment's worth on a disk that just showed it corrupts
  data, and would destroy the evidence; the cost is that a restart before the segment is
  deleted counts that damage again;
* **disk trouble degrades, never loses**: a failed write (``ENOSPC``, ``EIO``) cuts the
  segment back to its last whole record, marks the spool :attr:`~Spool.degraded` (one log
  line per burst) and stops using that segment. Envelopes keep flowing through memory —
  they are just not on disk (a crash meanwhile loses them; :attr:`~Spool.missing` counts
  them). At most once a second the next append tries again: it writes everything held in
  memory only into a segment of its own, and the spool is whole again. No method raises on
  a disk error;
* on disk at most ``max_bytes``: past it the oldest segment is deleted and its pending
  records are reported to ``on_evict`` (the pipeline drops and counts them, ``spool_full``);
* one producer per directory: an exclusive ``flock`` on ``lock``; a second one gets a
  :class:`~producer.errors.SpoolError` at start.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from producer.envelope import Envelope
from producer.errors import SpoolError
from producer.logs import BurstLog
from producer.publish.spool_disk import Disk, Syncer
from producer.publish.spool_format import (
    FORMAT_VERSION,
    Decoded,
    decode,
    decode_checkpoint,
    decode_format,
    encode,
    encode_checkpoint,
    encode_format,
)

log = logging.getLogger("producer.spool")

FsyncPolicy = Literal["never", "batch", "always"]
SUFFIX = ".seg"
FORMAT_FILE = "format"
RETRY_AFTER = 1.0
"""Seconds a degraded spool waits before it tries the disk again."""


@dataclass
class Segment:
    path: Path
    first_seq: int
    size: int = 0
    live: int = 0
    last_seq: int = 0


@dataclass(frozen=True)
class Recovery:
    """What :meth:`Spool.recover` found."""

    envelopes: list[Envelope]
    damaged: int
    skipped: int
    next_seq: int
    """Sequence numbers from here on are unused (above every record and the checkpoint)."""


class Spool:
    """An open spool directory. Appends and removals come from one event loop."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        fsync: FsyncPolicy = "never",
        segment_bytes: int | None = None,
        on_evict: Callable[[int, int], None] | None = None,
        disk: Disk | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(64 * 1024, min(8 * 1024 * 1024, max_bytes // 8))
        self.on_evict = on_evict
        self.disk = disk or Disk()
        self._segments: list[Segment] = []
        self._firsts: list[int] = []
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._checkpoint = 0
        self._written_checkpoint = -1
        self._retry_at = 0.0
        self._trouble = BurstLog(log)
        self._syncer: Syncer | None = None
        self._missing: dict[int, Envelope] = {}  # appended while degraded: memory only
        self._stragglers: dict[int, Segment] = {}  # written late, out of segment order
        self._closing = False
        self.degraded = False
        self.bytes = 0

    # --- opening and recovery ---------------------------------------------------------
    def open(self) -> None:
        """Create the directory if needed, check its format version and lock it; a new
        directory (or one written before versions existed) is marked with this version.

        Raises:
            SpoolError: the directory cannot be used: not a directory or not writable, in
                use by another producer, or holding a format this code does not know (then
                nothing in it is touched).
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            version = self._format_version()
            self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"PHONET_SPOOL_DIR {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(
                f"PHONET_SPOOL_DIR {self.directory} is in use by another producer"
            ) from None
        if version is None:
            try:
                self.disk.replace_file(self.directory, FORMAT_FILE, encode_format())
            except OSError as exc:
                self._release()
                raise SpoolError(
                    f"PHONET_SPOOL_DIR {self.directory}: cannot write {FORMAT_FILE}: {exc.strerror}"
                ) from None

    def _format_version(self) -> int | None:
        """The directory's format version; None when unmarked (new, or version 1 written
        before the marker existed). Raises SpoolError for a version this code cannot read."""
        try:
            data = (self.directory / FORMAT_FILE).read_bytes()
        except FileNotFoundError:
            return None
        version = decode_format(data)
        if version is None:
            raise SpoolError(
                f"PHONET_SPOOL_DIR {self.directory}: its {FORMAT_FILE} file is not a spool"
                " format marker; nothing was touched"
            )
        if version != FORMAT_VERSION:
            raise SpoolError(
                f"PHONET_SPOOL_DIR {self.directory} holds a spool of format version {version};"
                f" this producer reads version {FORMAT_VERSION} only (written by a newer"
                " producer?); nothing was touched"
            )
        return version

    def recover(self, *, received: float = 0.0) -> Recovery:
        """Load every pending record, oldest first; delete spent segments.

        Damage is skipped and counted (:attr:`Recovery.damaged`: damaged regions); a torn
        tail is cut away, damage in the middle of a segment is left in place (see the module
        docstring)."""
        try:
            self._checkpoint = decode_checkpoint((self.directory / "checkpoint").read_bytes())
        except FileNotFoundError:
            self._checkpoint = 0
        envelopes: list[Envelope] = []
        damaged = skipped = 0
        seen: set[int] = set()
        highest = self._checkpoint - 1
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                first = int(path.stem)
            except ValueError:
                continue
            found = decode(path.read_bytes(), received=received)
            if found.damaged:
                damaged += len(found.damage)
                self._report_damage(path, found)
            if found.torn:
                os.truncate(path, found.good_bytes)
            segment = Segment(path, first, size=found.good_bytes)
            for envelope in found.envelopes:
                segment.last_seq = max(segment.last_seq, envelope.seq)
                highest = max(highest, envelope.seq)
                if envelope.seq < self._checkpoint or envelope.seq in seen:
                    skipped += 1
                    continue
                seen.add(envelope.seq)
                segment.live += 1
                envelopes.append(envelope)
            if segment.live == 0:
                path.unlink()
                continue
            self._add_segment(segment)
        envelopes.sort(key=lambda e: e.seq)
        return Recovery(envelopes, damaged, skipped, next_seq=max(1, highest + 1))

    @staticmethod
    def _report_damage(path: Path, found: Decoded) -> None:
        """One line per damaged segment: sizes and counts, never record contents."""
        if found.gave_up:
            fate = "; the search for good records gave up, the rest stays on disk unread"
        elif found.torn:
            fate = f"; a torn tail of {found.torn} bytes cut away"
        else:
            fate = ""
        log.warning(
            "spool segment damaged: %d damaged region(s), %d bytes skipped, %d good records kept%s",
            len(found.damage),
            sum(region.size for region in found.damage),
            len(found.envelopes),
            fate,
            extra={"segment": path.name},
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the background thread that writes the checkpoint and fsyncs per policy."""
        self._syncer = Syncer(self, loop)
        self._syncer.start()

    def _add_segment(self, segment: Segment) -> None:
        self._segments.append(segment)
        self._firsts.append(segment.first_seq)
        self.bytes += segment.size

    # --- the journal (called by the pipeline) -----------------------------------------
    def append(self, envelope: Envelope) -> None:
        """Write one record; rolls to a new segment and evicts old ones when over bounds.
        Never raises: disk trouble makes the spool degraded (see the module docstring)."""
        if self.degraded:
            self._missing[envelope.seq] = envelope
            if time.monotonic() >= self._retry_at:
                self._resume()
            return
        record = encode(envelope)
        active = self._segments[-1] if self._fd is not None else None
        try:
            if active is None or active.size >= self.segment_bytes:
                active = None  # if the roll fails there is no segment to mend
                active = self._roll(envelope.seq)
            assert self._fd is not None
            written = self.disk.write(self._fd, record)
            if written != len(record):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            self._missing[envelope.seq] = envelope
            self._failed(exc, active)
            return
        active.size += len(record)
        active.live += 1
        active.last_seq = envelope.seq
        self.bytes += len(record)
        if self._syncer is not None and self.fsync != "never":
            self._syncer.mark(self._fd, active.path)
        while self.bytes > self.max_bytes and len(self._segments) > 1:
            self._evict_oldest()

    def remove(self, seq: int) -> None:
        """``seq`` was confirmed or dropped: it need not be replayed."""
        if self._missing.pop(seq, None) is not None:
            return  # never reached the disk
        straggler = self._stragglers.pop(seq, None)
        if straggler is not None:
            straggler.live -= 1
            if straggler.live <= 0 and straggler in self._segments:
                self._delete(self._segments.index(straggler))
            return
        index = bisect.bisect_right(self._firsts, seq) - 1
        if index < 0:
            return
        segment = self._segments[index]
        if seq > segment.last_seq:
            return  # already gone with its segment
        segment.live -= 1
        if segment.live <= 0 and not (self._fd is not None and index == len(self._segments) - 1):
            self._delete(index)

    def checkpoint(self, oldest_pending: int) -> None:
        """Record that everything below ``oldest_pending`` is done (written in the
        background, or by :meth:`sync`)."""
        self._checkpoint = oldest_pending

    @property
    def missing(self) -> int:
        """Envelopes held in memory only: appended while the disk failed, not written yet."""
        return len(self._missing)

    def _failed(self, exc: OSError, active: Segment | None) -> None:
        """A write failed: keep the segment whole up to its last record, stop using it.
        Every step is best effort: a failing disk may fail each one too."""
        if self._fd is not None:
            if active is not None:
                with contextlib.suppress(OSError):
                    self.disk.ftruncate(self._fd, active.size)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if active is not None and active.live == 0 and active in self._segments:
            self._delete(self._segments.index(active))
        self._retry_at = time.monotonic() + RETRY_AFTER
        self.degraded = True
        self._trouble(
            logging.ERROR,
            "spool write failed (%s): degraded, events are held in memory only until the disk"
            " takes writes again",
            exc.strerror or str(exc),
            extra={"spool_dir": str(self.directory)},
        )

    def _resume(self) -> bool:
        """Try the disk again: write what is held in memory only into a segment of its own
        (so the spool is whole again); new events then go to a fresh segment."""
        missing = sorted(self._missing.items())
        if missing:
            try:
                segment = self._write_segment([envelope for _, envelope in missing])
            except OSError as exc:
                self._failed(exc, None)
                return False
            for seq, _ in missing:
                self._stragglers[seq] = segment
            self._missing.clear()
        self.degraded = False
        log.info(
            "spool writes work again: %d events held in memory meanwhile are on disk now",
            len(missing),
            extra={"spool_dir": str(self.directory)},
        )
        return True

    def _write_segment(self, envelopes: list[Envelope]) -> Segment:
        """One closed segment holding ``envelopes`` (ascending). Raises OSError, leaving
        no partial file behind if it can."""
        path = self.directory / f"{envelopes[0].seq:020d}{SUFFIX}"
        data = b"".join(encode(envelope) for envelope in envelopes)
        fd = self.disk.open_segment(path)
        try:
            written = self.disk.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            if self.fsync != "never":
                self.disk.fsync(fd)  # rare: once per recovery from a disk fault
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        segment = Segment(path, envelopes[0].seq, size=len(data), live=len(envelopes))
        segment.last_seq = envelopes[-1].seq
        index = bisect.bisect_right(self._firsts, segment.first_seq)
        self._segments.insert(index, segment)
        self._firsts.insert(index, segment.first_seq)
        self.bytes += segment.size
        return segment

    # --- maintenance ------------------------------------------------------------------
    def sync(self) -> None:
        """Write the checkpoint if it moved and fsync per policy, now, on this thread."""
        self._write_checkpoint()
        fd = self._fd
        if fd is not None and self.fsync != "never":
            self.disk.fsync(fd)

    def _write_checkpoint(self) -> None:
        value = self._checkpoint
        if value != self._written_checkpoint:
            self.disk.write_checkpoint(self.directory, encode_checkpoint(value))
            self._written_checkpoint = value

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread (waiting up to ``timeout`` seconds), make a last try
        to put on disk what is held in memory only, checkpoint, fsync per policy, close the
        files and release the directory lock. Disk errors are logged, never raised. Blocks:
        the producer calls it in a worker thread, bounded."""
        self._closing = True
        syncer, self._syncer = self._syncer, None
        if syncer is not None and syncer.stop(timeout):
            log.warning("spool: the background fsync did not finish; no final checkpoint")
            self._release()
            return
        if self._missing:
            self._resume()
        try:
            self.sync()
        except OSError as exc:
            log.error("spool: final checkpoint or fsync failed: %s", exc.strerror)
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            if self._segments and self._segments[-1].live == 0:
                self._delete(len(self._segments) - 1)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # --- segments ---------------------------------------------------------------------
    def _roll(self, first_seq: int) -> Segment:
        if self._fd is not None:
            if self._syncer is not None and self.fsync != "never":
                self._syncer.mark(self._fd, self._segments[-1].path)  # fsyncs a duplicate
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            if self._segments[-1].live == 0:
                self._delete(len(self._segments) - 1)
        path = self.directory / f"{first_seq:020d}{SUFFIX}"
        self._fd = self.disk.open_segment(path)
        segment = Segment(path, first_seq, last_seq=first_seq - 1)
        self._add_segment(segment)
        if self._syncer is not None and self.fsync != "never":
            self._syncer.mark_directory()
        return segment

    def _delete(self, index: int) -> None:
        """Forget a segment and unlink its file (best effort: a read-only disk keeps it,
        and the next start skips its records below the checkpoint)."""
        segment = self._segments.pop(index)
        self._firsts.pop(index)
        self.bytes -= segment.size
        for seq, owner in list(self._stragglers.items()) if segment.live else ():
            if owner is segment:
                del self._stragglers[seq]
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._trouble(logging.ERROR, "spool: cannot delete a segment: %s", exc.strerror)

    def _evict_oldest(self) -> None:
        segment = self._segments[0]
        first, last, live = segment.first_seq, segment.last_seq, segment.live
        self._delete(0)
        if live and self.on_evict is not None:
            self.on_evict(first, last)
