"""The spool: record format (pure) and the segment store on a real directory, with a
fault-injecting file layer for a full or failing disk."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from producer.core.errors import SpoolError
from producer.publish.pipeline import Pipeline
from producer.publish.spool import Spool
from producer.publish.spool_disk import Disk
from producer.publish.spool_format import HEAD_SIZE, encode
from tests.unit.producer.publish.spooling import crash, env, opened


def test_appended_records_are_recovered_after_a_crash(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 101):
        spool.append(env(seq))
    crash(spool)
    again = opened(tmp_path)
    found = again.recover()
    assert [e.seq for e in found.envelopes] == list(range(1, 101))
    assert found.next_seq == 101
    assert found.damaged == 0


def test_confirmed_records_are_not_replayed_and_segments_go(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1000)
    spool.recover()
    for seq in range(1, 201):
        spool.append(env(seq))
    segments = len(list(tmp_path.glob("*.seg")))
    assert segments > 5
    for seq in range(1, 151):
        spool.remove(seq)
    assert len(list(tmp_path.glob("*.seg"))) < segments
    spool.checkpoint(151)
    spool.close()
    found = opened(tmp_path).recover()
    assert [e.seq for e in found.envelopes] == list(range(151, 201))


def test_checkpoint_skips_records_in_a_kept_segment(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 11):
        spool.append(env(seq))
    for seq in range(1, 6):
        spool.remove(seq)
    spool.checkpoint(6)
    spool.close()
    found = opened(tmp_path).recover()
    assert [e.seq for e in found.envelopes] == [6, 7, 8, 9, 10]
    assert found.skipped == 5


def test_sequence_continues_above_the_checkpoint_when_all_was_confirmed(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 6):
        spool.append(env(seq))
        spool.remove(seq)
    spool.checkpoint(6)
    spool.close()
    found = opened(tmp_path).recover()
    assert found.envelopes == []
    assert found.next_seq == 6
    assert list(tmp_path.glob("*.seg")) == []


def test_torn_tail_is_cut_counted_and_not_fatal(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 6):
        spool.append(env(seq))
    crash(spool)
    (segment,) = tmp_path.glob("*.seg")
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-7])  # the last write was cut short by the crash
    found = opened(tmp_path).recover()
    assert [e.seq for e in found.envelopes] == [1, 2, 3, 4]
    assert found.damaged == 1
    assert segment.stat().st_size == len(whole) - len(encode(env(5)))  # truncated at the cut


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def test_damage_in_the_middle_keeps_the_records_after_it_and_the_file(tmp_path: Path) -> None:
    """Bit rot in record 4 of 10: the 6 good records after it are recovered too, and the
    file is left as it is (not truncated): the next start finds them again."""
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 11):
        spool.append(env(seq))
    crash(spool)
    (segment,) = tmp_path.glob("*.seg")
    record = len(encode(env(1)))
    damaged = flip(segment.read_bytes(), 3 * record + HEAD_SIZE + 20)
    segment.write_bytes(damaged)
    again = opened(tmp_path)
    found = again.recover()
    assert [e.seq for e in found.envelopes] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert found.damaged == 1
    assert segment.read_bytes() == damaged  # nothing cut, nothing rewritten
    crash(again)
    assert [e.seq for e in opened(tmp_path).recover().envelopes] == [1, 2, 3, 5, 6, 7, 8, 9, 10]


def test_damage_in_the_middle_and_a_torn_tail_cut_only_the_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 11):
        spool.append(env(seq, body=b'{"secret":"380991234567"}', message_id=f"m{seq:02d}"))
    crash(spool)
    (segment,) = tmp_path.glob("*.seg")
    record = len(encode(env(1, body=b'{"secret":"380991234567"}', message_id="m01")))
    damaged = flip(flip(segment.read_bytes(), 1 * record + 3), 6 * record + HEAD_SIZE)[:-5]
    segment.write_bytes(damaged)
    found = opened(tmp_path).recover()
    assert [e.seq for e in found.envelopes] == [1, 3, 4, 5, 6, 8, 9]
    assert found.damaged == 3  # two regions in the middle, one torn tail
    assert segment.read_bytes() == damaged[: 9 * record]  # only the torn tail was cut
    (line,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert "3 damaged region(s)" in line
    assert f"{2 * record + record - 5} bytes skipped" in line
    assert f"torn tail of {record - 5} bytes cut away" in line
    assert "380991234567" not in line


def test_over_max_bytes_the_oldest_segment_is_evicted(tmp_path: Path) -> None:
    evicted: list[tuple[int, int]] = []
    record = len(encode(env(1)))
    spool = opened(
        tmp_path,
        max_bytes=record * 20,
        segment_bytes=record * 5,
        on_evict=lambda a, b: evicted.append((a, b)),
    )
    spool.recover()
    for seq in range(1, 31):
        spool.append(env(seq))
        assert spool.bytes <= record * 20 + record * 5
    assert evicted[0] == (1, 5)
    assert spool.bytes <= record * 20


def test_pipeline_and_spool_together(tmp_path: Path) -> None:
    dropped: list[int] = []
    record = len(encode(env(1, message_id="x00")))
    spool = Spool(tmp_path, max_bytes=record * 10, segment_bytes=record * 2)
    box = Pipeline(max_events=1000, max_bytes=10**9, window=3, journal=spool)
    spool.on_evict = lambda a, b: dropped.extend(e.seq for e in box.drop_range(a, b))
    spool.open()
    box.advance_seq(spool.recover().next_seq)
    for n in range(12):
        box.put(env(0, message_id=f"x{n:02d}"))
    assert dropped == [1, 2]
    session = box.begin_session(0.0)
    for e in box.take(0.0):
        box.confirmed(session, e.seq, 0.0)
    spool.checkpoint(box.oldest_seq)
    spool.close()
    again = Spool(tmp_path, max_bytes=record * 10)
    again.open()
    assert [e.seq for e in again.recover().envelopes] == list(range(6, 13))


def test_a_second_producer_cannot_use_the_directory(tmp_path: Path) -> None:
    first = opened(tmp_path)
    with pytest.raises(SpoolError, match="in use by another producer"):
        opened(tmp_path)
    first.close()
    opened(tmp_path).close()


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match="PHONET_SPOOL_DIR"):
        opened(blocker / "spool")


# --- the format version -----------------------------------------------------------------


def test_a_new_directory_is_marked_with_the_format_version(tmp_path: Path) -> None:
    opened(tmp_path / "spool").close()
    assert (tmp_path / "spool" / "format").read_bytes() == b"phonet-spool 1\n"


def test_a_spool_written_before_the_marker_existed_is_read_as_version_1(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.recover()
    for seq in range(1, 6):
        spool.append(env(seq))
    spool.remove(1)
    spool.checkpoint(2)
    spool.close()
    (tmp_path / "format").unlink()  # what a producer before the marker left behind
    again = opened(tmp_path)
    assert [e.seq for e in again.recover().envelopes] == [2, 3, 4, 5]
    assert (tmp_path / "format").read_bytes() == b"phonet-spool 1\n"
    again.close()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    ("marker", "says"),
    [
        pytest.param(b"phonet-spool 2\n", "holds a spool of format version 2;", id="newer"),
        pytest.param(b"phonet-spool 0\n", "holds a spool of format version 0;", id="older"),
        pytest.param(b"garbage", "its format file is not a spool format marker", id="not-a-marker"),
    ],
)
def test_a_format_this_code_does_not_know_stops_the_start_untouched(
    tmp_path: Path, marker: bytes, says: str
) -> None:
    spool = opened(tmp_path)
    spool.recover()
    spool.append(env(1))
    crash(spool)
    (tmp_path / "format").write_bytes(marker)
    (tmp_path / "lock").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(SpoolError) as error:
        opened(tmp_path)
    assert says in str(error.value)
    assert str(error.value).startswith(f"PHONET_SPOOL_DIR {tmp_path}")
    assert "\n" not in str(error.value)
    assert snapshot(tmp_path) == before  # not even a lock file


def test_an_unwritable_marker_is_a_clear_error(tmp_path: Path) -> None:
    class NoMarker(Disk):
        def replace_file(self, directory: Path, name: str, data: bytes) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(SpoolError, match="cannot write format: Read-only file system"):
        opened(tmp_path, disk=NoMarker())
    opened(tmp_path).close()  # the lock was released


@pytest.mark.parametrize("policy", ["never", "batch", "always"])
def test_fsync_policies(tmp_path: Path, policy: str) -> None:
    spool = opened(tmp_path, fsync=policy)
    spool.recover()
    for seq in range(1, 4):
        spool.append(env(seq))
    spool.sync()
    spool.close()
    assert len(opened(tmp_path).recover().envelopes) == 3


def test_a_segment_that_cannot_be_read_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.recover()
    spool.append(env(1))
    crash(spool)
    (tmp_path / f"{7:020d}.seg").mkdir()  # reading it fails (EISDIR), as a bad disk's EIO
    with pytest.raises(SpoolError, match=r"PHONET_SPOOL_DIR: cannot read .*7\.seg: Is a directory"):
        opened(tmp_path).recover()
    assert (tmp_path / f"{1:020d}.seg").stat().st_size == len(encode(env(1)))  # untouched


def test_copies_of_records_in_two_files_are_replayed_once_and_tracked_exactly(
    tmp_path: Path,
) -> None:
    """A write-back that failed half-way and could not delete its file leaves copies of
    records that a later write-back holds too: each record is replayed once, and a file is
    deleted only when none of the records it holds the replayed copy of is pending."""
    records = {seq: encode(env(seq)) for seq in range(1, 8)}
    (tmp_path / f"{1:020d}.seg").write_bytes(records[1] + records[2] + records[3])
    (tmp_path / f"{4:020d}.seg").write_bytes(records[4] + records[5][:-9])  # torn
    later = tmp_path / f"{5:020d}.seg"
    later.write_bytes(records[4] + records[5] + records[6] + records[7])
    spool = opened(tmp_path)
    found = spool.recover()
    assert [e.seq for e in found.envelopes] == [1, 2, 3, 4, 5, 6, 7]
    assert found.skipped == 1  # the second copy of 4
    for seq in (1, 2, 3, 4, 5, 6):
        spool.remove(seq)
    assert [p.name for p in tmp_path.glob("*.seg")] == [later.name]  # 7 is still pending
    spool.remove(7)
    assert list(tmp_path.glob("*.seg")) == []
    spool.close()


async def test_a_reply_an_earlier_version_left_in_the_spool_is_dropped_at_start(
    tmp_path: Path,
) -> None:
    """Earlier versions published click2call replies through the event pipeline, so a
    spool they left may hold some. Replies now go over the command connection (with their
    journal copy): one read back is dropped and counted, and leaves the spool; the
    events beside it are published as usual."""
    from producer.publish.publisher import Publisher
    from producer.publish.spool_keeper import SpoolKeeper
    from producer.telemetry.metrics import Metrics

    earlier = opened(tmp_path)
    earlier.recover()
    earlier.append(env(1))
    earlier.append(env(2, exchange="", routing_key="amq.gen-caller", label="reply", kind="reply"))
    earlier.append(env(3))
    crash(earlier)
    spool = Spool(tmp_path, max_bytes=10_000_000)
    metrics = Metrics()
    pipeline = Pipeline(max_events=100, max_bytes=10**9, window=10, journal=spool)
    keeper = SpoolKeeper(
        spool, pipeline, Publisher(pipeline, metrics, publish_timeout=30.0), metrics
    )
    keeper.start()
    assert [e.seq for e in pipeline] == [1, 3]
    sample = metrics.registry.get_sample_value
    assert sample("phonet_events_dropped_total", {"reason": "obsolete"}) == 1
    session = pipeline.begin_session(0.0)
    for e in pipeline.take(0.0):
        pipeline.confirmed(session, e.seq, 0.0)
    await keeper.close()
    assert opened(tmp_path).recover().envelopes == []  # the reply left the spool too
