"""The spool's on-disk record format. Pure: bytes in, bytes out.

A segment file is a sequence of records::

    record  = magic (2 bytes, A5 5A) | length (u32 BE) | crc32 (u32 BE) | payload
    payload = seq (u64 BE) | meta length (u16 BE) | meta (JSON) | body

``meta`` carries the envelope's exchange, routing key, message id, headers, type,
timestamp, label, kind and correlation id; ``body`` is the message body unchanged. The CRC
covers the payload, so a record cut short by a crash (a torn tail) or damaged on disk is
recognised: :func:`decode` stops at the first bad record and reports how many good bytes
precede it, so the caller can truncate the file there and count the damage.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import orjson

from producer.envelope import Envelope

MAGIC = b"\xa5\x5a"
_HEAD = struct.Struct(">2sII")  # magic, payload length, crc32
_PREFIX = struct.Struct(">QH")  # seq, meta length
HEAD_SIZE = _HEAD.size
MAX_PAYLOAD = 64 * 1024 * 1024
"""Larger lengths are corruption (frames are capped far below)."""


def encode(envelope: Envelope) -> bytes:
    """One record for ``envelope`` (its ``seq`` must be set)."""
    meta = orjson.dumps(
        {
            "x": envelope.exchange,
            "k": envelope.routing_key,
            "m": envelope.message_id,
            "h": envelope.headers,
            "t": envelope.type,
            "s": envelope.timestamp,
            "l": envelope.label,
            "d": envelope.kind,
            "c": envelope.correlation_id,
        }
    )
    payload = b"".join((_PREFIX.pack(envelope.seq, len(meta)), meta, envelope.body))
    return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Decoded:
    """What a segment held: its good records, where they end, and whether damage followed."""

    envelopes: list[Envelope]
    good_bytes: int
    damaged: bool


def decode(data: bytes, *, received: float = 0.0) -> Decoded:
    """Every good record in ``data``, in order, stopping at the first bad one.

    A record is bad when the magic is wrong, the length is absurd or runs past the end, the
    CRC does not match, or its payload does not parse. ``received`` becomes each envelope's
    monotonic receive time (for latency metrics after a restart).
    """
    envelopes: list[Envelope] = []
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < HEAD_SIZE:
            return Decoded(envelopes, offset, True)
        magic, length, crc = _HEAD.unpack_from(data, offset)
        start = offset + HEAD_SIZE
        if magic != MAGIC or length > MAX_PAYLOAD or start + length > end:
            return Decoded(envelopes, offset, True)
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return Decoded(envelopes, offset, True)
        envelope = _parse(payload, received)
        if envelope is None:
            return Decoded(envelopes, offset, True)
        envelopes.append(envelope)
        offset = start + length
    return Decoded(envelopes, offset, False)


def _parse(payload: bytes, received: float) -> Envelope | None:
    if len(payload) < _PREFIX.size:
        return None
    seq, meta_len = _PREFIX.unpack_from(payload)
    meta_end = _PREFIX.size + meta_len
    try:
        meta = orjson.loads(payload[_PREFIX.size : meta_end])
        return Envelope(
            exchange=meta["x"],
            routing_key=meta["k"],
            body=payload[meta_end:],
            message_id=meta["m"],
            headers=meta["h"],
            type=meta["t"],
            timestamp=meta["s"],
            label=meta["l"],
            kind=meta["d"],
            received=received,
            correlation_id=meta["c"],
            seq=seq,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def encode_checkpoint(seq: int) -> bytes:
    """The checkpoint file: the oldest sequence number still unconfirmed, with a CRC."""
    raw = struct.pack(">Q", seq)
    return raw + struct.pack(">I", zlib.crc32(raw))


def decode_checkpoint(data: bytes) -> int:
    """The checkpoint's sequence number, or 0 (replay everything) when it is damaged."""
    if len(data) != 12:
        return 0
    raw, (crc,) = data[:8], struct.unpack(">I", data[8:])
    if zlib.crc32(raw) != crc:
        return 0
    return int(struct.unpack(">Q", raw)[0])
