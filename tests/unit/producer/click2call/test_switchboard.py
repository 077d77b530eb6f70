"""The click2call switchboard: table tests of each rule, then a model-based test (hypothesis
stateful) of the switchboard *with the journal* (the pure :class:`Journal` the adapter asks
before a command reaches the switchboard) against a model broker (deliveries, acks,
redeliveries after a lost session, callers' retries of the same command) and a model PBX
(answers in order per connection, within ``timeout + grace`` or never; sockets that drop
and come back), checking the invariants the module docstrings state."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from producer.click2call.commands import Command
from producer.click2call.effects import (
    Answer,
    Delivery,
    Effect,
    SendAction,
    Settle,
    SettleMessage,
)
from producer.click2call.journal import Decision, Journal, Remembered, Verdict
from producer.click2call.switchboard import LOST_BEFORE_ANSWER, Switchboard
from producer.core.errors import CommandError, InvalidCommand, UnknownSubscriber

TIMEOUT, GRACE, CONNECT_WAIT = 10.0, 10.0, 3.0


def board() -> Switchboard:
    return Switchboard(timeout=TIMEOUT, grace=GRACE, connect_wait=CONNECT_WAIT)


def delivery(
    n: int,
    subscriber: str = "001",
    *,
    session: int = 1,
    error: CommandError | None = None,
    fresh_until: float = 1e9,
) -> Delivery:
    command = None if error else Command(subscriber, f"38099{n:07d}", f"38099{n:07d}", n)
    return Delivery(
        key=(session, n),
        session=session,
        command=command,
        error=error,
        fresh_until=fresh_until,
    )


def kinds(effects: list[Effect]) -> list[str]:
    out = []
    for e in effects:
        if isinstance(e, SettleMessage):
            out.append(f"{e.how.value}:{e.key[1]}")  # type: ignore[index]
        elif isinstance(e, SendAction):
            out.append(f"send:{e.key[1]}@{e.conn}")  # type: ignore[index]
        else:
            result = "success" if e.outcome is None else e.outcome.result
            dialed = "dialed" if e.dialed else "undialed"
            out.append(f"answer:{e.key[1]}:{result}:{e.settle.value}:{dialed}")  # type: ignore[index]
    return out


def dial(b: Switchboard, n: int, conn: int = 1, now: float = 0.0) -> None:
    """Deliver command ``n`` on an open socket and take it to awaiting its answer."""
    assert kinds(b.deliver(delivery(n), now)) == [f"send:{n}@{conn}"]
    assert b.sent((1, n), True, now) == []


# --- table tests ----------------------------------------------------------------------

A = "answer:{n}:{result}:{settle}:{dialed}"


def answered(n: int, result: str, *, dialed: bool) -> str:
    return A.format(
        n=n,
        result=result,
        settle="ack" if dialed else "reject",
        dialed="dialed" if dialed else "undialed",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            InvalidCommand("invalid command: x"),
            [answered(1, "invalid", dialed=False)],
            id="invalid",
        ),
        pytest.param(
            UnknownSubscriber("unknown subscriber"),
            [answered(1, "unknown_subscriber", dialed=False)],
            id="unknown",
        ),
    ],
)
def test_bad_commands_are_answered_and_rejected(error: CommandError, expected: list[str]) -> None:
    assert kinds(board().deliver(delivery(1, error=error), 0.0)) == expected


def test_a_command_is_claimed_before_it_is_dialed_and_acked_after_its_answer() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    taken, effects = b.answer("001", 1, None, 1.0)
    assert taken
    assert kinds(effects) == [answered(1, "success", dialed=True)]
    assert b.busy == 0


def test_a_line_is_kept_only_while_it_has_work() -> None:
    """Subscribers that come and go: each one commanded once leaves nothing behind."""
    b = board()
    for n in range(100):
        subscriber = f"s{n}"
        b.socket_up(subscriber, n, 0.0)
        assert kinds(b.deliver(delivery(n, subscriber), 0.0)) == [f"send:{n}@{n}"]
        b.sent((1, n), True, 0.0)
        b.answer(subscriber, n, None, 1.0)
        b.socket_down(subscriber, n, 2.0)
    assert (b.lines, b.jobs, b.sockets) == ({}, {}, {})


def test_the_pbx_refusal_is_the_answer() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    _, effects = b.answer("001", 1, "number unreachable", 1.0)
    (answer,) = effects
    assert isinstance(answer, Answer)
    assert answer.outcome is not None
    assert answer.outcome.result == "pbx_error"
    assert answer.pbx_message == "number unreachable"
    assert (answer.settle, answer.dialed) == (Settle.ACK, True)


def test_one_command_in_flight_per_socket() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    assert b.deliver(delivery(2), 0.0) == []  # waits its turn
    assert kinds(b.deliver(delivery(3, "002"), 0.0)) == []  # 002 has no socket yet
    _, effects = b.answer("001", 1, None, 1.0)
    assert kinds(effects) == [answered(1, "success", dialed=True), "send:2@1"]


def test_an_answer_on_another_connection_is_not_the_commands() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    taken, effects = b.answer("001", 2, None, 1.0)
    assert (taken, effects) == (False, [])


def test_socket_drop_while_awaiting_answers_lost_maybe_dialed() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    (answer,) = b.socket_down("001", 1, 1.0)
    assert isinstance(answer, Answer)
    assert answer.outcome is not None
    assert str(answer.outcome) == LOST_BEFORE_ANSWER
    assert (answer.settle, answer.dialed) == (Settle.ACK, True)


def test_timeout_then_the_late_answer_is_discarded_not_given_to_the_next() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 1.0)
    assert kinds(b.tick(TIMEOUT + 0.1)) == [answered(1, "timeout", dialed=True)]
    taken, effects = b.answer("001", 1, "late refusal", TIMEOUT + 5)
    assert taken
    assert kinds(effects) == ["send:2@1"]


@pytest.mark.parametrize("written", [True, False], ids=["written-late", "never-written"])
def test_a_write_that_hangs_times_out_and_holds_the_line_until_reported(written: bool) -> None:
    """The caller hears "timeout" at once, but the next command waits until the adapter
    reports the write: a write that goes out late is answered late, and that answer must
    not be taken for the next command's (found by the model test below)."""
    b = board()
    b.socket_up("001", 1, 0.0)
    assert kinds(b.deliver(delivery(1), 0.0)) == ["send:1@1"]  # not reported sent yet
    b.deliver(delivery(2), 0.0)
    assert b.next_deadline() == TIMEOUT
    assert kinds(b.tick(TIMEOUT)) == [answered(1, "timeout", dialed=True)]
    assert b.next_deadline() is None  # nothing to time: the report will come
    assert kinds(b.tick(TIMEOUT + GRACE + 100)) == []
    later = TIMEOUT + GRACE + 100
    if written:
        assert b.sent((1, 1), True, later) == []
        taken, effects = b.answer("001", 1, None, later + 1)  # its answer: discarded
        assert taken
        assert kinds(effects) == ["send:2@1"]
    else:
        assert kinds(b.sent((1, 1), False, later)) == ["send:2@1"]


