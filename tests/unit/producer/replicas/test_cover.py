"""The owner's reports of its down sockets (:class:`DownBook`), the standby's covering for
it (:class:`Cover`), and the heartbeat's wire form (:mod:`producer.replicas.presence`):
table tests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from producer.broker.topology import Exchange
from producer.replicas.coordinator import Coordinator
from producer.replicas.cover import (
    MARGIN_MS,
    MAX_REPORTED,
    REPORT_BEATS,
    Cover,
    DownBook,
    Replay,
    orphaned_by,
)
from producer.replicas.membership import PROTOCOL, Beat, Down, ranking
from producer.replicas.presence import MAX_DOWN, decode, encode
from producer.telemetry.replicas import ReplicaMetrics


def test_a_down_socket_is_reported_until_it_is_back_then_a_few_beats_more() -> None:
    book = DownBook()
    book.down("001", 1000)
    book.down("001", 2000)  # still down since 1000
    assert book.report() == ((Down("001", 1000),), None)
    book.up("001", 5000)
    reports = [book.report() for _ in range(REPORT_BEATS + 1)]
    assert reports[:REPORT_BEATS] == [((Down("001", 1000, 5000),), None)] * REPORT_BEATS
    assert reports[-1] == ((), None)


def test_up_without_down_reports_nothing_and_forget_drops_it() -> None:
    book = DownBook()
    book.up("001", 5000)
    book.down("002", 100)
    book.forget("002")
    assert book.report() == ((), None)


def test_too_many_down_sockets_are_reported_as_all_since_the_first() -> None:
    book = DownBook()
    for n in range(MAX_REPORTED + 1):
        book.down(f"{n:04d}", 1000 + n)
    assert book.report() == ((), 1000)


STANDBY = ["001", "002"]


@pytest.mark.parametrize(
    ("beats", "replays", "covering"),
    [
        pytest.param(
            [([Down("001", 10_000)], None)],
            [[Replay("001", 10_000 - MARGIN_MS, None)]],
            {"001": "a"},
            id="owner-down-covered-and-replayed",
        ),
        pytest.param(
            [([Down("001", 10_000)], None), ([Down("001", 10_000)], None)],
            [[Replay("001", 10_000 - MARGIN_MS, None)], []],
            {"001": "a"},
            id="replayed-once",
        ),
        pytest.param(
            [([Down("001", 10_000)], None), ([Down("001", 10_000, 12_000)], None)],
            [[Replay("001", 10_000 - MARGIN_MS, None)], []],
            {},
            id="back-up-covered-live-meanwhile-covering-ends",
        ),
        pytest.param(
            [([Down("001", 10_000, 12_000)], None)] * 2,
            [[Replay("001", 10_000 - MARGIN_MS, 12_000 + MARGIN_MS)], []],
            {},
            id="a-short-drop-seen-only-ended",
        ),
        pytest.param(
            [([Down("009", 10_000)], None)],
            [[]],
            {},
            id="not-mine-to-cover",
        ),
        pytest.param(
            [([], 7_000)],
            [[Replay("001", 7_000 - MARGIN_MS, None), Replay("002", 7_000 - MARGIN_MS, None)]],
            {"001": "a", "002": "a"},
            id="all-down",
        ),
        pytest.param(
            [([Down("001", 10_000)], None), ([], None)],
            [[Replay("001", 10_000 - MARGIN_MS, None)], []],
            {},
            id="report-gone-unheard-covering-ends",
        ),
    ],
)
def test_cover(
    beats: list[tuple[list[Down], int | None]],
    replays: list[list[Replay]],
    covering: dict[str, str],
) -> None:
    cover = Cover()
    got = [cover.heard("a", downs, since, STANDBY, 50_000) for downs, since in beats]
    assert got == replays
    assert cover.covering == covering


def test_cover_ends_when_the_owner_is_gone() -> None:
    cover = Cover()
    cover.heard("a", [Down("001", 1)], None, STANDBY, 5)
    cover.heard("b", [Down("002", 1)], None, STANDBY, 5)
    cover.gone("a", 10)
    assert cover.covering == {"002": "b"}


@pytest.mark.parametrize(
    ("gone_ms", "since_ms", "start"),
    [
        pytest.param(None, 50_000, 50_000 - MARGIN_MS, id="nobody-gone"),
        pytest.param(49_000, 50_000, 49_000 - 3_000, id="just-after-a-death"),
        pytest.param(51_000, 50_000, 51_000 - 3_000, id="death-noticed-after-it-began"),
        pytest.param(40_000, 50_000, 50_000 - MARGIN_MS, id="long-after-a-death"),
    ],
)
def test_a_stretch_around_a_death_is_replayed_from_before_it(
    gone_ms: int | None, since_ms: int, start: int
) -> None:
    """The new owner's socket is not up yet because it just took over from a replica
    that died: what that one had not got confirmed is older than the stretch."""
    cover = Cover(lookback_ms=3_000)
    if gone_ms is not None:
        cover.gone("x", gone_ms)
    replays = cover.heard("a", [Down("001", since_ms)], None, STANDBY, 60_000)
    assert replays == [Replay("001", start, None)]


def test_what_a_dead_owner_leaves_to_the_windows_of_others() -> None:
    """r0 owned it before (r0, r1, r2 live), r0 died: r1 keeps a window of it and the new
    owner is r2, so r1 publishes its window (r2 may have opened its socket just now)."""
    subs = [f"{n:03d}" for n in range(60)]
    before = {"r0", "r1", "r2"}
    dead_owned = [s for s in subs if ranking(before, s)[0] == "r0"]
    assert dead_owned
    assert orphaned_by({"r0"}, [before], subs) == dead_owned
    assert orphaned_by(set(), [before], subs) == []  # a leave: it published until the end
    assert orphaned_by({"r2"}, [before], dead_owned) == []  # not the owner of those


def test_an_owner_that_dies_while_handing_over_leaves_its_subscribers_too() -> None:
    """r0 and r1 were live; r2 joined, so r0 began handing some over to r2 (which had
    not opened their sockets yet) and was killed. In the view before the death r2 owns
    them, but r0 owned them one view before: r1's windows of them are published (the
    fault suite's kill during a handover lost the events only r0 had)."""
    subs = [f"{n:03d}" for n in range(60)]
    older, before = {"r0", "r1"}, {"r0", "r1", "r2"}
    handed_to_r2 = [
        s for s in subs if ranking(older, s)[0] == "r0" and ranking(before, s)[0] == "r2"
    ]
    assert handed_to_r2
    assert not set(handed_to_r2) & set(orphaned_by({"r0"}, [before], subs))
    assert set(handed_to_r2) <= set(orphaned_by({"r0"}, [before, older], subs))
    both = orphaned_by({"r0"}, [before, older], subs)
    assert both == sorted(set(both))  # each once, in order


