"""The real command line in subprocesses: config errors, SIGTERM, the demo, secrets in logs."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import orjson
import pytest

from phonet_simulator import PhonetSimulator
from producer import __version__
from tests.conftest import Janitor, broker_name
from tests.e2e.conftest import SUBSCRIBERS
from tests.support import (
    BASE_ENV,
    SAMPLE,
    Collector,
    Service,
    http_get,
    metric_value,
    service_env,
    until,
)


async def run(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "producer",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("env", "lines"),
    [
        pytest.param(
            {},
            [
                "PHONET_DOMAIN: required (not set)",
                "PHONET_API_KEY: required (or PHONET_API_KEY_FILE)",
                "PHONET_SUBSCRIBERS: required (a list, `auto`, or PHONET_SUBSCRIBERS_FILE)",
            ],
            id="nothing-set",
        ),
        pytest.param(
            {"PHONET_DOMAIN": "a.b", "PHONET_SUBSCRIBERS": "001"},
            ["PHONET_API_KEY: required (or PHONET_API_KEY_FILE)"],
            id="no-key",
        ),
        pytest.param(
            {
                "PHONET_DOMAIN": "a.b",
                "PHONET_SUBSCRIBERS": "001",
                "PHONET_API_KEY": "k",
                "METRICS_PORT": "nine",
            },
            ["METRICS_PORT: Input should be a valid integer, unable to parse string as an integer"],
            id="bad-port",
        ),
    ],
)
async def test_bad_config_stops_startup_with_a_line_per_setting(
    env: dict[str, str], lines: list[str]
) -> None:
    code, out, err = await run(env={**BASE_ENV, **env})
    assert code == 2
    assert out == ""
    assert err.splitlines() == [f"phonet-producer: config error: {line}" for line in lines]


async def test_a_busy_metrics_port_is_one_line_naming_the_setting(
    sim: PhonetSimulator, amqp_url: str, exchange_name: str
) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        env = service_env(sim, amqp_url, exchange_name, METRICS_PORT=str(port))
        code, _, err = await run(env=env)
    finally:
        blocker.close()
    assert code == 2
    assert err.splitlines() == [
        f"phonet-producer: config error: METRICS_PORT: cannot listen on 127.0.0.1:{port}:"
        " Address already in use"
    ]


async def test_sigterm_publishes_what_was_received_and_exits_zero(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    collector: Collector,
    services: list[Service],
) -> None:
    service = await Service(service_env(sim, amqp_url, exchange_name)).start()
    services.append(service)
    await sim.wait_connected(SUBSCRIBERS, timeout=15)
    port = await service.metrics_port()
    for n in range(300):
        await sim.send(SUBSCRIBERS[n % 3], {**SAMPLE, "uuid": f"t{n}"})

    async def received() -> float:
        _, _, raw = await http_get(port, "/metrics")
        return sum(
            metric_value(raw.decode(), "phonet_events_received_total", {"event": e})
            for e in ("call.dial",)
        )

    deadline = time.monotonic() + 10
    while await received() < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    assert await service.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    await collector.wait_count(300)
    assert collector.uuids() == {f"t{n}" for n in range(300)}
    await sim.wait_disconnected(SUBSCRIBERS, timeout=2)
    messages = [e.get("msg") for e in service.json_lines()]
    assert "shutting down" in messages
    assert "stopped" in messages


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_api_key_never_reaches_the_logs(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    services: list[Service],
    fmt: str,
) -> None:
    """DEBUG logging, an auth failure and a reconnect: the key shows up nowhere."""
    env = service_env(
        sim,
        amqp_url,
        exchange_name,
        LOG_LEVEL="DEBUG",
        LOG_FORMAT=fmt,
        PHONET_SUBSCRIBERS="001",
        PHONET_RECONNECT_MIN_DELAY="0.05",
        PHONET_RECONNECT_MAX_DELAY="0.2",  # also the wait after a refused key
    )
    sim.refuse_status = 403
    service = await Service(env).start()
    services.append(service)
    await until(lambda: sim.refused[403] >= 2, what="two refusals")
    sim.refuse_status = None
    await sim.wait_connected(["001"], timeout=10)
    await sim.drop("001")
    await sim.wait_connected(["001"], timeout=10)
    service.proc.send_signal(signal.SIGTERM)
    assert await service.wait(timeout=10) == 0
    log = "\n".join(service.lines)
    assert "403" in log
    assert sim.api_key not in log
    assert "guest:guest" not in log


async def test_demo_without_a_broker_says_so_in_one_line() -> None:
    env = {**BASE_ENV, "AMQP_URL": "amqp://demo:s3cret@127.0.0.1:1/"}
    code, _out, err = await run("demo", "--seconds", "5", env=env)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "amqp://demo:***@127.0.0.1:1/" in lines[0]
    assert "s3cret" not in err
    assert "rabbitmq-server" in lines[0]


async def test_demo_shows_calls_flowing(amqp_url: str, janitor: Janitor) -> None:
    env = {**BASE_ENV, "AMQP_URL": amqp_url}
    exchange = janitor.exchange(broker_name("demo"))
    code, out, err = await run(
        "demo",
        "--events",
        "6",
        "--calls-per-second",
        "5",
        "--exchange",
        exchange,
        "--click2call-queue",
        f"{exchange}.click2call",
        env=env,
        timeout=60,
    )
    assert code == 0, err
    shown = [line for line in out.splitlines() if line.startswith(("call.", "invalid."))]
    assert len(shown) >= 6
    assert "demo stopped after" in out
    assert f"producer   {__version__} (replica " in out


async def test_simulator_command_serves_the_endpoint() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "producer",
        "simulator",
        "--port",
        "0",
        "--api-key",
        "k1",
        "--calls-per-second",
        "20",
        "--subscribers",
        "007",
        env=BASE_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        url = first.split(" on ", 1)[1].strip()
        query = "?domain=demo.phonet.com.ua&apiKey=k1&subscriber=007"
        async with connect(url + query) as ws:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["event"].startswith("call.")
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + query.replace("k1", "wrong")):
                pass
        assert info.value.response.status_code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
