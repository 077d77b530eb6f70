"""Helpers of the spool's tests (test_spool*.py here): envelopes, an opened spool, and what
kill -9 leaves of one."""

from __future__ import annotations

import os
from pathlib import Path

from producer.core.envelope import Envelope
from producer.publish.spool import Spool


def env(seq: int, body: bytes = b'{"event":"call.dial"}', **kw: object) -> Envelope:
    values: dict[str, object] = {
        "exchange": "phonet.events",
        "routing_key": "call.dial.001",
        "body": body,
        "message_id": f"m{seq}",
        "headers": {"subscriber": "001", "server_time_ms": 1473973201000},
        "type": "call.dial",
        "timestamp": 1_700_000_000,
        "label": "call.dial",
        "kind": "event",
        "received": 0.0,
        "seq": seq,
    }
    values.update(kw)
    return Envelope(**values)  # type: ignore[arg-type]


def opened(path: Path, **kw: object) -> Spool:
    spool = Spool(path, max_bytes=kw.pop("max_bytes", 10_000_000), **kw)  # type: ignore[arg-type]
    spool.open()
    return spool


def crash(spool: Spool) -> None:
    """What kill -9 leaves: file descriptors closed by the OS, nothing else done."""
    for fd in [*spool._fds.values(), spool._lock_fd]:
        if fd is not None:
            os.close(fd)
