"""The consumer toolkit's routing keys (:mod:`phonet_client.keys`): both ways, with the
producer's own cases; and the edges of keys and :func:`phonet_client.parse`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonet_client import (
    Unknown,
    binding_key,
    parse,
    parse_routing_key,
)
from phonet_client import keys as client_keys
from producer.core import routing


@pytest.mark.parametrize(
    ("event", "subscriber", "key"),
    [
        pytest.param("#", None, "#", id="everything"),
        pytest.param("#", "001", "#.001", id="everything-of-one"),
        pytest.param("call.*", None, "call.*.*", id="any-call-event"),
        pytest.param("call.hangup", None, "call.hangup.*", id="hangups"),
        pytest.param(
            "call.*", "ivan.petrov@example.com", "call.*.ivan%2Epetrov@example%2Ecom", id="email"
        ),
        pytest.param("*", "*", "*.%2A", id="a-subscriber-named-star-is-not-a-wildcard"),
        pytest.param("history.call", "Олег", "history.call.%D0%9E%D0%BB%D0%B5%D0%B3", id="utf8"),
        pytest.param("click2call.#", None, "click2call.#.*", id="outcomes"),
        pytest.param("call dial", "001", "call%20dial.001", id="escaped-word"),
    ],
)
def test_binding_key(event: str, subscriber: str | None, key: str) -> None:
    assert binding_key(event, subscriber) == key


@pytest.mark.parametrize(
    "event", [pytest.param("", id="empty"), pytest.param("call..dial", id="empty-word")]
)
def test_binding_key_refuses(event: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        binding_key(event)


TEXT = st.text(min_size=1, max_size=30)


@given(event=TEXT, subscriber=TEXT)
def test_keys_read_back_what_the_producer_routes(event: str, subscriber: str) -> None:
    """Whatever the event and subscriber, the producer's key parses back to them, and the
    binding key for that subscriber matches it (the same escape on both sides)."""
    key = routing.routing_key(event, subscriber)
    if key is None:
        return  # too long for AMQP: the producer publishes it as invalid instead
    assert client_keys.routing_key(event, subscriber) == key
    assert parse_routing_key(key) == (event, subscriber)
    assert key.endswith("." + binding_key(subscriber=subscriber)[2:])


def test_a_key_of_one_word_is_not_ours() -> None:
    with pytest.raises(ValueError, match="not a routing key"):
        parse_routing_key("gap")


def test_edges_of_keys_and_parse() -> None:
    from phonet_client.keys import escape_word, unescape_word

    assert unescape_word(escape_word("a\ud800b")) == "a\ud800b"  # a lone surrogate, kept
    with pytest.raises(ValueError, match="subscriber must not be empty"):
        binding_key("call.dial", subscriber="")
    deep = b'{"event":"call.dial","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert isinstance(parse("call.dial.001", deep, {}), Unknown)  # never raises
