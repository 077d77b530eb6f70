"""Keeping the REST loops alive through a bug: a round that raises is reported and retried.

Each REST loop (discovery, the subscribers file, backfill) is a sequence of *rounds*; the
failures a round expects (the API is down, an answer is odd, the file does not parse) are
handled inside it. Anything else is a bug, and a bug must not end the loop for the life of
the process (a task that dies with nobody awaiting it is silent until shutdown): it is
logged with a trimmed traceback, counted in ``phonet_rest_loop_failures_total{loop}``, and
the next round starts after a backoff (a random wait doubling from ``RETRY_MIN`` up to
``RETRY_MAX`` seconds, reset by a round that completes).

The log line names the exception's type and where it was raised (file, line, function),
never its message nor the values involved: those may be call data (numbers, names).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from pathlib import PurePath

from prometheus_client import Counter

from producer.core.pacing import Backoff

log = logging.getLogger("producer.subscribers")

RETRY_MIN = 1.0
RETRY_MAX = 60.0
FRAMES = 6
"""Innermost frames of the traceback shown in the log line."""

Round = Callable[[], Awaitable[None]]


def where(exc: BaseException, frames: int = FRAMES) -> str:
    """Where ``exc`` was raised, innermost ``frames`` frames, as ``file:line in function``
    joined by `` < `` (innermost first): no message, no source line, no local value."""
    stack = traceback.extract_tb(exc.__traceback__)[-frames:]
    return " < ".join(
        f"{PurePath(frame.filename).name}:{frame.lineno} in {frame.name}"
        for frame in reversed(stack)
    )


def retry_backoff() -> Backoff:
    """The wait after a failed round: the first in ``[0, RETRY_MIN]``, then doubling."""
    return Backoff(min_delay=RETRY_MIN, max_delay=RETRY_MAX, initial=RETRY_MIN)


async def supervised(
    loop: str,
    one_round: Round,
    failures: Counter,
    backoff: Backoff | None = None,
) -> None:
    """Run ``one_round`` again and again until cancelled. A round that raises an
    ``Exception`` is logged (type and trimmed traceback, at ERROR), counted in ``failures``
    and followed by a wait of ``backoff.next_delay()`` seconds; a round that returns resets
    the backoff. Never returns.

    Cancellation (during a round or a wait) stops it: CancelledError propagates.
    """
    backoff = backoff or retry_backoff()
    while True:
        try:
            await one_round()
        except Exception as exc:
            failures.inc()
            delay = backoff.next_delay()
            log.error(
                "REST %s loop failed (%s at %s); retrying in %.1f s",
                loop,
                type(exc).__name__,
                where(exc),
                delay,
                extra={"loop": loop, "failures_in_a_row": backoff.failures},
            )
        else:
            backoff.reset()
            continue
        # Outside the handler: the error and its traceback (the round's frames) are not
        # kept alive through the wait.
        await asyncio.sleep(delay)
