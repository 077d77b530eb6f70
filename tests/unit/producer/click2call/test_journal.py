"""The click2call journal's state (:mod:`producer.click2call.journal`): what each sequence
of entries makes of a delivered command — one table of verdicts, the leading claim, the
bounds. (The switchboard's model test drives it together with the switchboard.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from producer.click2call.effects import Settle
from producer.click2call.journal import Claim, Dispatch, Journal, Owner, Remembered, Verdict

A: Owner = ("a", "1")
B: Owner = ("b", "1")
DEAD: Owner = ("c", "1")
SUCCESS = Remembered(b'{"event":"success"}', "success", True, Settle.ACK)
REFUSED = Remembered(b'{"event":"error"}', "not_connected", False, Settle.REJECT)


def alive(owner: Owner) -> bool:
    return owner != DEAD


def claim(owner: Owner, token: str) -> Callable[[Journal], None]:
    return lambda j: j.claimed("x", owner, token, 0.0)


def release(token: str) -> Callable[[Journal], None]:
    return lambda j: j.released("x", token)


def reply(
    remembered: Remembered, *concludes: str, rid: str = "r1", owner: Owner = A
) -> Callable[[Journal], None]:
    return lambda j: j.replied("x", remembered, concludes, 0.0, rid, owner)


def dispatch(holder: Owner, token: str, did: str = "d1") -> Callable[[Journal], None]:
    return lambda j: j.dispatched(
        Dispatch(did, "x", "001", Claim(holder, token), b"{}", {}, 0.0), 0.0
    )


def answered(remembered: Remembered, *concludes: str, did: str = "d1") -> Callable[[Journal], None]:
    return lambda j: j.replied("x", remembered, concludes, 0.0, "r1", A, did)


def settled(rid: str = "r1") -> Callable[[Journal], None]:
    return lambda j: j.settled("x", rid)


def orphaned(rid: str = "r1") -> Callable[[Journal], None]:
    return lambda j: j.orphaned("x", rid)


@pytest.mark.parametrize(
    ("entries", "redelivered", "has_id", "verdict"),
    [
        pytest.param([], False, True, Verdict.FRESH, id="nothing-known"),
        pytest.param([claim(A, "t1")], False, True, Verdict.WAIT, id="claimed-by-live"),
        pytest.param([claim(DEAD, "t1")], False, True, Verdict.UNKNOWN, id="claimed-by-gone"),
        pytest.param(
            [claim(DEAD, "t1"), claim(B, "t2")], True, True, Verdict.WAIT, id="gone-then-live"
        ),
        pytest.param([claim(A, "t1"), release("t1")], True, True, Verdict.FRESH, id="released"),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1"), settled()],
            False,
            True,
            Verdict.REPEAT,
            id="retry-of-a-dialed-one",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1"), settled()],
            True,
            True,
            Verdict.REPEAT,
            id="bounced-retry-every-answer-settled",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1"), orphaned()],
            True,
            True,
            Verdict.SILENT,
            id="its-ack-was-lost",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1", owner=DEAD)],
            True,
            True,
            Verdict.SILENT,
            id="answered-by-a-replica-gone-before-settling",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1")],
            True,
            True,
            Verdict.WAIT,
            id="redelivered-while-its-answer-is-being-settled",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1")],
            False,
            True,
            Verdict.REPEAT,
            id="a-new-send-need-not-wait-for-the-settlement",
        ),
        pytest.param(
            [claim(A, "t1"), reply(REFUSED, "t1"), settled()],
            False,
            True,
            Verdict.FRESH,
            id="refused-before-dialing-is-judged-again",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1"), settled()],
            False,
            False,
            Verdict.FRESH,
            id="no-message-id-a-repeat-is-a-new-command",
        ),
        pytest.param(
            [claim(A, "t1"), reply(SUCCESS, "t1"), orphaned(), settled()],
            True,
            True,
            Verdict.REPEAT,
            id="orphan-taken-by-a-silent-settlement",
        ),
    ],
)
def test_decide(
    entries: list[Callable[[Journal], None]], redelivered: bool, has_id: bool, verdict: Verdict
) -> None:
    j = Journal()
    for entry in entries:
        entry(j)
    decision = j.decide("x", redelivered=redelivered, has_id=has_id, alive=alive)
    assert decision.verdict is verdict
    if verdict is Verdict.SILENT:
        assert decision.reply_id == "r1"
        assert decision.remembered == SUCCESS


def test_a_settled_reply_stays_settled_whatever_comes_after() -> None:
    j = Journal()
    for entry in (claim(A, "t1"), reply(SUCCESS, "t1"), settled(), orphaned()):
        entry(j)
    assert j.decide("x", redelivered=True, has_id=True, alive=alive).verdict is Verdict.REPEAT


@pytest.mark.parametrize(
    ("entries", "token", "leads"),
    [
        pytest.param([claim(A, "t1")], "t1", True, id="alone"),
        pytest.param([claim(B, "t0"), claim(A, "t1")], "t1", False, id="behind-a-live-one"),
        pytest.param([claim(DEAD, "t0"), claim(A, "t1")], "t1", True, id="behind-a-gone-one"),
        pytest.param([claim(A, "t1"), claim(A, "t2")], "t2", False, id="own-other-delivery"),
        pytest.param([claim(A, "t1"), claim(B, "t2")], "t1", True, id="ahead-of-a-live-one"),
        pytest.param([], "t1", False, id="not-read-back"),
    ],
)
def test_leads(entries: list[Callable[[Journal], None]], token: str, leads: bool) -> None:
    j = Journal()
    for entry in entries:
        entry(j)
    assert j.leads("x", token, alive) is leads


def test_the_leader_answers_unknown_for_the_gone_and_ignores_who_is_behind() -> None:
    j = Journal()
    for entry in (claim(DEAD, "t0"), claim(A, "t1"), claim(B, "t2")):
        entry(j)
    decision = j.decide("x", redelivered=False, has_id=True, alive=alive, holder="t1")
    assert (decision.verdict, decision.gone) == (Verdict.UNKNOWN, ("t0",))
    reply(Remembered(b"", "unknown", True, Settle.ACK), "t0", "t1")(j)
    assert j.is_open("x", "t2")
    assert not j.is_open("x", "t1")
    assert j.decide("x", redelivered=False, has_id=True, alive=alive, holder="t2").verdict is (
        Verdict.REPEAT
    )


def test_bounds_by_age_and_count() -> None:
    j = Journal(horizon=10.0, max_entries=3)
    for n in range(5):
        j.claimed(f"c{n}", A, "t", float(n))
    assert len(j) == 3  # the oldest went first
    j.expire(13.5)
    assert len(j) == 1
    assert j.decide("c4", redelivered=False, has_id=True, alive=alive).verdict is Verdict.WAIT
    assert j.decide("c0", redelivered=False, has_id=True, alive=alive).verdict is Verdict.FRESH


def test_has_reply_knows_a_reply_that_got_through() -> None:
    j = Journal()
    reply(SUCCESS, rid="r7")(j)
    assert j.has_reply("x", "r7")
    assert not j.has_reply("x", "r8")
    assert not j.has_reply("y", "r7")


@pytest.mark.parametrize(
    ("entries", "open_", "verdict", "transparent"),
    [
        pytest.param([claim(A, "h"), dispatch(A, "h")], True, Verdict.WAIT, (), id="held-by-live"),
        pytest.param(
            [claim(A, "h"), dispatch(A, "h")], True, Verdict.FRESH, ("h",), id="owner-sees-through"
        ),
        pytest.param(
            [claim(DEAD, "h"), dispatch(DEAD, "h")],
            True,
            Verdict.FRESH,
            (),
            id="gone-holder-never-dialed",
        ),
        pytest.param(
            [claim(A, "h"), dispatch(A, "h"), claim(DEAD, "o")],
            True,
            Verdict.UNKNOWN,
            ("h",),
            id="gone-owner-may-have-dialed",
        ),
        pytest.param(
            [claim(A, "h"), dispatch(A, "h"), release("h")],
            False,
            Verdict.FRESH,
            (),
            id="holder-released-voids-it",
        ),
        pytest.param(
            [claim(A, "h"), dispatch(A, "h"), claim(B, "o"), answered(SUCCESS, "h", "o")],
            False,
            Verdict.REPEAT,
            (),
            id="answered-closes-it",
        ),
        pytest.param(
            [claim(A, "h"), release("h"), dispatch(A, "h")],
            False,
            Verdict.FRESH,
            (),
            id="read-after-its-claim-went",
        ),
        pytest.param(
            [claim(A, "h"), dispatch(A, "h"), reply(SUCCESS, "h")],
            False,
            Verdict.REPEAT,
            (),
            id="holder-answered-itself",
        ),
    ],
)
def test_dispatches(
    entries: list[Callable[[Journal], None]],
    open_: bool,
    verdict: Verdict,
    transparent: tuple[str, ...],
) -> None:
    """A dispatch waits for its owner while the holder's claim stands; the holder's claim
    never counts as a dial (a gone holder leaves the command fresh)."""
    j = Journal()
    for entry in entries:
        entry(j)
    assert j.dispatch_open("d1") is open_
    assert [d.id for d in j.open_dispatches()] == (["d1"] if open_ else [])
    decision = j.decide(
        "x", redelivered=False, has_id=True, alive=alive, transparent=frozenset(transparent)
    )
    assert decision.verdict is verdict


def test_an_answered_dispatch_is_known_by_its_reply() -> None:
    j = Journal()
    for entry in (claim(A, "h"), dispatch(A, "h"), claim(B, "o"), answered(SUCCESS, "h", "o")):
        entry(j)
    assert j.answer_to("d1") == "r1"
    assert j.answer_to("d2") is None
    dispatch(A, "h")(j)  # read again (a replay): stays answered
    assert not j.dispatch_open("d1")
