"""The command reader (:mod:`producer.click2call.message`) behind the lenient header seam
(:mod:`producer.broker.lenient_frames`): a delivery read into a message whatever its
properties hold, never raising; a command's identity across retries."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest

from producer.broker.lenient_frames import UNDECODABLE
from producer.click2call.message import identity, read_message

STAMP = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def delivered(tag: object = 7, redelivered: object = False, **properties: object) -> object:
    return SimpleNamespace(delivery_tag=tag, redelivered=redelivered), SimpleNamespace(
        properties=SimpleNamespace(**properties)
    )


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        pytest.param(
            {"message_id": "m", "correlation_id": "c", "reply_to": "q", "user_id": "u"},
            {"message_id": "m", "correlation_id": "c", "reply_to": "q", "user_id": "u"},
            id="ordinary",
        ),
        pytest.param(
            {"message_id": 5, "reply_to": b"q", "user_id": ["u"], "app_id": ""},
            {"message_id": None, "reply_to": None, "user_id": None, "app_id": None},
            id="wrong-types-count-as-absent",
        ),
        pytest.param({"timestamp": STAMP}, {"timestamp": STAMP.timestamp()}, id="timestamp"),
        pytest.param({"timestamp": 1e300}, {"timestamp": None}, id="timestamp-absurd"),
        pytest.param({"timestamp": -5}, {"timestamp": None}, id="timestamp-negative"),
        pytest.param({"timestamp": True}, {"timestamp": None}, id="timestamp-bool"),
        pytest.param(
            {"headers": {"x-delivery-count": 3}}, {"delivery_count": 3}, id="delivery-count"
        ),
        pytest.param(
            {"headers": {"x-delivery-count": "3"}}, {"delivery_count": 0}, id="count-not-int"
        ),
        pytest.param(
            {"headers": {UNDECODABLE: "timestamp,headers"}},
            {"undecodable": ("timestamp", "headers")},
            id="undecodable",
        ),
        pytest.param({"headers": "nope"}, {"undecodable": ()}, id="headers-not-a-table"),
        pytest.param({"reply_to": "q" * 300}, {"reply_to": None}, id="text-too-long"),
    ],
)
def test_read_message_never_raises(
    properties: dict[str, object], expected: dict[str, object]
) -> None:
    delivery, head = delivered(**properties)  # type: ignore[misc]
    message = read_message(delivery, head, b"{}")
    for name, value in expected.items():
        assert getattr(message, name) == value


def test_read_message_tolerates_a_missing_header_and_odd_delivery() -> None:
    message = read_message(SimpleNamespace(), None, b"x")
    assert (message.delivery_tag, message.redelivered, message.message_id) == (0, False, None)


def test_identity_is_the_same_for_a_retry_and_differs_otherwise() -> None:
    a = identity("m", "c", b"{}")
    assert identity("m", "c", b"{}") == a
    assert (
        len({a, identity("m2", "c", b"{}"), identity("m", "c2", b"{}"), identity("m", "c", b"[]")})
        == 4
    )
    assert identity(None, "mc", b"") != identity("m", "c", b"")  # parts cannot run together
