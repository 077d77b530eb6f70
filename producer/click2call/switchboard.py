"""click2call as a pure state machine: which command is dialed, when, and what it is told.

Sans-I/O: the adapter (:mod:`producer.click2call.service`) reports what happened — a
command delivered, the action written, a PBX answer frame, a socket up or down, a broker
session lost, the clock — and carries out the effects that come back
(:mod:`producer.click2call.effects`): send an action on a socket, answer a command (publish
its reply, then settle its message), settle a message.

Before a command reaches the switchboard the adapter asked the journal
(:mod:`producer.click2call.journal`) whether anything stands against dialing it (a reply
already given, a claim of another delivery) and *claimed* it there (confirmed, first): the
switchboard sees only fresh commands that no other delivery can answer or dial meanwhile.

A command (a :class:`Job`) goes through::

    delivered ──▶ queued on its subscriber's line ──its turn──▶ waiting for the socket
        │               │ session lost: abandoned (the broker redelivers it)
        │               │ shutting down: requeued, undialed
        ▼               ▼
    invalid / expired / not connected: error answer, rejected, never dialed
                              socket up ──▶ sending ──▶ awaiting the answer
    answered (success / PBX error) │ socket dropped │ timeout ──▶ answer, then ack; line free

**The rules it keeps** (``tests/unit/producer/click2call/test_switchboard.py`` checks them
over random interleavings against a model broker, a model journal and a model PBX):

* **one command in flight per socket**: the PBX answers with no request id, so the next
  answer frame on a socket belongs to the one command sent on *that connection* and
  unanswered; an answer on another connection (the socket was reopened) is not its;
* **after a timeout the line waits** up to ``grace`` seconds for the late answer, so it is
  never taken for the next command's (it is discarded); a socket drop ends that wait, since
  the answer cannot come on a new connection. This is exact when the PBX answers within
  ``timeout + grace`` or never — the protocol allows no better;
* **settled after answered**: a command's message is settled only after its answer was
  published (and it was claimed in the journal before it came here). A replica that dies
  in between leaves the message to the broker, which delivers it again; the journal then
  tells the next replica that it was (maybe) dialed — never a second dial, and the caller
  still gets an answer;
* **exactly one answer per command** this switchboard took: every job ends in one
  :class:`~producer.click2call.effects.Answer`, or in a settlement without one only when
  it was never dialed and its message goes back to the broker (abandoned, requeued) to be
  answered when it comes again.

Memory: a :class:`Line` exists only while its subscriber has a command queued, in flight or
awaiting a late answer (about 900 bytes); an idle one is dropped, so subscribers that come
and go leave nothing. Jobs are bounded by the consumer's prefetch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum

from producer.click2call.commands import Command
from producer.click2call.effects import (
    Answer,
    Delivery,
    Effect,
    SendAction,
    Settle,
    SettleMessage,
)
from producer.core.errors import (
    CommandError,
    CommandExpired,
    CommandTimeout,
    NotConnected,
    PbxRefused,
)

LOST_BEFORE_ANSWER = "connection to the PBX lost before it answered"


class Phase(Enum):
    QUEUED = "queued"
    WAIT_SOCKET = "wait_socket"
    SENDING = "sending"
    AWAITING = "awaiting"


@dataclass
class Job:
    delivery: Delivery
    phase: Phase = Phase.QUEUED
    deadline: float = 0.0
    conn: int = 0

    @property
    def command(self) -> Command:
        assert self.delivery.command is not None
        return self.delivery.command


@dataclass
class Line:
    """One subscriber's line to the PBX."""

    subscriber: str
    queue: deque[Job] = field(default_factory=deque)
    current: Job | None = None
    late_conn: int | None = None
    late_until: float = 0.0
    unsent: Hashable | None = None
    """A timed-out command whose action the adapter has not reported written yet: the late
    window stays open until it does (the action may still go out, and be answered)."""


