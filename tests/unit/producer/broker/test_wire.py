"""The hand-written basic.publish encoder, byte for byte against pamqp's decoder."""

from __future__ import annotations

import datetime

import pamqp.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands, header

from producer.broker import wire
from producer.core.envelope import Envelope


def env(**kw: object) -> Envelope:
    values: dict[str, object] = {
        "exchange": "phonet.events",
        "routing_key": "call.dial.ivan%2Epetrov@example%2Ecom",
        "body": b'{"event":"call.dial"}',
        "message_id": "9f" * 16,
        "headers": {"subscriber": "ivan.petrov@example.com", "lg_direction": 4},
        "type": "call.dial",
        "timestamp": 1_700_000_000,
        "label": "call.dial",
        "kind": "event",
        "received": 0.0,
    }
    values.update(kw)
    return Envelope(**values)  # type: ignore[arg-type]


def decode(data: bytes) -> list[tuple[int, object]]:
    frames, offset = [], 0
    while offset < len(data):
        used, channel, frame = pamqp.frame.unmarshal(data[offset:])
        frames.append((channel, frame))
        offset += used
    return frames


def check(envelope: Envelope, channel: int = 7, frame_max: int = 131072) -> None:
    frames = decode(wire.publish(envelope, channel, frame_max))
    assert {c for c, _ in frames} == {channel}
    method, head, *bodies = (f for _, f in frames)
    assert isinstance(method, commands.Basic.Publish)
    assert (method.exchange, method.routing_key) == (envelope.exchange, envelope.routing_key)
    assert method.mandatory is True
    assert method.immediate is False
    assert isinstance(head, header.ContentHeader)
    assert head.body_size == len(envelope.body)
    p = head.properties
    assert p.content_type == "application/json"
    assert p.delivery_mode == 2
    assert p.message_id == envelope.message_id
    assert p.correlation_id == envelope.correlation_id
    assert p.timestamp == datetime.datetime.fromtimestamp(envelope.timestamp, tz=datetime.UTC)
    assert p.message_type == wire.fit_shortstr(envelope.type)
    assert p.app_id == "phonet-producer"
    assert p.headers == envelope.headers
    assert all(isinstance(b, pbody.ContentBody) for b in bodies)
    if frame_max:
        assert all(len(b.value) <= frame_max - 8 for b in bodies)  # type: ignore[attr-defined]
    else:  # 0: no limit negotiated, one body frame
        assert len(bodies) <= 1
    assert b"".join(b.value for b in bodies) == envelope.body  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("envelope", "frame_max"),
    [
        pytest.param(env(), 131072, id="event"),
        pytest.param(env(body=b""), 131072, id="empty-body-no-body-frame"),
        pytest.param(env(body=b"x" * 300_000), 131072, id="body-split-in-3"),
        pytest.param(env(body=b"x" * (4096 - 8)), 4096, id="exactly-one-frame"),
        pytest.param(env(body=b"x" * (4096 - 7)), 4096, id="one-byte-over"),
        pytest.param(
            env(
                exchange="",
                routing_key="amq.gen-Xyz",
                correlation_id="c-1",
                type="click2call.reply",
            ),
            131072,
            id="rpc-reply",
        ),
        pytest.param(env(headers={}), 131072, id="no-headers"),
        pytest.param(
            env(
                headers={
                    "s": "Олег 😀",
                    "neg": -5,
                    "big": 2**62,
                    "t": True,
                    "f": 1.5,
                    "none": None,
                    "nested": {"a": "b"},
                }
            ),
            131072,
            id="every-value-type",
        ),
        pytest.param(env(type="é" * 200), 131072, id="type-cut-at-255-bytes"),
        pytest.param(env(routing_key="k" * 255), 131072, id="longest-key"),
        pytest.param(env(body=b"x" * 100), 0, id="frame-max-unlimited"),
    ],
)
def test_publish_decodes_as_pamqp_expects(envelope: Envelope, frame_max: int) -> None:
    check(envelope, frame_max=frame_max)


def test_several_publishes_concatenate() -> None:
    data = b"".join(wire.publish(env(message_id=f"m{i}"), 1, 131072) for i in range(3))
    methods = [f for _, f in decode(data) if isinstance(f, commands.Basic.Publish)]
    assert len(methods) == 3


def test_over_long_short_strings_are_refused() -> None:
    with pytest.raises(wire.EncodeError, match="255 bytes"):
        wire.publish(env(routing_key="k" * 256), 1, 131072)


def test_unsupported_header_type_is_refused() -> None:
    with pytest.raises(wire.EncodeError, match="list"):
        wire.table({"x": [1]})


@pytest.mark.parametrize(
    ("envelope", "frame_max", "why"),
    [
        pytest.param(env(headers={"n": 2**63}), 131072, "too large", id="int-beyond-64-bits"),
        pytest.param(env(headers={"s": "\ud800"}), 131072, "UnicodeEncodeError", id="surrogate"),
        pytest.param(env(headers={"s": "x" * 5000}), 4096, "over frame_max", id="over-frame-max"),
        pytest.param(env(message_id="m" * 300), 131072, "255 bytes", id="long-message-id"),
        pytest.param(env(headers={"x": object()}), 131072, "object", id="odd-type"),
    ],
)
def test_what_cannot_be_encoded_is_one_clear_error(
    envelope: Envelope, frame_max: int, why: str
) -> None:
    """Each raises EncodeError (the publisher poisons that one message), never a crash."""
    with pytest.raises(wire.EncodeError, match=why):
        wire.publish(envelope, 1, frame_max)


@pytest.mark.parametrize(
    ("text", "fits"),
    [("abc", "abc"), ("x" * 255, "x" * 255), ("x" * 300, "x" * 255), ("é" * 128, "é" * 127)],
)
def test_fit_shortstr(text: str, fits: str) -> None:
    assert wire.fit_shortstr(text) == fits


header_values = (
    st.text(max_size=50)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.none()
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda k: len(k.encode()) < 256),
        header_values,
        max_size=8,
    ),
    st.binary(max_size=3000),
    st.text(max_size=40),
)
def test_any_headers_and_body_roundtrip(headers: dict[str, object], body: bytes, kind: str) -> None:
    try:
        for text in (*headers, *(v for v in headers.values() if isinstance(v, str)), kind):
            text.encode("utf-8")
    except UnicodeEncodeError:
        return
    check(env(headers=headers, body=body, type=kind), frame_max=1024)