# --- the heartbeat's wire form ------------------------------------------------------------


def test_a_heartbeat_round_trips() -> None:
    beat = Beat(
        "r1",
        "i1",
        settings="s",
        roster="l",
        view="v",
        leaving=True,
        warm=False,
        down=(Down("001", 5, None), Down("002", 5, 9)),
        all_down_since=None,
    )
    assert decode(encode(beat)) == beat


def test_a_heartbeat_lists_at_most_max_down() -> None:
    beat = Beat("r1", "i1", down=tuple(Down(f"{n}", n) for n in range(MAX_DOWN + 10)))
    assert len(orjson.loads(encode(beat))["down"]) == MAX_DOWN


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"not json", None, id="not-json"),
        pytest.param(b"[1]", None, id="not-an-object"),
        pytest.param(b'{"instance": "i"}', None, id="no-replica"),
        pytest.param(b'{"replica": ""}', None, id="empty-replica"),
        pytest.param(orjson.dumps({"replica": "r" * 65}), None, id="replica-too-long"),
        pytest.param(b" " * 70_000, None, id="too-large"),
        pytest.param(
            b'{"replica": "r", "leaving": false, "warm": true}',
            Beat("r", "", version=1),
            id="an-older-release",
        ),
        pytest.param(
            orjson.dumps({"replica": "r", "v": True, "warm": "yes", "leaving": 1}),
            Beat("r", "", version=-1, warm=True, leaving=False),
            id="odd-types-defaulted",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "replica": "r",
                    "v": PROTOCOL,
                    "down": [["001", 5, None], ["002", -1, 3], [1, 2, 3], ["003", 5], "x"],
                    "all_down_since": "soon",
                }
            ),
            Beat("r", "", down=(Down("001", 5, None),)),
            id="bad-down-entries-skipped",
        ),
    ],
)
def test_decode_never_raises(body: bytes, expected: Beat | None) -> None:
    assert decode(body) == expected


