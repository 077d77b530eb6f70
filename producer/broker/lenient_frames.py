"""The one seam over pamqp's frame decoding: a content header it cannot decode costs that
message, not the connection.

Why: a message whose AMQP properties pamqp cannot decode — a ``timestamp`` of 2^63 (which
pika and other clients will send), a short string that is not UTF-8, a header table with a
field type it does not know — makes aiormq's frame reader fail, and aiormq closes the
*whole* connection. The broker redelivers the message to the next consumer, which fails
the same way: one message from anyone who may write to the default exchange stalls every
replica's command path, again and again (issue 21).

What: :func:`install` wraps ``pamqp.frame._unmarshal_header_frame`` (the function
``pamqp.frame.unmarshal`` calls for every content header frame). When pamqp decodes a
header, nothing changes. When it cannot, :func:`lenient_header` decodes the properties one
at a time, keeps every one it can read, skips the unreadable ones by their wire size, and
names them in the header :data:`UNDECODABLE` (``"timestamp"``, ``"headers,user_id"``), so
the consumer can answer and reject that message like any other invalid command. The frame
layout itself (class id, body size, property flags) is never guessed: a header whose
layout is broken still fails as before.

The wrapper is process-wide (pamqp has no per-connection hook); for a header pamqp decodes
it is the same function. Should pamqp's internals change (the function missing, or not
taking bytes), :func:`install` returns False and nothing is patched: commands then fall
back to the library's behaviour (the command connection closes and is reopened with
backoff; event publishing has a connection of its own, so it is not interrupted), which the
producer logs at start and counts in ``phonet_library_fallbacks_total{seam="pamqp_header"}``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp import commands, decode, frame, header

UNDECODABLE = "x-phonet-undecodable"
"""Header naming the properties that could not be decoded (comma-separated)."""

_FIXED = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}
_installed: Callable[[bytes], header.ContentHeader] | None = None


def _size(data: bytes, kind: str) -> int:
    """Bytes one encoded value of ``kind`` takes at the start of ``data`` (ValueError when
    even that cannot be told: the rest of the header is then unreadable)."""
    if kind in _FIXED:
        size = _FIXED[kind]
    elif kind == "shortstr":
        if not data:
            raise ValueError("truncated")
        size = 1 + data[0]
    elif kind in ("longstr", "table"):
        if len(data) < 4:
            raise ValueError("truncated")
        size = 4 + int(struct.unpack(">I", data[:4])[0])
    else:
        raise ValueError(f"unknown property type {kind}")
    if size > len(data):
        raise ValueError("truncated")
    return size


def lenient_properties(flags: int, data: bytes) -> tuple[commands.Basic.Properties, list[str]]:
    """Decode each property present in ``flags``; returns the properties that decoded and
    the names of those that did not."""
    properties = commands.Basic.Properties()
    bad: list[str] = []
    for name in commands.Basic.Properties.__slots__:
        if not flags & commands.Basic.Properties.flags[name]:
            continue
        kind = getattr(commands.Basic.Properties, "_" + name)
        try:
            size = _size(data, kind)
        except ValueError:
            bad.append(name)
            bad.extend(  # nothing after this one can be located any more
                later
                for later in commands.Basic.Properties.__slots__[
                    commands.Basic.Properties.__slots__.index(name) + 1 :
                ]
                if flags & commands.Basic.Properties.flags[later]
            )
            break
        try:
            _, value = decode.by_type(data[:size], kind)
        except Exception:  # any decoder error: this property only
            bad.append(name)
        else:
            setattr(properties, name, value)
        data = data[size:]
    return properties, bad


def lenient_header(frame_data: bytes) -> header.ContentHeader:
    """A content header whose undecodable properties are left out and named in the
    :data:`UNDECODABLE` header. Raises ``pamqp.exceptions.UnmarshalingException`` when the
    frame's layout (class id, sizes, flags) is broken."""
    from pamqp import exceptions

    content = header.ContentHeader()
    try:
        content.class_id, content.weight, content.body_size = struct.unpack(
            ">HHQ", frame_data[0:12]
        )
        offset, flags = content._get_flags(frame_data[12:])
    except (struct.error, ValueError) as error:
        raise exceptions.UnmarshalingException("ContentHeader", error) from error
    properties, bad = lenient_properties(flags, frame_data[12 + offset :])
    headers: dict[str, Any] = dict(properties.headers or {})
    if bad:
        headers[UNDECODABLE] = ",".join(bad)
    properties.headers = headers or None
    content.properties = properties
    return content


def install() -> bool:
    """Wrap pamqp's header decoding (once per process); False when its internals are not
    where they were (nothing is patched then)."""
    global _installed
    if _installed is not None:
        return True
    original = getattr(frame, "_unmarshal_header_frame", None)
    if not callable(original):
        return False
    try:  # it must decode an ordinary header as it always did
        probe = header.ContentHeader(0, 1, commands.Basic.Properties(message_id="x")).marshal()
        if original(probe).properties.message_id != "x":
            return False
    except Exception:
        return False

    def unmarshal_header(frame_data: bytes) -> header.ContentHeader:
        try:
            return original(frame_data)  # type: ignore[no-any-return]
        except Exception:
            return lenient_header(frame_data)

    setattr(frame, "_unmarshal_header_frame", unmarshal_header)  # noqa: B010 (pamqp's own)
    _installed = original
    return True


def uninstall() -> None:
    """Put pamqp back as it was (tests of the fallback)."""
    global _installed
    if _installed is not None:
        setattr(frame, "_unmarshal_header_frame", _installed)  # noqa: B010
        _installed = None
