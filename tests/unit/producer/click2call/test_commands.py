"""click2call commands without sockets: validation, numbers, staleness, reply shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from producer.click2call.commands import (
    Command,
    answer_parts,
    check_age,
    fields_of,
    is_pbx_reply,
    normalise_number,
    outcome_event,
    parse_command,
    pbx_error_message,
    reply_body,
    result_of,
)
from producer.core.errors import (
    CommandError,
    CommandExpired,
    CommandTimeout,
    InvalidCommand,
    NotConnected,
    PbxRefused,
    UnknownSubscriber,
)
from producer.core.events import CallEvent, parse_frame

CONFIGURED = {"001", "ivan.petrov@example.com"}


@pytest.mark.parametrize(
    ("to", "number"),
    [
        pytest.param("380991234567", "380991234567", id="digits"),
        pytest.param("+380991234567", "+380991234567", id="plus"),
        pytest.param("+38 (099) 123-45-67", "+380991234567", id="spaces-brackets-dashes"),
        pytest.param("[044] 123 45 67", "0441234567", id="square-brackets"),
        pytest.param("\t099\n1234567 ", "0991234567", id="whitespace"),
        pytest.param("12", "12", id="two-digits-shortest"),
        pytest.param("1" * 20, "1" * 20, id="twenty-digits-longest"),
        pytest.param("1", None, id="one-digit"),
        pytest.param("1" * 21, None, id="too-long"),
        pytest.param("++380", None, id="double-plus"),
        pytest.param("380+99", None, id="plus-inside"),
        pytest.param("0991234567x", None, id="letter"),
        pytest.param("099.123.4567", None, id="dots-not-stripped"),
        pytest.param("*100#", None, id="ussd"),
        pytest.param("١٢٣٤٥", None, id="non-ascii-digits"),
        pytest.param("", None, id="empty"),
        pytest.param("+", None, id="plus-only"),
    ],
)
def test_normalise_number(to: str, number: str | None) -> None:
    assert normalise_number(to) == number


def test_valid_command() -> None:
    command = parse_command(
        b'{"subscriber":"001","to":"+38 (099) 123-45-67","id":"c-1","extra":true}', CONFIGURED
    )
    assert command == Command("001", "+38 (099) 123-45-67", "+380991234567", "c-1")
    assert orjson.loads(command.action()) == {"action": "call", "to": "+380991234567"}


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        pytest.param(b"call 001", InvalidCommand, "invalid command: body is not JSON", id="text"),
        pytest.param(b"", InvalidCommand, "invalid command: body is not JSON", id="empty"),
        pytest.param(b"\xff", InvalidCommand, "invalid command: body is not JSON", id="bytes"),
        pytest.param(
            b'["001"]', InvalidCommand, "invalid command: body must be a JSON object", id="array"
        ),
        pytest.param(
            b'"001"', InvalidCommand, "invalid command: body must be a JSON object", id="string"
        ),
        pytest.param(
            b'{"to":"380991234567"}',
            InvalidCommand,
            "invalid command: 'subscriber' must be a non-empty string",
            id="no-subscriber",
        ),
        pytest.param(
            b'{"subscriber":1,"to":"380991234567"}',
            InvalidCommand,
            "invalid command: 'subscriber' must be a non-empty string",
            id="subscriber-number",
        ),
        pytest.param(
            b'{"subscriber":"","to":"380991234567"}',
            InvalidCommand,
            "invalid command: 'subscriber' must be a non-empty string",
            id="subscriber-empty",
        ),
        pytest.param(
            b'{"subscriber":"001"}',
            InvalidCommand,
            "invalid command: 'to' must be a non-empty string",
            id="no-to",
        ),
        pytest.param(
            b'{"subscriber":"001","to":380991234567}',
            InvalidCommand,
            "invalid command: 'to' must be a non-empty string",
            id="to-number",
        ),
        pytest.param(
            b'{"subscriber":"001","to":"call me"}',
            InvalidCommand,
            "invalid command: 'to' is not a phone number",
            id="to-words",
        ),
        pytest.param(
            b'{"subscriber":"001","to":"380991234567","id":{"a":1}}',
            InvalidCommand,
            "invalid command: 'id' must be a string or integer",
            id="id-object",
        ),
        pytest.param(
            b'{"subscriber":"001","to":"380991234567","id":true}',
            InvalidCommand,
            "invalid command: 'id' must be a string or integer",
            id="id-bool",
        ),
        pytest.param(
            orjson.dumps({"subscriber": "001", "to": "380991234567", "id": "x" * 129}),
            InvalidCommand,
            "invalid command: 'id' must be a string or integer",
            id="id-too-long",
        ),
        pytest.param(
            b'{"subscriber":"999","to":"380991234567"}',
            UnknownSubscriber,
            "unknown subscriber",
            id="unknown-subscriber",
        ),
        pytest.param(
            b'{"subscriber":"999","to":"nope"}',
            InvalidCommand,
            "invalid command: 'to' is not a phone number",
            id="bad-to-before-unknown",
        ),
        pytest.param(
            b'{"event":"error","message":"x","subscriber":"001","to":"380991234567"}',
            InvalidCommand,
            "invalid command: this is a reply, not a command",
            id="a-reply-routed-back",
        ),
        pytest.param(
            b'{"event":"success","subscriber":"001","to":"380991234567","id":"1"}',
            InvalidCommand,
            "invalid command: this is a reply, not a command",
            id="an-outcome-routed-back",
        ),
    ],
)
def test_bad_commands(body: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        parse_command(body, CONFIGURED)
    assert str(info.value).startswith(message)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("timestamp", "received_at", "expired"),
    [
        pytest.param(NOW - 59, NOW, False, id="fresh-by-timestamp"),
        pytest.param(NOW - 61, NOW, True, id="stale-by-timestamp"),
        pytest.param(NOW + 30, NOW, False, id="clock-skew-future"),
        pytest.param(None, NOW - 10, False, id="no-timestamp-just-received"),
        pytest.param(None, NOW - 61, True, id="no-timestamp-waited-too-long"),
        pytest.param(NOW - 10, NOW - 100, False, id="timestamp-wins-over-receipt"),
    ],
)
def test_check_age(timestamp: float | None, received_at: float, expired: bool) -> None:
    stamp = datetime.fromtimestamp(timestamp, tz=UTC) if timestamp is not None else None
    if expired:
        with pytest.raises(CommandExpired, match="expired"):
            check_age(timestamp=stamp, received_at=received_at, now=NOW, max_age=60)
    else:
        check_age(timestamp=stamp, received_at=received_at, now=NOW, max_age=60)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(
            b'{"subscriber":"001","to":"1","id":7}',
            {"subscriber": "001", "to": "1", "id": 7},
            id="all",
        ),
        pytest.param(b'{"subscriber":5,"to":null,"id":false}', {"subscriber": 5}, id="types"),
        pytest.param(b"[1]", {}, id="array"),
        pytest.param(b"junk", {}, id="junk"),
        pytest.param(orjson.dumps({"subscriber": "x" * 300}), {}, id="huge-not-echoed"),
    ],
)
def test_fields_of(body: bytes, fields: dict[str, object]) -> None:
    assert fields_of(body) == fields


@pytest.mark.parametrize(
    ("fields", "outcome", "pbx", "reply"),
    [
        pytest.param(
            {"subscriber": "001", "to": "1"},
            None,
            None,
            {"event": "success", "subscriber": "001", "to": "1"},
            id="success",
        ),
        pytest.param(
            {"subscriber": "001", "to": "1", "id": "c"},
            None,
            None,
            {"event": "success", "subscriber": "001", "to": "1", "id": "c"},
            id="with-id",
        ),
        pytest.param(
            {"subscriber": "001", "to": "1"},
            PbxRefused("busy"),
            "busy",
            {"event": "error", "message": "busy", "subscriber": "001", "to": "1"},
            id="pbx-error",
        ),
        pytest.param(
            {},
            InvalidCommand("invalid command: body is not JSON"),
            None,
            {
                "event": "error",
                "message": "invalid command: body is not JSON",
                "subscriber": None,
                "to": None,
            },
            id="nothing-known",
        ),
        pytest.param(
            {"subscriber": "001", "to": "1", "id": 0},
            CommandTimeout("timeout"),
            None,
            {"event": "error", "message": "timeout", "subscriber": "001", "to": "1", "id": 0},
            id="timeout-id-zero",
        ),
    ],
)
def test_reply_body(
    fields: dict[str, object], outcome: Exception | None, pbx: str | None, reply: dict[str, object]
) -> None:
    assert orjson.loads(reply_body(fields, outcome, pbx)) == reply  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (None, "success"),
        (PbxRefused("x"), "pbx_error"),
        (InvalidCommand("x"), "invalid"),
        (UnknownSubscriber("x"), "unknown_subscriber"),
        (NotConnected("x"), "not_connected"),
        (CommandTimeout("x"), "timeout"),
        (CommandExpired("x"), "expired"),
    ],
)
def test_result_labels(outcome: Exception | None, label: str) -> None:
    assert result_of(outcome) == label  # type: ignore[arg-type]


def event(payload: bytes) -> CallEvent:
    parsed = parse_frame(payload)
    assert isinstance(parsed, CallEvent)
    return parsed


@pytest.mark.parametrize(
    ("payload", "is_reply"),
    [
        pytest.param(b'{"event":"success"}', True, id="success"),
        pytest.param(b'{"event":"error","message":"busy"}', True, id="error-answer"),
        pytest.param(b'{"event":"error","uuid":"1","lgDirection":4}', False, id="error-call-event"),
        pytest.param(b'{"event":"call.dial","uuid":"1"}', False, id="call-event"),
        pytest.param(b'{"event":"call.dial"}', False, id="call-event-no-uuid"),
    ],
)
def test_is_pbx_reply(payload: bytes, is_reply: bool) -> None:
    assert is_pbx_reply(event(payload)) is is_reply


def test_pbx_error_message() -> None:
    assert pbx_error_message(event(b'{"event":"error","message":"busy"}')) == "busy"
    assert pbx_error_message(event(b'{"event":"error"}')) == "PBX refused the call"
    assert (
        len(pbx_error_message(event(orjson.dumps({"event": "error", "message": "m" * 900})))) == 500
    )


@pytest.mark.parametrize(
    ("fields", "outcome", "pbx_message", "reply_to", "correlation_id", "expected"),
    [
        pytest.param(
            {"subscriber": "001", "to": "+380441234567", "id": 7},
            None,
            None,
            "amq.gen-caller",
            "c-1",
            [("", "amq.gen-caller"), ("phonet", "click2call.success.001")],
            id="reply-and-outcome",
        ),
        pytest.param(
            {"subscriber": "001", "id": 7},
            NotConnected("socket down"),
            None,
            None,
            "c-1",
            [("phonet", "click2call.error.001")],
            id="no-reply-to-outcome-only",
        ),
        pytest.param(
            {"subscriber": "001"},
            None,
            None,
            "",
            "c-1",
            [("phonet", "click2call.success.001")],
            id="empty-reply-to-outcome-only",
        ),
        pytest.param(
            {"subscriber": "001"},
            None,
            None,
            "phonet.click2call",
            "c-1",
            [("phonet", "click2call.success.001")],
            id="never-a-reply-into-the-command-queue",
        ),
        pytest.param(
            {"subscriber": 5, "id": None},
            InvalidCommand("'subscriber' must be a string"),
            None,
            "amq.gen-caller",
            None,
            [("", "amq.gen-caller"), ("phonet", "click2call.error.unknown")],
            id="unusable-subscriber-no-correlation-id",
        ),
        pytest.param(
            {"subscriber": "001", "to": "+380441234567"},
            PbxRefused("refused"),
            "Номер заблокирован",
            "amq.gen-caller",
            "c-1",
            [("", "amq.gen-caller"), ("phonet", "click2call.error.001")],
            id="the-pbx-own-words",
        ),
    ],
)
def test_answer_parts_and_outcome_event(
    fields: dict[str, object],
    outcome: CommandError | None,
    pbx_message: str | None,
    reply_to: str | None,
    correlation_id: str | None,
    expected: list[tuple[str, str]],
) -> None:
    """One answer, told twice: the RPC reply (none without a usable ``reply_to``) and the
    outcome event, with the same body and headers."""
    parts = answer_parts(
        fields,
        outcome,
        pbx_message,
        command_queue="phonet.click2call",
        reply_to=reply_to,
        correlation_id=correlation_id,
    )
    event = outcome_event(
        parts, exchange="phonet", received=1.5, wall_ms=1_700_000_000_123, new_id=lambda: "m2"
    )
    told = ([("", parts.reply_to)] if parts.reply_to else []) + [
        (event.exchange, event.routing_key)
    ]
    assert told == expected
    assert parts.body == reply_body(fields, outcome, pbx_message)
    assert event.body == parts.body
    assert event.message_id == "m2"
    assert (event.received, event.timestamp) == (1.5, 1_700_000_000)
    for headers in (parts.headers, event.headers):
        assert headers["result"] == result_of(outcome)
        assert headers.get("correlation_id", "absent") == (correlation_id or "absent")
        assert headers.get("subscriber") == (
            fields["subscriber"] if isinstance(fields["subscriber"], str) else None
        )
        assert headers.get("command_id") == (
            None if fields.get("id") is None else str(fields["id"])
        )
    body = orjson.loads(parts.body)
    assert body["event"] == ("success" if outcome is None else "error")
    if pbx_message is not None:
        assert body["message"] == pbx_message
