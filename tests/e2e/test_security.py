"""Security end to end: click2call guards (who, where, how fast, audit), bad input, API key
rotation without a restart, TLS to the broker. Least privilege is in test_permissions.py."""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.proxy import TcpProxy
from tests.support import Collector, RpcClient, call, http_get, metric_value, until

UA = "+380991234567"


def user_of(amqp_url: str) -> str:
    return urlsplit(amqp_url).username or "guest"


async def results(port: int) -> dict[str, float]:
    _, _, raw = await http_get(port, "/metrics")
    text = raw.decode()
    return {
        result: metric_value(text, "phonet_click2call_commands_total", {"result": result})
        for result in ("success", "forbidden", "number_not_allowed", "rate_limited", "invalid")
    }


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    keys = ("sender", "subscriber", "number", "result", "latency_ms")
    return [
        {k: getattr(r, k, None) for k in keys} for r in caplog.records if r.name == "producer.audit"
    ]


async def test_only_allowed_users_dial_and_each_command_is_audited(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="producer.audit")
    me = user_of(amqp_url)
    producer = await start_producer(phonet_click2call_allowed_users=f"crm, {me}")
    await sim.wait_connected(SUBSCRIBERS)

    ok = await rpc.call({"subscriber": "001", "to": UA}, user_id=me)
    anonymous = await rpc.call({"subscriber": "001", "to": UA}, app_id="billing")
    assert ok.json["event"] == "success"
    assert anonymous.json == {
        "event": "error",
        "message": "forbidden",
        "subscriber": "001",
        "to": UA,
    }
    assert anonymous.headers["result"] == "forbidden"
    assert sim.actions == [("001", {"action": "call", "to": UA})]  # once, for the allowed one
    counts = await results(producer.http.port)
    assert (counts["success"], counts["forbidden"]) == (1, 1)

    await until(lambda: len(audit_lines(caplog)) == 2, what="two audit lines")
    first, second = audit_lines(caplog)
    assert first["sender"] == f"user:{me}"
    assert first["result"] == "success"
    assert second["sender"] == "app:billing"
    assert second["result"] == "forbidden"
    for line in (first, second):
        assert line["subscriber"] == "001"
        assert line["number"] == "+********4567"  # never the full number
        assert isinstance(line["latency_ms"], float)
        assert line["latency_ms"] >= 0


async def test_a_user_not_in_the_list_is_forbidden(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient, amqp_url: str
) -> None:
    await start_producer(phonet_click2call_allowed_users="crm")
    await sim.wait_connected(SUBSCRIBERS)
    reply = await rpc.call({"subscriber": "001", "to": UA}, user_id=user_of(amqp_url))
    assert reply.json["message"] == "forbidden"
    assert sim.actions == []


async def test_a_forged_user_id_never_reaches_the_producer(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    amqp: AbstractConnection,
    command_queue: str,
) -> None:
    """RabbitMQ refuses a publish whose user_id is not the connection's user: the guard
    rests on that. The forged command is never delivered; the producer keeps serving."""
    await start_producer(phonet_click2call_allowed_users="admin")
    await sim.wait_connected(SUBSCRIBERS)
    channel = await amqp.channel(publisher_confirms=True)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"subscriber":"001","to":"380991234567"}', user_id="admin"),
            routing_key=command_queue,
        )
    reply = await rpc.call({"subscriber": "001", "to": UA})
    assert reply.json["message"] == "forbidden"  # no user_id at all: refused too
    assert sim.actions == []


