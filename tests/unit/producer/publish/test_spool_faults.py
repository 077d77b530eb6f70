"""The spool on a full, failing or stalled disk (a fault-injecting file layer): it degrades
and never raises, holds events in memory meanwhile and writes them back when the disk
works again, and never lets a stalled disk stall the event loop — every slow file
operation runs in its background thread."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path

from producer.publish.spool import Spool
from producer.publish.spool_disk import Disk
from producer.publish.spool_format import encode
from tests.unit.producer.publish.spooling import crash, env, opened

# --- a full or failing disk -----------------------------------------------------------


class FullDisk(Disk):
    """Takes ``room`` bytes of segment writes, then fails like a full disk: a short write
    at the edge, ENOSPC after. ``fail_fsync`` makes fsync fail with EIO."""

    def __init__(self, room: int, *, fail_fsync: bool = False) -> None:
        self.room = room
        self.fail_fsync = fail_fsync
        self.fsyncs: list[str] = []

    def write(self, fd: int, data: bytes) -> int:  # type: ignore[override]
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        part = data[: self.room]
        self.room -= len(part)
        return os.write(fd, part)

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self.fsyncs.append(threading.current_thread().name)
        if self.fail_fsync:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


class Clock:
    """Time for a spool, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_disk_degrades_and_keeps_what_was_written(tmp_path: Path) -> None:
    record = len(encode(env(1)))
    disk = FullDisk(room=record * 3 + record // 2)  # room for 3.5 records
    clock = Clock()
    spool = opened(tmp_path, disk=disk, clock=clock)
    spool.recover()
    for seq in range(1, 8):
        spool.append(env(seq))  # never raises
    assert spool.degraded
    assert spool.missing == 4  # 4..7 are held in memory only
    (segment,) = tmp_path.glob("*.seg")
    assert segment.stat().st_size == record * 3  # the half record was cut away
    spool.remove(5)  # confirmed meanwhile: nothing to write later
    # The disk gets room again: a second later, the next append writes what was held in
    # memory only into a new segment, and the spool is whole again.
    disk.room = 10**9
    spool.append(env(8))
    assert spool.degraded  # not yet: it waits a second between tries
    clock.now += 1.0
    spool.append(env(9))
    assert not spool.degraded
    assert spool.missing == 0
    spool.append(env(10))
    crash(spool)
    found = opened(tmp_path).recover()
    assert [e.seq for e in found.envelopes] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert found.damaged == 0


def test_what_was_written_late_is_removed_like_the_rest(tmp_path: Path) -> None:
    record = len(encode(env(1)))
    disk = FullDisk(room=record * 2)
    clock = Clock()
    spool = opened(tmp_path, disk=disk, clock=clock)
    spool.recover()
    for seq in range(1, 6):
        spool.append(env(seq))  # 3, 4, 5 held in memory
    disk.room = 10**9
    clock.now += 1.0
    spool.append(env(6))  # 3, 4, 5 written late into a new segment; 6 follows them
    spool.append(env(7))
    first, late = sorted(tmp_path.glob("*.seg"))
    assert first.stat().st_size == 2 * record
    assert late.stat().st_size == 5 * record
    for seq in range(1, 3):
        spool.remove(seq)
    assert not first.exists()
    for seq in range(3, 8):
        spool.remove(seq)
    assert late.exists()  # the active segment stays until it is rolled or closed
    spool.close()
    assert list(tmp_path.glob("*.seg")) == []


def test_a_read_only_disk_never_makes_the_spool_raise(tmp_path: Path) -> None:
    class ReadOnly(Disk):
        def write(self, fd: int, data: bytes) -> int:  # type: ignore[override]
            raise OSError(errno.EROFS, "Read-only file system")

        def unlink(self, path: Path) -> None:  # type: ignore[override]
            raise OSError(errno.EROFS, "Read-only file system")

    spool = opened(tmp_path)
    spool.recover()
    spool.append(env(1))
    spool.remove(1)
    spool.disk = ReadOnly()
    spool.append(env(2))  # the write fails, the empty segment cannot be deleted: no raise
    assert spool.degraded
    spool.remove(2)
    spool.close()
    assert len(list(tmp_path.glob("*.seg"))) == 1  # left behind, harmless: nothing pending


def test_removing_what_was_never_written_is_harmless(tmp_path: Path) -> None:
    record = len(encode(env(1)))
    spool = opened(tmp_path, disk=FullDisk(room=record * 2))
    spool.recover()
    for seq in range(1, 6):
        spool.append(env(seq))
    for seq in range(1, 6):
        spool.remove(seq)
    assert list(tmp_path.glob("*.seg")) == []


def test_a_failing_segment_creation_degrades_too(tmp_path: Path) -> None:
    class NoNewFiles(Disk):
        def open_segment(self, path: Path) -> int:
            raise OSError(errno.EIO, "Input/output error")

    spool = opened(tmp_path, disk=NoNewFiles())
    spool.recover()
    spool.append(env(1))
    assert spool.degraded
    spool.close()


async def test_fsync_runs_off_the_event_loop_at_most_once_a_second_in_batch(
    tmp_path: Path,
) -> None:
    disk = FullDisk(room=10**9)
    spool = opened(tmp_path, fsync="batch", disk=disk)
    spool.recover()
    spool.start(asyncio.get_running_loop())
    started = time.monotonic()
    seq = 0
    while time.monotonic() - started < 2.5:
        seq += 1
        spool.append(env(seq))
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    spool.close()
    in_background = [name for name in disk.fsyncs if name == "phonet-spool-sync"]
    assert 2 <= len(in_background) <= elapsed + 2  # once a second, plus the final flush
    assert "MainThread" in disk.fsyncs[-1:]  # close() flushes on the caller's thread
    assert len(opened(tmp_path).recover().envelopes) == seq


async def test_always_fsyncs_in_the_background_as_writes_come(tmp_path: Path) -> None:
    disk = FullDisk(room=10**9)
    spool = opened(tmp_path, fsync="always", disk=disk)
    spool.recover()
    spool.start(asyncio.get_running_loop())
    for seq in range(1, 4):
        spool.append(env(seq))
        for _ in range(100):
            if len(disk.fsyncs) >= seq:
                break
            await asyncio.sleep(0.01)
    assert disk.fsyncs[:3] == ["phonet-spool-sync"] * 3
    spool.close()


async def test_a_failing_fsync_degrades_the_spool(tmp_path: Path) -> None:
    disk = FullDisk(room=10**9, fail_fsync=True)
    spool = opened(tmp_path, fsync="always", disk=disk)
    spool.recover()
    spool.start(asyncio.get_running_loop())
    spool.append(env(1))
    for _ in range(100):
        if spool.degraded:
            break
        await asyncio.sleep(0.01)
    assert spool.degraded
    spool.close()


# --- a stalled disk -----------------------------------------------------------------------

STALL = 1.5
"""Seconds each creation, fsync and deletion of a file takes once the disk stalls."""


class StallingDisk(Disk):
    """A disk that, once ``stall`` is set, takes that long for every segment creation,
    fsync and deletion, and whose writes fail with ENOSPC while ``full``. Records which
    thread each slow operation ran on."""

    def __init__(self) -> None:
        self.stall = 0.0
        self.full = False
        self.slow: list[tuple[str, str]] = []

    def _slowly(self, what: str) -> None:
        if self.stall:
            self.slow.append((what, threading.current_thread().name))
            time.sleep(self.stall)

    def write(self, fd: int, data: bytes) -> int:  # type: ignore[override]
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def open_segment(self, path: Path) -> int:
        self._slowly("open")
        return super().open_segment(path)

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self._slowly("fsync")
        os.fsync(fd)

    def unlink(self, path: Path) -> None:  # type: ignore[override]
        self._slowly("unlink")
        os.unlink(path)


class Ticker:
    """Ticks on the event loop and keeps the longest gap between two ticks."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            self.longest = max(self.longest, now - last)
            last = now


async def test_a_stalled_disk_never_stalls_the_loop_and_loses_nothing(tmp_path: Path) -> None:
    record = len(encode(env(1)))
    disk = StallingDisk()
    spool = Spool(tmp_path, max_bytes=10**9, fsync="always", segment_bytes=record * 10, disk=disk)
    spool.open()
    spool.recover()
    spool.start(asyncio.get_running_loop())  # opens the first segment: no frame read yet
    disk.stall = STALL
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    seq = 0

    async def append(count: int) -> None:
        nonlocal seq
        for _ in range(count):
            seq += 1
            spool.append(env(seq))
            await asyncio.sleep(0.01)

    # Segments fill and roll (the next one is created in the background, ahead), every
    # append is fsynced, and confirmed segments are deleted.
    await append(8)
    async with asyncio.timeout(4 * STALL + 5):  # the next segment is created meanwhile
        while spool.ledger.spare is None:
            await asyncio.sleep(0.05)
    await append(12)
    assert len(spool.ledger.segments) == 2  # rolled
    for confirmed in range(1, 11):
        spool.remove(confirmed)
    # The disk fills up: the spool degrades and holds events in memory.
    disk.full = True
    await append(5)
    assert spool.degraded
    held = spool.missing
    assert held >= 5
    # Room again: a second later an append asks the background thread to write what was
    # held; the events appended meanwhile follow it once it is done.
    disk.full = False
    async with asyncio.timeout(8 * STALL + 10):
        while spool.degraded or spool.missing:
            await append(1)
    ticking.cancel()
    await asyncio.wait([ticking])
    appended = seq
    slow = list(disk.slow)
    await asyncio.to_thread(spool.close)

    assert {what for what, _ in slow} == {"open", "fsync", "unlink"}
    assert {thread for _, thread in slow} == {"phonet-spool-sync"}
    assert ticker.longest < STALL / 2  # well below one stalled operation
    again = Spool(tmp_path, max_bytes=10**9)
    again.open()
    assert [e.seq for e in again.recover().envelopes] == list(range(11, appended + 1))
    again.close()
