"""The publish pipeline: table tests of each rule, then model-based tests (hypothesis
stateful) that drive it with random interleavings of puts (repeated frames and every kind
of message the pipeline holds among them), sends, acks, nacks, returns, lost and refused
sessions, stale confirmations, poison and bounds, against a model broker, and check the
invariants the module docstring states."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from producer.core.envelope import Envelope, footprint
from producer.publish.pipeline import NACK_DELAY_MAX, NACK_DELAY_MIN, Pipeline
from producer.publish.returns import FlightsById

SUBSCRIBERS = ("a", "b", "c")


def env(
    n: int,
    subscriber: str = "a",
    body: bytes = b"",
    *,
    kind: str = "event",
    message_id: str = "",
) -> Envelope:
    """Envelope ``n`` of ``subscriber``: an event, or another ``kind`` the pipeline holds
    (``invalid``, ``outcome``, ``gap``, ``history``, ``active``)."""
    return Envelope(
        "x", f"call.dial.{subscriber}", body or str(n).encode(), message_id or f"m{n}",
        {"subscriber": subscriber, "n": n}, "call.dial", 0,
        "call.dial" if kind == "event" else kind, kind, 0.0,
    )  # fmt: skip


def numbers(envelopes: list[Envelope]) -> list[int]:
    return [int(e.headers["n"]) for e in envelopes]


def pipeline(n: int = 0, **kw: int) -> Pipeline:
    p = Pipeline(
        max_events=kw.get("max_events", 100),
        max_bytes=kw.get("max_bytes", 10**9),
        window=kw.get("window", 100),
    )
    for i in range(n):
        assert p.put(env(i)) == []
    return p


# --- table tests ----------------------------------------------------------------------


def test_nothing_is_sent_without_a_session() -> None:
    p = pipeline(3)
    assert p.take(0.0) == []
    s = p.begin_session(0.0)
    assert numbers(p.take(0.0)) == [0, 1, 2]
    assert p.inflight == 3
    assert s == p.session


def test_window_bounds_what_is_in_flight() -> None:
    p = pipeline(5, window=2)
    s = p.begin_session(0.0)
    batch = p.take(0.0)
    assert numbers(batch) == [0, 1]
    assert p.take(0.0) == []
    assert p.confirmed(s, batch[0].seq, 0.0) is batch[0]
    assert numbers(p.take(0.0)) == [2]


@pytest.mark.parametrize(
    ("results", "left", "resent"),
    [
        pytest.param("aaa", [], [], id="all-acked"),
        pytest.param("ana", [1], [1], id="nack-is-sent-again"),
        pytest.param("nna", [0, 1], [0, 1], id="nacks-in-order"),
    ],
)
def test_acks_and_nacks(results: str, left: list[int], resent: list[int]) -> None:
    p = pipeline(3)
    s = p.begin_session(0.0)
    batch = p.take(0.0)
    for envelope, result in zip(batch, results, strict=True):
        if result == "a":
            assert p.confirmed(s, envelope.seq, 0.0) is envelope
        else:
            assert p.nacked(s, envelope.seq, 0.0)
    assert numbers(list(p)) == left
    assert numbers(p.take(100.0)) == resent


def test_nacks_pause_sending_and_back_off_per_round() -> None:
    p = pipeline(4)
    s = p.begin_session(0.0)
    batch = p.take(0.0)
    p.nacked(s, batch[0].seq, 1.0)
    p.nacked(s, batch[1].seq, 1.0)  # same round: one step
    assert p.ready_at(1.0) == pytest.approx(1.0 + NACK_DELAY_MIN)
    assert p.take(1.0) == []
    again = p.take(1.0 + NACK_DELAY_MIN)
    assert numbers(again) == [0, 1]
    p.nacked(s, again[0].seq, 2.0)
    assert p.ready_at(2.0) == pytest.approx(2.0 + 2 * NACK_DELAY_MIN)
    p.confirmed(s, batch[2].seq, 2.0)  # an ack resets the backoff
    p.nacked(s, again[1].seq, 3.0)
    assert p.ready_at(3.0) == pytest.approx(3.0 + NACK_DELAY_MIN)


def test_nack_delay_is_capped() -> None:
    p = pipeline(1)
    s = p.begin_session(0.0)
    now = 0.0
    for _ in range(20):
        (e,) = p.take(now)
        p.nacked(s, e.seq, now)
        now = p.ready_at(now) or now
    assert p.ready_at(now - 0.001) is not None
    assert now - (now - NACK_DELAY_MAX) == NACK_DELAY_MAX


def test_a_lost_session_rewinds_in_order_before_newer() -> None:
    p = pipeline(6, window=4)
    s = p.begin_session(0.0)
    batch = p.take(0.0)
    p.confirmed(s, batch[1].seq, 0.0)
    ended = p.end_session(s, refused=False, now=0.0)
    assert ended.rewound == 3  # 0, 2, 3 were in flight; 4, 5 were never sent
    p.begin_session(1.0)
    assert numbers(p.take(1.0)) == [0, 2, 3, 4]  # the window again


def test_stale_confirmations_of_a_dead_session_change_nothing() -> None:
    p = pipeline(2)
    old = p.begin_session(0.0)
    first = p.take(0.0)
    p.end_session(old, refused=False, now=0.0)
    new = p.begin_session(1.0)
    again = p.take(1.0)
    assert [e.seq for e in again] == [e.seq for e in first]
    assert p.confirmed(old, first[0].seq, 1.0) is None
    assert not p.nacked(old, first[1].seq, 1.0)
    assert p.returned(old, first[0].message_id, 1.0) is None
    assert p.unencodable(old, first[1].seq) is None
    assert p.end_session(old, refused=True, now=1.0).rewound == 0
    assert p.inflight == 2
    assert p.confirmed(new, again[0].seq, 1.0) is again[0]


def play(ids: str, script: str) -> tuple[list[int | None], list[int], list[int]]:
    """Put one event per letter of ``ids`` (the letter is its message id, so a repeated
    letter is a repeated frame), then play ``script``: ``B`` begin a session, ``E`` end it
    (lost), ``T`` take (after any pause), ``A3``/``N3`` the broker acks/nacks envelope 3,
    ``Rx`` it returns message id ``x`` on the current session, ``rx`` on the one before.
    Returns which envelope each return completed (None: none), which the acks confirmed,
    and what is still held."""
    p = Pipeline(max_events=100, max_bytes=10**9, window=100)
    put = [env(n, message_id=mid) for n, mid in enumerate(ids)]
    for e in put:
        p.put(e)
    returned: list[int | None] = []
    acked: list[int] = []
    now = 0.0
    for step in script.split():
        op, arg = step[0], step[1:]
        now += NACK_DELAY_MAX
        if op == "B":
            p.begin_session(now)
        elif op == "E":
            p.end_session(p.session, refused=False, now=now)
        elif op == "T":
            p.take(now)
        elif op == "A":
            got = p.confirmed(p.session, put[int(arg)].seq, now)
            acked += [] if got is None else [int(got.headers["n"])]
        elif op == "N":
            assert p.nacked(p.session, put[int(arg)].seq, now)
        else:
            session = p.session if op == "R" else p.session - 1
            got = p.returned(session, arg, now)
            returned.append(None if got is None else int(got.headers["n"]))
    return returned, acked, numbers(list(p))


@pytest.mark.parametrize(
    ("ids", "script", "returned", "acked", "held"),
    [
        pytest.param("a", "B T Ra A0", [0], [], [], id="single"),
        pytest.param("ab", "B T Rb Ra A0 A1", [1, 0], [], [], id="distinct-ids"),
        pytest.param("aa", "B T Ra A0 Ra A1", [0, 1], [], [], id="duplicates-oldest-first"),
        pytest.param("aa", "B T A0 Ra A1", [1], [0], [], id="duplicates-first-was-routed"),
        pytest.param("aaa", "B T Ra Ra Ra A0 A1 A2", [0, 1, 2], [], [], id="three-in-flight"),
        # 0 is nacked and sent again after 1: publish order, not sequence order, decides.
        pytest.param("aa", "B T N0 T Ra A1 A0", [1], [0], [], id="duplicates-resent-after-nack"),
        pytest.param("ab", "B T Rc", [None], [], [0, 1], id="unknown-id"),
        pytest.param("a", "B T A0 Ra", [None], [0], [], id="after-its-ack"),
        pytest.param("a", "B T E Ra", [None], [], [0], id="after-session-end"),
        pytest.param("a", "B T E B T ra A0", [None], [0], [], id="for-the-session-before"),
        pytest.param("a", "B T E B Ra", [None], [], [0], id="rewound-not-yet-sent"),
        pytest.param("aa", "B T Ra E B T Ra A1", [0, 1], [], [], id="duplicate-across-sessions"),
    ],
)
def test_a_return_completes_the_oldest_in_flight_with_its_message_id(
    ids: str, script: str, returned: list[int | None], acked: list[int], held: list[int]
) -> None:
    """A return names a message id, not a delivery tag; returns and acks come in publish
    order. Every envelope is completed once: by a return or by an ack, never both."""
    assert play(ids, script) == (returned, acked, held)


def test_flights_by_id_keep_send_order_and_forget_what_landed() -> None:
    flights = FlightsById()
    for seq, mid in ((1, "a"), (2, "b"), (3, "a"), (4, "a")):
        flights.sent(mid, seq)
    assert (flights.oldest("a"), flights.oldest("b"), flights.oldest("c")) == (1, 2, None)
    flights.landed("a", 3)  # out of order (a nack of a later copy)
    flights.landed("a", 1)
    assert flights.oldest("a") == 4
    flights.landed("a", 4)
    flights.landed("b", 2)
    assert (flights.oldest("a"), len(flights)) == (None, 0)


@pytest.mark.parametrize("kind", ["event", "invalid", "outcome", "gap", "history", "active"])
def test_a_nack_of_any_kind_pauses_everything_held(kind: str) -> None:
    """One queue, one pause: whatever was nacked, nothing is sent until the pause is over,
    then it goes first, before what is newer (click2call replies, which a caller's queue
    may refuse for good, are not published here)."""
    p = Pipeline(max_events=100, max_bytes=10**9, window=100)
    p.put(env(0, kind=kind))
    p.put(env(1))
    s = p.begin_session(0.0)
    nacked, other = p.take(0.0)
    assert p.nacked(s, nacked.seq, 1.0)
    assert p.confirmed(s, other.seq, 1.0) is other  # resets the backoff, not this pause
    p.put(env(2, kind=kind))
    p.put(env(3))
    assert p.ready_at(1.0) == pytest.approx(1.0 + NACK_DELAY_MIN)
    assert p.take(1.0) == []
    assert p.take(1.0 + NACK_DELAY_MIN / 2) == []
    assert numbers(p.take(1.0 + NACK_DELAY_MIN)) == [0, 2, 3]


@pytest.mark.parametrize(
    ("max_events", "max_bytes", "puts", "kept"),
    [
        pytest.param(3, 10**9, 5, [2, 3, 4], id="count"),
        pytest.param(100, 3 * 1030, 5, [2, 3, 4], id="bytes"),
        pytest.param(1, 10**9, 3, [2], id="one"),
    ],
)
def test_bounds_drop_the_oldest(
    max_events: int, max_bytes: int, puts: int, kept: list[int]
) -> None:
    p = Pipeline(max_events=max_events, max_bytes=max_bytes, window=10)
    dropped = []
    for n in range(puts):
        dropped += p.put(env(n, body=b"x" * 5))
    assert numbers(list(p)) == kept
    assert numbers(dropped) == [n for n in range(puts) if n not in kept]
    assert p.bytes == sum(footprint(e) for e in p)


def test_when_full_waiting_ones_go_before_those_in_flight() -> None:
    p = Pipeline(max_events=3, max_bytes=10**9, window=2)
    for n in range(3):
        p.put(env(n))
    p.begin_session(0.0)
    assert numbers(p.take(0.0)) == [0, 1]
    assert numbers(p.put(env(3))) == [2]  # 0 and 1 are in flight
    assert numbers(p.put(env(4))) == [3]
    assert numbers(p.take(0.0)) == []  # the window is full
    p2 = Pipeline(max_events=2, max_bytes=10**9, window=2)
    p2.put(env(0))
    p2.put(env(1))
    p2.begin_session(0.0)
    p2.take(0.0)
    assert numbers(p2.put(env(2))) == [0]  # only in flight left: the oldest goes anyway
    assert p2.inflight == 1


def test_unencodable_is_poisoned_at_once() -> None:
    p = pipeline(3)
    s = p.begin_session(0.0)
    batch = p.take(0.0)
    assert p.unencodable(s, batch[1].seq) is batch[1]
    assert numbers(list(p)) == [0, 2]


def refuse(p: Pipeline, now: float) -> list[int]:
    """The broker refuses whatever is in flight now; returns what was poisoned."""
    ended = p.end_session(p.session, refused=True, now=now)
    p.begin_session(now)
    return numbers(ended.poisoned)


def test_a_poison_message_is_found_among_its_neighbours() -> None:
    """3 is poison: the broker refuses any session it is in flight in."""
    p = pipeline(8)
    s = p.begin_session(0.0)
    assert len(p.take(0.0)) == 8
    assert refuse(p, 1.0) == []
    assert p.suspects == 8
    sent = []
    poisoned: list[int] = []
    for step in range(40):
        batch = p.take(float(step))
        assert len(batch) <= 1  # probation: one at a time
        if not batch:
            break
        (e,) = batch
        sent.append(int(e.headers["n"]))
        if e.headers["n"] == 3:
            poisoned += refuse(p, float(step))
        else:
            p.confirmed(p.session, e.seq, float(step))
    assert poisoned == [3]
    assert len(p) == 0
    assert sent[:4] == [0, 1, 2, 3]  # in order until the poison is met
    assert s < p.session


def test_a_broker_refusing_everything_drops_nothing() -> None:
    p = pipeline(4)
    p.begin_session(0.0)
    in_flight = p.take(0.0)
    for step in range(30):
        assert refuse(p, float(step)) == []
        in_flight = p.take(float(step))
        assert len(in_flight) == 1
    assert len(p) == 4
    # Fixed: everything goes out, one at a time, then normally.
    for step in range(30, 40):
        for e in in_flight:
            p.confirmed(p.session, e.seq, float(step))
        in_flight = p.take(float(step))
    assert len(p) == 0
    assert p.suspects == 0


def test_stall_is_no_confirmation_while_publishes_wait_unless_blocked() -> None:
    p = pipeline(2)
    s = p.begin_session(0.0)
    assert not p.stalled(100.0, 30.0)  # nothing in flight
    p.take(10.0)
    assert not p.stalled(39.0, 30.0)
    assert p.stalled(41.0, 30.0)
    p.set_blocked(True, 41.0)
    assert not p.stalled(1000.0, 30.0)
    p.set_blocked(False, 1000.0)  # the clock restarts when unblocked
    assert not p.stalled(1029.0, 30.0)
    assert p.stalled(1031.0, 30.0)
    p.confirmed(s, 1, 1031.0)
    assert not p.stalled(1031.0, 30.0)


def test_recovered_envelopes_keep_their_sequence_numbers() -> None:
    p = pipeline()
    recovered = [env(n) for n in range(3)]
    for seq, e in zip((7, 8, 12), recovered, strict=True):
        e.seq = seq
        p.put(e, journaled=True)
    fresh = env(3)
    p.put(fresh)
    assert fresh.seq == 13
    assert p.oldest_seq == 7
    assert numbers(p.drop_range(8, 12)) == [1, 2]
    assert p.oldest_seq == 7


def test_journal_sees_every_append_and_removal() -> None:
    @dataclass
    class Journal:
        log: list[tuple[str, int]] = field(default_factory=list)

        def append(self, envelope: Envelope) -> None:
            self.log.append(("+", envelope.seq))

        def remove(self, seq: int) -> None:
            self.log.append(("-", seq))

    journal = Journal()
    p = Pipeline(max_events=2, max_bytes=10**9, window=10, journal=journal)
    for n in range(3):
        p.put(env(n))
    s = p.begin_session(0.0)
    (a, b) = p.take(0.0)
    p.confirmed(s, a.seq, 0.0)
    p.unencodable(s, b.seq)
    assert journal.log == [("+", 1), ("+", 2), ("-", 1), ("+", 3), ("-", 2), ("-", 3)]


# --- the model ------------------------------------------------------------------------


@dataclass
class Wire:
    """What one broker session holds: messages written, in order, not yet answered."""

    session: int
    messages: list[Envelope] = field(default_factory=list)


class PipelineModel(RuleBasedStateMachine):
    """A model broker around the pipeline. Refusals come from poison messages only (the
    broker closes the channel when it meets one) or, in ``refuse_all`` mode, from every
    message (wrong permissions): the invariants say what each may cost. Some envelopes are
    repeated frames (the message id of an earlier one), some are of other kinds than
    events (outcomes, history): every kind has the same fate, and a nack of any of them
    pauses all sending."""

    HOSTILE = True  # poison messages, and a broker that may refuse everything

    @initialize(
        max_events=st.integers(1, 12),
        max_bytes=st.integers(1100, 8000),
        window=st.integers(1, 6),
    )
    def setup(self, max_events: int, max_bytes: int, window: int) -> None:
        self.p = Pipeline(max_events=max_events, max_bytes=max_bytes, window=window)
        self.now = 0.0
        self.n = 0
        self.put_ = 0
        self.poison: set[int] = set()
        self.confirmed: set[int] = set()
        self.dropped: set[int] = set()
        self.poisoned: set[int] = set()
        self.ids: dict[int, str] = {}  # n -> message id (repeated frames share one)
        self.wire: Wire | None = None
        self.old_wires: list[Wire] = []
        self.first_sent: dict[str, list[int]] = {s: [] for s in SUBSCRIBERS}
        self.in_flight_model: set[int] = set()
        self.refuse_all = False

    # --- what happens -----------------------------------------------------------------
    @rule(
        subscriber=st.sampled_from(SUBSCRIBERS),
        poison=st.booleans(),
        size=st.integers(0, 900),
        kind=st.sampled_from(["event", "event", "event", "outcome", "history", "repeat"]),
    )
    def put(self, subscriber: str, poison: bool, size: int, kind: str = "event") -> None:
        mid = f"m{self.n}"
        if kind == "repeat":  # the PBX repeats a recent frame: same message id
            kind, mid = "event", self.ids.get(self.n - 1, mid)
        e = env(self.n, subscriber, b"x" * size or b"{}", kind=kind, message_id=mid)
        self.ids[self.n] = mid
        if poison and self.n % 5 == 0 and self.HOSTILE:
            self.poison.add(self.n)
        self.n += 1
        self.put_ += 1
        for gone in self.p.put(e):
            self.dropped.add(int(gone.headers["n"]))
            self.in_flight_model.discard(int(gone.headers["n"]))

    @precondition(lambda self: self.wire is None)
    @rule()
    def open_session(self) -> None:
        self.wire = Wire(self.p.begin_session(self.now))

    @precondition(lambda self: self.wire is not None)
    @rule()
    def take(self) -> None:
        assert self.wire is not None
        paused = self.p.ready_at(self.now) is not None
        batch = self.p.take(self.now)
        assert not (paused and batch)  # a nack's pause holds every kind
        seqs = [e.seq for e in batch]
        assert seqs == sorted(seqs)
        for e in batch:
            n = int(e.headers["n"])
            # No overtaking: every older held envelope of this subscriber is in flight,
            # but for a suspected poison message.
            older_waiting = [
                int(o.headers["n"])
                for o in self.p
                if o.headers["subscriber"] == e.headers["subscriber"]
                and o.seq < e.seq
                and int(o.headers["n"]) not in self.in_flight_model
                and not self.p.deferred(o.seq)
            ]
            assert older_waiting == [], (n, older_waiting)
            self.in_flight_model.add(n)
            sent = self.first_sent[str(e.headers["subscriber"])]
            if n not in sent:
                sent.append(n)
        self.wire.messages += batch

    @precondition(lambda self: self.wire is not None and self.wire.messages)
    @rule(result=st.sampled_from(["ack", "ack", "ack", "return", "nack"]))
    def broker_answers(self, result: str) -> None:
        """The broker takes the oldest message written: acks, returns (then acks), nacks
        it, or closes the channel (a poison message, or refuse-all)."""
        assert self.wire is not None
        e = self.wire.messages.pop(0)
        n = int(e.headers["n"])
        if n in self.poison or self.refuse_all:
            self.end(refused=True)
            return
        self.in_flight_model.discard(n)
        gone = self.dropped
        if result == "nack":
            if self.p.nacked(self.wire.session, e.seq, self.now):
                assert n in {int(o.headers["n"]) for o in self.p}  # held, never dropped
                assert self.p.ready_at(self.now) is not None  # whatever its kind: a pause
            else:
                # Dropped while in flight, or completed by a return of its message id.
                assert n in gone or n in self.confirmed
            return
        if result == "return":
            # The oldest in flight with this id is the one returned; when that one is no
            # longer in flight (dropped meanwhile, or completed by the return of a copy
            # that was dropped), the return completes a later copy: the same message.
            got = self.p.returned(self.wire.session, e.message_id, self.now)
            if got is not None:
                assert got.message_id == e.message_id
                assert got is e or n in gone or n in self.confirmed
                self.confirmed.add(int(got.headers["n"]))
            else:
                assert n in gone or n in self.confirmed
        got = self.p.confirmed(self.wire.session, e.seq, self.now)  # the ack
        if got is not None:
            assert result == "ack"
            self.confirmed.add(n)
        else:
            assert n in gone or n in self.confirmed  # dropped, or returned: ignored

    @precondition(lambda self: self.wire is not None)
    @rule(results=st.lists(st.sampled_from(["ack", "return", "nack"]), min_size=2, max_size=8))
    def busy_session(self, results: list[str]) -> None:
        """Sends, then several answers in a row (as they come off a socket), so that
        sessions see more answers than losses."""
        self.take()
        for result in results:
            if self.wire is None or not self.wire.messages:
                break
            self.broker_answers(result)

    @precondition(lambda self: self.wire is not None)
    @rule()
    def connection_lost(self) -> None:
        self.end(refused=False)

    @precondition(lambda self: self.wire is not None and self.wire.messages)
    @rule(data=st.data())
    def unencodable(self, data: st.DataObject) -> None:
        assert self.wire is not None
        e = data.draw(st.sampled_from(self.wire.messages))
        self.wire.messages.remove(e)
        got = self.p.unencodable(self.wire.session, e.seq)
        if got is not None:
            self.poisoned.add(int(got.headers["n"]))
            self.poison.add(int(got.headers["n"]))  # it was poison for the encoder
        self.in_flight_model.discard(int(e.headers["n"]))

    @precondition(lambda self: bool(self.old_wires))
    @rule(data=st.data(), kind=st.sampled_from(["ack", "nack", "return", "unencodable", "end"]))
    def stale_result(self, data: st.DataObject, kind: str) -> None:
        """A callback of a dead channel fires late: it must change nothing."""
        wire = data.draw(st.sampled_from(self.old_wires))
        if not wire.messages:
            return
        e = data.draw(st.sampled_from(wire.messages))
        held, inflight = len(self.p), self.p.inflight
        if kind == "ack":
            assert self.p.confirmed(wire.session, e.seq, self.now) is None
        elif kind == "nack":
            assert not self.p.nacked(wire.session, e.seq, self.now)
        elif kind == "return":
            assert self.p.returned(wire.session, e.message_id, self.now) is None
        elif kind == "unencodable":
            assert self.p.unencodable(wire.session, e.seq) is None
        else:
            assert self.p.end_session(wire.session, refused=True, now=self.now).rewound == 0
        assert (len(self.p), self.p.inflight) == (held, inflight)

    @rule(dt=st.sampled_from([0.01, 0.1, 1.0, 6.0, 30.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.wire is None and self.HOSTILE)
    @rule()
    def toggle_refuse_all(self) -> None:
        """The broker starts or stops refusing everything (between sessions: a refusal
        that depends on the message is the same every time, one that does not lasts)."""
        self.refuse_all = not self.refuse_all

    @rule(count=st.integers(1, 3))
    def spool_evicts_oldest(self, count: int) -> None:
        held = list(self.p)[:count]
        if held:
            for gone in self.p.drop_range(held[0].seq, held[-1].seq):
                self.dropped.add(int(gone.headers["n"]))
                self.in_flight_model.discard(int(gone.headers["n"]))

    def end(self, *, refused: bool) -> None:
        assert self.wire is not None
        ended = self.p.end_session(self.wire.session, refused=refused, now=self.now)
        for e in ended.poisoned:
            self.poisoned.add(int(e.headers["n"]))
        self.old_wires = [*self.old_wires[-3:], self.wire]
        self.wire = None
        self.in_flight_model.clear()

    # --- invariants -------------------------------------------------------------------
    @invariant()
    def nothing_is_silently_gone(self) -> None:
        held = {int(e.headers["n"]) for e in self.p}
        outcomes = [held, self.confirmed, self.dropped, self.poisoned]
        assert sum(len(s) for s in outcomes) == self.put_
        assert set().union(*outcomes) == set(range(self.n))

    @invariant()
    def every_flight_is_indexed_by_its_message_id(self) -> None:
        assert len(self.p._flights) == self.p.inflight

    @invariant()
    def bounds_hold(self) -> None:
        assert len(self.p) <= self.p.max_events
        assert self.p.bytes == sum(footprint(e) for e in self.p)
        assert self.p.bytes <= self.p.max_bytes
        assert self.p.inflight <= self.p.window

    @invariant()
    def only_poison_is_poisoned(self) -> None:
        assert self.poisoned <= self.poison

    @invariant()
    def first_sends_are_in_order_per_subscriber(self) -> None:
        for sent in self.first_sent.values():
            assert sent == sorted(sent)

    def teardown(self) -> None:
        """Liveness: once the broker works, everything held is confirmed or poisoned."""
        if not hasattr(self, "p"):
            return
        self.refuse_all = False
        for _ in range(20 * (self.n + 5)):
            if all(int(e.headers["n"]) in self.poison for e in self.p) and len(self.p):
                # A lone poison message is only told from a broker refusing everything
                # once another message gets through: real traffic brings one.
                self.put("a", poison=False, size=0)
            if self.wire is None:
                self.open_session()
            self.take()
            assert self.wire is not None
            if self.wire.messages:
                self.broker_answers("ack")
            self.now += NACK_DELAY_MAX
            if not len(self.p):
                break
        assert len(self.p) == 0, [int(e.headers["n"]) for e in self.p]
        self.nothing_is_silently_gone()
        self.only_poison_is_poisoned()


PipelineModel.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_pipeline_model = PipelineModel.TestCase


class BrokerWithoutPoisonModel(PipelineModel):
    """The same model with a broker that never closes the channel on a message: most of
    its answers are then acks, returns and nacks, where repeated frames meet the rules made
    for them (with poison about, most sessions end on a refusal)."""

    HOSTILE = False


BrokerWithoutPoisonModel.TestCase.settings = PipelineModel.TestCase.settings
test_pipeline_model_without_poison = BrokerWithoutPoisonModel.TestCase
