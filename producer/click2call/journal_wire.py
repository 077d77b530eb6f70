"""The click2call journal's entries as AMQP messages: headers out, headers in. Pure.

Every entry is one message in the stream whose headers say what it is (:data:`KIND`) and
for which command (:data:`COMMAND`, the command's identity), written by one replica
instance (``x-phonet-replica``, ``x-phonet-instance``). A reply's journal copy is the
reply itself (its body is the reply's body) with the entry's headers beside the caller's.
Every value is a string, an integer or a boolean: a stream keeps AMQP 0-9-1 headers as
AMQP 1.0 application properties, which hold no arrays (an array header is dropped).

:func:`read_entry` applies one message to the pure
:class:`~producer.click2call.journal.Journal`; it never raises for what a message holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producer.click2call.effects import Settle
from producer.click2call.journal import Claim, Dispatch, Journal, Owner, Remembered

KIND = "x-phonet-journal"
COMMAND = "x-phonet-command"
CLAIM = "x-phonet-claim"
DISPATCH = "x-phonet-dispatch"
REPLY = "x-phonet-reply"
NONCE = "x-phonet-nonce"
KINDS = frozenset({"claim", "release", "reply", "settled", "orphaned", "dispatch"})
PROPERTIES = ("reply_to", "correlation_id", "message_id", "user_id", "app_id")
"""Command properties a dispatch carries (as ``x-phonet-p-<name>`` headers)."""


def entry_headers(kind: str, identity: str, **extra: str) -> dict[str, Any]:
    return {KIND: kind, COMMAND: identity, **extra}


def reply_headers(
    headers: dict[str, Any],
    identity: str,
    remembered: Remembered,
    concludes: tuple[str, ...],
    reply_id: str,
    dispatch: str = "",
    settler: Owner | None = None,
) -> dict[str, Any]:
    """A reply's headers: the caller's ``headers`` and the journal's."""
    entry = {
        **headers,
        KIND: "reply",
        COMMAND: identity,
        "x-phonet-result": remembered.result,
        "x-phonet-dialed": remembered.dialed,
        "x-phonet-settle": remembered.settle.value,
        REPLY: reply_id,
    }
    if concludes:
        entry["x-phonet-concludes"] = ",".join(concludes)
    if dispatch:
        entry[DISPATCH] = dispatch
    if settler is not None:
        entry["x-phonet-settler-replica"], entry["x-phonet-settler-instance"] = settler
    return entry


def dispatch_headers(
    identity: str, dispatch: str, token: str, subscriber: str, properties: dict[str, Any]
) -> dict[str, Any]:
    """A dispatch's headers: its claim, its subscriber, the command's properties (text
    values, and ``timestamp`` in seconds or None)."""
    headers: dict[str, Any] = {
        KIND: "dispatch",
        COMMAND: identity,
        CLAIM: token,
        DISPATCH: dispatch,
        "x-phonet-subscriber": subscriber,
    }
    for name in PROPERTIES:
        if isinstance(properties.get(name), str):
            headers[f"x-phonet-p-{name}"] = properties[name]
    stamp = properties.get("timestamp")
    if isinstance(stamp, float | int) and not isinstance(stamp, bool):
        headers["x-phonet-p-timestamp-ms"] = int(stamp * 1000)
    return headers


@dataclass(frozen=True)
class Read:
    """What one message was: a marker (its nonce), an entry from another user (``forged``),
    an entry applied to the journal (``changed``), or nothing usable."""

    marker: str | None = None
    forged: bool = False
    changed: bool = False


def read_entry(
    journal: Journal,
    headers: Any,
    user_id: object,
    body: bytes,
    *,
    user: str | None,
    now: float,
) -> Read:
    """Apply one stream message to ``journal``. Only entries written by ``user`` (the
    producer's broker user, checked by RabbitMQ) are believed."""
    headers = headers if isinstance(headers, dict) else {}
    kind, identity = headers.get(KIND), headers.get(COMMAND)
    if kind == "marker":
        nonce = headers.get(NONCE)
        return Read(marker=nonce if isinstance(nonce, str) else None)
    if not isinstance(identity, str) or kind not in KINDS:
        return Read()
    if user is not None and user_id != user:
        return Read(forged=True)
    owner = _owner(headers.get("x-phonet-replica"), headers.get("x-phonet-instance"))
    token, reply_id = headers.get(CLAIM), headers.get(REPLY)
    if kind == "claim" and owner is not None and isinstance(token, str):
        journal.claimed(identity, owner, token, now)
    elif kind == "release" and isinstance(token, str):
        journal.released(identity, token)
    elif kind == "settled" and isinstance(reply_id, str):
        journal.settled(identity, reply_id)
    elif kind == "orphaned" and isinstance(reply_id, str):
        journal.orphaned(identity, reply_id)
    elif kind == "reply":
        remembered = _remembered(headers, body)
        if remembered is None:
            return Read()
        named, answers = headers.get("x-phonet-concludes"), headers.get(DISPATCH)
        settler = _owner(
            headers.get("x-phonet-settler-replica"), headers.get("x-phonet-settler-instance")
        )
        journal.replied(
            identity,
            remembered,
            tuple(t for t in named.split(",") if t) if isinstance(named, str) else (),
            now,
            reply_id if isinstance(reply_id, str) else "",
            settler or owner or ("", ""),
            answers if isinstance(answers, str) else "",
        )
    elif kind == "dispatch" and owner is not None and isinstance(token, str):
        handed = _dispatch(identity, owner, token, headers, body, now)
        if handed is None:
            return Read()
        journal.dispatched(handed, now)
    else:
        return Read()
    return Read(changed=True)


def _dispatch(
    identity: str, owner: Owner, token: str, headers: dict[str, Any], body: bytes, now: float
) -> Dispatch | None:
    dispatch, subscriber = headers.get(DISPATCH), headers.get("x-phonet-subscriber")
    if not isinstance(dispatch, str) or not isinstance(subscriber, str):
        return None
    properties: dict[str, Any] = {
        name: headers[f"x-phonet-p-{name}"]
        for name in PROPERTIES
        if isinstance(headers.get(f"x-phonet-p-{name}"), str)
    }
    stamp = headers.get("x-phonet-p-timestamp-ms")
    properties["timestamp"] = (
        stamp / 1000 if isinstance(stamp, int) and not isinstance(stamp, bool) else None
    )
    return Dispatch(dispatch, identity, subscriber, Claim(owner, token), body, properties, now)


def _owner(replica: object, instance: object) -> Owner | None:
    if isinstance(replica, str) and isinstance(instance, str) and replica:
        return replica, instance
    return None


def _remembered(headers: dict[str, Any], body: bytes) -> Remembered | None:
    result, dialed, settle = (
        headers.get("x-phonet-result"),
        headers.get("x-phonet-dialed"),
        headers.get("x-phonet-settle"),
    )
    if not isinstance(result, str) or not isinstance(dialed, bool):
        return None
    try:
        how = Settle(settle)
    except ValueError:
        return None
    return Remembered(body, result, dialed, how)
