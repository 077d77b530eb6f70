"""A new API key's probation, step by step: a table of what the file says and what the PBX
answers, and what the sockets then use."""

from __future__ import annotations

import pytest

from producer.phonet.probation import KeyProbation, Refusal

# A step: ("offer", text, offered?), ("accept", version, None), ("refuse", version, Refusal).
Step = tuple[str, object, object]


@pytest.mark.parametrize(
    ("steps", "key", "version"),
    [
        pytest.param([("offer", "k1", False)], "k1", 1, id="the-same-key-is-no-news"),
        pytest.param([("offer", "k2", True)], "k2", 2, id="a-new-key-is-current-at-once"),
        pytest.param(
            [("offer", "k2", True), ("accept", 2, None), ("refuse", 2, Refusal.CURRENT_REFUSED)],
            "k2",
            2,
            id="accepted-then-refused-keeps-it-and-asks-for-the-file",
        ),
        pytest.param(
            [("offer", "k2", True), ("refuse", 2, Refusal.PREVIOUS_BACK)],
            "k1",
            3,
            id="refused-on-probation-brings-the-previous-back",
        ),
        pytest.param(
            [("offer", "k2", True), ("refuse", 2, Refusal.PREVIOUS_BACK), ("offer", "k2", False)],
            "k1",
            3,
            id="the-refused-text-is-not-offered-again",
        ),
        pytest.param(
            [
                ("offer", "k2", True),
                ("refuse", 2, Refusal.PREVIOUS_BACK),
                ("offer", "k3", True),
                ("refuse", 4, Refusal.PREVIOUS_BACK),
            ],
            "k1",
            5,
            id="a-second-bad-key-also-falls-back-to-the-good-one",
        ),
        pytest.param(
            [("offer", "k2", True), ("refuse", 1, Refusal.NEWER_KNOWN)],
            "k2",
            2,
            id="a-socket-on-the-old-key-retries-with-the-new",
        ),
        pytest.param(
            [("offer", "k2", True), ("offer", "k3", True), ("refuse", 3, Refusal.PREVIOUS_BACK)],
            "k1",
            4,
            id="two-new-keys-unproven-fall-back-to-the-last-accepted",
        ),
        pytest.param(
            [("refuse", 1, Refusal.CURRENT_REFUSED)],
            "k1",
            1,
            id="the-first-key-refused-has-nothing-to-fall-back-to",
        ),
    ],
)
def test_probation(steps: list[Step], key: str, version: int) -> None:
    probation = KeyProbation("k1")
    for action, argument, expected in steps:
        if action == "offer":
            assert probation.offer(str(argument)) is expected
        elif action == "accept":
            probation.accepted(int(str(argument)))
        else:
            assert probation.refused(int(str(argument))) is expected
    assert (probation.key, probation.version) == (key, version)
    assert probation.is_current(version)


def test_a_version_is_current_while_its_text_is() -> None:
    probation = KeyProbation("k1")
    probation.offer("k2")
    probation.refused(2)  # k1 is back as version 3
    assert probation.is_current(1)
    assert probation.is_current(3)
    assert not probation.is_current(2)
    assert not probation.on_probation
