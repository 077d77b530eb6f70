"""The seam over pamqp's header decoding (:mod:`producer.broker.lenient_frames`) and the command
reader behind it (:mod:`producer.click2call.message`): table tests of headers pamqp cannot
decode, the wrapper installed and uninstalled, and its fallback when pamqp changed."""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from pamqp import commands, exceptions, frame, header

from producer.broker import lenient_frames
from producer.broker.lenient_frames import UNDECODABLE, lenient_header
from producer.click2call.message import identity, read_message

STAMP = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def marshal(**properties: object) -> bytes:
    return header.ContentHeader(0, 5, commands.Basic.Properties(**properties)).marshal()  # type: ignore[arg-type]


def spliced(data: bytes, old: bytes, new: bytes) -> bytes:
    at = data.index(old)
    return data[:at] + new + data[at + len(old) :]


def with_timestamp(value: int) -> bytes:
    data = marshal(message_id="m1", reply_to="r", correlation_id="c", timestamp=STAMP)
    return spliced(data, struct.pack(">Q", int(STAMP.timestamp())), struct.pack(">Q", value))


def with_bad_message_id() -> bytes:
    data = marshal(message_id="abc", reply_to="r", correlation_id="c")
    return spliced(data, b"\x03abc", b"\x03a\xffc")  # not UTF-8


def with_bad_header_field() -> bytes:
    data = marshal(headers={"k": "v"}, reply_to="r", correlation_id="c", app_id="app")
    return spliced(data, b"\x01kS", b"\x01kZ")  # a field type pamqp does not know


CASES = [
    pytest.param(with_timestamp(2**63), ("timestamp",), {"reply_to": "r"}, id="timestamp-2^63"),
    pytest.param(with_timestamp(2**64 - 1), ("timestamp",), {"reply_to": "r"}, id="ts-max"),
    pytest.param(with_bad_message_id(), ("message_id",), {"reply_to": "r"}, id="not-utf8"),
    pytest.param(with_bad_header_field(), ("headers",), {"app_id": "app"}, id="unknown-field-type"),
]


@pytest.mark.parametrize(("data", "bad", "kept"), CASES)
def test_pamqp_cannot_decode_these_and_the_lenient_header_keeps_the_rest(
    data: bytes, bad: tuple[str, ...], kept: dict[str, str]
) -> None:
    with pytest.raises((exceptions.UnmarshalingException, OverflowError, ValueError)):
        lenient_frames._installed(
            data
        ) if lenient_frames._installed else frame._unmarshal_header_frame(data)
    content = lenient_header(data)
    assert content.body_size == 5
    properties = content.properties
    assert properties.headers is not None
    assert tuple(properties.headers[UNDECODABLE].split(",")) == bad
    assert properties.correlation_id == "c"
    for name, value in kept.items():
        assert getattr(properties, name) == value


def test_a_broken_layout_still_fails() -> None:
    with pytest.raises(exceptions.UnmarshalingException):
        lenient_header(b"\x00\x3c\x00")


def test_a_truncated_property_names_it_and_everything_after_it() -> None:
    data = marshal(correlation_id="c", reply_to="rrrr", message_id="m", app_id="a")
    cut = data[: data.index(b"rrrr") + 2]
    properties = lenient_header(cut).properties
    assert properties.correlation_id == "c"
    assert properties.headers == {UNDECODABLE: "reply_to,message_id,app_id"}


@pytest.fixture
def installed() -> Iterator[None]:
    lenient_frames.uninstall()
    assert lenient_frames.install()
    yield
    lenient_frames.uninstall()


def test_installed_an_ordinary_header_decodes_as_before(installed: None) -> None:
    data = marshal(message_id="m1", timestamp=STAMP, headers={"a": 1})
    properties = frame.unmarshal(_frame(data))[2].properties  # type: ignore[union-attr]
    assert (properties.message_id, properties.timestamp, properties.headers) == (
        "m1",
        STAMP,
        {"a": 1},
    )


def test_installed_an_undecodable_header_becomes_a_message_not_an_error(installed: None) -> None:
    content = frame.unmarshal(_frame(with_timestamp(2**63)))[2]
    assert content.properties.headers == {UNDECODABLE: "timestamp"}  # type: ignore[union-attr]


def test_uninstalled_pamqp_is_as_it_was(installed: None) -> None:
    lenient_frames.uninstall()
    with pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(_frame(with_timestamp(2**63)))


def test_the_seam_fails_safe_when_pamqp_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No function where it was, or one that no longer decodes a header: nothing is
    patched (the producer counts the fallback and says so at start)."""
    lenient_frames.uninstall()
    monkeypatch.delattr(frame, "_unmarshal_header_frame")
    assert not lenient_frames.install()
    monkeypatch.setattr(frame, "_unmarshal_header_frame", lambda data: None, raising=False)
    assert not lenient_frames.install()
    assert lenient_frames._installed is None


def _frame(payload: bytes) -> bytes:
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


# --- the command reader ------------------------------------------------------------------


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
