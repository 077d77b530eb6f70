"""Pure rules of the settings (:mod:`producer.core.rules`): the subscribers file format,
secrets masked in URLs, a subscriber's socket URL."""

from __future__ import annotations

import re

import pytest

from producer.core.rules import mask_url, parse_subscribers_text, subscriber_url


@pytest.mark.parametrize(
    ("text", "result"),
    [
        pytest.param("001\n002\n", ("001", "002"), id="lines"),
        pytest.param("# team A\n001  # Ivan\n\n  002\n", ("001", "002"), id="comments-blanks"),
        pytest.param("001\n001\n", "line 2: '001' is listed twice (line 1)", id="twice"),
        pytest.param("001\n" + "x" * 300 + "\n", "line 2: 'xxxx", id="bad-token"),
        pytest.param("# nobody\n", "lists no subscriber", id="empty"),
    ],
)
def test_subscribers_file_format(text: str, result: tuple[str, ...] | str) -> None:
    if isinstance(result, tuple):
        assert parse_subscribers_text(text) == result
    else:
        with pytest.raises(ValueError, match=re.escape(result)):
            parse_subscribers_text(text)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        pytest.param(
            "amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/", id="password"
        ),
        pytest.param("amqps://u:p%40ss@h/vh", "amqps://u:***@h/vh", id="encoded-password"),
        pytest.param("amqp://localhost/", "amqp://localhost/", id="no-credentials"),
        pytest.param(
            "wss://x/live?domain=d&apiKey=SECRET&subscriber=1",
            "wss://x/live?domain=d&apiKey=***&subscriber=1",
            id="api-key",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_subscriber_url_keeps_an_existing_query() -> None:
    assert subscriber_url("ws://h:1/p?x=1", "d", "k", "s") == (
        "ws://h:1/p?x=1&domain=d&apiKey=k&subscriber=s"
    )
