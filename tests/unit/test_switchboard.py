"""The click2call switchboard: table tests of each rule, then a model-based test (hypothesis
stateful) against a model broker (deliveries, acks, redeliveries after a lost session) and
a model PBX (answers in order per connection, within ``timeout + grace`` or never; sockets
that drop and come back), checking the invariants the module docstring states."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from producer.click2call.commands import Command
from producer.click2call.effects import (
    Delivery,
    Effect,
    Reply,
    SendAction,
    Settle,
    SettleMessage,
)
from producer.click2call.switchboard import LOST_BEFORE_ANSWER, Switchboard
from producer.errors import CommandError, InvalidCommand, UnknownSubscriber

TIMEOUT, GRACE, CONNECT_WAIT = 10.0, 10.0, 3.0


def board() -> Switchboard:
    return Switchboard(timeout=TIMEOUT, grace=GRACE, connect_wait=CONNECT_WAIT)


def delivery(
    n: int,
    subscriber: str = "001",
    *,
    session: int = 1,
    redelivered: bool = False,
    error: CommandError | None = None,
    fresh_until: float = 1e9,
    identity: str | None = None,
) -> Delivery:
    command = None if error else Command(subscriber, f"38099{n:07d}", f"38099{n:07d}", n)
    return Delivery(
        key=(session, n),
        session=session,
        identity=identity or f"id{n}",
        redelivered=redelivered,
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
            out.append(f"reply:{e.key[1]}:{result}")  # type: ignore[index]
    return out


def dial(b: Switchboard, n: int, conn: int = 1, now: float = 0.0) -> None:
    """Deliver command ``n`` on an open socket and take it to awaiting its answer."""
    assert kinds(b.deliver(delivery(n), now)) == [f"ack:{n}"]
    assert kinds(b.acked((1, n), True, now)) == [f"send:{n}@{conn}"]
    assert b.sent((1, n), True, now) == []


# --- table tests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            InvalidCommand("invalid command: x"), ["reply:1:invalid", "reject:1"], id="invalid"
        ),
        pytest.param(
            UnknownSubscriber("unknown subscriber"),
            ["reply:1:unknown_subscriber", "reject:1"],
            id="unknown",
        ),
    ],
)
def test_bad_commands_are_answered_and_rejected(error: CommandError, expected: list[str]) -> None:
    assert kinds(board().deliver(delivery(1, error=error), 0.0)) == expected


def test_a_command_is_acked_before_it_is_dialed_and_answered() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    taken, effects = b.answer("001", 1, None, 1.0)
    assert taken
    assert kinds(effects) == ["reply:1:success"]
    assert b.busy == 0


def test_the_pbx_refusal_is_the_reply() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    _, effects = b.answer("001", 1, "number unreachable", 1.0)
    (reply,) = effects
    assert isinstance(reply, Reply)
    assert reply.outcome is not None
    assert reply.outcome.result == "pbx_error"
    assert reply.pbx_message == "number unreachable"


def test_one_command_in_flight_per_socket() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    assert b.deliver(delivery(2), 0.0) == []  # waits its turn
    assert kinds(b.deliver(delivery(3, "002"), 0.0)) == []  # 002 has no socket yet
    _, effects = b.answer("001", 1, None, 1.0)
    assert kinds(effects) == ["reply:1:success", "ack:2"]


def test_an_answer_on_another_connection_is_not_the_commands() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    taken, effects = b.answer("001", 2, None, 1.0)
    assert (taken, effects) == (False, [])


def test_socket_drop_while_awaiting_answers_lost() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    (reply,) = b.socket_down("001", 1, 1.0)
    assert isinstance(reply, Reply)
    assert reply.outcome is not None
    assert str(reply.outcome) == LOST_BEFORE_ANSWER


def test_timeout_then_the_late_answer_is_discarded_not_given_to_the_next() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 1.0)
    assert kinds(b.tick(TIMEOUT + 0.1)) == ["reply:1:timeout"]  # 2 waits for the late answer
    taken, effects = b.answer("001", 1, "late refusal", TIMEOUT + 5)
    assert taken
    assert kinds(effects) == ["ack:2"]


@pytest.mark.parametrize("written", [True, False], ids=["written-late", "never-written"])
def test_a_write_that_hangs_times_out_and_holds_the_line_until_reported(written: bool) -> None:
    """The caller hears "timeout" at once, but the next command waits until the adapter
    reports the write: a write that goes out late is answered late, and that answer must
    not be taken for the next command's (found by the model test below)."""
    b = board()
    b.socket_up("001", 1, 0.0)
    b.deliver(delivery(1), 0.0)
    assert kinds(b.acked((1, 1), True, 0.0)) == ["send:1@1"]  # not reported sent yet
    b.deliver(delivery(2), 0.0)
    assert b.next_deadline() == TIMEOUT
    assert kinds(b.tick(TIMEOUT)) == ["reply:1:timeout"]
    assert b.next_deadline() is None  # nothing to time: the report will come
    assert kinds(b.tick(TIMEOUT + GRACE + 100)) == []
    later = TIMEOUT + GRACE + 100
    if written:
        assert b.sent((1, 1), True, later) == []
        taken, effects = b.answer("001", 1, None, later + 1)  # its answer: discarded
        assert taken
        assert kinds(effects) == ["ack:2"]
    else:
        assert kinds(b.sent((1, 1), False, later)) == ["ack:2"]


