"""The one checker of the fault suite. Pure: it reads what the PBX simulator sent and was
asked, what a tap queue received and what the command sender sent and got back, and says
whether the service kept its three promises:

* **no call event is lost**: every frame the PBX delivered to at least one socket is
  published at least once; copies carry the same ``message_id``, and none appear in the
  steady phase before the fault (copies only around a takeover or failover);
* **every command send gets exactly one truthful reply**: as many replies per command as it
  was sent (a send the broker did not confirm may or may not count), never an answer that
  belongs to another command, never ``success`` for a command the PBX never saw;
* **a command is dialed at most once**: each command identity reaches the PBX at most once.

:func:`check` returns a :class:`Report`; :meth:`Report.line` is the one line per scenario the
suite prints, :meth:`Report.problems` the broken promises (empty when all hold).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Delivered:
    """A frame the PBX sent: its call ``uuid``, when (the test's clock) and to how many
    sockets (0: nobody held the subscriber, an upstream gap — not the service's loss)."""

    uuid: str
    at: float
    sockets: int


@dataclass(frozen=True)
class Tapped:
    """A call event as the tap queue received it."""

    uuid: str
    message_id: str


@dataclass(frozen=True)
class Sent:
    """One publish of a command: ``key`` is the command's identity (its ``message_id``,
    equal for a retry), ``to`` the number only this command dials, ``confirmed`` whether
    the broker confirmed the publish (an unconfirmed one may or may not have arrived)."""

    key: str
    to: str
    confirmed: bool


@dataclass(frozen=True)
class Answer:
    """A reply as the caller received it: its correlation id (the command's key) and body."""

    key: str
    body: dict[str, Any]


@dataclass
class Report:
    scenario: str
    delivered: int = 0
    upstream_gaps: int = 0
    lost: list[str] = field(default_factory=list)
    copies: int = 0
    shutdown_copies: int = 0
    steady_copies: list[str] = field(default_factory=list)
    mixed_ids: list[str] = field(default_factory=list)
    commands: int = 0
    sends: int = 0
    uncertain_sends: int = 0
    replies: int = 0
    missing_replies: list[str] = field(default_factory=list)
    extra_replies: list[str] = field(default_factory=list)
    wrong_replies: list[str] = field(default_factory=list)
    dials: int = 0
    second_dials: list[str] = field(default_factory=list)
    untrue_success: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        for name in (
            "lost",
            "steady_copies",
            "mixed_ids",
            "missing_replies",
            "extra_replies",
            "wrong_replies",
            "second_dials",
            "untrue_success",
        ):
            found: list[str] = getattr(self, name)
            if found:
                out.append(f"{name}: {len(found)} (e.g. {sorted(found)[:5]})")
        return out

    def line(self) -> str:
        return (
            f"faults {self.scenario}: events {self.delivered} lost {len(self.lost)}"
            f" copies {self.copies} (steady {len(self.steady_copies)},"
            f" at shutdown {self.shutdown_copies})"
            f" | commands {self.commands} sends {self.sends}"
            f" (unconfirmed {self.uncertain_sends}) replies {self.replies}"
            f" missing {len(self.missing_replies)} extra {len(self.extra_replies)}"
            f" wrong {len(self.wrong_replies)} | dials {self.dials}"
            f" second {len(self.second_dials)} untrue-success {len(self.untrue_success)}"
        )


def check(
    scenario: str,
    delivered: Iterable[Delivered],
    tapped: Iterable[Tapped],
    sent: Iterable[Sent],
    answers: Iterable[Answer],
    dialed: Iterable[str],
    *,
    steady: tuple[float, float] | None = None,
    stopped_at: int | None = None,
) -> Report:
    """Check one scenario. ``dialed`` lists the number of every action the PBX received;
    ``steady`` is the ``(from, until)`` span of the test's clock in which no copy may
    appear (the service was settled and no fault had begun); ``stopped_at`` is how many
    events were tapped when the replicas were told to stop: copies after it are the
    shutdown's (a leave hands over like a takeover), counted apart."""
    report = Report(scenario)
    frames = list(delivered)
    taps = list(tapped)
    ids: dict[str, set[str]] = collections.defaultdict(set)
    counts: collections.Counter[str] = collections.Counter()
    for n, tap in enumerate(taps):
        if n == stopped_at:
            report.copies = sum(c - 1 for c in counts.values() if c > 1)
        counts[tap.uuid] += 1
        ids[tap.uuid].add(tap.message_id)
    for frame in frames:
        if frame.sockets == 0:
            report.upstream_gaps += 1
            continue
        report.delivered += 1
        if counts[frame.uuid] == 0:
            report.lost.append(frame.uuid)
        elif steady is not None and steady[0] <= frame.at <= steady[1] and counts[frame.uuid] > 1:
            report.steady_copies.append(frame.uuid)
    everything = sum(n - 1 for n in counts.values() if n > 1)
    if stopped_at is None or stopped_at >= len(taps):
        report.copies = everything
    report.shutdown_copies = everything - report.copies
    report.mixed_ids = [uuid for uuid, found in ids.items() if len(found) > 1]

    sends = list(sent)
    to_of = {s.key: s.to for s in sends}
    confirmed: collections.Counter[str] = collections.Counter(s.key for s in sends if s.confirmed)
    unconfirmed: collections.Counter[str] = collections.Counter(
        s.key for s in sends if not s.confirmed
    )
    report.commands = len(to_of)
    report.sends = sum(confirmed.values())
    report.uncertain_sends = sum(unconfirmed.values())
    replies: collections.Counter[str] = collections.Counter()
    success: set[str] = set()
    for answer in answers:
        report.replies += 1
        replies[answer.key] += 1
        expected = to_of.get(answer.key)
        if expected is None or answer.body.get("to") != expected:
            report.wrong_replies.append(answer.key)
        if answer.body.get("event") == "success":
            success.add(answer.key)
    for key in to_of:
        low, high = confirmed[key], confirmed[key] + unconfirmed[key]
        if replies[key] < low:
            report.missing_replies.append(key)
        elif replies[key] > high:
            report.extra_replies.append(key)

    dials = collections.Counter(dialed)
    report.dials = sum(dials.values())
    number_to_key = {to: key for key, to in to_of.items()}
    report.second_dials = [number_to_key.get(to, to) for to, n in dials.items() if n > 1]
    report.untrue_success = [key for key in success if dials[to_of.get(key, "")] == 0]
    return report