def test_timeout_then_no_late_answer_frees_the_line_after_the_grace() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 1.0)
    b.tick(TIMEOUT)
    assert b.next_deadline() == pytest.approx(TIMEOUT + GRACE)
    assert kinds(b.tick(TIMEOUT + GRACE)) == ["send:2@1"]


def test_a_new_connection_ends_the_wait_for_a_late_answer() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 1.0)
    b.tick(TIMEOUT)
    assert b.socket_down("001", 1, TIMEOUT + 1) == []
    assert kinds(b.socket_up("001", 2, TIMEOUT + 2)) == ["send:2@2"]


def test_no_socket_waits_then_not_connected() -> None:
    b = board()
    assert b.deliver(delivery(1), 0.0) == []
    assert b.next_deadline() == CONNECT_WAIT
    assert kinds(b.tick(CONNECT_WAIT)) == [answered(1, "not_connected", dialed=False)]


def test_the_socket_coming_up_in_time_gets_the_command_dialed() -> None:
    b = board()
    b.deliver(delivery(1), 0.0)
    assert kinds(b.socket_up("001", 1, 1.0)) == ["send:1@1"]


@pytest.mark.parametrize(
    ("fresh_until", "now", "expected"),
    [
        pytest.param(5.0, 6.0, [answered(1, "expired", dialed=False)], id="stale-on-arrival"),
        pytest.param(5.0, 4.0, ["send:1@1"], id="fresh"),
    ],
)
def test_staleness(fresh_until: float, now: float, expected: list[str]) -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    assert kinds(b.deliver(delivery(1, fresh_until=fresh_until), now)) == expected


