"""Which dispatches an owner picks up (:class:`producer.click2call.dispatching.Pickup`),
and a dispatch read back as a command: table tests on a real journal state."""

from __future__ import annotations

import pytest

from producer.click2call.dispatching import Pickup, Signal, dispatched_message, properties
from producer.click2call.effects import Settle
from producer.click2call.journal import Claim, Dispatch, Journal, Owner, Remembered
from producer.click2call.message import CommandMessage

ME: Owner = ("me", "1")
HOLDER: Owner = ("h", "1")
GONE: Owner = ("g", "1")


def journal_with(*dispatches: tuple[str, str, str, Owner]) -> Journal:
    """(dispatch id, identity, subscriber, holder) each, its holder's claim first."""
    j = Journal()
    for n, (did, identity, subscriber, holder) in enumerate(dispatches):
        token = f"t{n}"
        j.claimed(identity, holder, token, float(n))
        j.dispatched(
            Dispatch(did, identity, subscriber, Claim(holder, token), b"{}", {}, float(n)),
            float(n),
        )
    return j


def pickup(j: Journal, owned: set[str]) -> Pickup:
    return Pickup(j, me=ME, owns=owned.__contains__, alive=lambda o: o != GONE, moved=Signal())


@pytest.mark.parametrize(
    ("dispatches", "owned", "due"),
    [
        pytest.param([("d1", "x", "001", HOLDER)], {"001"}, ["d1"], id="owned"),
        pytest.param([("d1", "x", "001", HOLDER)], {"002"}, [], id="not-owned"),
        pytest.param([("d1", "x", "001", GONE)], {"001"}, [], id="holder-gone"),
        pytest.param([("d1", "x", "001", ME)], {"001"}, ["d1"], id="its-own-after-a-takeover"),
        pytest.param(
            [("d1", "x", "001", HOLDER), ("d2", "x", "001", ME)],
            {"001"},
            ["d1"],
            id="one-per-command",
        ),
        pytest.param(
            [("d1", "x", "001", HOLDER), ("d2", "y", "001", HOLDER)],
            {"001"},
            ["d1", "d2"],
            id="two-commands",
        ),
    ],
)
def test_due(
    dispatches: list[tuple[str, str, str, Owner]], owned: set[str], due: list[str]
) -> None:
    p = pickup(journal_with(*dispatches), owned)
    assert [d.id for d in p.due()] == due
    assert p.due() == []  # taken: not again while handled


def test_picked_again_only_when_not_answered_here() -> None:
    j = journal_with(("d1", "x", "001", HOLDER))
    p = pickup(j, {"001"})
    assert [d.id for d in p.due()] == ["d1"]
    p.ended("d1", answered=False)  # its session ended, say: free again
    assert [d.id for d in p.due()] == ["d1"]
    p.ended("d1", answered=True)  # answered, not yet read back: not picked again
    assert p.due() == []
    success = Remembered(b"{}", "success", True, Settle.ACK)
    j.replied("x", success, ("t0",), 1.0, "r1", HOLDER, "d1")
    assert p.due() == []
    assert not j.dispatch_open("d1")


def test_a_dispatch_reads_back_as_the_command_it_carries() -> None:
    message = CommandMessage(
        delivery_tag=7,
        redelivered=True,
        body=b'{"subscriber":"001"}',
        message_id="m",
        correlation_id="c",
        reply_to="replies",
        user_id="crm",
        app_id="app",
        timestamp=1_700_000_000.0,
    )
    d = Dispatch("d1", message.identity, "001", Claim(HOLDER, "t"), message.body, {}, 0.0)
    d = Dispatch(d.id, d.identity, d.subscriber, d.holder, d.body, properties(message), 0.0)
    back = dispatched_message(d)
    assert back.identity == message.identity
    assert (back.reply_to, back.correlation_id, back.user_id, back.timestamp) == (
        "replies",
        "c",
        "crm",
        1_700_000_000.0,
    )
    assert back.redelivered is False  # new where it is handled