def test_timeout_then_no_late_answer_frees_the_line_after_the_grace() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 1.0)
    b.tick(TIMEOUT)
    assert b.next_deadline() == pytest.approx(TIMEOUT + GRACE)
    assert kinds(b.tick(TIMEOUT + GRACE)) == ["ack:2"]


def test_a_new_connection_ends_the_wait_for_a_late_answer() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 1.0)
    b.tick(TIMEOUT)
    assert b.socket_down("001", 1, TIMEOUT + 1) == []
    assert kinds(b.socket_up("001", 2, TIMEOUT + 2)) == ["ack:2"]


def test_no_socket_waits_then_not_connected() -> None:
    b = board()
    assert b.deliver(delivery(1), 0.0) == []
    assert b.next_deadline() == CONNECT_WAIT
    assert kinds(b.tick(CONNECT_WAIT)) == ["reply:1:not_connected", "reject:1"]


def test_the_socket_coming_up_in_time_gets_the_command_dialed() -> None:
    b = board()
    b.deliver(delivery(1), 0.0)
    assert kinds(b.socket_up("001", 1, 1.0)) == ["ack:1"]


@pytest.mark.parametrize(
    ("fresh_until", "now", "expected"),
    [
        pytest.param(5.0, 6.0, ["reply:1:expired", "reject:1"], id="stale-on-arrival"),
        pytest.param(5.0, 4.0, ["ack:1"], id="fresh"),
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
    assert kinds(effects) == ["reply:1:success", "reply:2:expired", "reject:2"]


def test_a_redelivered_command_already_dialed_is_acked_silently() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    again = delivery(1, session=2, redelivered=True)
    assert kinds(b.deliver(again, 1.0)) == ["ack:1"]
    assert b.busy == 1  # only the first copy, still awaiting its answer


def test_a_redelivered_command_already_rejected_is_rejected_silently() -> None:
    b = board()
    first = delivery(1, error=InvalidCommand("invalid command: x"))
    assert kinds(b.deliver(first, 0.0)) == ["reply:1:invalid", "reject:1"]
    again = delivery(1, session=2, redelivered=True, error=InvalidCommand("invalid command: x"))
    assert kinds(b.deliver(again, 1.0)) == ["reject:1"]


def test_an_ack_that_never_left_abandons_the_command() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    b.deliver(delivery(1), 0.0)
    b.deliver(delivery(2), 0.0)
    assert kinds(b.acked((1, 1), False, 0.0)) == ["ack:2"]
    assert "id1" not in b.settled


def test_a_lost_session_abandons_its_waiting_commands_only() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 0.0)
    b.deliver(delivery(3, "002"), 0.0)
    assert kinds(b.session_lost(1, 1.0)) == ["abandon:2", "abandon:3"]
    _, effects = b.answer("001", 1, None, 2.0)
    assert kinds(effects) == ["reply:1:success"]  # the dialed one still gets its answer


def test_stop_gives_back_what_waits_and_lets_the_dialed_finish() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    dial(b, 1)
    b.deliver(delivery(2), 0.0)
    b.deliver(delivery(3, "002"), 0.0)
    assert kinds(b.stop(1.0)) == ["requeue:2", "requeue:3"]
    assert kinds(b.deliver(delivery(4), 1.0)) == ["requeue:4"]
    _, effects = b.answer("001", 1, None, 2.0)
    assert kinds(effects) == ["reply:1:success"]
    assert b.busy == 0


def test_an_answer_can_come_before_the_send_is_reported() -> None:
    b = board()
    b.socket_up("001", 1, 0.0)
    b.deliver(delivery(1), 0.0)
    b.acked((1, 1), True, 0.0)
    taken, effects = b.answer("001", 1, None, 0.1)
    assert taken
    assert kinds(effects) == ["reply:1:success"]
    assert b.sent((1, 1), True, 0.2) == []


# --- the model ------------------------------------------------------------------------

SUBSCRIBERS = ("001", "002")


@dataclass
class Message:
    """A command message in the model broker."""

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
    """The switchboard between a model broker and a model PBX; the adapter's work (settle
    messages, write actions, report back) is a to-do list run in any order."""

    @initialize()
    def setup(self) -> None:
        self.b = board()
        self.now = 0.0
        self.n = 0
        self.queue: list[Message] = []
        self.session = 1
        self.unacked: dict[Hashable, Message] = {}  # delivered, not settled in the broker
        self.todo: list[Todo] = []
        self.conns: dict[str, Conn | None] = dict.fromkeys(SUBSCRIBERS)
        self.next_conn = 1
        self.replies: dict[str, list[Reply]] = {}
        self.identities: set[str] = set()
        self.dials: dict[str, int] = {}
        self.key_identity: dict[Hashable, str] = {}
        self.replied_keys: set[Hashable] = set()

    def apply(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, SettleMessage):
                self.todo.append(("settle", e.key, e.how))
            elif isinstance(e, SendAction):
                self.todo.append(("send", e.key, e))
            else:
                assert e.key not in self.replied_keys
                self.replied_keys.add(e.key)
                self.replies.setdefault(self.key_identity[e.key], []).append(e)

    # --- the broker -------------------------------------------------------------------
    @rule(
        subscriber=st.sampled_from(SUBSCRIBERS),
        valid=st.booleans(),
        max_age=st.sampled_from([1.0, 30.0, 1e6, 1e6]),
    )
    def publish_command(self, subscriber: str, valid: bool, max_age: float) -> None:
        identity = f"id{self.n}"
        self.n += 1
        self.identities.add(identity)
        valid = valid or self.n % 4 != 0
        self.queue.append(Message(identity, subscriber, valid, max_age, self.now))

    @precondition(lambda self: bool(self.queue))
    @rule()
    def deliver(self) -> None:
        message = self.queue.pop(0)
        key = (self.session, self.n, message.identity)
        self.n += 1
        self.unacked[key] = message
        self.key_identity[key] = message.identity
        n = int(message.identity[2:])
        command = Command(message.subscriber, "380991234567", "380991234567", n)
        d = Delivery(
            key=key,
            session=self.session,
            identity=message.identity,
            redelivered=message.redelivered,
            command=command if message.valid else None,
            error=None if message.valid else InvalidCommand("invalid command: x"),
            fresh_until=message.created + message.max_age,
        )
        self.apply(self.b.deliver(d, self.now))

    @rule()
    def lose_session(self) -> None:
        """Unsettled deliveries of the session (an ack still on the wire included) go back
        to the queue, redelivered; the adapter's consumer tasks for it are cancelled."""
        for key, message in list(self.unacked.items()):
            if key[0] == self.session:  # type: ignore[index]
                del self.unacked[key]
                message.redelivered = True
                self.queue.append(message)
        lost = self.session
        self.session += 1
        self.apply(self.b.session_lost(lost, self.now))
        for item in list(self.todo):  # a cancelled handle(): its message is abandoned
            kind, key, _ = item
            if kind == "settle" and key[0] == lost:  # type: ignore[index]
                self.todo.remove(item)
                self.apply(self.b.abandon(key, self.now))

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
        alive = key[0] == self.session and key in self.unacked  # type: ignore[index]
        if kind == "settle" and arg is Settle.ACK:
            if alive:
                self.todo.append(("ack_reaches_broker", key, None))
                self.todo.append(("report_ack", key, True))
            else:  # the channel was closed before: the ack never left
                self.apply(self.b.acked(key, False, self.now))
        elif kind == "settle":
            if alive:
                message = self.unacked.pop(key)
                if arg is Settle.REQUEUE:
                    message.redelivered = True
                    self.queue.append(message)
        elif kind == "ack_reaches_broker":
            if alive:
                del self.unacked[key]
        elif kind == "report_ack":
            self.apply(self.b.acked(key, True, self.now))
        elif kind == "send":
            assert isinstance(arg, SendAction)
            conn = self.conns[arg.subscriber]
            if conn is None or conn.number != arg.conn:
                self.apply(self.b.sent(key, False, self.now))
                return
            identity = self.key_identity[key]
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
            if isinstance(e, Reply) and (e.outcome is None or e.outcome.result == "pbx_error")
        ]
        if attributed:
            (reply,) = attributed
            assert reply.key == action.key, "an answer went to the wrong command"
        else:
            assert action.key in self.replied_keys  # a late answer: told timeout already
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
    def at_most_one_action_per_command(self) -> None:
        assert all(count == 1 for count in self.dials.values()), self.dials

    @invariant()
    def at_most_one_reply_per_command(self) -> None:
        assert all(len(r) == 1 for r in self.replies.values()), self.replies

    def teardown(self) -> None:
        """Liveness: with a working broker and sockets, every command gets exactly one
        reply and every message is settled."""
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
        assert not self.unacked
        assert set(self.replies) == self.identities, self.identities - set(self.replies)
        self.at_most_one_reply_per_command()
        self.at_most_one_action_per_command()


SwitchboardModel.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None
)
test_switchboard_model = SwitchboardModel.TestCase
