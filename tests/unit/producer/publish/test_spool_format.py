"""The spool's record format (pure): round trips, and what :func:`decode` keeps of damaged
data — exhaustive tables of where damage can sit, properties over random damage, and the
bound on the resynchronisation's work."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from producer.core.envelope import Envelope
from producer.publish import spool_format
from producer.publish.spool_format import (
    HEAD_SIZE,
    MAGIC,
    RESYNC_BUDGET,
    Damage,
    decode,
    decode_checkpoint,
    decode_format,
    encode,
    encode_checkpoint,
    encode_format,
)
from tests.unit.producer.publish.spooling import env


@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(env(1), id="event"),
        pytest.param(env(2**40, b""), id="empty-body-big-seq"),
        pytest.param(env(3, b"\x00\xff" * 5000), id="binary-10k"),
        pytest.param(
            env(4, headers={"subscriber": "Олег", "invalid_reason": "bad_json"}),
            id="unicode-headers",
        ),
        pytest.param(
            env(
                5,
                exchange="",
                routing_key="amq.gen-reply",
                correlation_id="c-1",
                kind="reply",
                label="reply",
            ),
            id="rpc-reply",
        ),
    ],
)
def test_record_roundtrip(envelope: Envelope) -> None:
    decoded = decode(encode(envelope) * 2, received=7.0)
    assert not decoded.damaged
    assert len(decoded.envelopes) == 2
    back = decoded.envelopes[0]
    envelope.received = 7.0
    assert back == envelope


def test_empty_data_is_fine() -> None:
    decoded = decode(b"")
    assert decoded.envelopes == []
    assert decoded.damage == []
    assert decoded.good_bytes == 0


# --- damage: where it sits, what survives ---------------------------------------------

SEQS = range(1, 7)


def fake_header(length: int, seq: int = 10**6) -> bytes:
    """Bytes that look like the start of a record (magic, a length that fits, a sequence
    number above all, JSON meta) but whose CRC is wrong."""
    return MAGIC + length.to_bytes(4, "big") + b"\0\0\0\0" + seq.to_bytes(8, "big") + b'\0\x40{"x":'


def segment(bodies: dict[int, bytes] | None = None) -> tuple[bytes, list[int]]:
    """Records 1..6 (``bodies`` replaces some bodies) and the offset of each (plus the end)."""
    records = [encode(env(seq, (bodies or {}).get(seq, b'{"event":"call.dial"}'))) for seq in SEQS]
    offsets = [0]
    for record in records:
        offsets.append(offsets[-1] + len(record))
    return b"".join(records), offsets


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def overwrite(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


R = HEAD_SIZE + 20  # an offset inside a record's payload


def case(name: str) -> tuple[bytes, list[int], list[tuple[int, int]], int]:
    """(damaged data, surviving seqs, damaged regions, torn tail bytes) for ``name``."""
    data, o = segment()
    end = o[-1]
    if name == "clean":
        return data, [1, 2, 3, 4, 5, 6], [], 0
    if name == "head-flipped-payload":
        return flip(data, R), [2, 3, 4, 5, 6], [(0, o[1])], 0
    if name == "head-bad-magic":
        return overwrite(data, 0, b"\0\0"), [2, 3, 4, 5, 6], [(0, o[1])], 0
    if name == "head-garbage-prefix":
        return b"\x13" * 50 + data, [1, 2, 3, 4, 5, 6], [(0, 50)], 0
    if name == "middle-flipped-payload":
        return flip(data, o[2] + R), [1, 2, 4, 5, 6], [(o[2], o[3])], 0
    if name == "middle-flipped-crc":
        return flip(data, o[2] + 7), [1, 2, 4, 5, 6], [(o[2], o[3])], 0
    if name == "middle-two-records-zeroed":
        zeros = b"\0" * (o[4] - o[2])
        return overwrite(data, o[2], zeros), [1, 2, 5, 6], [(o[2], o[4])], 0
    if name == "middle-garbage-inserted":
        junk = bytes(range(256))[::-1] * 2
        return data[: o[3]] + junk + data[o[3] :], [1, 2, 3, 4, 5, 6], [(o[3], o[3] + 512)], 0
    if name == "middle-bytes-lost":
        cut = data[: o[2] + 30] + data[o[2] + 40 :]
        return cut, [1, 2, 4, 5, 6], [(o[2], o[3] - 10)], 0
    if name == "middle-truncated-header":
        cut = data[: o[2] + 5] + data[o[3] :]  # a record cut short, then the next one
        return cut, [1, 2, 4, 5, 6], [(o[2], o[2] + 5)], 0
    if name == "middle-absurd-length":
        return overwrite(data, o[2] + 2, b"\xff" * 4), [1, 2, 4, 5, 6], [(o[2], o[3])], 0
    if name == "middle-length-past-end":
        long = (end * 2).to_bytes(4, "big")
        return overwrite(data, o[2] + 2, long), [1, 2, 4, 5, 6], [(o[2], o[3])], 0
    if name == "middle-length-too-short":
        return overwrite(data, o[2] + 2, b"\0\0\0\x08"), [1, 2, 4, 5, 6], [(o[2], o[3])], 0
    if name == "two-regions":
        twice = flip(flip(data, o[1] + R), o[4] + R)
        return twice, [1, 3, 4, 6], [(o[1], o[2]), (o[4], o[5])], 0
    if name == "tail-torn-payload":
        return data[:-3], [1, 2, 3, 4, 5], [(o[5], end - 3)], end - 3 - o[5]
    if name == "tail-torn-header":
        return data[: o[5] + 5], [1, 2, 3, 4, 5], [(o[5], o[5] + 5)], 5
    if name == "tail-zeros-appended":
        return data + b"\0" * 100, [1, 2, 3, 4, 5, 6], [(end, end + 100)], 100
    if name == "middle-and-torn-tail":
        both = flip(data, o[1] + R)[:-3]
        return both, [1, 3, 4, 5], [(o[1], o[2]), (o[5], end - 3)], end - 3 - o[5]
    if name == "only-garbage":
        return b"\x5a\xa5" * 40, [], [(0, 80)], 80
    raise AssertionError(name)


CASES = [
    "clean",
    "head-flipped-payload",
    "head-bad-magic",
    "head-garbage-prefix",
    "middle-flipped-payload",
    "middle-flipped-crc",
    "middle-two-records-zeroed",
    "middle-garbage-inserted",
    "middle-bytes-lost",
    "middle-truncated-header",
    "middle-absurd-length",
    "middle-length-past-end",
    "middle-length-too-short",
    "two-regions",
    "tail-torn-payload",
    "tail-torn-header",
    "tail-zeros-appended",
    "middle-and-torn-tail",
    "only-garbage",
]


@pytest.mark.parametrize("name", CASES)
def test_damage_costs_only_the_bytes_it_covers(name: str) -> None:
    data, seqs, regions, torn = case(name)
    decoded = decode(data)
    assert [e.seq for e in decoded.envelopes] == seqs
    assert decoded.damage == [Damage(a, b) for a, b in regions]
    assert decoded.torn == torn
    assert decoded.good_bytes == len(data) - torn
    assert not decoded.gave_up


@pytest.mark.parametrize(
    "inside",
    [
        pytest.param(fake_header(60), id="fake-header-wrong-crc"),
        pytest.param(fake_header(60, seq=1), id="fake-header-low-seq"),
        pytest.param(MAGIC * 40, id="magic-run"),
        pytest.param(encode(env(1, message_id="old")), id="whole-older-record"),
        pytest.param(encode(env(2, message_id="old")), id="whole-record-same-seq"),
    ],
)
def test_a_body_that_looks_like_records_does_not_fool_the_resync(inside: bytes) -> None:
    """Record 3's body holds record-like bytes and its own header is damaged: the scan runs
    through that body and must take nothing from it (wrong CRC, or a sequence number that is
    not above the last good record's), then find record 4."""
    data, o = segment({3: b'{"pad":"' + b"x" * 30 + b'"}' + inside + b"x" * 80})
    decoded = decode(overwrite(data, o[2], b"\0\0"))
    assert [(e.seq, e.message_id) for e in decoded.envelopes] == [
        (1, "m1"),
        (2, "m2"),
        (4, "m4"),
        (5, "m5"),
        (6, "m6"),
    ]
    assert decoded.damage == [Damage(o[2], o[3])]


def test_an_undamaged_body_with_magic_bytes_is_read_as_it_is() -> None:
    data, _ = segment({2: fake_header(20) + encode(env(9))})
    assert [e.seq for e in decode(data).envelopes] == [1, 2, 3, 4, 5, 6]


def test_the_resync_is_linear_even_against_a_segment_full_of_fake_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every fake header claims a length reaching the end of the data, so checking each
    one's CRC would cost a quadratic amount of work: the budget stops the scan, and the
    rest, which may hold good records, is damage but not a torn tail (not cut away)."""
    first = encode(env(1))
    count = 4000
    fakes = b""
    for n in range(count):
        fakes += fake_header((count - n) * 25 - HEAD_SIZE)
    data = first + b"\0\0" + fakes
    checked = []
    real_crc32 = zlib.crc32

    def counting_crc32(payload: bytes, *args: int) -> int:
        checked.append(len(payload))
        return real_crc32(payload, *args)

    monkeypatch.setattr(spool_format.zlib, "crc32", counting_crc32)
    decoded = decode(data)
    assert [e.seq for e in decoded.envelopes] == [1]
    assert decoded.gave_up
    assert decoded.damage == [Damage(len(first), len(data))]
    assert decoded.torn == 0
    assert decoded.good_bytes == len(data)
    assert sum(checked) <= (RESYNC_BUDGET + 1) * len(data)


def test_many_damaged_regions_cost_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [encode(env(seq)) for seq in range(1, 2001)]
    data = b"".join(r if seq % 2 else flip(r, R) for seq, r in enumerate(records, 1))
    checked = []
    real_crc32 = zlib.crc32

    def counting_crc32(payload: bytes, *args: int) -> int:
        checked.append(len(payload))
        return real_crc32(payload, *args)

    monkeypatch.setattr(spool_format.zlib, "crc32", counting_crc32)
    decoded = decode(data)
    assert [e.seq for e in decoded.envelopes] == list(range(1, 2001, 2))
    assert len(decoded.damage) == 1000
    assert sum(checked) <= (RESYNC_BUDGET + 1) * len(data)


@settings(max_examples=300, deadline=None)
@example(count=5, start=28642, length=222, how="delete", noise=b"\x00")  # a record survives
@given(
    count=st.integers(1, 12),
    start=st.integers(0, 10**6),
    length=st.integers(1, 400),
    how=st.sampled_from(["flip", "insert", "delete"]),
    noise=st.binary(min_size=1, max_size=400),
)
def test_random_damage_keeps_every_record_it_does_not_touch(
    count: int, start: int, length: int, how: str, noise: bytes
) -> None:
    records = [encode(env(seq, b"b" * (seq * 7 % 50))) for seq in range(1, count + 1)]
    offsets = [0]
    for record in records:
        offsets.append(offsets[-1] + len(record))
    data = b"".join(records)
    a = start % len(data)
    b = min(len(data), a + length)
    if how == "flip":
        mask = (noise * (b - a))[: b - a]
        damaged = (
            data[:a] + bytes(x ^ (m | 1) for x, m in zip(data[a:b], mask, strict=True)) + data[b:]
        )
    elif how == "insert":
        damaged, b = data[:a] + noise + data[a:], a
    else:
        damaged = data[:a] + data[b:]
    untouched = [seq for seq in range(1, count + 1) if offsets[seq] <= a or offsets[seq - 1] >= b]
    decoded = decode(damaged)
    got = [e.seq for e in decoded.envelopes]
    assert got == sorted(set(got))  # in order, none twice
    assert set(untouched) <= set(got)
    # A touched record comes back only when its bytes survived whole (a deletion can leave
    # exactly a record's bytes: its head, then an identical tail of the next one).
    assert all(records[seq - 1] in damaged for seq in set(got) - set(untouched))
    assert decoded.damage or damaged == b""  # a change leaves a region no record covers


# --- the checkpoint and the format marker ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "seq"),
    [
        pytest.param(encode_checkpoint(42), 42, id="good"),
        pytest.param(encode_checkpoint(42)[:-1], 0, id="short"),
        pytest.param(b"\x00" * 12, 0, id="zeros-bad-crc"),
        pytest.param(
            encode_checkpoint(42)[:7] + b"\x01" + encode_checkpoint(42)[8:], 0, id="flipped"
        ),
    ],
)
def test_checkpoint(data: bytes, seq: int) -> None:
    assert decode_checkpoint(data) == seq


@pytest.mark.parametrize(
    ("data", "version"),
    [
        pytest.param(encode_format(), 1, id="this-version"),
        pytest.param(encode_format(7), 7, id="a-later-version"),
        pytest.param(b"phonet-spool 2", 2, id="no-newline"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"phonet-spool \n", None, id="no-number"),
        pytest.param(b"phonet-spool -1\n", None, id="negative"),
        pytest.param(b"phonet-spool 1 2\n", None, id="two-numbers"),
        pytest.param(b"phonet-spool 99999999999\n", None, id="absurd"),
        pytest.param(b"sqlite 3\n", None, id="something-else"),
        pytest.param(b"\x00" * 16, None, id="zeros"),
    ],
)
def test_format_marker(data: bytes, version: int | None) -> None:
    assert decode_format(data) == version
