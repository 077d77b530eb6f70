"""Replica roles without a broker: rendezvous ranking, the live set, roles and changes,
the standby window — table tests, and a model-based test of ownership invariants."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from producer.envelope import Envelope
from producer.replicas.membership import Membership, Role, ranking
from producer.replicas.standby import StandbyWindow

SUBSCRIBERS = [f"{n:04d}" for n in range(3000)]


def test_rendezvous_spreads_evenly_and_moves_only_a_share() -> None:
    three = dict.fromkeys(("a", "b", "c"), 0)
    for s in SUBSCRIBERS:
        three[ranking(three, s)[0]] += 1
    assert all(800 <= n <= 1200 for n in three.values()), three
    moved = sum(ranking("abcd", s)[0] != ranking("abc", s)[0] for s in SUBSCRIBERS)
    assert 550 <= moved <= 950  # about a quarter goes to the new replica, nothing else moves
    assert all(ranking("abcd", s)[0] in (ranking("abc", s)[0], "d") for s in SUBSCRIBERS)


@pytest.mark.parametrize(
    ("events", "now", "live"),
    [
        pytest.param([], 0.0, {"me"}, id="alone"),
        pytest.param([("b", 0.0, False)], 1.0, {"me", "b"}, id="heard"),
        pytest.param([("b", 0.0, False)], 2.1, {"me"}, id="timed-out"),
        pytest.param([("b", 0.0, False), ("b", 0.5, True)], 0.6, {"me"}, id="leaving"),
        pytest.param([("b", 0.0, True), ("b", 0.5, False)], 0.6, {"me", "b"}, id="came-back"),
        pytest.param([("me", 0.0, False)], 0.1, {"me"}, id="own-echo"),
    ],
)
def test_live_set(events: list[tuple[str, float, bool]], now: float, live: set[str]) -> None:
    m = Membership("me", timeout=2.0)
    for replica, at, leaving in events:
        m.heard(replica, at, leaving=leaving)
    assert m.live(now) == live


def test_roles_owner_standby_and_changes() -> None:
    subs = SUBSCRIBERS[:300]
    a, b = Membership("a", 2.0), Membership("b", 2.0)
    alone = a.assign(subs, 0.0, standby=True)
    assert alone.owned == set(subs)
    assert alone.standby == set()
    a.heard("b", 0.0)
    b.heard("a", 0.0)
    ra, rb = a.assign(subs, 0.1, standby=True), b.assign(subs, 0.1, standby=True)
    assert ra.owned | rb.owned == set(subs)
    assert ra.owned & rb.owned == set()  # one owner each
    assert ra.standby == rb.owned  # the other stands by
    assert rb.standby == ra.owned
    taken, handed = ra.changes(alone)
    assert taken == set()
    assert handed == rb.owned  # a joining replica takes its share
    off = a.assign(subs, 0.1, standby=False)
    assert off.standby == set()
    b_gone = a.assign(subs, 5.0, standby=True)
    assert b_gone.changes(ra) == (rb.owned, set())  # took over what it stood by for


def test_a_leaving_replica_owns_nothing() -> None:
    m = Membership("a", 2.0)
    m.heard("b", 0.0)
    m.me_leaving = True
    roles = m.assign(SUBSCRIBERS[:50], 0.1, standby=True)
    assert roles.of == {}


def envelope(received: float) -> Envelope:
    return Envelope(
        "x", "call.dial.001", b"{}", f"id{received}", {}, "t", 0, "l", "event", received
    )


@pytest.mark.parametrize(
    ("pushes", "now", "kept"),
    [
        pytest.param([0.0, 1.0, 2.0], 2.0, [0.0, 1.0, 2.0], id="all-in-window"),
        pytest.param([0.0, 1.0, 12.0], 12.0, [12.0], id="old-dropped"),
        pytest.param([0.0, 5.0], 20.0, [], id="all-expired"),
        pytest.param([float(n) / 100 for n in range(10)], 0.1, [0.06, 0.07, 0.08, 0.09], id="cap"),
    ],
)
def test_standby_window(pushes: list[float], now: float, kept: list[float]) -> None:
    window = StandbyWindow(10.0, max_events=4)
    for at in pushes:
        window.push("001", envelope(at), at)
    assert [e.received for e in window.take("001", now)] == kept
    assert window.take("001", now) == []  # taken once


class OwnershipModel(RuleBasedStateMachine):
    """Replicas come, go, and hear each other or not: whenever two replicas have the same
    live set, every subscriber has exactly one owner among them, and a standby that is
    not the owner; a change of the live set by one replica moves at most its share."""

    NAMES = ("a", "b", "c", "d")

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.members = {n: Membership(n, 1.0) for n in self.NAMES}
        self.up = {"a"}

    @rule(name=st.sampled_from(NAMES))
    def toggle(self, name: str) -> None:
        if name in self.up and len(self.up) > 1:
            self.up.discard(name)
        else:
            self.up.add(name)

    @rule()
    def heartbeat_round(self) -> None:
        self.now += 0.5
        for listener in self.up:
            for speaker in self.up:
                self.members[listener].heard(speaker, self.now)

    @invariant()
    def one_owner_when_views_agree(self) -> None:
        views = {n: self.members[n].live(self.now) for n in self.up}
        agreed = [n for n in self.up if views[n] == frozenset(self.up)]
        if len(agreed) != len(self.up):
            return
        subs = SUBSCRIBERS[:60]
        roles = {n: self.members[n].assign(subs, self.now, standby=True) for n in self.up}
        for s in subs:
            owners = [n for n in self.up if roles[n].of.get(s) is Role.OWNER]
            standbys = [n for n in self.up if roles[n].of.get(s) is Role.STANDBY]
            assert len(owners) == 1
            assert len(standbys) == (1 if len(self.up) > 1 else 0)
            assert set(owners).isdisjoint(standbys)


TestOwnership = OwnershipModel.TestCase
TestOwnership.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