def test_a_command_that_went_stale_waiting_its_turn_is_expired() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2, fresh_until=5.0), 0.0)
    _, effects = b.answer("001", 1, None, 6.0)
    assert kinds(effects) == [
        answered(1, "success", dialed=True),
        answered(2, "expired", dialed=False),
    ]


def test_a_lost_session_abandons_its_unclaimed_commands_only() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 0.0)
    b.deliver(delivery(3, "002"), 0.0)
    assert kinds(b.session_lost(1, 1.0)) == ["abandon:2", "abandon:3"]
    _, effects = b.answer("001", 1, None, 2.0)
    assert kinds(effects) == [answered(1, "success", dialed=True)]  # still answered


def test_stop_gives_back_what_waits_and_lets_the_dialed_finish() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 0.0)
    b.deliver(delivery(3, "002"), 0.0)
    assert kinds(b.stop(1.0)) == ["requeue:2", "requeue:3"]
    assert kinds(b.deliver(delivery(4), 1.0)) == ["requeue:4"]
    _, effects = b.answer("001", 1, None, 2.0)
    assert kinds(effects) == [answered(1, "success", dialed=True)]
    assert b.busy == 0


def test_an_answer_can_come_before_the_send_is_reported() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    b.deliver(delivery(1), 0.0)
    taken, effects = b.answer("001", 1, None, 0.1)
    assert taken
    assert kinds(effects) == [answered(1, "success", dialed=True)]
    assert b.sent((1, 1), True, 0.2) == []


# --- the model ------------------------------------------------------------------------

SUBSCRIBERS = ("001", "002")
ME = ("r1", "i1")


@dataclass
class Message:
    """One send of a command in the model broker (a retry is another send)."""

    identity: str
    subscriber: str
    valid: bool
    max_age: float
    created: float
    redelivered: bool = False


@dataclass
class Action:
    key: Hashable
    due: float | None  # when the PBX answers; None: never
    refused: bool


@dataclass
class Conn:
    number: int
    actions: list[Action] = field(default_factory=list)  # answered in order


# What the adapter has to do, in any order the event loop may run it.
Todo = tuple[str, Hashable, object]


