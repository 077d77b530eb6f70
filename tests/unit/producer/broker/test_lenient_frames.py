"""The seam over pamqp's header decoding (:mod:`producer.broker.lenient_frames`): table tests
of headers pamqp cannot decode, the wrapper installed and uninstalled, and its fallback when
pamqp changed. The command reader behind it: ``tests/unit/producer/click2call/test_message.py``."""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterator

import pytest
from pamqp import commands, exceptions, frame, header

from producer.broker import lenient_frames
from producer.broker.lenient_frames import UNDECODABLE, lenient_header

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
