"""The garbage collector policy (:mod:`producer.app.gcpolicy`): when to freeze and when to
thaw; and its adapter (:mod:`producer.app.loopwatch`): what applying a decision collects,
and the memory the policy reads."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from producer.app.gcpolicy import GcAction, GcPolicy
from producer.app.loopwatch import apply, rss_bytes


def run_policy(policy: GcPolicy, script: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Feed ``(time, what)`` — ``open``, ``close`` or ``tick`` — and collect the actions."""
    actions = []
    for now, what in script:
        if what in ("open", "close"):
            policy.socket_changed(now, closed=what == "close")
        action = policy.decide(now)
        if action is not None:
            actions.append((now, action.value))
    return actions


@pytest.mark.parametrize(
    ("script", "actions"),
    [
        pytest.param(
            [(0, "tick"), (1, "open"), (2, "tick"), (11, "tick"), (12, "tick")],
            [(11, "freeze")],
            id="freeze-once-stable",
        ),
        pytest.param(
            [(0, "tick"), *((t / 10, "open") for t in range(1, 13)), (1.3, "tick")],
            [(0.5, "freeze"), (1.0, "freeze")],
            id="freeze-in-batches-while-opening",
        ),
        pytest.param(
            [(0, "tick"), (11, "tick"), (13, "tick"), (16, "tick"), (21, "tick")],
            [(11, "freeze"), (16, "freeze"), (21, "freeze")],
            id="refreeze-what-accumulates",
        ),
        pytest.param(
            [(0, "tick"), *((1 + t / 1000, "close") for t in range(6)), (5, "tick"), (12, "tick")],
            [(12, "thaw")],
            id="thaw-after-a-storm-once-stable",
        ),
    ],
)
def test_gc_policy(script: list[tuple[float, str]], actions: list[tuple[float, str]]) -> None:
    policy = GcPolicy(stable_after=10, freeze_every=5, refreeze_after=5, thaw_after=5)
    assert run_policy(policy, script) == actions


def test_gc_policy_thaws_anyway_when_sockets_never_settle() -> None:
    policy = GcPolicy(stable_after=10, freeze_every=5, refreeze_after=5, thaw_after=5)
    actions = run_policy(policy, [(0, "tick"), *((t, "close") for t in range(1, 700, 5))])
    assert [a for a in actions if a[1] == GcAction.THAW.value] == [(601, "thaw")]


def test_gc_policy_thaws_once_memory_grew_by_half() -> None:
    """A safety net for cyclic garbage that is not the sockets': memory measured once
    settled, a thaw when it grew by half (and the new size is the next baseline)."""
    policy = GcPolicy(stable_after=10, freeze_every=5, refreeze_after=5, thaw_after=5)
    heap = [(0, 1000), (11, 1000), (16, 1000), (21, 1400), (26, 1600), (27, 1600), (40, 2000)]
    actions = [(t, a.value) for t, memory in heap if (a := policy.decide(t, memory))]
    assert actions == [(11, "freeze"), (16, "freeze"), (21, "freeze"), (26, "thaw"), (40, "freeze")]
    assert policy.baseline == 1600


class Node:
    me: object = None


def cyclic_garbage() -> weakref.ref[Node]:
    """An object only a reference cycle keeps alive: reference counting never frees it."""
    node = Node()
    node.me = node
    return weakref.ref(node)


@pytest.mark.parametrize(
    ("frozen_before", "action"),
    [
        pytest.param(False, GcAction.FREEZE, id="freeze-collects-the-young-first"),
        pytest.param(True, GcAction.THAW, id="thaw-collects-what-was-frozen"),
    ],
)
def test_applying_the_gc_policy_leaves_no_cyclic_garbage(
    frozen_before: bool, action: GcAction
) -> None:
    gc.disable()  # no automatic pass may do the work for the adapter
    try:
        ref = cyclic_garbage()
        if frozen_before:
            gc.freeze()
        assert ref() is not None
        apply(action)
        assert ref() is None
        assert gc.get_freeze_count() > 0  # and the rest is frozen again
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_memory_the_policy_reads_is_the_process_rss() -> None:
    status = Path("/proc/self/status").read_text()
    kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    assert abs(rss_bytes() - kib * 1024) < 0.1 * kib * 1024
