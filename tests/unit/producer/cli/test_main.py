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


def test_settings_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    from producer.app.settings import Settings
    from producer.cli.main import main

    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == {name.upper() for name in Settings.field_names()}
    assert "amqp://guest:***@localhost:5672/" in out  # a URL's password is never printed
    assert "PHONET_DOMAIN" in out.split("required", 1)[0]


def test_the_readme_command_table_has_every_command_and_option() -> None:
    """What ``phonet-producer --help`` and its commands offer is what the README lists."""
    import argparse
    import re

    from producer.cli.main import _parser
    from tests.support import ROOT

    parser = _parser()
    offered = {("phonet-producer", "--version")}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        offered.add((f"phonet-producer {name}", ""))
        for action in sub._actions:
            offered |= {(f"phonet-producer {name}", o) for o in action.option_strings}
    offered -= {(c, o) for c, o in offered if o in ("-h", "--help")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = r"^\| `(phonet-producer[a-z ]*)` \| ?(?:`(--[a-z0-9-]+)[^`]*`)? ?\|"
    rows = re.findall(row, readme, re.M)
    assert offered <= set(rows), offered - set(rows)