class Switchboard:
    """All lines of one producer. ``timeout``: seconds for the PBX's answer; ``grace``:
    how long a timed-out command's late answer is waited for; ``connect_wait``: how long
    a command waits for its socket."""

    def __init__(self, *, timeout: float, grace: float, connect_wait: float) -> None:
        self.timeout = timeout
        self.grace = grace
        self.connect_wait = connect_wait
        self.lines: dict[str, Line] = {}
        self.jobs: dict[Hashable, Job] = {}
        self.sockets: dict[str, int] = {}  # subscriber -> open connection
        self.stopping = False

    # --- inputs -----------------------------------------------------------------------
    def deliver(self, delivery: Delivery, now: float) -> list[Effect]:
        """A fresh command message arrived (the journal found nothing against it)."""
        key = delivery.key
        if self.stopping:
            return [SettleMessage(key, Settle.REQUEUE)]
        if delivery.error is not None or delivery.command is None:
            return [_refused(key, delivery.error or CommandError("invalid command"))]
        if now > delivery.fresh_until:
            return [_refused(key, CommandExpired("expired"))]
        job = Job(delivery)
        self.jobs[key] = job
        line = self._line(delivery.command.subscriber)
        line.queue.append(job)
        return self._advance(line, now)

    def sent(self, key: Hashable, ok: bool, now: float) -> list[Effect]:
        """The action was written (``ok``), or the socket was gone."""
        job = self.jobs.get(key)
        if job is None:
            for line in self.lines.values():
                if line.unsent == key:  # timed out before the write was reported
                    line.unsent = None
                    if ok and line.late_conn is not None:
                        line.late_until = now + self.timeout + self.grace
                        return []
                    line.late_conn = None
                    return self._advance(line, now)
            return []
        if job.phase is not Phase.SENDING:
            return []  # answered meanwhile, or the socket dropped
        if not ok:
            line = self.lines[job.command.subscriber]
            return self._finish(line, job, now, _refused(key, NotConnected("not connected")))
        job.phase = Phase.AWAITING
        return []

    def answer(
        self, subscriber: str, conn: int, refused: str | None, now: float
    ) -> tuple[bool, list[Effect]]:
        """A PBX answer frame (``success``, or ``error`` with ``refused`` its text) came on
        ``subscriber``'s connection ``conn``. Returns whether it was the answer to a
        command (else it is an ordinary frame) and the effects."""
        line = self.lines.get(subscriber)
        if line is None:
            return False, []
        job = line.current
        if job is not None and job.phase in (Phase.SENDING, Phase.AWAITING) and job.conn == conn:
            outcome = None if refused is None else PbxRefused(refused)
            return True, self._finish(line, job, now, _dialed(job, outcome, refused))
        if line.late_conn == conn and now < line.late_until:
            line.late_conn = None  # a timed-out command's answer: discarded
            return True, self._advance(line, now)
        return False, []

    def socket_up(self, subscriber: str, conn: int, now: float) -> list[Effect]:
        self.sockets[subscriber] = conn
        line = self.lines.get(subscriber)
        if line is None:
            return []
        if line.late_conn is not None and line.late_conn != conn:
            line.late_conn, line.unsent = None, None  # its answer cannot come on this one
        job = line.current
        if job is not None and job.phase is Phase.WAIT_SOCKET:
            return [self._send(job, conn, now)]
        return self._advance(line, now)

    def socket_down(self, subscriber: str, conn: int, now: float) -> list[Effect]:
        if self.sockets.get(subscriber) == conn:
            del self.sockets[subscriber]
        line = self.lines.get(subscriber)
        if line is None:
            return []
        if line.late_conn == conn:
            line.late_conn = None  # the late answer can no longer come
        job = line.current
        if job is not None and job.phase in (Phase.SENDING, Phase.AWAITING) and job.conn == conn:
            answer = _dialed(job, NotConnected(LOST_BEFORE_ANSWER))
            return self._finish(line, job, now, answer)
        return self._advance(line, now)

    def abandon(self, key: Hashable, now: float) -> list[Effect]:
        """The adapter lost the message before it was dialed (its channel closed): forget
        the command; the broker redelivers it."""
        job = self.jobs.get(key)
        if job is None or job.phase not in (Phase.QUEUED, Phase.WAIT_SOCKET):
            return []
        line = self.lines[job.command.subscriber]
        if job is line.current:
            return self._finish(line, job, now, settle=Settle.ABANDON)
        line.queue.remove(job)
        del self.jobs[key]
        return [SettleMessage(key, Settle.ABANDON)]

    def session_lost(self, session: int, now: float) -> list[Effect]:
        """The broker session ``session`` is gone: its commands not yet dialed are
        abandoned (a command already dialed is answered as usual, and its redelivered copy
        is settled by the journal)."""
        effects: list[Effect] = []
        for key, job in list(self.jobs.items()):
            if job.delivery.session == session and job.phase in (Phase.QUEUED, Phase.WAIT_SOCKET):
                effects += self.abandon(key, now)
        return effects

    def stop(self, now: float) -> list[Effect]:
        """Shutting down: take no new command; give back those not yet dialed."""
        self.stopping = True
        effects: list[Effect] = []
        for key, job in list(self.jobs.items()):
            if job.phase in (Phase.QUEUED, Phase.WAIT_SOCKET):
                line = self.lines[job.command.subscriber]
                if job is line.current:
                    effects += self._finish(line, job, now, settle=Settle.REQUEUE)
                else:
                    line.queue.remove(job)
                    del self.jobs[key]
                    effects.append(SettleMessage(key, Settle.REQUEUE))
        return effects

    def tick(self, now: float) -> list[Effect]:
        """Time passed: socket waits, answer timeouts and late-answer windows end."""
        effects: list[Effect] = []
        for line in list(self.lines.values()):
            job = line.current
            if job is not None and now >= job.deadline:
                key = job.delivery.key
                if job.phase is Phase.WAIT_SOCKET:
                    answer = _refused(key, NotConnected("not connected"))
                    effects += self._finish(line, job, now, answer)
                    continue
                if job.phase in (Phase.SENDING, Phase.AWAITING):
                    line.late_conn, line.late_until = job.conn, now + self.grace
                    if job.phase is Phase.SENDING:
                        # Not known to be written yet: it may go out later and be answered
                        # later still; the window stays open until the write is reported.
                        line.unsent, line.late_until = key, float("inf")
                    effects += self._finish(line, job, now, _dialed(job, CommandTimeout("timeout")))
                    continue
            if line.late_conn is not None and now >= line.late_until:
                line.late_conn = None
                effects += self._advance(line, now)
        return effects

    # --- state ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has something to do, if any."""
        times = [
            line.current.deadline
            for line in self.lines.values()
            if line.current is not None
            and line.current.phase in (Phase.WAIT_SOCKET, Phase.SENDING, Phase.AWAITING)
        ]
        times += [
            line.late_until
            for line in self.lines.values()
            if line.late_conn is not None and line.unsent is None
        ]
        return min(times, default=None)

    @property
    def busy(self) -> int:
        """Commands held (queued or in progress)."""
        return len(self.jobs)

    def holds(self, key: Hashable) -> bool:
        return key in self.jobs

    def busy_on(self, subscriber: str) -> bool:
        """True while ``subscriber``'s line has a command or awaits a late answer: closing
        its socket now would cut that command off (a key rotation waits for it)."""
        line = self.lines.get(subscriber)
        return line is not None and (
            line.current is not None or bool(line.queue) or line.late_conn is not None
        )

    # --- internals --------------------------------------------------------------------
    def _line(self, subscriber: str) -> Line:
        line = self.lines.get(subscriber)
        if line is None:
            line = self.lines[subscriber] = Line(subscriber)
        return line

    def _advance(self, line: Line, now: float) -> list[Effect]:
        """Give the line to the next command when it is free."""
        effects: list[Effect] = []
        if line.late_conn is not None and (
            now >= line.late_until or self.sockets.get(line.subscriber) != line.late_conn
        ):
            line.late_conn = None
        while line.current is None and line.queue and line.late_conn is None and not self.stopping:
            job = line.queue.popleft()
            key = job.delivery.key
            if now > job.delivery.fresh_until:  # it may have waited for its turn
                del self.jobs[key]
                effects.append(_refused(key, CommandExpired("expired")))
                continue
            line.current = job
            conn = self.sockets.get(line.subscriber)
            if conn is not None:
                effects.append(self._send(job, conn, now))
            else:
                job.phase, job.deadline = Phase.WAIT_SOCKET, now + self.connect_wait
        if line.current is None and not line.queue and line.late_conn is None:
            # Idle: a line is made again by the next command; keeping every line ever
            # used would grow with the subscribers that come and go.
            line.unsent = None
            self.lines.pop(line.subscriber, None)
        return effects

    def _send(self, job: Job, conn: int, now: float) -> SendAction:
        # The answer's clock starts now: a write that hangs is a timeout like any other.
        job.phase, job.conn, job.deadline = Phase.SENDING, conn, now + self.timeout
        return SendAction(job.delivery.key, job.command.subscriber, conn, job.command.action())

    def _finish(
        self,
        line: Line,
        job: Job,
        now: float,
        answer: Answer | None = None,
        *,
        settle: Settle | None = None,
    ) -> list[Effect]:
        """The command leaves the line: its answer or settlement, then the next one."""
        key = job.delivery.key
        del self.jobs[key]
        if line.current is job:
            line.current = None
        effects: list[Effect] = []
        if answer is not None:
            effects.append(answer)
        if settle is not None:
            effects.append(SettleMessage(key, settle))
        return effects + self._advance(line, now)


def _refused(key: Hashable, error: CommandError) -> Answer:
    """Answered with ``error`` and rejected, never dialed."""
    return Answer(key, error, Settle.REJECT, dialed=False)


def _dialed(job: Job, outcome: CommandError | None, pbx_message: str | None = None) -> Answer:
    """The answer of a command whose action may have reached the PBX: acked."""
    return Answer(job.delivery.key, outcome, Settle.ACK, dialed=True, pbx_message=pbx_message)
