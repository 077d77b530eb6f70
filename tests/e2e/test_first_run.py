"""What a new user meets in the first hour: a mistyped broker URL explained, which build
and replica answers, logs worth reading."""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from phonet_simulator import PhonetSimulator
from producer import __version__
from producer.broker.link import SLOW_RETRY
from tests.e2e.conftest import StartProducer
from tests.support import BASE_ENV, http_get, until


def with_netloc(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    host: str | None = None,
    port: int | None = None,
    path: str | None = None,
) -> str:
    parts = urlsplit(url)
    user = user if user is not None else parts.username or "guest"
    password = password if password is not None else parts.password or "guest"
    host = host or parts.hostname or "127.0.0.1"
    port = port or parts.port or 5672
    return urlunsplit(
        (parts.scheme, f"{user}:{password}@{host}:{port}", path or parts.path, "", "")
    )


BAD = [
    pytest.param(
        {"password": "wr0ng-s3cret"}, "auth", "refused the user name or password", id="auth"
    ),
    pytest.param(
        {"path": "/no-such-vhost"}, "vhost", "refused to open the virtual host", id="vhost"
    ),
    pytest.param({"port": 1}, "refused", "nothing accepts connections there", id="refused"),
    pytest.param({"host": "no-such-host.invalid"}, "dns", "does not resolve", id="dns"),
]


@pytest.mark.parametrize(("change", "kind", "words"), BAD)
async def test_a_wrong_broker_url_says_what_was_tried_and_what_to_check(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, str | int],
    kind: str,
    words: str,
) -> None:
    if urlsplit(amqp_url).hostname not in ("localhost", "127.0.0.1"):
        pytest.skip("needs the local broker (ports and vhosts are known)")
    url = with_netloc(amqp_url, **change)  # type: ignore[arg-type]
    producer = await start_producer(amqp_url=url, wait=False)
    await until(lambda: value(producer, kind) >= 1, timeout=15, what=f"a {kind} connect failure")
    (first,) = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    text = first.getMessage()
    assert first.levelname == "ERROR"
    assert words in text
    assert ":***@" in text  # the URL, with the password masked
    assert "wr0ng-s3cret" not in caplog.text
    assert "vhost '" in text
    assert "user '" in text
    if kind in ("auth", "vhost"):
        assert f"Retrying in {SLOW_RETRY:.1f}s" in text  # a configuration error: slowly
        assert "configuration error" in text
    await asyncio.sleep(0.5)
    again = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert len(again) == 1  # said once, not at every retry


def value(producer: object, reason: str) -> float:
    registry = producer.metrics.registry  # type: ignore[attr-defined]
    sample = registry.get_sample_value("phonet_amqp_connect_failures_total", {"reason": reason})
    return float(sample or 0.0)


async def test_readyz_names_the_build_and_the_replica(
    sim: PhonetSimulator, start_producer: StartProducer
) -> None:
    producer = await start_producer(phonet_replica_id="blue-7")
    await sim.wait_connected(["001"])
    _, _, body = await http_get(producer.http.port, "/readyz")
    health = orjson.loads(body)
    assert (health["version"], health["replica_id"]) == (__version__, "blue-7")


async def test_simulator_logs_are_plain_lines() -> None:
    """With --verbose a line per socket; one timestamp per line, no library objects."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "producer",
        "simulator",
        "--port",
        "0",
        "--calls-per-second",
        "0",
        "--api-key",
        "k1",
        "--verbose",
        env=BASE_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        url = first.split(" on ", 1)[1].strip()
        from websockets.asyncio.client import connect

        async with connect(url + "?domain=demo.phonet.com.ua&apiKey=k1&subscriber=001"):
            await asyncio.sleep(0.2)
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    lines = err.decode().splitlines()
    assert any("socket open subscriber=001" in line for line in lines), lines
    for line in lines:
        assert "asctime=" not in line
        assert " object at 0x" not in line
