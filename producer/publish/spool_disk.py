"""The spool's disk side: the file operations it makes (:class:`Disk`, the seam tests
inject faults through) and the background thread that writes its checkpoint and fsyncs
(:class:`Syncer`), so a slow or failing disk never stalls the event loop. The spool's
decisions and format live in :mod:`producer.publish.spool` and
:mod:`producer.publish.spool_format`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from producer.publish.spool import Spool

CHECKPOINT_INTERVAL = 0.2
BATCH_FSYNC_INTERVAL = 1.0


class Disk:
    """The file operations the spool makes; a test subclass injects faults."""

    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    ftruncate = staticmethod(os.ftruncate)

    def open_segment(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def replace_file(self, directory: Path, name: str, data: bytes) -> None:
        """Put ``data`` in ``directory/name`` atomically and durably: a temporary file,
        fsynced, renamed over it, then the directory fsynced."""
        tmp = directory / f"{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / name)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_checkpoint(self, directory: Path, data: bytes) -> None:
        tmp = directory / "checkpoint.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / "checkpoint")


class Syncer(threading.Thread):
    """The spool's background thread: writes the checkpoint (at most 5 times a second) and
    fsyncs per policy, so a slow disk never stalls the event loop.

    The loop thread :meth:`mark`\\ s a file descriptor after writing to it; the mark takes a
    duplicate (``os.dup``), so the loop may close or roll the segment at any time. Errors are
    handed back to the loop thread, which logs them (and marks the spool degraded for a
    failed fsync). No error ends the thread; only :meth:`stop` does.
    """

    def __init__(self, spool: Spool, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="phonet-spool-sync", daemon=True)
        self.spool = spool
        self.loop = loop
        self._mutex = threading.Lock()
        self._dups: list[int] = []
        self._marked: object = None
        self._dir_dirty = False
        self._wake = threading.Event()
        self._stop_requested = False

    def mark(self, fd: int, key: object) -> None:
        """``fd`` (the file ``key``) has writes to fsync (loop thread). Never raises."""
        with self._mutex:
            if self._marked == key:
                return  # its duplicate is queued already and covers these writes
            try:
                self._dups.append(os.dup(fd))
            except OSError as exc:  # out of descriptors: this round's fsync is skipped
                self.spool._trouble(logging.ERROR, "spool: cannot fsync: %s", exc.strerror)
                return
            self._marked = key
        if self.spool.fsync == "always":
            self._wake.set()

    def mark_directory(self) -> None:
        """A segment file was created (loop thread)."""
        with self._mutex:
            self._dir_dirty = True

    def stop(self, timeout: float) -> bool:
        """Finish the current round, fsync what is marked, and end; True when the thread
        is still busy after ``timeout`` seconds (a stalled disk)."""
        self._stop_requested = True
        self._wake.set()
        self.join(timeout=timeout)
        return self.is_alive()

    def run(self) -> None:
        interval = BATCH_FSYNC_INTERVAL if self.spool.fsync == "batch" else CHECKPOINT_INTERVAL
        last_fsync = 0.0
        while True:
            self._wake.wait(CHECKPOINT_INTERVAL)
            self._wake.clear()
            stopping = self._stop_requested
            try:
                self.spool._write_checkpoint()
            except Exception as exc:
                self._report(exc, degrade=False)
            now = time.monotonic()
            due = self.spool.fsync == "always" or now - last_fsync >= interval
            if self.spool.fsync != "never" and (due or stopping):
                last_fsync = now
                try:
                    self._fsync_marked()
                except Exception as exc:  # a bug must not end the thread silently
                    self._report(exc, degrade=False)
            if stopping:
                return

    def _fsync_marked(self) -> None:
        with self._mutex:
            fds, self._dups, self._marked = self._dups, [], None
            directory, self._dir_dirty = self._dir_dirty, False
        for fd in fds:
            try:
                self.spool.disk.fsync(fd)
            except OSError as exc:
                self._report(exc, degrade=True)
            finally:
                with contextlib.suppress(OSError):  # NFS may report a deferred error here
                    os.close(fd)
        if directory:
            try:
                fd = os.open(self.spool.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self._report(exc, degrade=False)

    def _report(self, exc: Exception, *, degrade: bool) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self.loop.call_soon_threadsafe(self._on_loop, exc, degrade)

    def _on_loop(self, exc: Exception, degrade: bool) -> None:
        spool = self.spool
        if spool._closing:
            return  # close() owns the files now (in a worker thread)
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        if degrade and spool._fd is not None and isinstance(exc, OSError):
            # Written data may not be on disk: start a fresh segment on the next append.
            spool._failed(exc, spool._segments[-1] if spool._segments else None)
        else:
            spool._trouble(logging.ERROR, "spool checkpoint or fsync failed: %s", reason)
