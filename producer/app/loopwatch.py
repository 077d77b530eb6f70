"""The event loop's watch: how late the loop runs a timer, and the garbage collector.

:func:`watch_loop` measures, every ``every`` seconds, how late a timer fired (a stall
delays every frame and every confirmation; ``phonet_event_loop_lag_seconds``) and, when
given a :class:`~producer.app.gcpolicy.GcPolicy`, asks it once a second what to do with the
collector and does it (:func:`apply`). The policy is pure and tested by itself; this is
its one adapter. Only the service (``serve``) manages the collector: the heap is the
process's, and tests run many producers in one.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
from collections.abc import Callable
from typing import Any

from producer.app.gcpolicy import GcAction, GcPolicy

log = logging.getLogger("producer")


async def watch_loop(
    observe: Callable[[float], None],
    policy: GcPolicy | None,
    sockets: Callable[[], int],
    every: float = 0.05,
) -> None:
    """Observe the loop's lag every ``every`` seconds; once a second, apply ``policy``
    (``sockets`` says how many sockets there are: a thaw waits for twice as many closes,
    at least 1,000). Runs until cancelled."""
    loop = asyncio.get_running_loop()
    next_gc = 0.0
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        now = loop.time()
        observe(max(0.0, now - due))
        if policy is not None and now >= next_gc:
            next_gc = now + 1.0
            policy.thaw_after = max(1000, 2 * sockets())
            action = policy.decide(now, rss_bytes())
            if action is not None:
                apply(action)


def apply(action: GcAction) -> None:
    """Do what the policy decided. FREEZE: a young collection (generations 0 and 1: young
    cyclic garbage must not be frozen), then freeze. THAW: unfreeze, one full collection,
    hand the freed memory back to the OS, freeze again."""
    if action is GcAction.THAW:
        gc.unfreeze()
        collected = gc.collect()
        trim_malloc()
        # After socket churn, or memory grown by half (see producer.app.gcpolicy).
        log.info("full garbage collection done", extra={"collected": collected})
    else:
        gc.collect(1)
    gc.freeze()


def rss_bytes() -> int:
    """The process's resident memory, from ``/proc/self/statm`` (one small read); 0 where
    there is no such file."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def trim_malloc() -> None:
    """Hand freed memory back to the OS (glibc keeps it otherwise: the RSS of a process that
    reconnected ten thousand sockets would stay at its peak). A no-op elsewhere."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None
