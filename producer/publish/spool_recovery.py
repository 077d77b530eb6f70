"""Opening a spool directory at start: its format version, its lock, and what an earlier
run left in it. Runs once, before the producer reads any frame, on the caller's thread.

* :func:`lock_directory` checks the ``format`` file before anything else is touched (a
  version this code does not know stops the start, leaving the directory as it is), takes
  the directory's ``flock`` and marks a new (or pre-version) directory with this version.
  The version is the directory's rather than each segment's: one small file read once at
  start, and the segment bytes and the append path stay as they were (a directory without
  the file holds version 1, written before it existed);
* :func:`read_segments` reads every segment, skips damage (cutting a torn tail away,
  leaving damage in the middle in place: see :mod:`producer.publish.spool`), deletes spent
  segments and returns the pending records.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from producer.core.envelope import Envelope
from producer.core.errors import SpoolError
from producer.publish.spool_disk import Disk
from producer.publish.spool_format import (
    FORMAT_VERSION,
    Decoded,
    decode,
    decode_checkpoint,
    decode_format,
    encode_format,
)
from producer.publish.spool_ledger import Segment
from producer.telemetry.logs import BurstLog

log = logging.getLogger("producer.spool")

SUFFIX = ".seg"
FORMAT_FILE = "format"
CHECKPOINT_FILE = "checkpoint"


@dataclass(frozen=True)
class Recovery:
    """What :meth:`~producer.publish.spool.Spool.recover` found."""

    envelopes: list[Envelope]
    """The pending records, oldest first."""
    damaged: int
    """Damaged regions skipped (a torn tail counts once)."""
    skipped: int
    """Records below the checkpoint (or found twice), not replayed."""
    next_seq: int
    """Sequence numbers from here on are unused (above every record and the checkpoint)."""


@dataclass(frozen=True)
class Found:
    """What :func:`read_segments` found: the recovery, the checkpoint, the segment holding
    each pending record and the highest segment file name seen."""

    recovery: Recovery
    checkpoint: int
    owners: dict[int, Segment]
    last_name: int


def lock_directory(directory: Path, disk: Disk) -> int:
    """Create ``directory`` if needed, check its format version, lock it, mark it with this
    version when unmarked; returns the lock's file descriptor.

    Raises:
        SpoolError: not usable: not a directory or not writable, in use by another
            producer, or holding a format this code does not know (then nothing in it is
            touched).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        version = format_version(directory)
        lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SpoolError(f"PHONET_SPOOL_DIR {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        raise SpoolError(f"PHONET_SPOOL_DIR {directory} is in use by another producer") from None
    if version is None:
        try:
            disk.replace_file(directory, FORMAT_FILE, encode_format())
        except OSError as exc:
            os.close(lock_fd)
            raise SpoolError(
                f"PHONET_SPOOL_DIR {directory}: cannot write {FORMAT_FILE}: {exc.strerror}"
            ) from None
    return lock_fd


def format_version(directory: Path) -> int | None:
    """The directory's format version; None when unmarked (new, or version 1 written before
    the marker existed). Raises SpoolError for a version this code cannot read."""
    try:
        data = (directory / FORMAT_FILE).read_bytes()
    except FileNotFoundError:
        return None
    version = decode_format(data)
    if version is None:
        raise SpoolError(
            f"PHONET_SPOOL_DIR {directory}: its {FORMAT_FILE} file is not a spool format"
            " marker; nothing was touched"
        )
    if version != FORMAT_VERSION:
        raise SpoolError(
            f"PHONET_SPOOL_DIR {directory} holds a spool of format version {version}; this"
            f" producer reads version {FORMAT_VERSION} only (written by a newer producer?);"
            " nothing was touched"
        )
    return version


def read_segments(directory: Path, disk: Disk, *, received: float, trouble: BurstLog) -> Found:
    """Every pending record in ``directory``, oldest first; spent segments deleted, torn
    tails cut (best effort: such a disk error is logged through ``trouble``). ``received``
    becomes each envelope's receive time.

    Raises:
        SpoolError: a file cannot be read: the start stops rather than go on without its
            records (they would fall below the next checkpoint, lost).
    """
    try:
        checkpoint = decode_checkpoint(_read(directory / CHECKPOINT_FILE))
    except FileNotFoundError:
        checkpoint = 0
    envelopes: list[Envelope] = []
    owners: dict[int, Segment] = {}
    damaged = skipped = last_name = 0
    highest = checkpoint - 1
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            name = int(path.stem)
        except ValueError:
            continue
        last_name = max(last_name, name)
        found = decode(_read(path), received=received)
        if found.damaged:
            damaged += len(found.damage)
            report_damage(path, found)
        try:
            if found.torn:
                os.truncate(path, found.good_bytes)
        except OSError as exc:
            trouble(logging.ERROR, "spool: cannot cut a torn tail: %s", exc.strerror)
        seqs = [envelope.seq for envelope in found.envelopes]
        segment = Segment(name, min(seqs, default=name), max(seqs, default=0), found.good_bytes)
        for envelope in found.envelopes:
            highest = max(highest, envelope.seq)
            if envelope.seq < checkpoint or envelope.seq in owners:
                skipped += 1
                continue
            owners[envelope.seq] = segment
            segment.live += 1
            envelopes.append(envelope)
        if segment.live:
            continue
        try:
            disk.unlink(path)
        except OSError as exc:
            trouble(logging.ERROR, "spool: cannot delete a spent segment: %s", exc.strerror)
    envelopes.sort(key=lambda e: e.seq)
    recovery = Recovery(envelopes, damaged, skipped, next_seq=max(1, highest + 1))
    return Found(recovery, checkpoint, owners, last_name)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SpoolError(f"PHONET_SPOOL_DIR: cannot read {path}: {exc.strerror}") from None


def report_damage(path: Path, found: Decoded) -> None:
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
