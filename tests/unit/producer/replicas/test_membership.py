"""Replica roles without a broker (:mod:`producer.replicas.membership`, and the handovers
of :mod:`producer.replicas.handover`): rendezvous ranking, the live set (instances,
rosters, settings, protocol), roles and changes — table tests, and a model-based test of
ownership invariants with replicas that disagree on the list. The standby window:
``test_standby.py``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from producer.replicas.membership import PROTOCOL, Beat, Heard, Membership, Role, ranking

SUBSCRIBERS = [f"{n:04d}" for n in range(3000)]
SETTINGS = "s1"


def member(me: str, timeout: float = 2.0, roster: str = "r1") -> Membership:
    m = Membership(me, timeout, instance=f"{me}-1", settings=SETTINGS, interval=timeout / 4)
    m.roster = roster
    return m


def beat(replica: str, **changes: object) -> Beat:
    base = Beat(replica, f"{replica}-1", settings=SETTINGS, roster="r1")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_rendezvous_spreads_evenly_and_moves_only_a_share() -> None:
    three = dict.fromkeys(("a", "b", "c"), 0)
    for s in SUBSCRIBERS:
        three[ranking(three, s)[0]] += 1
    assert all(800 <= n <= 1200 for n in three.values()), three
    moved = sum(ranking("abcd", s)[0] != ranking("abc", s)[0] for s in SUBSCRIBERS)
    assert 550 <= moved <= 950  # about a quarter goes to the new replica, nothing else moves
    assert all(ranking("abcd", s)[0] in (ranking("abc", s)[0], "d") for s in SUBSCRIBERS)


@pytest.mark.parametrize(
    ("beats", "now", "live"),
    [
        pytest.param([], 0.0, {"me"}, id="alone"),
        pytest.param([(beat("b"), 0.0)], 1.0, {"me", "b"}, id="heard"),
        pytest.param([(beat("b"), 0.0)], 2.1, {"me"}, id="timed-out"),
        pytest.param([(beat("b"), 0.0), (beat("b", leaving=True), 0.5)], 0.6, {"me"}, id="leaving"),
        pytest.param(
            [(beat("b", leaving=True), 0.0), (beat("b"), 0.5)], 0.6, {"me", "b"}, id="came-back"
        ),
        pytest.param([(beat("me", instance="me-1"), 0.0)], 0.1, {"me"}, id="own-echo"),
        pytest.param([(beat("b", version=PROTOCOL + 1), 0.0)], 0.1, {"me"}, id="other-protocol"),
        pytest.param([(beat("b", version=1), 0.0)], 0.1, {"me"}, id="older-release"),
        pytest.param([(beat("b", settings="demo"), 0.0)], 0.1, {"me"}, id="other-settings"),
        pytest.param([(beat("b", roster="r2"), 0.0)], 0.1, {"me"}, id="other-list"),
        pytest.param(
            [(beat("b"), 0.0), (beat("b", instance="b-2"), 0.5)], 0.6, {"me"}, id="restarted"
        ),
    ],
)
def test_live_set(beats: list[tuple[Beat, float]], now: float, live: set[str]) -> None:
    m = member("me")
    for b, at in beats:
        m.heard(b, at)
    assert m.live(now) == live


@pytest.mark.parametrize(
    ("first", "then", "heard"),
    [
        pytest.param(None, beat("b"), Heard.LIVE, id="new-peer"),
        pytest.param(beat("b"), beat("b"), Heard.NOTHING, id="same-again"),
        pytest.param(beat("b"), beat("b", warm=False), Heard.LIVE, id="warmth-changed"),
        pytest.param(beat("b"), beat("b", view="v2"), Heard.LIVE, id="view-changed"),
        pytest.param(beat("b"), beat("b", instance="b-2"), Heard.RESTARTED, id="restarted"),
        pytest.param(None, beat("me", instance="me-9"), Heard.TWIN, id="twin"),
        pytest.param(None, beat("me", instance="me-1"), Heard.NOTHING, id="own-echo"),
        pytest.param(None, beat("b", settings="x"), Heard.FOREIGN, id="foreign-settings"),
        pytest.param(None, beat("b", version=1), Heard.FOREIGN, id="foreign-version"),
        pytest.param(None, beat("b", roster="r2"), Heard.ROSTER, id="other-list"),
        pytest.param(
            beat("b", roster="r2"), beat("b", roster="r2"), Heard.NOTHING, id="still-other"
        ),
        pytest.param(beat("b"), beat("b", roster="r2"), Heard.ROSTER, id="list-diverged"),
        pytest.param(beat("b"), beat("b", leaving=True), Heard.LIVE, id="leaves"),
    ],
)
def test_what_a_heartbeat_changes(first: Beat | None, then: Beat, heard: Heard) -> None:
    m = member("me")
    if first is not None:
        m.heard(first, 0.0)
    assert m.heard(then, 0.1) is heard


def test_a_restarted_replica_is_held_out_until_its_leave_is_applied() -> None:
    """A restart under the same id is a leave and a join: the peers first recompute
    without it (taking over its share), then with its new instance."""
    m = member("me")
    m.heard(beat("b"), 0.0)
    assert m.live(0.1) == {"me", "b"}
    assert m.heard(beat("b", instance="b-2"), 0.2) is Heard.RESTARTED
    assert m.live(0.3) == {"me"}  # the leave
    assert not m.alive("b", "b-1", 0.3)  # its old instance's claims are a gone replica's
    assert m.restarts_applied()
    assert m.live(0.3) == {"me", "b"}  # the join
    assert m.alive("b", "b-2", 0.3)
    assert not m.restarts_applied()


@pytest.mark.parametrize(
    ("b", "view", "warm"),
    [
        pytest.param(beat("b", warm=True, view="v"), "v", True, id="warm-same-view"),
        pytest.param(beat("b", warm=False, view="v"), "v", False, id="not-warm"),
        pytest.param(beat("b", warm=True, view="other"), "v", False, id="another-view"),
        pytest.param(None, "v", True, id="not-heard-counts-as-warm"),
    ],
)
def test_warm_needs_the_same_view(b: Beat | None, view: str, warm: bool) -> None:
    m = member("me")
    if b is not None:
        m.heard(b, 0.0)
    assert m.warm("b", view) is warm


def test_roles_owner_standby_and_changes() -> None:
    subs = SUBSCRIBERS[:300]
    a, b = member("a"), member("b")
    alone = a.assign(subs, 0.0, standby=True)
    assert alone.owned == set(subs)
    assert alone.standby == set()
    a.heard(beat("b"), 0.0)
    b.heard(beat("a"), 0.0)
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
    m = member("a")
    m.heard(beat("b"), 0.0)
    m.me_leaving = True
    roles = m.assign(SUBSCRIBERS[:50], 0.1, standby=True)
    assert roles.of == {}


def test_a_leaving_replica_is_out_of_the_ranking_but_alive_until_its_beats_stop() -> None:
    """Its click2call claims stand while it finishes what it dials (before, the others
    took them for a dead replica's at its first leaving heartbeat and answered
    "unknown" for commands it was still dialing)."""
    m = member("a", timeout=1.0)
    m.heard(beat("b"), 0.0)
    assert m.heard(beat("b", leaving=True), 0.5) is Heard.LIVE
    assert m.live(0.6) == {"a"}
    assert m.alive("b", "b-1", 1.4)
    assert not m.alive("b", "b-1", 1.6)  # its last beat timed out
    m.me_leaving = True
    assert m.alive("a", "a-1", 1.6)  # leaving, itself still alive


def test_a_late_leave_of_a_replaced_instance_changes_nothing() -> None:
    m = member("a")
    m.heard(beat("b", instance="b-2"), 0.0)
    assert m.heard(beat("b", instance="b-1", leaving=True), 0.1) is Heard.NOTHING
    assert m.live(0.2) == {"a", "b"}
    assert m.alive("b", "b-2", 0.2)


@pytest.mark.parametrize(
    ("last", "died"),
    [
        pytest.param(beat("b"), 9_000, id="vanished: when last heard"),
        pytest.param(beat("b", leaving=True), None, id="left"),
        pytest.param(None, None, id="never-heard"),
    ],
)
def test_died(last: Beat | None, died: int | None) -> None:
    m = member("a")
    if last is not None:
        m.heard(last, 1.0)
    assert m.died("b", 2.0, 10_000) == died


def test_a_handover_waits_for_a_command_on_the_line_up_to_the_cap() -> None:
    from producer.replicas.handover import HANDOVER_CAP, Handovers

    h = Handovers(grace=1.0)
    h.start(["001"], [], 0.0, lambda s: "b")
    no, yes = (lambda s: False), (lambda s: True)
    assert not h.end(2.0, no, no, yes, busy=yes)  # warm, but a command waits for the PBX
    assert h.end(2.0, no, no, yes, busy=no)
    h.start(["001"], [], 0.0, lambda s: "b")
    assert h.end(1.0 + HANDOVER_CAP, no, no, yes, busy=yes)  # bounded


class OwnershipModel(RuleBasedStateMachine):
    """Replicas come, go, hear each other or not, and may hold another subscriber list:
    whenever the replicas that hear each other agree on who is live, every subscriber of
    every list has an owner holding that list (none is unheld), exactly one among the
    replicas with the same list, and a standby that is not the owner."""

    NAMES = ("a", "b", "c", "d")
    LISTS: ClassVar[dict[str, list[str]]] = {"r1": SUBSCRIBERS[:60], "r2": SUBSCRIBERS[20:80]}

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.members = {n: member(n, 1.0) for n in self.NAMES}
        self.up = {"a"}

    def lists(self, name: str) -> list[str]:
        return self.LISTS[self.members[name].roster]

    @rule(name=st.sampled_from(NAMES))
    def toggle(self, name: str) -> None:
        if name in self.up and len(self.up) > 1:
            self.up.discard(name)
        else:
            self.up.add(name)

    @rule(name=st.sampled_from(NAMES), roster=st.sampled_from(sorted(LISTS)))
    def list_changes(self, name: str, roster: str) -> None:
        self.members[name].roster = roster

    @rule()
    def heartbeat_round(self) -> None:
        self.now += 0.5
        for listener in self.up:
            for speaker in self.up:
                b = beat(speaker, roster=self.members[speaker].roster)
                self.members[listener].heard(b, self.now)

    @invariant()
    def owners_when_views_agree(self) -> None:
        if any(
            self.members[n].live(self.now)
            != {m for m in self.up if self.members[m].roster == self.members[n].roster}
            for n in self.up
        ):
            return  # not settled yet
        roles = {n: self.members[n].assign(self.lists(n), self.now, standby=True) for n in self.up}
        for subscriber in {s for n in self.up for s in self.lists(n)}:
            owners = [n for n in self.up if roles[n].of.get(subscriber) is Role.OWNER]
            assert owners, f"{subscriber} is held by nobody"
            for roster in {self.members[n].roster for n in self.up}:
                same = [n for n in self.up if self.members[n].roster == roster]
                if subscriber not in self.LISTS[roster]:
                    continue
                mine = [n for n in same if n in owners]
                standbys = [n for n in same if roles[n].of.get(subscriber) is Role.STANDBY]
                assert len(mine) == 1
                assert len(standbys) == (1 if len(same) > 1 else 0)
                assert set(mine).isdisjoint(standbys)


TestOwnership = OwnershipModel.TestCase
TestOwnership.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_a_handover_ends_when_the_new_owner_is_warm_after_the_grace() -> None:
    from producer.replicas.handover import HANDOVER_CAP, Handovers

    h = Handovers(grace=5.0)
    h.start(["001"], ["002"], 0.0, lambda s: "b")
    assert h.held() == ["001", "002"]
    assert len(h) == 2
    no = lambda s: False  # noqa: E731
    assert not h.end(4.0, no, no, lambda o: True)  # the grace first
    assert not h.end(6.0, no, no, lambda o: False)  # then until warm
    assert h.end(6.0, no, no, lambda o: True)
    assert h.held() == []
    h.start(["001"], [], 0.0, lambda s: "b")
    assert h.end(1.0, lambda s: s == "001", no, lambda o: False)  # owned again
    h.start([], ["002"], 0.0, lambda s: "c")
    assert h.owners() == {"c"}
    assert h.end(5.0 + HANDOVER_CAP, no, no, lambda o: False)  # bounded


def test_a_handed_over_subscriber_now_stood_by_for_is_published_until_the_owner_is_warm() -> None:
    """Joined by a third replica, the old owner may become the standby of what it handed
    over: it keeps publishing it until the new owner is warm (before, its role ending the
    handover left nobody publishing until the new owner's socket opened: events lost)."""
    from producer.replicas.handover import Handovers

    h = Handovers(grace=1.0)
    h.start(["001"], ["002"], 0.0, lambda s: "new")
    standby = {"001", "002"}.__contains__
    assert h.end(0.5, lambda s: False, standby, lambda o: False)  # 002 stood by for again
    assert h.held() == ["001"]
    assert not h.end(5.0, lambda s: False, standby, lambda o: False)
    assert h.end(5.0, lambda s: False, standby, lambda o: True)