async def test_numbers_outside_the_pattern_are_not_dialed(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    producer = await start_producer(phonet_click2call_allowed_numbers=r"\+?380\d{9}")
    await sim.wait_connected(SUBSCRIBERS)
    premium = await rpc.call({"subscriber": "001", "to": "+44 870 123 4567"})
    local = await rpc.call({"subscriber": "001", "to": "+38 (099) 123-45-67"})
    assert premium.json["message"] == "number not allowed"
    assert premium.headers["result"] == "number_not_allowed"
    assert local.json["event"] == "success"
    assert sim.actions == [("001", {"action": "call", "to": UA})]
    assert (await results(producer.http.port))["number_not_allowed"] == 1


async def test_rate_limit_per_subscriber(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    producer = await start_producer(phonet_click2call_rate_limit=6)  # a burst of one
    await sim.wait_connected(SUBSCRIBERS)
    first = await rpc.call({"subscriber": "001", "to": UA})
    second = await rpc.call({"subscriber": "001", "to": UA})
    other = await rpc.call({"subscriber": "002", "to": UA})
    assert first.json["event"] == "success"
    assert second.json["message"] == "rate limited"
    assert second.headers["result"] == "rate_limited"
    assert other.json["event"] == "success"
    assert [subscriber for subscriber, _ in sim.actions] == ["001", "002"]
    assert (await results(producer.http.port))["rate_limited"] == 1


@pytest.mark.parametrize(
    ("body", "properties", "message"),
    [
        pytest.param(
            b'{"subscriber":"001","to":"380991234567","pad":"' + b"x" * 100_000 + b'"}',
            {},
            "invalid command: body larger than 8192 bytes",
            id="huge-body",
        ),
        pytest.param(
            b'{"subscriber":"001","to":"' + b"1" * 5000 + b'!"}',
            {},
            "invalid command: 'to' is not a phone number",
            id="regex-bomb-number",
        ),
        pytest.param(
            b'{"subscriber":"001","to":"+4420712345678"}',
            {"headers": {"subscriber": 5, "user_id": ["x"], "deep": {"a": [1, {"b": None}]}}},
            "number not allowed",
            id="headers-of-the-wrong-type",
        ),
        pytest.param(
            b'{"subscriber":["001"],"to":{"n":1},"id":{"x":1}}',
            {"app_id": "x" * 200},
            "invalid command: 'subscriber' must be a non-empty string",
            id="fields-of-the-wrong-type",
        ),
    ],
)
async def test_bad_input_gets_an_error_and_nothing_is_dialed(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    body: bytes,
    properties: dict[str, Any],
    message: str,
) -> None:
    # A pattern that backtracks exponentially: it only ever sees validated numbers.
    await start_producer(phonet_click2call_allowed_numbers=r"(\d+)+\+|\+?380\d{9}")
    await sim.wait_connected(SUBSCRIBERS)
    reply = await rpc.call(body, **properties)
    assert reply.json["event"] == "error"
    assert reply.json["message"] == message
    good = await rpc.call({"subscriber": "001", "to": UA})  # the consumer is alive
    assert good.json["event"] == "success"
    assert sim.actions == [("001", {"action": "call", "to": UA})]


async def test_reply_to_the_command_queue_is_refused_and_never_loops(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    collector: Collector,
    command_queue: str,
) -> None:
    """A command whose reply_to is the command queue would have its reply delivered as a
    command (and dialed): it is refused, and nothing is published to that queue."""
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    await rpc.channel.default_exchange.publish(
        aio_pika.Message(b'{"subscriber":"001","to":"380991234567"}', reply_to=command_queue),
        routing_key=command_queue,
    )
    (outcome,) = await collector.wait_count(1)
    assert outcome.json["message"] == "invalid command: reply_to is the command queue"
    await asyncio.sleep(0.5)  # nothing else comes: no reply turned into a command
    assert len(collector.messages) == 1
    assert sim.actions == []


# --- API key rotation -------------------------------------------------------------------


async def test_a_rotated_key_file_cycles_the_sockets_gradually(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    tmp_path: Path,
) -> None:
    """The Secret changes: new handshakes use the new key and every socket open under the
    old one is reopened once — none twice, none left behind — while events keep flowing."""
    key_file = tmp_path / "api-key"
    key_file.write_text(sim.api_key + "\n")
    sim.known = None  # any subscriber
    subscribers = [f"{n:03d}" for n in range(1, 31)]
    await start_producer(
        ",".join(subscribers),
        phonet_api_key=None,
        phonet_api_key_file=key_file,
        phonet_api_key_check_interval=0.1,
        phonet_handshake_concurrency=10,  # cycles 2 at a time
    )
    await sim.wait_connected(subscribers)
    old, new = sim.api_key, uuid.uuid4().hex
    before = collections.Counter(sim.handshakes)

    sim.api_key = new  # the PBX takes the new key; sockets open under the old one stay
    key_file.write_text(new + "\n")
    await until(
        lambda: sim.keys_in_use() == collections.Counter({new: len(subscribers)}),
        timeout=20,
        what="every socket reopened with the new key",
    )
    assert old not in sim.keys_in_use()
    assert {s: sim.handshakes[s] - before[s] for s in subscribers} == dict.fromkeys(subscribers, 1)
    assert sim.refused == collections.Counter()  # no handshake tried the old key

    assert await sim.send("001", call()) == 1
    await collector.wait_for(lambda ms: any(m.routing_key == "call.dial.001" for m in ms))


async def test_a_key_the_pbx_refuses_costs_one_socket_one_reconnect(
    sim: PhonetSimulator, start_producer: StartProducer, tmp_path: Path
) -> None:
    """A mistyped Secret: the first socket reopened with it (the canary) is refused, the
    previous key comes back, and no other socket is touched."""
    key_file = tmp_path / "api-key"
    key_file.write_text(sim.api_key)
    sim.known = None
    subscribers = [f"{n:03d}" for n in range(1, 11)]
    producer = await start_producer(
        ",".join(subscribers),
        phonet_api_key=None,
        phonet_api_key_file=key_file,
        phonet_api_key_check_interval=0.1,
    )
    await sim.wait_connected(subscribers)
    before = collections.Counter(sim.handshakes)
    key_file.write_text("not-the-key")
    await until(lambda: sim.refused[403] >= 1, what="the canary refused")
    await sim.wait_connected(subscribers)  # the canary is back on the previous key
    await asyncio.sleep(1.0)  # more looks at the file: it is not tried again
    assert sim.refused[403] == 1
    cycled = {s for s in subscribers if sim.handshakes[s] != before[s]}
    assert len(cycled) == 1
    assert sim.keys_in_use() == collections.Counter({sim.api_key: len(subscribers)})
    assert producer.api_key.key == sim.api_key


async def test_a_refused_handshake_rereads_the_key_file(
    sim: PhonetSimulator, start_producer: StartProducer, tmp_path: Path
) -> None:
    """The key was rotated at the PBX and the sockets dropped before the periodic look:
    the 401/403 makes the producer read the file at once instead of waiting
    PHONET_RECONNECT_MAX_DELAY, the wait after a refused key (an hour here)."""
    key_file = tmp_path / "api-key"
    key_file.write_text(sim.api_key)
    producer = await start_producer(
        phonet_api_key=None,
        phonet_api_key_file=key_file,
        phonet_api_key_check_interval=3600,
        phonet_reconnect_max_delay=3600,
    )
    await sim.wait_connected(SUBSCRIBERS)
    new = uuid.uuid4().hex
    key_file.write_text(new)
    sim.api_key = new
    await sim.drop()
    await until(
        lambda: sim.keys_in_use() == collections.Counter({new: len(SUBSCRIBERS)}),
        timeout=15,
        what="reconnected with the new key",
    )
    assert sim.refused[403] >= 1
    _, _, raw = await http_get(producer.http.port, "/metrics")
    assert new.encode() not in raw


# --- TLS to the broker ------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf",
                 cwd=d)  # fmt: skip
    return d


@pytest.fixture
async def tls_front(pki: Path, amqp_url: str) -> Any:
    """A TLS endpoint (client certificate required) in front of the plain broker."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    parts = urlsplit(amqp_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672, tls=context).start()
    yield proxy
    await proxy.close()


def amqps(amqp_url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(proxy.url(amqp_url))
    return urlunsplit(("amqps", parts.netloc, parts.path or "/", "", ""))


async def test_amqps_with_a_ca_and_a_client_certificate(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    rpc: RpcClient,
    tls_front: TcpProxy,
    pki: Path,
    amqp_url: str,
) -> None:
    await start_producer(
        amqp_url=amqps(amqp_url, tls_front),
        amqp_ca_file=pki / "ca.pem",
        amqp_cert_file=pki / "client.pem",
        amqp_key_file=pki / "client.key",
    )
    await sim.wait_connected(SUBSCRIBERS)
    assert await sim.send("001", call()) == 1
    await collector.wait_for(lambda ms: any(m.routing_key == "call.dial.001" for m in ms))
    reply = await rpc.call({"subscriber": "002", "to": UA})  # commands come over TLS too
    assert reply.json["event"] == "success"
    assert tls_front.accepted >= 1


async def test_amqps_without_the_client_certificate_is_refused_and_retried(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    tls_front: TcpProxy,
    pki: Path,
    amqp_url: str,
) -> None:
    """The broker wants a client certificate and none is configured: no session, failures
    counted and retried (never a crash), nothing published."""
    producer = await start_producer(
        amqp_url=amqps(amqp_url, tls_front), amqp_ca_file=pki / "ca.pem", wait=False
    )

    async def failures() -> float:
        _, _, raw = await http_get(producer.http.port, "/metrics")
        text = raw.decode()
        return sum(
            metric_value(text, "phonet_amqp_connect_failures_total", {"reason": reason})
            for reason in ("refused", "dns", "timeout", "tls", "auth", "vhost", "other")
        )

    for _ in range(100):
        if await failures() >= 2:
            break
        await asyncio.sleep(0.1)
    assert await failures() >= 2
    assert not producer.broker.connected
    assert tls_front.accepted == 0  # the TLS handshake itself never completed
