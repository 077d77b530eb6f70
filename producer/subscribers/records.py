"""What the Phonet REST API returns, read leniently. Pure: no I/O.

The shapes are observed in public integrations, not documented (``README.md`` says so):
every parser here ignores unknown fields, skips records it cannot use (counting them), and
raises :class:`BadAnswer` only when the answer as a whole is unusable — the caller then
keeps what it had. Nothing here sees the API key.

* :func:`employees` — ``rest/users`` → subscriber names (``ext`` or ``email``), filtered;
* :class:`Directory` — whether a discovered list may replace the current one (a list that
  would drop more than half the sockets must be seen twice in a row; an empty one never is);
* :func:`call_records` / :func:`calls_of` — ``rest/calls/company.api`` and
  ``rest/calls/active/v3`` rows and the ones that involve one subscriber.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.core.routing import subscriber_token_error

PAGE_LIMIT = 50
"""Rows per history page (integrations keep ``limit`` within 1–50)."""
MAX_PAGES = 100
"""Pages read for one window at most (5,000 calls): a bound, logged when reached."""


class BadAnswer(ValueError):
    """The REST answer as a whole is unusable (not the expected JSON shape)."""


def _rows(data: Any, what: str) -> list[dict[str, Any]]:
    """A JSON array of objects, also when wrapped in ``{"items"|"data"|"content": [...]}``."""
    if isinstance(data, dict):
        for key in ("items", "data", "content", "result"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise BadAnswer(f"{what}: expected a JSON array, got {type(data).__name__}")
    return [row for row in data if isinstance(row, dict)]


def _text(value: Any) -> str | None:
    """A name or an id: a non-blank string (stripped) or an integer (spelled out). Any
    other JSON value (null, a bool, a float, a list, an object) is None; never raises."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than int→str allows (sys.get_int_max_str_digits)
            return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


@dataclass(frozen=True)
class Employees:
    """The subscribers found, and how many rows could not be used (no field, a name that
    cannot be a subscriber, or excluded)."""

    subscribers: tuple[str, ...]
    skipped: int = 0
    excluded: int = 0
    ext_of: dict[str, str] = field(default_factory=dict)
    """Each subscriber's extension, when it is not the extension itself (e-mail
    subscribers): call rows name legs by ``ext``."""


def employees(data: Any, field_name: str, exclude: Sequence[str] = ()) -> Employees:
    """Subscribers from a ``rest/users`` answer: each employee's ``field_name`` (``ext`` or
    ``email``), once, sorted; names matching an ``exclude`` pattern (``*``, ``?``) left out.

    Raises:
        BadAnswer: the answer is not a list of employees.
    """
    found: set[str] = set()
    ext_of: dict[str, str] = {}
    skipped = excluded = 0
    for row in _rows(data, "rest/users"):
        name = _text(row.get(field_name))
        ext = _text(row.get("ext"))
        if name is not None and ext is not None and ext != name:
            ext_of[name] = ext
        if name is None or subscriber_token_error(name) is not None:
            skipped += 1
        elif any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
            excluded += 1
        else:
            found.add(name)
    return Employees(
        tuple(sorted(found)), skipped, excluded, {k: v for k, v in ext_of.items() if k in found}
    )


@dataclass
class Directory:
    """Decides whether a discovered subscriber list replaces the current one.

    A list that would close more than half of the current sockets is held until the next
    poll returns the same list (a half-broken answer must not close a company's sockets);
    an empty list is never applied (the last good list stays). :meth:`offer` returns the
    list to apply, or None to keep the current one, and says why in :attr:`held`.
    """

    current: tuple[str, ...] = ()
    held: str | None = None
    _pending: frozenset[str] | None = field(default=None, repr=False)

    def offer(self, found: Iterable[str]) -> tuple[str, ...] | None:
        wanted = tuple(sorted(set(found)))
        self.held = None
        if not wanted:
            self._pending = None
            self.held = "the employee list is empty; keeping the current subscribers"
            return None
        if wanted == self.current:
            self._pending = None
            return None
        removed = len(set(self.current) - set(wanted))
        shrinking = bool(self.current) and removed * 2 > len(self.current)
        if shrinking and self._pending != frozenset(wanted):  # held until seen again
            self._pending = frozenset(wanted)
            self.held = (
                f"the employee list would close {removed} of {len(self.current)} sockets;"
                " waiting for the next poll to confirm it"
            )
            return None
        self._pending = None
        self.current = wanted
        return wanted


@dataclass(frozen=True)
class CallRecord:
    """One call row: its ``uuid``, when it ended (ms, None for a call in progress) and the
    row exactly as Phonet returned it (published as the body)."""

    uuid: str
    end_ms: int | None
    raw: dict[str, Any]

    def involves(self, subscriber: str, ext: str | None = None) -> bool:
        """True when ``leg`` or ``leg2`` is this subscriber: by ``ext`` or ``email``, or by
        the subscriber's extension ``ext`` when known (an e-mail subscriber).

        Only a leg that is an object, and in it only a string or an integer, can name
        someone: any other JSON value (a list, an object, a bool, a float) names nobody and
        never raises (one odd row must not stop a backfill)."""
        names = (subscriber, ext)
        for key in ("leg", "leg2"):
            leg = self.raw.get(key)
            if not isinstance(leg, dict):
                continue
            for name in (_text(leg.get("ext")), _text(leg.get("email"))):
                if name is not None and name in names:
                    return True
        return False


def _millis(value: Any) -> int | None:
    """Epoch milliseconds from a number (seconds below 10^12); None for anything else,
    including a float that is not finite (never raises)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    millis = int(value)
    return millis * 1000 if 0 < millis < 10**12 else millis  # seconds in some samples


def call_records(data: Any, what: str) -> tuple[list[CallRecord], int]:
    """Rows with a usable ``uuid`` from a calls answer, and how many were skipped.

    Raises:
        BadAnswer: the answer is not a list of calls.
    """
    records: list[CallRecord] = []
    skipped = 0
    for row in _rows(data, what):
        uuid = _text(row.get("uuid"))
        if uuid is None or len(uuid) > 200:
            skipped += 1
            continue
        records.append(CallRecord(uuid, _millis(row.get("endAt")), row))
    return records, skipped


def calls_of(
    records: Iterable[CallRecord], subscriber: str, ext: str | None = None
) -> list[CallRecord]:
    """The records involving ``subscriber`` (or its extension ``ext``), once per ``uuid``
    (pages overlap), in the order of their end (calls in progress last)."""
    seen: dict[str, CallRecord] = {}
    for record in records:
        if record.uuid not in seen and record.involves(subscriber, ext):
            seen[record.uuid] = record
    return sorted(seen.values(), key=lambda r: (r.end_ms is None, r.end_ms or 0))
