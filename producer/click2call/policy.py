"""click2call guards against toll fraud: who may dial, where, how fast. Pure: clock passed in.

A queue message becomes a real call paid by the company, so three checks stand between a
valid command and the PBX (:meth:`Policy.check`, in this order, first refusal wins):

* **who** — ``PHONET_CLICK2CALL_ALLOWED_USERS``: the command's AMQP ``user_id`` property
  must name one of these RabbitMQ users. RabbitMQ refuses a publish whose ``user_id`` is not
  the publishing connection's user, so it cannot be forged; a command without one is
  refused too. Error ``forbidden``.
* **where** — ``PHONET_CLICK2CALL_ALLOWED_NUMBERS``: a regular expression the normalised
  number (``+`` and 2–20 digits) must match in full. The number is validated and bounded
  before the pattern runs, so a hostile number cannot make a pattern backtrack for long.
  Error ``number not allowed``.
* **how fast** — ``PHONET_CLICK2CALL_RATE_LIMIT`` commands a minute per subscriber, a token
  bucket holding at most ten seconds' worth (a burst); ``0`` turns it off. Only commands
  that passed the other checks take a token. Error ``rate limited``.

Refused commands are answered with the error and never dialed (the switchboard sees them
as invalid). :func:`mask_number` and :func:`sender_of` shape the audit line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from producer.core.errors import Forbidden, NumberNotAllowed, RateLimited
from producer.core.pacing import TokenBucket

BURST_SECONDS = 10.0
"""The bucket holds this many seconds' worth of commands: a person clicking through a
list is not slowed, a script dialing a range is."""

KEEP_DIGITS = 4
MAX_SENDER = 64


@dataclass
class RateLimiter:
    """A token bucket per subscriber: ``per_minute`` commands a minute, bursts of
    ``capacity``. Memory: one small record per subscriber that ever dialed (the
    subscribers are the configured ones, so this is bounded by the configuration)."""

    per_minute: float
    capacity: float = 0.0
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.capacity:
            self.capacity = max(1.0, math.floor(self.per_minute * BURST_SECONDS / 60.0))

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, subscriber: str, now: float) -> bool:
        """Take one token for ``subscriber`` at ``now`` (seconds, monotonic); False when
        the bucket is empty (the command must not be dialed)."""
        if not self.enabled:
            return True
        bucket = self._buckets.get(subscriber)
        if bucket is None:
            bucket = self._buckets[subscriber] = TokenBucket(self.per_minute / 60.0, self.capacity)
        return bucket.take_if_any(now)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the buckets of subscribers no longer configured."""
        wanted = set(keep)
        for subscriber in [s for s in self._buckets if s not in wanted]:
            del self._buckets[subscriber]


@dataclass
class Policy:
    """The three guards. ``allowed_users`` None: anyone who can publish to the queue;
    ``allowed_numbers`` None: any number; ``rate`` with ``per_minute`` 0: no limit."""

    allowed_users: frozenset[str] | None = None
    allowed_numbers: re.Pattern[str] | None = None
    rate: RateLimiter = field(default_factory=lambda: RateLimiter(0.0))

    def check_sender(self, user_id: str | None) -> None:
        """Raise :class:`Forbidden` unless ``user_id`` is allowed (checked before the body
        is even parsed: a stranger learns nothing about the command format)."""
        allowed = self.allowed_users
        if allowed is not None and (user_id is None or user_id not in allowed):
            raise Forbidden("forbidden")

    def check_number(self, number: str) -> None:
        """Raise :class:`NumberNotAllowed` unless the normalised ``number`` (``+`` and at
        most 20 digits) matches the allowed pattern in full."""
        if self.allowed_numbers is not None and not self.allowed_numbers.fullmatch(number):
            raise NumberNotAllowed("number not allowed")

    def check(self, subscriber: str, number: str, now: float) -> None:
        """:meth:`check_number`, then take a rate token: raise :class:`NumberNotAllowed` or
        :class:`RateLimited`."""
        self.check_number(number)
        if not self.rate.take(subscriber, now):
            raise RateLimited("rate limited")


def mask_number(text: object) -> str | None:
    """Every digit but the last four replaced by ``*`` (at most 32 characters kept):
    what the audit log may say of a number. None when there is no text."""
    if not isinstance(text, str) and not isinstance(text, int):
        return None
    value = str(text)[:32]
    digits = sum(c.isdigit() for c in value)
    out: list[str] = []
    for c in value:
        if c.isdigit():
            out.append(c if digits <= KEEP_DIGITS else "*")
            digits -= 1
        else:
            out.append(c)
    return "".join(out)


def sender_of(user_id: str | None, app_id: str | None) -> str | None:
    """Who sent a command, for the audit line: the broker-checked ``user_id`` when set,
    else the self-declared ``app_id`` (marked as such), bounded."""
    if user_id:
        return f"user:{_printable(user_id)}"
    if app_id:
        return f"app:{_printable(app_id)}"
    return None


def _printable(text: str) -> str:
    """Bounded, with control characters replaced: a sender's own words must not forge
    audit log lines (a newline in ``app_id``)."""
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_SENDER])


def compile_numbers(pattern: str) -> re.Pattern[str] | None:
    """The allowed-numbers pattern, or None when empty. Raises ``re.error`` when invalid."""
    pattern = pattern.strip()
    return re.compile(pattern) if pattern else None
