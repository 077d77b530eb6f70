"""Nothing this test run created is left on the shared broker — no exchange, no queue named
``test.<run>.…``. Runs after every other test of the session, whatever the file names: the
``runs_last`` marker, honoured by ``tests/conftest.py``."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.conftest import PREFIX

pytestmark = pytest.mark.runs_last


async def listed(what: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", f"list_{what}", "name", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, what
    return [line.strip() for line in out.decode().splitlines()]


async def test_nothing_of_this_run_is_left_on_the_broker(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("listing the broker's objects needs rabbitmqctl")
    if "localhost" not in amqp_url and "127.0.0.1" not in amqp_url:
        pytest.skip("the broker is not local")
    left = [name for what in ("exchanges", "queues") for name in await listed(what)]
    assert [name for name in left if name.startswith(PREFIX)] == []
