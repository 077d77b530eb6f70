"""The seam over aiormq's internals, where it can be checked without a broker: bodies kept
out of aiormq's log records (the fallback when the return hook cannot be installed), and
the hook refusing internals it does not recognise (changing nothing)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from producer.broker.fastpath import FastPath, WithholdBodies, take_returns

BODY = b'{"uuid":"1","otherLegs":[{"num":"+380567777777","name":"\xd0\xa2"}]}'


def returned_message() -> DeliveredMessage:
    return DeliveredMessage(
        delivery=spec.Basic.Return(
            reply_code=312, reply_text="NO_ROUTE", exchange="phonet.events", routing_key="k.001"
        ),
        header=ContentHeader(
            properties=spec.Basic.Properties(message_id="abc123"), body_size=len(BODY)
        ),
        body=BODY,
        channel=None,  # type: ignore[arg-type]
    )


def frame() -> ChannelFrame:
    return ChannelFrame(payload=b"\x01\x00\x01" + BODY, should_close=False)


@pytest.mark.parametrize(
    ("logger", "msg", "args", "kept", "withheld"),
    [
        pytest.param(
            "aiormq.channel",
            "Unhandled message %r returning",
            (returned_message(),),
            ["'k.001'", "'abc123'", "'phonet.events'", f"{len(BODY)} bytes withheld"],
            True,
            id="unmatched-return",
        ),
        pytest.param(
            "aiormq.channel",
            "message_id if None on returned message %r",
            (returned_message(),),
            ["bytes withheld"],
            True,
            id="return-without-id",
        ),
        pytest.param(
            "aiormq.connection",
            "Prepare to send %r",
            (frame(),),
            [f"{len(BODY) + 3} bytes withheld"],
            True,
            id="frame-written",
        ),
        pytest.param(
            "aiormq.connection", "raw %r", (BODY,), ["bytes withheld"], True, id="raw-bytes"
        ),
        pytest.param(
            "aiormq.channel",
            "Delivery tag %r confirmed %r was ignored",
            (7, "ack"),
            ["Delivery tag 7 confirmed 'ack' was ignored"],
            False,
            id="no-body-untouched",
        ),
    ],
)
def test_aiormq_log_records_never_carry_a_body(
    caplog: pytest.LogCaptureFixture,
    logger: str,
    msg: str,
    args: tuple[Any, ...],
    kept: list[str],
    withheld: bool,
) -> None:
    """The filter is installed on aiormq's loggers when the seam is imported."""
    caplog.set_level(logging.DEBUG, logger=logger)
    logging.getLogger(logger).error(msg, *args)
    (record,) = caplog.records
    text = record.getMessage()
    assert all(part in text for part in kept), text
    assert ("withheld" in text) == withheld
    everything = f"{text} {record.args!r} {record.__dict__}"
    assert "380567777777" not in everything
    assert BODY.decode("utf-8", "replace")[:20] not in everything


def test_the_filter_is_on_both_aiormq_loggers() -> None:
    for name in ("aiormq.channel", "aiormq.connection"):
        assert any(isinstance(f, WithholdBodies) for f in logging.getLogger(name).filters)


class HalfChannel:
    """An aiormq channel as a future version might look: its tables, no writer queue."""

    def __init__(self) -> None:
        self.delivery_tag = 0
        self.confirmations: dict[int, Any] = {}
        self.write_queue: asyncio.Queue[Any] | None = None


@pytest.mark.parametrize(
    "channel", [pytest.param(object(), id="not-a-channel"), pytest.param(HalfChannel(), id="half")]
)
def test_unrecognised_internals_get_no_hook_and_no_fast_path(channel: object) -> None:
    before = dict(vars(channel)) if hasattr(channel, "__dict__") else None
    assert take_returns(channel, lambda _returned: None, FastPath.__new__(FastPath)) is False
    assert FastPath.attach(channel, lambda _returned: None) is None
    if before is not None:
        assert vars(channel) == before  # nothing was installed
