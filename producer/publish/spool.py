"""The disk spool: unconfirmed envelopes survive a crash of the producer.

When ``PHONET_SPOOL_DIR`` is set, the pipeline journals every envelope here before it can be
published, and reports each one confirmed or dropped. After a ``kill -9`` (or a power loss,
with ``PHONET_SPOOL_FSYNC``), the next start with the same directory :meth:`Spool.recover`\\ s
what was never confirmed and publishes it.

Format — append-only segment files (``<number>.seg``) of CRC-checked records
(:mod:`producer.publish.spool_format`), a ``checkpoint`` file holding the oldest unconfirmed
sequence number, and a ``format`` file naming the format's version
(:mod:`producer.publish.spool_recovery`). Segments were chosen by measuring
(``tests/bench/spool_formats.py``): ~300k appends/s against ~72k for SQLite in WAL mode with
``synchronous=OFF`` and ~40k with ``NORMAL``, at the same crash safety (one write reaching
the OS per event, no fsync); a confirmation costs nothing on disk (a count per segment; a
file is deleted when none of its records is pending) where SQLite needs a DELETE per event.

This module is the thin file side; the decisions (which segment holds what, when to roll,
evict, delete, degrade and retry) are :class:`~producer.publish.spool_ledger.SegmentLedger`'s.

Guarantees and bounds:

* every :meth:`append` is one ``os.write`` (no user-space buffer) on the event loop, before
  the next frame is read: a killed process loses nothing that was appended. Every other file
  operation — ``fsync``, creating the next segment (opened ahead, before it is needed),
  closing, cutting and deleting segments, writing back what was held in memory — runs in a
  background thread (:class:`~producer.publish.spool_disk.Syncer`), never on the event loop,
  so a stalled or failing disk cannot stall it. The exceptions run before the producer
  reads any frame: :meth:`open`, :meth:`recover` and the first segment, opened by
  :meth:`start`. ``fsync`` is ``never`` (default), ``batch`` (at most once a second) or
  ``always`` (continuously: each fsync covers everything written before it, so at most one
  fsync's worth of events is at risk of a power loss);
* records below the checkpoint are not replayed; others may be published twice after a
  crash (same ``message_id``), never lost. The checkpoint is written by the same thread;
* damage costs only the bytes it covers, never fatal: the decoder finds the next good record
  after a bad one by its magic and CRC (:func:`~producer.publish.spool_format.decode`). Each
  damaged region (a run of bad bytes between good records; it may have held several) counts
  once in ``phonet_spool_damaged_records_total``, and each damaged segment gets one log line
  with byte counts. A torn tail (damage with nothing good after it: the last write cut short
  by a crash) is truncated away. Damage in the middle is left in place, skipped at every
  start until the file is deleted (its records confirmed): rewriting the segment would write
  up to a segment's worth on a disk that just showed it corrupts data, and destroy the
  evidence; the cost is that a restart before then counts that damage again;
* **disk trouble degrades, never loses**: a failed write (``ENOSPC``, ``EIO``) — or no
  segment to write to, when creating one fails or stalls for as long as the spool takes to
  fill — marks the spool :attr:`~Spool.degraded` (one log line per burst) and stops using
  that segment (cut back to its last whole record, in the background). Envelopes keep
  flowing through memory — they are just not on disk (a crash meanwhile loses them;
  :attr:`~Spool.missing` counts them). At most once a second the next append asks the
  background thread to try again: it writes everything held in memory only into a new
  segment (fsynced per policy), which becomes the one appends go to, and the spool is whole
  again. No method raises on a disk error;
* on disk at most ``max_bytes``: past it the oldest segment is deleted and its pending
  records are reported to ``on_evict`` (the pipeline drops and counts them, ``spool_full``);
* one producer per directory: an exclusive ``flock`` on ``lock``; a second one gets a
  :class:`~producer.core.errors.SpoolError` at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal

from producer.core.envelope import Envelope
from producer.publish.spool_disk import Apply, Disk, Job, Syncer
from producer.publish.spool_format import encode, encode_checkpoint
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
from producer.publish.spool_recovery import SUFFIX, Recovery, lock_directory, read_segments
from producer.telemetry.logs import BurstLog

log = logging.getLogger("producer.spool")

FsyncPolicy = Literal["never", "batch", "always"]


class Spool:
    """An open spool directory. Appends and removals come from one event loop; without
    :meth:`start` (tests, tools) every file operation runs inline on the caller's thread."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        fsync: FsyncPolicy = "never",
        segment_bytes: int | None = None,
        on_evict: Callable[[int, int], None] | None = None,
        disk: Disk | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(64 * 1024, min(8 * 1024 * 1024, max_bytes // 8))
        self.on_evict = on_evict
        self.disk = disk or Disk()
        self.ledger = SegmentLedger(segment_bytes=self.segment_bytes, max_bytes=max_bytes)
        self._clock = clock
        self._fds: dict[Segment, int] = {}  # the active and the spare segment's files
        self._lock_fd: int | None = None
        self._checkpoint = 0
        self._written_checkpoint = -1
        self.trouble = BurstLog(log)
        self._syncer: Syncer | None = None
        self.state_lock = threading.Lock()  # the loop applies results; close() takes over
        self.closing = False

    @property
    def degraded(self) -> bool:
        """Appends are held in memory only (the disk failed)."""
        return self.ledger.degraded

    @property
    def missing(self) -> int:
        """Envelopes held in memory only: appended while the disk failed, not written yet."""
        return len(self.ledger.missing)

    @property
    def bytes(self) -> int:
        """Size of the segments on disk."""
        return self.ledger.bytes

    # --- opening and recovery (before any frame is read) -----------------------------
    def open(self) -> None:
        """Create the directory if needed, check its format version and lock it (see
        :func:`~producer.publish.spool_recovery.lock_directory`). Raises SpoolError."""
        self._lock_fd = lock_directory(self.directory, self.disk)

    def recover(self, *, received: float = 0.0) -> Recovery:
        """Load every pending record, oldest first; delete spent segments. Damage is
        skipped and counted; a torn tail is cut away, damage in the middle of a segment is
        left in place (see the module docstring). Raises SpoolError when a file cannot be
        read (see :func:`~producer.publish.spool_recovery.read_segments`)."""
        found = read_segments(self.directory, self.disk, received=received, trouble=self.trouble)
        self._checkpoint = found.checkpoint
        self.ledger.recovered(
            found.owners, next_seq=found.recovery.next_seq, last_name=found.last_name
        )
        return found.recovery

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the first segment (on this thread: no frame is read yet), then start the
        background thread that does every other slow file operation."""
        self._run(self.ledger.prepare(self._clock()))
        self._syncer = Syncer(self, loop)
        self._syncer.start()

    # --- the journal (called by the pipeline) -----------------------------------------
    def append(self, envelope: Envelope) -> None:
        """Write one record (one ``os.write``), or hold it in memory while the disk fails.
        Never raises: disk trouble makes the spool degraded (see the module docstring)."""
        now = self._clock()
        effects = self.ledger.prepare(now)
        if effects:
            self._run(effects)
        self._write(envelope, now)

    def remove(self, seq: int) -> None:
        """``seq`` was confirmed or dropped: it need not be replayed."""
        effects = self.ledger.remove(seq)
        if effects:
            self._run(effects)

    def checkpoint(self, oldest_pending: int) -> None:
        """Record that everything below ``oldest_pending`` is done (written in the
        background, or by :meth:`sync`)."""
        self._checkpoint = oldest_pending

    def _write(self, envelope: Envelope, now: float) -> None:
        record = encode(envelope)
        was_degraded = self.ledger.degraded
        segment, effects = self.ledger.place(envelope, len(record), now)
        if effects:
            self._run(effects)
        if segment is None:
            if not was_degraded:
                self._degraded("no segment file to write to (creating one failed or stalled)")
            return
        fd = self._fds[segment]
        try:
            written = self.disk.write(fd, record)
            if written != len(record):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            self._run(self.ledger.write_failed(envelope, now))
            self._degraded(f"write failed: {exc.strerror or exc}")
            return
        effects = self.ledger.written(envelope.seq, len(record))
        if effects:
            self._run(effects)
        if self._syncer is not None and self.fsync != "never":
            self._syncer.mark(fd, segment)

    def _degraded(self, why: str) -> None:
        self.trouble(
            logging.ERROR,
            "spool %s: degraded, events are held in memory only until the disk takes writes again",
            why,
            extra={"spool_dir": str(self.directory)},
        )

    def disk_failed(self, exc: OSError) -> None:
        """A background fsync failed (loop thread, from the Syncer)."""
        self._run(self.ledger.disk_failed(self._clock()))
        self._degraded(f"fsync failed: {exc.strerror or exc}")

    # --- carrying out the ledger's effects --------------------------------------------
    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Evict):
                if self.on_evict is not None:
                    self.on_evict(effect.first, effect.last)
            elif isinstance(effect, Open):
                self._submit(self._open_job(effect.segment))
            elif isinstance(effect, Close):
                self._submit(self._close_job(self._fds.pop(effect.segment), effect.cut))
            elif isinstance(effect, Delete):
                self._submit(self._delete_job(effect.segment))
            else:
                self._submit(self._resume_job(effect))

    def _submit(self, job: Job) -> None:
        """Run ``job`` in the background, or here when there is no background thread."""
        if self._syncer is not None:
            self._syncer.submit(job)
            return
        apply = job()
        if apply is not None:
            apply()

    def _path(self, segment: Segment) -> Path:
        return self.directory / f"{segment.name:020d}{SUFFIX}"

    def _open_job(self, segment: Segment) -> Job:
        path = self._path(segment)

        def job() -> Apply:
            try:
                fd = self.disk.open_segment(path)
            except OSError as exc:
                return partial(self._spare_failed, exc)
            self._mark_directory()
            return lambda: self._spare_opened(segment, fd)

        return job

    def _spare_opened(self, segment: Segment, fd: int) -> None:
        self._fds[segment] = fd
        self.ledger.spare_opened()

    def _spare_failed(self, exc: OSError) -> None:
        self.ledger.spare_failed(self._clock())
        self.trouble(logging.ERROR, "spool: cannot create a segment file: %s", exc.strerror)

    def _close_job(self, fd: int, cut: int | None) -> Job:
        def job() -> Apply | None:
            try:
                if cut is not None:
                    self.disk.ftruncate(fd, cut)
            except OSError as exc:
                return self._failed_to("cut a segment back to its last record", exc)
            finally:
                with contextlib.suppress(OSError):
                    self.disk.close(fd)
            return None

        return job

    def _delete_job(self, segment: Segment) -> Job:
        path = self._path(segment)

        def job() -> Apply | None:
            try:
                self.disk.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a read-only disk keeps it: the checkpoint covers it
                return self._failed_to("delete a segment", exc)
            return None

        return job

    def _resume_job(self, resume: Resume) -> Job:
        """Write what was held in memory into a new segment, fsync it per policy, keep it
        open: the disk works again. On failure leave no partial file behind if possible."""
        path, envelopes = self._path(resume.segment), resume.envelopes

        def job() -> Apply:
            data = b"".join(encode(envelope) for envelope in envelopes)
            try:
                fd = self.disk.open_segment(path)
            except OSError as exc:
                return partial(self._resume_failed, exc)
            try:
                written = self.disk.write(fd, data) if data else 0
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
                if self.fsync != "never":
                    self.disk.fsync(fd)  # rare: once per recovery from a disk fault
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.disk.unlink(path)
                with contextlib.suppress(OSError):
                    self.disk.close(fd)
                return partial(self._resume_failed, exc)
            self._mark_directory()
            return lambda: self._resumed(resume.segment, fd, len(data))

        return job

    def _resumed(self, segment: Segment, fd: int, size: int) -> None:
        self._fds[segment] = fd
        written_back = len(self.ledger.resuming.envelopes) if self.ledger.resuming else 0
        effects, later = self.ledger.resumed(size)
        self._run(effects)
        for envelope in later:  # appended while the resume was under way
            self._write(envelope, self._clock())
        log.info(
            "spool writes work again: %d events held in memory meanwhile are on disk now",
            written_back + len(later),
            extra={"spool_dir": str(self.directory)},
        )

    def _resume_failed(self, exc: OSError) -> None:
        self.ledger.resume_failed(self._clock())
        self._degraded(f"write failed again: {exc.strerror or exc}")

    def _failed_to(self, what: str, exc: OSError) -> Apply:
        return partial(self.trouble, logging.ERROR, "spool: cannot %s: %s", what, exc.strerror)

    def _mark_directory(self) -> None:
        syncer = self._syncer
        if syncer is not None and self.fsync != "never":
            syncer.mark_directory()

    # --- maintenance ------------------------------------------------------------------
    def sync(self) -> None:
        """Write the checkpoint if it moved and fsync per policy, now, on this thread."""
        self.write_checkpoint()
        active = self.ledger.active
        if active is not None and self.fsync != "never":
            self.disk.fsync(self._fds[active])

    def write_checkpoint(self) -> None:
        value = self._checkpoint
        if value != self._written_checkpoint:
            self.disk.write_checkpoint(self.directory, encode_checkpoint(value))
            self._written_checkpoint = value

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread (waiting up to ``timeout`` seconds for the file
        operations under way), make a last try to put on disk what is held in memory only,
        checkpoint, fsync per policy, close the files and release the directory lock. Disk
        errors are logged, never raised. Blocks: the producer calls it in a worker thread,
        bounded."""
        with self.state_lock:  # waits for the loop to finish applying a result, if it is
            self.closing = True
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            if syncer.stop(timeout):
                log.warning("spool: the background thread is stuck (a stalled disk?)")
                self._release()
                return
            for apply in syncer.take_results():
                apply()
        self._run(self.ledger.last_resume())
        try:
            self.sync()
        except OSError as exc:
            log.error("spool: final checkpoint or fsync failed: %s", exc.strerror)
        self._release()

    def _release(self) -> None:
        self._run(self.ledger.close())
        for fd in self._fds.values():  # opened by a job whose result came too late
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
