"""Bounded de-duplication (:class:`phonet_client.Seen`, in :mod:`phonet_client.dedupe`)."""

from __future__ import annotations

from phonet_client import Seen


def test_seen_is_bounded_by_count_and_age() -> None:
    now = [0.0]
    seen = Seen(max_ids=3, max_age=10.0, clock=lambda: now[0])
    assert [seen.first(m) for m in ("a", "b", "a", None, None)] == [True, True, False, True, True]
    assert seen.repeats == 1
    for m in ("c", "d"):
        seen.first(m)
    assert "a" not in seen  # the oldest went past max_ids
    assert seen.first("a")
    now[0] = 11.0
    assert seen.first("d")  # forgotten after max_age
    assert len(seen) == 1
