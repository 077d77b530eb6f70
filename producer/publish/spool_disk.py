"""The spool's disk side: the file operations it makes (:class:`Disk`, the seam tests
inject faults through) and the background thread that does every slow one (:class:`Syncer`):
it writes the checkpoint, fsyncs, and runs the jobs the event loop hands it — opening,
closing and deleting segment files, writing what was held in memory back to disk — so a
slow or failing disk never stalls the event loop. The spool's decisions and format live in
:mod:`producer.publish.spool_ledger` and :mod:`producer.publish.spool_format`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from producer.telemetry.logs import BurstLog

CHECKPOINT_INTERVAL = 0.2
BATCH_FSYNC_INTERVAL = 1.0

Apply = Callable[[], object]
"""What a job's result does to the spool, run on the loop thread."""
Job = Callable[[], Apply | None]
"""A slow file operation, run on the spool's thread."""


class Disk:
    """The file operations the spool makes; a test subclass injects faults."""

    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    ftruncate = staticmethod(os.ftruncate)
    close = staticmethod(os.close)
    unlink = staticmethod(os.unlink)

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


class Synced(Protocol):
    """What the sync thread needs of the spool it serves (the spool implements it); the
    thread takes ``state_lock`` before touching the spool's state."""

    directory: Path
    fsync: Literal["never", "batch", "always"]
    disk: Disk
    state_lock: threading.Lock
    closing: bool

    def write_checkpoint(self) -> None: ...

    def disk_failed(self, exc: OSError) -> None: ...

    trouble: BurstLog
    """Where disk trouble is told (bounded, one line per burst)."""


class Syncer(threading.Thread):
    """The spool's background thread: runs the jobs the loop submits (in order), writes the
    checkpoint (at most 5 times a second) and fsyncs per policy.

    The loop thread :meth:`mark`\\ s a file descriptor after writing to it; the mark takes a
    duplicate (``os.dup``), so the loop may close or roll the segment at any time. A job
    returns what to apply on the loop thread (or None); results and errors are handed back
    with ``call_soon_threadsafe`` and applied there unless the spool is closing, when
    :meth:`take_results` gives them to ``close()``. No error ends the thread; only
    :meth:`stop` does.
    """

    def __init__(self, spool: Synced, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="phonet-spool-sync", daemon=True)
        self.spool = spool
        self.loop = loop
        self._mutex = threading.Lock()
        self._dups: list[int] = []
        self._marked: object = None
        self._dir_dirty = False
        self._jobs: deque[Job] = deque()
        self._results: deque[Apply] = deque()
        self._wake = threading.Event()
        self._stop_requested = False

    def submit(self, job: Job) -> None:
        """Run ``job`` on this thread, after those submitted before it (loop thread)."""
        self._jobs.append(job)
        self._wake.set()

    def mark(self, fd: int, key: object) -> None:
        """``fd`` (the file ``key``) has writes to fsync (loop thread). Never raises."""
        with self._mutex:
            if self._marked == key:
                return  # its duplicate is queued already and covers these writes
            try:
                self._dups.append(os.dup(fd))
            except OSError as exc:  # out of descriptors: this round's fsync is skipped
                self.spool.trouble(logging.ERROR, "spool: cannot fsync: %s", exc.strerror)
                return
            self._marked = key
        if self.spool.fsync == "always":
            self._wake.set()

    def mark_directory(self) -> None:
        """A segment file was created (any thread)."""
        with self._mutex:
            self._dir_dirty = True

    def stop(self, timeout: float) -> bool:
        """Finish the jobs submitted, fsync what is marked, and end; True when the thread
        is still busy after ``timeout`` seconds (a stalled disk)."""
        self._stop_requested = True
        self._wake.set()
        self.join(timeout=timeout)
        return self.is_alive()

    def take_results(self) -> list[Apply]:
        """Results not applied yet, oldest first (for ``close()``, once stopped)."""
        results = []
        while self._results:
            results.append(self._results.popleft())
        return results

    def run(self) -> None:
        interval = BATCH_FSYNC_INTERVAL if self.spool.fsync == "batch" else CHECKPOINT_INTERVAL
        last_fsync = 0.0
        while True:
            self._wake.wait(CHECKPOINT_INTERVAL)
            self._wake.clear()
            stopping = self._stop_requested
            self._run_jobs()
            try:
                self.spool.write_checkpoint()
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
                self._run_jobs()
                return

    def _run_jobs(self) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            try:
                apply = job()
            except Exception as exc:  # jobs handle OSError; a bug must not end the thread
                self._report(exc, degrade=False)
                continue
            if apply is not None:
                self._results.append(apply)
                with contextlib.suppress(RuntimeError):  # the loop is closed: close() applies
                    self.loop.call_soon_threadsafe(self._apply_results)

    def _apply_results(self) -> None:
        with self.spool.state_lock:
            if self.spool.closing:
                return  # close() owns the spool now (in a worker thread)
            for apply in self.take_results():
                apply()

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
        with spool.state_lock:
            if spool.closing:
                return  # close() owns the files now (in a worker thread)
            reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
            if degrade and isinstance(exc, OSError):
                # Written data may not be on disk: start a fresh segment.
                spool.disk_failed(exc)
            else:
                spool.trouble(logging.ERROR, "spool checkpoint or fsync failed: %s", reason)
