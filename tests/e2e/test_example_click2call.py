"""consumers_examples/click2call.py, run as a user would, against the producer + simulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from tests.e2e.conftest import SUBSCRIBERS, StartProducer

SCRIPT = Path(__file__).resolve().parents[2] / "consumers_examples" / "click2call.py"


async def run(amqp_url: str, queue: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "AMQP_URL": amqp_url, "PHONET_CLICK2CALL_QUEUE": queue}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("args", "code", "stream", "text"),
    [
        pytest.param(
            ["--subscriber", "001", "380991234567"],
            0,
            "out",
            "calling 380991234567 from 001",
            id="success",
        ),
        pytest.param(
            ["--subscriber", "ivan.petrov@example.com", "000123"],
            1,
            "err",
            "error: number unreachable",
            id="pbx-refusal",
        ),
        pytest.param(
            ["--subscriber", "001", "call mom"],
            1,
            "err",
            "error: invalid command: 'to' is not a phone number",
            id="invalid-number",
        ),
        pytest.param(
            ["--subscriber", "999", "380991234567"],
            1,
            "err",
            "error: unknown subscriber",
            id="unknown-subscriber",
        ),
    ],
)
async def test_exit_codes_and_output(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp_url: str,
    command_queue: str,
    args: list[str],
    code: int,
    stream: str,
    text: str,
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    returncode, out, err = await run(amqp_url, command_queue, *args)
    assert returncode == code, (out, err)
    assert text in (out if stream == "out" else err)
    dialed = [a for _, a in sim.actions]
    assert dialed == (
        [{"action": "call", "to": args[-1]}] if code == 0 or "000" in args[-1] else []
    )


async def test_json_output_echoes_the_id(
    sim: PhonetSimulator, start_producer: StartProducer, amqp_url: str, command_queue: str
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    code, out, _ = await run(
        amqp_url, command_queue, "--subscriber", "002", "--id", "crm-7", "--json", "+380501112233"
    )
    assert code == 0
    answer = json.loads(out)
    assert {k: answer[k] for k in ("result", "success", "subscriber", "to", "id")} == {
        "result": "success",
        "success": True,
        "subscriber": "002",
        "to": "+380501112233",
        "id": "crm-7",
    }


async def test_the_security_advice_followed_it_is_still_dialed_and_a_retry_is_not(
    sim: PhonetSimulator, start_producer: StartProducer, amqp_url: str, command_queue: str
) -> None:
    """With PHONET_CLICK2CALL_ALLOWED_USERS set (the README's advice), the example names
    its URL's user as user_id and is dialed; run again with the same --message-id (no
    answer seen, say), it gets the same answer and the PBX is not asked twice."""
    await start_producer(phonet_click2call_allowed_users="crm, guest")
    await sim.wait_connected(SUBSCRIBERS)
    args = ("--subscriber", "001", "--message-id", "crm-retry-1", "380991234567")
    first = await run(amqp_url, command_queue, *args)
    second = await run(amqp_url, command_queue, *args)
    assert first[0] == second[0] == 0, (first, second)
    assert first[1] == second[1] == "calling 380991234567 from 001\n"
    assert len(sim.actions) == 1


async def test_timeout_when_nobody_answers(
    amqp: AbstractConnection, amqp_url: str, command_queue: str
) -> None:
    channel = await amqp.channel()
    await channel.declare_queue(command_queue, durable=True)  # exists, nobody consumes
    code, _, err = await run(
        amqp_url, command_queue, "--subscriber", "001", "--timeout", "1", "380991234567"
    )
    assert code == 2
    assert "no answer within 1s" in err


async def test_no_queue_means_no_producer(amqp_url: str) -> None:
    code, _, err = await run(
        amqp_url, "no.such.queue.anywhere", "--subscriber", "001", "380991234567"
    )
    assert code == 2
    assert "no queue 'no.such.queue.anywhere'" in err


async def test_unreachable_broker() -> None:
    code, _, err = await run("amqp://guest:guest@127.0.0.1:1/", "q", "--subscriber", "001", "12")
    assert code == 2
    assert err.splitlines() == ["no answer: [Errno 111] Connect call failed ('127.0.0.1', 1)"]