class SwitchboardModel(RuleBasedStateMachine):
    """The switchboard and the journal between a model broker and a model PBX, as the
    adapter drives them: a delivered command first goes to the journal's decision (silent,
    repeat, wait, fresh), fresh ones to the switchboard; the adapter's work (claim, write
    actions, publish answers, settle messages) is a to-do list run in any order. The
    journal stream is applied as written (one replica: its reading never lags here)."""

    @initialize()
    def setup(self) -> None:
        self.b = board()
        self.j = Journal(horizon=1e9)
        self.now = 0.0
        self.n = 0
        self.queue: list[Message] = []
        self.session = 1
        self.unacked: dict[Hashable, Message] = {}  # delivered, not settled in the broker
        self.waiting: list[tuple[Hashable, Message]] = []  # held by a WAIT decision
        self.todo: list[Todo] = []
        self.conns: dict[str, Conn | None] = dict.fromkeys(SUBSCRIBERS)
        self.next_conn = 1
        self.sent: dict[str, Message] = {}  # identity -> its first send
        self.sends: dict[str, int] = {}
        self.replies: dict[str, int] = {}
        self.dials: dict[str, int] = {}
        self.claims: dict[Hashable, str] = {}  # delivery -> its claim's token
        self.key_identity: dict[Hashable, str] = {}
        self.answered_keys: set[Hashable] = set()
        self.reply_ids = 0

    # --- the journal's decision, as the adapter asks it --------------------------------
    def decide(self, message: Message, holder: str | None = None) -> Decision:
        return self.j.decide(
            message.identity,
            redelivered=message.redelivered,
            has_id=True,
            alive=lambda o: True,
            holder=holder,
        )

    def arrive(self, key: Hashable, message: Message) -> None:
        """A delivery: the journal's decision; what is to be answered is claimed first (a
        to-do of its own: another delivery may claim in between)."""
        d = self.decide(message)
        if d.verdict is Verdict.WAIT:
            self.waiting.append((key, message))
        else:
            self.todo.append(("claim", key, None))

    def claimed_and_leads(self, key: Hashable, message: Message) -> None:
        token = f"c{key[1]}"  # type: ignore[index]
        self.claims[key] = token
        self.j.claimed(message.identity, ME, token, self.now)
        if not self.j.leads(message.identity, token, lambda o: True):
            self.j.released(message.identity, token)
            del self.claims[key]
            self.arrive(key, message)
            return
        d = self.decide(message, holder=token)
        if d.verdict is Verdict.WAIT:  # an answered delivery is still being settled
            self.j.released(message.identity, token)
            del self.claims[key]
            self.waiting.append((key, message))
        elif d.verdict is Verdict.SILENT:  # settled, the orphan taken, then released
            assert d.remembered is not None
            self.todo.append(("settle", key, (d.remembered.settle, d.reply_id)))
        elif d.verdict is Verdict.REPEAT:
            assert d.remembered is not None
            self.todo.append(("reply", key, (d.remembered, (token,))))
        elif d.verdict is Verdict.FRESH:
            n = int(message.identity[2:])
            command = Command(message.subscriber, "380991234567", "380991234567", n)
            delivery = Delivery(
                key=key,
                session=key[0],  # type: ignore[index]
                command=command if message.valid else None,
                error=None if message.valid else InvalidCommand("invalid command: x"),
                fresh_until=message.created + message.max_age,
            )
            self.apply(self.b.deliver(delivery, self.now))
        else:
            raise AssertionError(f"one live replica never decides {d.verdict} holding a claim")

    def journal_moved(self) -> None:
        """The adapter re-asks the journal for the deliveries that wait (current session)."""
        waiting, self.waiting = self.waiting, []
        for key, message in waiting:
            if key in self.unacked:
                self.arrive(key, message)

    def apply(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, SettleMessage):
                self.todo.append(("settle", e.key, (e.how, "")))
            elif isinstance(e, SendAction):
                self.todo.append(("send", e.key, e))
            else:
                assert e.key not in self.answered_keys, "one answer per delivery"
                self.answered_keys.add(e.key)
                result = "success" if e.outcome is None else e.outcome.result
                remembered = Remembered(result.encode(), result, e.dialed, e.settle)
                token = self.claims.get(e.key)
                self.todo.append(("reply", e.key, (remembered, (token,) if token else ())))

    # --- the broker -------------------------------------------------------------------
    @rule(
        subscriber=st.sampled_from(SUBSCRIBERS),
        valid=st.booleans(),
        max_age=st.sampled_from([1.0, 30.0, 1e6, 1e6]),
    )
    def publish_command(self, subscriber: str, valid: bool, max_age: float) -> None:
        identity = f"id{self.n}"
        self.n += 1
        valid = valid or self.n % 4 != 0
        message = Message(identity, subscriber, valid, max_age, self.now)
        self.sent[identity] = message
        self.sends[identity] = 1
        self.queue.append(message)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def caller_retries(self, data: st.DataObject) -> None:
        """A caller sends a command again: same identity, a new message."""
        identity = data.draw(st.sampled_from(sorted(self.sent)))
        first = self.sent[identity]
        self.sends[identity] += 1
        self.queue.append(Message(identity, first.subscriber, first.valid, 1e6, self.now))

    @precondition(lambda self: bool(self.queue))
    @rule()
    def deliver(self) -> None:
        message = self.queue.pop(0)
        key = (self.session, self.n, message.identity)
        self.n += 1
        self.unacked[key] = message
        self.key_identity[key] = message.identity
        self.arrive(key, message)

    @rule()
    def lose_session(self) -> None:
        """Unsettled deliveries of the session (an ack still on the wire included) go back
        to the queue, redelivered; what waited for the journal goes with them."""
        for key, message in list(self.unacked.items()):
            if key[0] == self.session:  # type: ignore[index]
                del self.unacked[key]
                message.redelivered = True
                self.queue.append(message)
        lost = self.session
        self.session += 1
        self.waiting = [(k, m) for k, m in self.waiting if k[0] != lost]  # type: ignore[index]
        self.apply(self.b.session_lost(lost, self.now))

    # --- the adapter ------------------------------------------------------------------
    @precondition(lambda self: bool(self.todo))
    @rule(data=st.data())
    def adapter_step(self, data: st.DataObject) -> None:
        self.run(data.draw(st.sampled_from(self.todo)))

    @precondition(lambda self: bool(self.todo))
    @rule()
    def adapter_catches_up(self) -> None:
        for _ in range(20):
            if not self.todo:
                break
            self.run(self.todo[0])

    def run(self, item: Todo) -> None:
        self.todo.remove(item)
        kind, key, arg = item
        identity = self.key_identity[key]
        alive = key[0] == self.session and key in self.unacked  # type: ignore[index]
        if kind == "claim":
            if alive:  # else the link went before the claim: the message is back already
                self.claimed_and_leads(key, self.unacked[key])
        elif kind == "reply":  # owed: published whatever became of the session
            remembered, concludes = arg  # type: ignore[misc]
            self.replies[identity] = self.replies.get(identity, 0) + 1
            self.reply_ids += 1
            reply_id = f"r{self.reply_ids}"
            self.j.replied(identity, remembered, concludes, self.now, reply_id, ME)
            self.claims.pop(key, None)
            self.todo.append(("settle", key, (remembered.settle, reply_id)))
            self.journal_moved()
        elif kind == "settle":
            how, reply_id = arg  # type: ignore[misc]
            if how in (Settle.REQUEUE, Settle.ABANDON) and key in self.claims:
                self.j.released(identity, self.claims.pop(key))  # given back unanswered
            if alive and how is not Settle.ABANDON:
                message = self.unacked.pop(key)
                if how is Settle.REQUEUE:
                    message.redelivered = True
                    self.queue.append(message)
                elif reply_id:
                    self.j.settled(identity, reply_id)  # the round trip came back
            elif reply_id:
                self.j.orphaned(identity, reply_id)  # its channel is gone: it comes again
            if key in self.claims:  # a silent settlement holds a claim: released now
                self.j.released(identity, self.claims.pop(key))
            if reply_id or how in (Settle.REQUEUE, Settle.ABANDON):
                self.journal_moved()
        elif kind == "send":
            assert isinstance(arg, SendAction)
            conn = self.conns[arg.subscriber]
            if conn is None or conn.number != arg.conn:
                self.apply(self.b.sent(key, False, self.now))
                return
            self.dials[identity] = self.dials.get(identity, 0) + 1
            conn.actions.append(Action(key, None, False))  # timing drawn by pbx_schedules
            self.todo.append(("report_sent", key, None))
        elif kind == "report_sent":
            self.apply(self.b.sent(key, True, self.now))

    # --- the sockets and the PBX -----------------------------------------------------
    @rule(
        subscriber=st.sampled_from(SUBSCRIBERS),
        delay=st.sampled_from([0.0, 1.0, 9.0, 12.0, 15.0, 19.9, None]),
        refused=st.booleans(),
    )
    def pbx_schedules(self, subscriber: str, delay: float | None, refused: bool) -> None:
        """The PBX decides when (and whether) it answers the newest action on a socket:
        within ``timeout + grace`` of receiving it, or never."""
        conn = self.conns[subscriber]
        if conn is not None:
            for action in conn.actions:
                if action.due is None and not action.refused:
                    action.due = None if delay is None else self.now + delay
                    action.refused = refused or delay is None
                    break

    @rule(subscriber=st.sampled_from(SUBSCRIBERS))
    def socket_toggles(self, subscriber: str) -> None:
        conn = self.conns[subscriber]
        if conn is None:
            self.conns[subscriber] = Conn(self.next_conn)
            self.next_conn += 1
            self.apply(self.b.socket_up(subscriber, self.next_conn - 1, self.now))
        else:
            self.conns[subscriber] = None  # unanswered actions die with the connection
            self.apply(self.b.socket_down(subscriber, conn.number, self.now))

    def pbx_answers(self, subscriber: str, conn: Conn) -> None:
        action = conn.actions.pop(0)  # may overtake the send report
        taken, effects = self.b.answer(
            subscriber, conn.number, "refused" if action.refused else None, self.now
        )
        assert taken, "a PBX answer must be recognised as one"
        attributed = [
            e
            for e in effects
            if isinstance(e, Answer) and (e.outcome is None or e.outcome.result == "pbx_error")
        ]
        if attributed:
            (answer,) = attributed
            assert answer.key == action.key, "an answer went to the wrong command"
        else:
            assert action.key in self.answered_keys  # a late answer: told timeout already
        self.apply(effects)

    @rule(dt=st.sampled_from([0.1, 1.0, 2.5, 5.0, 12.0]))
    def time_passes(self, dt: float) -> None:
        """Time runs; each PBX answer arrives exactly when due, in order per connection.
        An action whose answer time is not drawn yet is answered after 1 s."""
        target = self.now + dt
        while True:
            due = []
            for s, c in self.conns.items():
                if c is not None and c.actions:
                    head = c.actions[0]
                    if head.due is None and not head.refused:
                        head.due = self.now + 1.0  # not scheduled: a prompt success
                    if head.due is not None and head.due <= target:
                        due.append((head.due, s))
            if not due:
                break
            at, subscriber = min(due)
            self.now = max(self.now, at)
            conn = self.conns[subscriber]
            assert conn is not None
            self.pbx_answers(subscriber, conn)
        self.now = target
        self.apply(self.b.tick(self.now))
        for conn in self.conns.values():  # an answer that never comes blocks nothing after
            while conn is not None and conn.actions and conn.actions[0].due is None:
                conn.actions.pop(0)

    # --- invariants -------------------------------------------------------------------
    @invariant()
    def at_most_one_dial_per_command(self) -> None:
        assert all(count == 1 for count in self.dials.values()), self.dials

    @invariant()
    def only_busy_lines_are_kept(self) -> None:
        """Memory: a line is kept only while it has work or awaits a late answer."""
        if hasattr(self, "b"):
            for line in self.b.lines.values():
                assert line.current or line.queue or line.late_conn is not None, line

    @invariant()
    def never_more_replies_than_sends(self) -> None:
        for identity, count in self.replies.items():
            assert count <= self.sends[identity], (identity, count, self.sends[identity])

    def teardown(self) -> None:
        """Liveness: with a working broker and sockets, every send gets exactly one reply
        and every message is settled."""
        if not hasattr(self, "b"):
            return
        for s in SUBSCRIBERS:
            if self.conns[s] is None:
                self.socket_toggles(s)
        for _ in range(50 * (self.n + 5)):
            if self.todo:
                self.run(self.todo[0])
            elif self.queue:
                self.deliver()
            elif self.b.busy or self.unacked or any(c and c.actions for c in self.conns.values()):
                self.time_passes(5.0)
            else:
                break
        assert self.b.busy == 0
        assert not self.unacked, self.unacked
        assert self.replies == self.sends, (self.replies, self.sends)
        self.at_most_one_dial_per_command()


SwitchboardModel.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None
)
test_switchboard_model = SwitchboardModel.TestCase
