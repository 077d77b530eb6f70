"""Which spool format? Append-only segment files vs SQLite in WAL mode, measured.

Both are made crash-safe the same way (every event reaches the OS before the next frame is
read, so a kill -9 loses nothing; no fsync): segments with one ``os.write`` per record,
SQLite with one autocommitted INSERT per event (``synchronous=OFF``: the WAL write reaches
the OS on commit). Each run appends N realistic envelopes and then confirms (acks) them all,
as the producer does during a broker outage and its recovery, and reports events/s as
ratios in one run. ``python tests/bench/spool_formats.py [N]``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time

import orjson

from phonet_simulator import VENDOR_SAMPLE
from producer.core.envelope import event_envelope
from producer.core.events import parse_frame
from producer.publish.spool_format import encode

FRAME = orjson.dumps(VENDOR_SAMPLE)


def envelopes(n: int):  # type: ignore[no-untyped-def]
    parsed = parse_frame(FRAME)
    out = []
    for seq in range(1, n + 1):
        env = event_envelope("phonet.events", "001", parsed, FRAME, received=0.0, wall_ms=seq)
        env.seq = seq
        out.append(env)
    return out


def segments(envs, directory: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    path = os.path.join(directory, "seg")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for env in envs:
        os.write(fd, encode(env))
    appended = time.perf_counter()
    live = len(envs)
    for _ in envs:  # acks: an in-memory count per segment, the file goes when it reaches 0
        live -= 1
    os.close(fd)
    os.unlink(path)
    return appended - start, time.perf_counter() - appended


def sqlite(envs, directory: str, synchronous: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    db = sqlite3.connect(os.path.join(directory, f"spool-{synchronous}.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY, meta BLOB, body BLOB)")
    start = time.perf_counter()
    for env in envs:
        db.execute(
            "INSERT INTO spool VALUES (?, ?, ?)", (env.seq, orjson.dumps(env.headers), env.body)
        )
    appended = time.perf_counter()
    for env in envs:
        db.execute("DELETE FROM spool WHERE seq = ?", (env.seq,))
    done = time.perf_counter()
    db.close()
    return appended - start, done - appended


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    envs = envelopes(n)
    with tempfile.TemporaryDirectory() as directory:
        results = {
            "segments (os.write per record)": segments(envs, directory),
            "sqlite WAL synchronous=OFF": sqlite(envs, directory, "OFF"),
            "sqlite WAL synchronous=NORMAL": sqlite(envs, directory, "NORMAL"),
        }
    base = n / results["segments (os.write per record)"][0]
    print(f"{n} envelopes of {len(FRAME)} bytes")
    print(f"{'format':34} {'append/s':>10} {'ack/s':>12} {'append vs segments':>20}")
    for name, (append, ack) in results.items():
        print(f"{name:34} {n / append:10.0f} {n / max(ack, 1e-9):12.0f} {n / append / base:19.2f}x")


if __name__ == "__main__":
    main()
