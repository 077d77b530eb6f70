"""Routing keys: how a (event, subscriber) pair becomes one safe topic-exchange key.

A key is ``<event words>.<subscriber token>``, e.g. ``call.dial.001``. Every word is
percent-encoded: each character outside ``[A-Za-z0-9_@+-]`` becomes its UTF-8 bytes as
``%XX`` (upper-case hex). So ``ivan.petrov@example.com`` is the single word
``ivan%2Epetrov@example%2Ecom``, and a hostile ``*`` or ``#`` becomes ``%2A``/``%23``:
nothing a frame says can turn into a wildcard or change the number of words.

The event part keeps its dots as word separators (``call.dial`` is two words) unless a
dot would leave an empty word (``call..dial``, ``.x``, ``x.``): then the event is kept as
one word with its dots encoded too, so consumers' ``call.*.*`` patterns still mean what
they say. AMQP caps a routing key at 255 bytes; :func:`routing_key` returns ``None`` when
the key would not fit, and the caller treats the frame as invalid.

Pure functions, no I/O. The escape itself is the consumer toolkit's
(:mod:`phonet_client.keys`), so what consumers bind with is what the producer routes by.
Memory: the subscriber token cache keeps at most 4,096 entries (about 200 bytes each),
whatever the number of subscribers.
"""

from __future__ import annotations

from functools import lru_cache

from phonet_client.keys import escape_word

MAX_ROUTING_KEY_BYTES = 255
"""AMQP 0-9-1 ``shortstr`` limit on ``basic.publish`` routing keys."""

MAX_SUBSCRIBER_TOKEN_BYTES = 200
"""Leaves room for the longest fixed prefix we publish (``click2call.success.``) and more."""

INVALID_PREFIX = "invalid"
CLICK2CALL_PREFIX = "click2call"


@lru_cache(maxsize=4096)
def subscriber_token(subscriber: str) -> str:
    """The subscriber as one routing word (cached: the configured set is small)."""
    return escape_word(subscriber)


@lru_cache(maxsize=1024)
def event_words(event: str) -> str:
    """The event as one or more escaped routing words (see the module docstring).

    Cached because a stream carries a handful of distinct events; the cache is bounded so a
    hostile stream of unique names cannot grow it.
    """
    words = event.split(".")
    if all(words):
        return ".".join(escape_word(w) for w in words)
    return escape_word(event)


def routing_key(event: str, subscriber: str) -> str | None:
    """``<event words>.<subscriber token>``, or ``None`` when it would exceed 255 bytes.

    An empty ``event`` also gives ``None``: it has no word to route by.
    """
    if not event:
        return None
    key = f"{event_words(event)}.{subscriber_token(subscriber)}"
    # Escaped keys are pure ASCII, so characters == bytes.
    return key if len(key) <= MAX_ROUTING_KEY_BYTES else None


def invalid_key(subscriber: str) -> str:
    """Key for a frame that is not a usable event: ``invalid.<token>``."""
    return f"{INVALID_PREFIX}.{subscriber_token(subscriber)}"


def click2call_key(outcome: str, subscriber: str) -> str:
    """Key for a click2call outcome on the events exchange: ``click2call.<outcome>.<token>``."""
    return f"{CLICK2CALL_PREFIX}.{escape_word(outcome)}.{subscriber_token(subscriber)}"


def subscriber_token_error(subscriber: str) -> str | None:
    """Why ``subscriber`` cannot be configured, or ``None`` when it is fine."""
    if not subscriber:
        return "is empty"
    if subscriber != subscriber.strip():
        return "has leading or trailing spaces"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in subscriber):
        return "contains a control character"
    try:
        subscriber.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if len(escape_word(subscriber)) > MAX_SUBSCRIBER_TOKEN_BYTES:
        return f"is longer than {MAX_SUBSCRIBER_TOKEN_BYTES} bytes once escaped for routing"
    return None


def made_key(prefix: str, subscriber: str) -> str | None:
    """``<prefix>.<token>`` for messages the producer makes (``gap``, ``history.call``,
    ``active.call``); None when it would not fit a routing key."""
    key = f"{prefix}.{subscriber_token(subscriber)}"
    return key if len(key.encode()) <= MAX_ROUTING_KEY_BYTES else None
