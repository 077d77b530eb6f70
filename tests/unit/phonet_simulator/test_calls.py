"""The simulator's call scripts are realistic lifecycles; its PBX answers are right."""

from __future__ import annotations

import pytest

from phonet_simulator.calls import CallFactory, Quirks, click2call_reply
from producer.core.events import CallEvent, parse_frame

SUBS = ["001", "002", "003", "ivan.petrov@example.com"]
NOW = 1_760_000_000_000


def script(kind: str, seed: int = 1, quirks: Quirks | None = None) -> list[tuple[float, str, dict]]:  # type: ignore[type-arg]
    return CallFactory(SUBS, seed=seed, quirks=quirks or Quirks.none()).make(NOW, kind).sorted()


def events_for(steps: list, subscriber: str) -> list[str]:  # type: ignore[type-arg]
    return [frame["event"] for _, s, frame in steps if s == subscriber]


@pytest.mark.parametrize("kind", ["incoming", "outgoing"])
@pytest.mark.parametrize("seed", range(20))
def test_external_call_lifecycle(kind: str, seed: int) -> None:
    steps = script(kind, seed)
    (subscriber,) = {s for _, s, _ in steps}
    seq = events_for(steps, subscriber)
    assert seq in (["call.dial", "call.bridge", "call.hangup"], ["call.dial", "call.hangup"])
    if kind == "outgoing":
        assert seq == ["call.dial", "call.bridge", "call.hangup"]
    frames = [f for _, _, f in steps]
    assert {f["uuid"] for f in frames} == {frames[0]["uuid"]}
    assert all(f["lgDirection"] == (4 if kind == "incoming" else 2) for f in frames)
    assert all(f["leg2"] is None and f["trunkNum"] for f in frames)
    client = frames[0]["otherLegs"][0]
    assert client["num"].startswith("+380")
    if client["id"] is None:
        assert client["name"] is None
        assert client["companyName"] is None
    bridged = [f for f in frames if f["event"] == "call.bridge"]
    if bridged:
        assert bridged[0]["bridgeAt"] > bridged[0]["dialAt"]


def test_internal_call_reaches_both_employees_with_leg2() -> None:
    steps = script("internal")
    subscribers = {s for _, s, _ in steps}
    assert len(subscribers) == 2
    for subscriber in subscribers:
        assert events_for(steps, subscriber) == ["call.dial", "call.bridge", "call.hangup"]
    assert all(f["lgDirection"] == 1 and f["leg2"] and f["trunkNum"] is None for _, _, f in steps)


def test_group_call_children_point_to_parent_and_one_answers() -> None:
    steps = script("group")
    parents = {f["parentUuid"] for _, _, f in steps}
    children = {f["uuid"] for _, _, f in steps}
    assert len(parents) == 1
    assert None not in parents
    assert parents.isdisjoint(children)
    answered = {s for _, s, f in steps if f["event"] == "call.bridge"}
    rung = {s for _, s, _ in steps}
    assert len(answered) == 1
    assert len(rung) == 3
    for subscriber in rung:
        assert events_for(steps, subscriber)[-1] == "call.hangup"


@pytest.mark.parametrize(("kind", "lg"), [("pause", 32), ("unpause", 64)])
def test_pause_rides_on_a_call_event(kind: str, lg: int) -> None:
    (step,) = script(kind)
    assert step[2]["event"] == "call.dial"
    assert step[2]["lgDirection"] == lg


def test_every_frame_parses_and_timing_is_ordered() -> None:
    factory = CallFactory(SUBS, seed=3)
    for _ in range(200):
        steps = factory.make(NOW).sorted()
        offsets = [at for at, _, _ in steps]
        assert offsets == sorted(offsets)
        for _, _, frame in steps:
            import orjson

            assert isinstance(parse_frame(orjson.dumps(frame)), CallEvent)


def test_quirks_appear_at_their_rates() -> None:
    factory = CallFactory(SUBS, seed=5, quirks=Quirks(0.5, 0.2, 0.1, 0.1))
    frames = [f for _ in range(400) for _, _, f in factory.make(NOW, "incoming").steps]
    n = len(frames)
    as_string = sum(isinstance(f["serverTime"], str) for f in frames) / n
    in_seconds = sum(f["dialAt"] < 10**12 for f in frames) / n
    extra = sum("crmTag" in f for f in frames) / n
    assert 0.4 < as_string < 0.6
    assert 0.12 < in_seconds < 0.28
    assert 0.05 < extra < 0.15
    dialled = [f["uuid"] for f in frames if f["event"] == "call.dial"]
    assert len(dialled) > len(set(dialled))  # some events delivered twice


def test_no_quirks_means_none() -> None:
    factory = CallFactory(SUBS, seed=5, quirks=Quirks.none())
    frames = [f for _ in range(100) for _, _, f in factory.make(NOW).steps]
    assert not any(isinstance(f["serverTime"], str) or "crmTag" in f for f in frames)


def test_same_seed_same_calls() -> None:
    a = CallFactory(SUBS, seed=9).make(NOW).steps
    b = CallFactory(SUBS, seed=9).make(NOW).steps
    assert a == b


def test_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        CallFactory(SUBS).make(NOW, "fax")


@pytest.mark.parametrize(
    ("action", "reply"),
    [
        pytest.param({"action": "call", "to": "380991234567"}, {"event": "success"}, id="ok"),
        pytest.param({"action": "call", "to": "+380991234567"}, {"event": "success"}, id="plus"),
        pytest.param(
            {"action": "call", "to": "000123"},
            {"event": "error", "message": "number unreachable"},
            id="unreachable",
        ),
        pytest.param(
            {"action": "call", "to": "abc"},
            {"event": "error", "message": "invalid number"},
            id="not-digits",
        ),
        pytest.param(
            {"action": "call"}, {"event": "error", "message": "invalid number"}, id="no-to"
        ),
        pytest.param(
            {"action": "hangup"},
            {"event": "error", "message": "unknown action"},
            id="unknown-action",
        ),
    ],
)
def test_click2call_reply(action: dict[str, object], reply: dict[str, object]) -> None:
    assert click2call_reply(action) == reply