def test_keep_only_forgets_what_is_no_longer_owned() -> None:
    book = DownBook()
    book.down("001", 1000)
    book.down("002", 1000)
    book.up("002", 2000)
    book.down("003", 1000)
    book.keep_only({"001"})
    assert book.report() == ((Down("001", 1000),), None)
    assert len(book) == 1


def a_coordinator(me: str) -> Coordinator:
    """A coordinator with no broker, sockets or publishing: its roles are driven by calling
    ``_assign`` with a live set."""

    async def hold(_order: list[str]) -> None:
        return None

    return Coordinator(
        me,
        Exchange("test.presence", "fanout", durable=False),
        hold=hold,
        publish=lambda _envelope: None,
        metrics=ReplicaMetrics(CollectorRegistry()),
        standby=True,
        window=10.0,
        window_bytes=1 << 20,
        grace=5.0,
        interval=1.0,
        timeout=3.0,
        settings="s",
    )


async def test_a_subscriber_removed_while_down_leaves_the_heartbeat() -> None:
    """Removed from the list while its socket was down: not reported for ever after (past
    MAX_REPORTED such leftovers, the standbys would cover every subscriber)."""
    coordinator = a_coordinator("a")
    coordinator._set_universe(["001", "002"])
    await coordinator._assign(100.0, frozenset({"a"}))
    coordinator.socket_state("002", False, 1000)
    assert coordinator.downs.report()[0] == (Down("002", 1000),)
    coordinator._set_universe(["001"])
    await coordinator._assign(101.0, frozenset({"a"}))
    assert coordinator.downs.report() == ((), None)


async def test_a_recompute_in_the_same_view_keeps_the_owner_that_hands_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """r0 and r1 live; r2 joins (r0 starts handing over to it); a heartbeat makes r1
    recompute with the same three live; then r0 dies. The view r0 owned in ({r0, r1}) is
    still among the views whose dead owners orphan a subscriber (a recompute used to
    overwrite it, and r1's windows of what r0 handed over were not replayed)."""
    from producer.replicas import coordinator as module

    seen: list[tuple[frozenset[str], ...]] = []

    def spy(died: set[str], views: Any, kept: Any) -> list[str]:
        seen.append(tuple(frozenset(v) for v in views))
        return []

    monkeypatch.setattr(module, "orphaned_by", spy)
    coordinator = a_coordinator("r1")
    monkeypatch.setattr(coordinator.membership, "died", lambda _r, _now, wall_ms: wall_ms)
    coordinator._set_universe([f"{n:03d}" for n in range(24)])
    old, joined, after = frozenset({"r0", "r1"}), frozenset({"r0", "r1", "r2"}), {"r1", "r2"}
    await coordinator._assign(100.0, old)
    await coordinator._assign(101.0, joined)
    coordinator._recompute = True
    await coordinator._assign(101.5, joined)  # the same view, recomputed
    await coordinator._assign(103.0, frozenset(after))  # r0 vanished
    assert seen == [(joined, old)]
