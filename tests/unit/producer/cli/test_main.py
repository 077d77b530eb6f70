"""The command line's checks before the start (:mod:`producer.cli.main`): an open-files
limit too low for the subscribers said plainly. (The command line run for real:
``tests/e2e/test_cli.py``.)"""

from __future__ import annotations

import pytest

from producer.cli.main import fd_limit_problem


@pytest.mark.parametrize(
    ("limit", "subscribers", "problem"),
    [
        pytest.param(1024, 500, False, id="enough"),
        pytest.param(1024, 800, True, id="too-few-for-800"),
        pytest.param(20000, 10_000, False, id="ten-thousand"),
        pytest.param(10_100, 10_000, True, id="no-room-beside-the-sockets"),
    ],
)
def test_a_low_open_files_limit_is_said_plainly(
    limit: int, subscribers: int, problem: bool
) -> None:
    said = fd_limit_problem(limit, subscribers)
    assert (said is not None) is problem
    if said:
        assert str(limit) in said
        assert "ulimit -n" in said
