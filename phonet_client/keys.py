"""Routing and binding keys of the events exchange: the one escape, both ways. Pure.

A key is ``<event words>.<subscriber token>``, e.g. ``call.dial.001``. Every word is
percent-encoded: each character outside ``[A-Za-z0-9_@+-]`` becomes its UTF-8 bytes as
``%XX`` (upper-case hex). So ``ivan.petrov@example.com`` is the single word
``ivan%2Epetrov@example%2Ecom``, and a hostile ``*`` or ``#`` becomes ``%2A``/``%23``:
nothing a frame says can turn into a wildcard or change the number of words. The event
keeps its dots as word separators unless a dot would leave an empty word (``call..dial``):
then it is one word with its dots encoded too.

The producer routes with these functions (``producer/core/routing.py`` imports them), so a
consumer that binds with :func:`binding_key` and reads keys with :func:`parse_routing_key`
uses the same escape by construction.

>>> binding_key(event="call.*", subscriber="ivan.petrov@example.com")
'call.*.ivan%2Epetrov@example%2Ecom'
>>> parse_routing_key("call.dial.ivan%2Epetrov@example%2Ecom")
RoutingKey(event='call.dial', subscriber='ivan.petrov@example.com')
"""

from __future__ import annotations

import re
from typing import NamedTuple

CALL_EVENTS = ("call.dial", "call.bridge", "call.hangup")
"""The PBX's call events (it also sends ``error``, an event of its own)."""
KINDS = ("invalid", "gap", "history.call", "active.call", "click2call.success", "click2call.error")
"""The prefixes of what the producer makes itself, beside the PBX's events."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_@+\-]")
_ESCAPED = re.compile(r"(?:%[0-9A-F]{2})+")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def escape_word(word: str) -> str:
    """Percent-encode every character of ``word`` outside ``[A-Za-z0-9_@+-]``.

    >>> escape_word("ivan.petrov@example.com")
    'ivan%2Epetrov@example%2Ecom'
    """
    if not _UNSAFE.search(word):
        return word
    return _UNSAFE.sub(_percent, word)


def unescape_word(word: str) -> str:
    """The inverse of :func:`escape_word` (bytes that are not UTF-8 are replaced)."""
    if "%" not in word:
        return word

    def decode(match: re.Match[str]) -> str:
        raw = bytes.fromhex(match.group().replace("%", ""))
        try:  # the escape kept lone surrogates (surrogatepass): so does the way back
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return raw.decode("utf-8", "replace")

    return _ESCAPED.sub(decode, word)


def subscriber_token(subscriber: str) -> str:
    """The subscriber as one routing word."""
    return escape_word(subscriber)


def event_words(event: str) -> str:
    """The event as one or more escaped routing words (see the module docstring)."""
    words = event.split(".")
    if all(words):
        return ".".join(escape_word(w) for w in words)
    return escape_word(event)


def routing_key(event: str, subscriber: str) -> str:
    """The key the producer publishes ``event`` of ``subscriber`` under (``event`` may
    also be a prefix of the producer's own: ``gap``, ``history.call``,
    ``click2call.success``...)."""
    return f"{event_words(event)}.{subscriber_token(subscriber)}"


def binding_key(event: str = "#", subscriber: str | None = None) -> str:
    """A binding key for a queue on the events exchange.

    ``event`` is a pattern of event words: ``call.dial``, ``call.*`` (any call event),
    ``#`` (everything, the default) — its ``*`` and ``#`` words stay wildcards, any other
    word is escaped. ``subscriber`` is one subscriber (escaped as the producer does) or None
    for any.

    >>> binding_key("call.hangup")
    'call.hangup.*'
    >>> binding_key(subscriber="001")
    '#.001'
    """
    if not event:
        raise ValueError("event must not be empty: use '#' for every event")
    words = [w if w in ("*", "#") else escape_word(w) for w in event.split(".")]
    if not all(words):
        raise ValueError(f"event {event!r} has an empty word")
    if subscriber == "":
        raise ValueError("subscriber must not be empty: use None for every subscriber")
    token = "*" if subscriber is None else subscriber_token(subscriber)
    if words == ["#"]:
        return "#" if subscriber is None else f"#.{token}"
    return ".".join([*words, token])


class RoutingKey(NamedTuple):
    """A routing key read back: the event (or the producer's prefix) and the subscriber."""

    event: str
    subscriber: str


def parse_routing_key(key: str) -> RoutingKey:
    """``call.dial.001`` → ``RoutingKey("call.dial", "001")``; escaped words are decoded.
    Raises ValueError for a key with fewer than two words."""
    head, dot, token = key.rpartition(".")
    if not dot or not head or not token:
        raise ValueError(f"not a routing key of the events exchange: {key[:100]!r}")
    words = head.split(".")
    event = ".".join(unescape_word(w) for w in words)
    return RoutingKey(event, unescape_word(token))
