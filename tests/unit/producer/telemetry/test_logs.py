"""Logs never show secrets; bursts are summarised; untrusted data is trimmed."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from producer.telemetry.logs import BurstLog, JsonFormatter, Scrubber, TextFormatter, trimmed


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        pytest.param(
            "GET /live?domain=d&apiKey=S3cr3tKey&subscriber=1",
            "GET /live?domain=d&apiKey=***&subscriber=1",
            id="query-key",
        ),
        pytest.param("apikey=abc", "apikey=***", id="any-case"),
        pytest.param("amqp://guest:hunter2@host/", "amqp://guest:***@host/", id="url-password"),
        pytest.param("the key is REGISTEREDSECRET!", "the key is ***!", id="registered"),
        pytest.param("nothing here", "nothing here", id="clean"),
    ],
)
def test_scrubber(text: str, clean: str) -> None:
    scrub = Scrubber()
    scrub.add("REGISTEREDSECRET")
    scrub.add("ab")  # too short to register safely: ignored
    assert scrub(text) == clean


def test_formatters_scrub_and_carry_extras() -> None:
    from producer.telemetry.logs import SCRUBBER

    SCRUBBER.add("TOPSECRETVALUE")
    record = logging.LogRecord("x", logging.INFO, "f", 1, "url %s", ("wss://h/?apiKey=k1",), None)
    record.subscriber = "001"
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["msg"] == "url wss://h/?apiKey=***"
    assert entry["subscriber"] == "001"
    assert entry["level"] == "INFO"
    record2 = logging.LogRecord("x", logging.INFO, "f", 1, "TOPSECRETVALUE", None, None)
    assert "TOPSECRETVALUE" not in TextFormatter().format(record2)


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        pytest.param(b"short", "short", id="short"),
        pytest.param(b"\xff\xfe", "\\xff\\xfe", id="binary-escaped"),
        pytest.param("x" * 400, "x" * 300 + "…(+100 chars)", id="long"),
    ],
)
def test_trimmed(data: bytes | str, shown: str) -> None:
    assert trimmed(data) == shown


def test_burst_log_limits_and_counts() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.burst")
    logger.handlers = [logging.StreamHandler(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    burst = BurstLog(logger, interval=10.0)
    logged = [burst(logging.WARNING, "bad %d", i, now=float(i) / 10) for i in range(50)]
    assert logged[0]
    assert not any(logged[1:])
    assert burst(logging.WARNING, "bad again", now=11.0)
    assert stream.getvalue().splitlines() == ["bad 0", "bad again"]


def test_log_extras_skip_objects_and_the_formatters_own_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.websocket = object()
    record.subscriber = "001"
    text = TextFormatter().format(record)
    assert text.endswith("x: hello subscriber=001")
