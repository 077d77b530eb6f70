"""Routing keys: subscriber tokens, event words, wildcards, unicode, the 255-byte cap."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.core import routing

SAFE_WORD = re.compile(r"(?:[A-Za-z0-9_@+\-]|%[0-9A-F]{2})+")


@pytest.mark.parametrize(
    ("subscriber", "token"),
    [
        pytest.param("001", "001", id="extension"),
        pytest.param("ivan.petrov@example.com", "ivan%2Epetrov@example%2Ecom", id="email"),
        pytest.param("a+b_c-d@x", "a+b_c-d@x", id="safe-punctuation"),
        pytest.param("*", "%2A", id="star"),
        pytest.param("#", "%23", id="hash"),
        pytest.param("a b", "a%20b", id="space"),
        pytest.param("100%", "100%25", id="percent-itself"),
        pytest.param("Олег", "%D0%9E%D0%BB%D0%B5%D0%B3", id="cyrillic-utf8"),
        pytest.param("é", "%C3%A9", id="latin-accent"),
        pytest.param("😀", "%F0%9F%98%80", id="emoji-4-bytes"),
        pytest.param("a/b\\c", "a%2Fb%5Cc", id="slashes"),
    ],
)
def test_subscriber_token(subscriber: str, token: str) -> None:
    assert routing.subscriber_token(subscriber) == token


@pytest.mark.parametrize(
    ("event", "subscriber", "key"),
    [
        pytest.param("call.dial", "001", "call.dial.001", id="dial"),
        pytest.param("call.bridge", "001", "call.bridge.001", id="bridge"),
        pytest.param("call.hangup", "001", "call.hangup.001", id="hangup"),
        pytest.param("error", "002", "error.002", id="error-one-word"),
        pytest.param(
            "call.dial",
            "ivan.petrov@example.com",
            "call.dial.ivan%2Epetrov@example%2Ecom",
            id="email-one-word",
        ),
        pytest.param("call.*", "001", "call.%2A.001", id="star-word"),
        pytest.param("#", "001", "%23.001", id="hash-event"),
        pytest.param("call.#.x", "001", "call.%23.x.001", id="hash-inside"),
        pytest.param("call..dial", "001", "call%2E%2Edial.001", id="empty-word-middle"),
        pytest.param(".dial", "001", "%2Edial.001", id="leading-dot"),
        pytest.param("dial.", "001", "dial%2E.001", id="trailing-dot"),
        pytest.param(".", "001", "%2E.001", id="only-dot"),
        pytest.param("call dial", "001", "call%20dial.001", id="space"),
        pytest.param(
            "дзвінок.x",
            "001",
            "%D0%B4%D0%B7%D0%B2%D1%96%D0%BD%D0%BE%D0%BA.x.001",
            id="unicode-event",
        ),
        pytest.param("", "001", None, id="empty-event-has-no-key"),
        pytest.param("x" * 251, "001", "x" * 251 + ".001", id="exactly-255"),
        pytest.param("x" * 252, "001", None, id="256-too-long"),
        pytest.param("*" * 100, "001", None, id="escaping-makes-it-too-long"),
    ],
)
def test_routing_key(event: str, subscriber: str, key: str | None) -> None:
    assert routing.routing_key(event, subscriber) == key


def test_other_keys() -> None:
    assert routing.invalid_key("ivan.petrov@example.com") == "invalid.ivan%2Epetrov@example%2Ecom"
    assert routing.click2call_key("success", "001") == "click2call.success.001"
    assert routing.click2call_key("error", "a.b") == "click2call.error.a%2Eb"


@pytest.mark.parametrize(
    ("subscriber", "problem"),
    [
        pytest.param("001", None, id="ok"),
        pytest.param("ivan.petrov@example.com", None, id="ok-email"),
        pytest.param("", "is empty", id="empty"),
        pytest.param(" 001", "has leading or trailing spaces", id="space"),
        pytest.param("0\n1", "contains a control character", id="control"),
        pytest.param("\ud800", "is not valid Unicode", id="lone-surrogate"),
        pytest.param("a" * 200, None, id="200-fits"),
        pytest.param("a" * 201, "is longer than 200 bytes once escaped for routing", id="201"),
        pytest.param(".", None, id="dot-ok-escaped"),
        pytest.param("." * 67, "is longer than 200 bytes once escaped for routing", id="dots"),
    ],
)
def test_subscriber_token_error(subscriber: str, problem: str | None) -> None:
    assert routing.subscriber_token_error(subscriber) == problem


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=60))
def test_any_event_gives_safe_words_or_none(event: str, subscriber: str) -> None:
    """Property: a key has only safe words, ends with the one-word subscriber token,
    never contains an empty word or a wildcard, and fits 255 bytes."""
    try:
        subscriber.encode("utf-8")
        event.encode("utf-8")
    except UnicodeEncodeError:
        return
    key = routing.routing_key(event, subscriber)
    if key is None:
        return
    assert len(key.encode()) <= routing.MAX_ROUTING_KEY_BYTES
    words = key.split(".")
    assert all(SAFE_WORD.fullmatch(w) for w in words), key
    assert words[-1] == routing.subscriber_token(subscriber)
    assert "*" not in key
    assert "#" not in key
