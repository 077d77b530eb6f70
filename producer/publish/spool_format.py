"""The spool's on-disk format. Pure: bytes in, bytes out.

A segment file is a sequence of records::

    record  = magic (2 bytes, A5 5A) | length (u32 BE) | crc32 (u32 BE) | payload
    payload = seq (u64 BE) | meta length (u16 BE) | meta (JSON) | body

``meta`` carries the envelope's exchange, routing key, message id, headers, type,
timestamp, label, kind and correlation id; ``body`` is the message body unchanged. The CRC
covers the payload, so a record cut short by a crash (a torn tail) or damaged on disk is
recognised. :func:`decode` does not stop there: it *resynchronises* — it looks for the next
offset where a whole record starts (magic, sane length, matching CRC, a sequence number above
the last good one) and goes on from there, so damage costs only the bytes it covers. Each
run of bad bytes between good records is one :class:`Damage`; one running to the end of the
data is a torn tail, which the caller may cut away.

The directory's ``format`` file names the version of all of this (:data:`FORMAT_VERSION`);
:func:`decode_format` reads it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import orjson

from producer.core.envelope import Envelope

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
class Damage:
    """Bytes ``[start, end)`` of a segment that hold no good record."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Decoded:
    """What a segment held: its good records, in order, and the damaged regions between
    or after them."""

    envelopes: list[Envelope]
    damage: list[Damage]
    size: int
    """The length of the data decoded."""
    gave_up: bool = False
    """The resynchronisation ran out of its budget (:data:`RESYNC_BUDGET`): the last region
    may still hold good records, so it is not a torn tail."""

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def torn(self) -> int:
        """Bytes of a torn tail (damage with nothing good after it), 0 without one."""
        if self.damage and self.damage[-1].end == self.size and not self.gave_up:
            return self.damage[-1].size
        return 0

    @property
    def good_bytes(self) -> int:
        """Where the data should end: before a torn tail, else where it ends."""
        return self.size - self.torn


RESYNC_BUDGET = 2
"""After damage, candidate records are CRC-checked for at most this many times the data's
size in all: the scan stays linear even in data stuffed with fake record headers."""
_META_START = b'{"x":'  # orjson keeps the key order of :func:`encode`'s dict


def decode(data: bytes, *, received: float = 0.0) -> Decoded:
    """Every good record in ``data``, in order, skipping damaged regions.

    A record is bad when the magic is wrong, the length is absurd or runs past the end, the
    CRC does not match, or its payload does not parse. After a bad record the scan moves to
    the next offset holding a whole good record whose sequence number is above the last good
    one (so a record-like run of bytes inside a body, which fails the CRC or comes out of
    order, is not taken for one). The scan is linear in ``len(data)``: each offset is looked
    at once, and CRC checks of candidates are bounded by :data:`RESYNC_BUDGET`. ``received``
    becomes each envelope's monotonic receive time (for latency metrics after a restart).
    """
    envelopes: list[Envelope] = []
    damage: list[Damage] = []
    offset, end = 0, len(data)
    budget = RESYNC_BUDGET * end
    while offset < end:
        found = _record_at(data, offset, received)
        if found is not None:
            envelope, offset = found
            envelopes.append(envelope)
            continue
        after = envelopes[-1].seq if envelopes else -1
        resumed, budget = _resync(data, offset + 1, after, received, budget)
        if resumed is None:
            damage.append(Damage(offset, end))
            return Decoded(envelopes, damage, end, gave_up=budget < 0)
        damage.append(Damage(offset, resumed))
        offset = resumed
    return Decoded(envelopes, damage, end)


def _record_at(data: bytes, offset: int, received: float) -> tuple[Envelope, int] | None:
    """The good record at ``offset`` and where it ends, or None."""
    if len(data) - offset < HEAD_SIZE:
        return None
    magic, length, crc = _HEAD.unpack_from(data, offset)
    start = offset + HEAD_SIZE
    if magic != MAGIC or length > MAX_PAYLOAD or start + length > len(data):
        return None
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        return None
    envelope = _parse(payload, received)
    return None if envelope is None else (envelope, start + length)


def _resync(
    data: bytes, start: int, after: int, received: float, budget: int
) -> tuple[int | None, int]:
    """The first offset from ``start`` where a good record with a sequence number above
    ``after`` begins (or None), and what is left of the CRC ``budget`` (negative: spent)."""
    end = len(data)
    candidate = data.find(MAGIC, start)
    while candidate != -1:
        if end - candidate >= HEAD_SIZE + _PREFIX.size + len(_META_START):
            _, length, _ = _HEAD.unpack_from(data, candidate)
            body = candidate + HEAD_SIZE
            if (
                _PREFIX.size + len(_META_START) <= length <= MAX_PAYLOAD
                and body + length <= end
                and data.startswith(_META_START, body + _PREFIX.size)
                and _PREFIX.unpack_from(data, body)[0] > after
            ):
                budget -= length
                if budget < 0:
                    return None, budget
                if _record_at(data, candidate, received) is not None:
                    return candidate, budget
        candidate = data.find(MAGIC, candidate + 1)
    return None, budget


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


FORMAT_VERSION = 1
"""The version of this module's format, written in the directory's ``format`` file. A
directory without one holds version 1 (spools written before the file existed)."""
_FORMAT_PREFIX = b"phonet-spool "


def encode_format(version: int = FORMAT_VERSION) -> bytes:
    """The ``format`` file: one line, ``phonet-spool <version>``."""
    return _FORMAT_PREFIX + str(version).encode() + b"\n"


def decode_format(data: bytes) -> int | None:
    """The version a ``format`` file names, or None when it is not such a file."""
    line = data.rstrip(b"\n")
    number = line.removeprefix(_FORMAT_PREFIX)
    if line == number or not number.isdigit() or len(number) > 9:
        return None
    return int(number)
