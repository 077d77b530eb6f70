"""Least privilege on the broker: the README's ``rabbitmqctl set_permissions`` lines, applied
to users made for this test, are enough for the producer, a consumer and a command sender —
and a consumer cannot publish commands. Needs ``rabbitmqctl`` for the broker under test
(the local one); skipped otherwise."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest

from phonet_simulator import PhonetSimulator
from producer.broker.link import open_connection
from tests.conftest import PREFIX
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import ROOT, Collector, RpcClient, call

README_PRODUCER = (
    r"^(phonet\.events(\.presence)?|phonet\.click2call(\.journal)?|amq\.gen-.*)$",
    r"^(phonet\.events(\.presence)?|amq\.default|amq\.gen-.*)$",
    r"^(phonet\.click2call(\.journal)?|phonet\.events\.presence|amq\.gen-.*)$",
)
"""The README's producer line, for the default names (checked against the README below)."""


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {err.decode()[:200]}")
    return out.decode()


MakeUser = Callable[[str, str, str, str], Awaitable[str]]


@pytest.fixture
async def make_user(amqp_url: str) -> AsyncIterator[MakeUser]:
    """``await make_user(kind, configure, write, read)`` → an AMQP URL for a new user with
    those permissions on the test broker's vhost; the users are deleted afterwards."""
    parts = urlsplit(amqp_url)
    if shutil.which("rabbitmqctl") is None or parts.hostname not in ("localhost", "127.0.0.1"):
        pytest.skip("needs rabbitmqctl for a local broker (to create users)")
    vhost = parts.path[1:] or "/"
    made: list[str] = []

    async def make(kind: str, configure: str, write: str, read: str) -> str:
        name = f"{PREFIX}{kind}.{secrets.token_hex(4)}"
        password = secrets.token_hex(12)  # no leading "-": rabbitmqctl would take it for a flag
        await rabbitmqctl("add_user", name, password)
        made.append(name)
        await rabbitmqctl("set_permissions", "-p", vhost, name, configure, write, read)
        netloc = f"{quote(name, safe='')}:{password}@{parts.hostname}:{parts.port or 5672}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    yield make
    for name in made:
        await rabbitmqctl("delete_user", name)


def readme_lines() -> dict[str, tuple[str, str, str]]:
    """The ``rabbitmqctl set_permissions`` lines of the README's Security section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.findall(
        r"rabbitmqctl set_permissions -p / (\S+) '([^']*)' '([^']*)' '([^']*)'", text
    )
    return {user: (c, w, r) for user, c, w, r in found}


def test_the_readme_gives_the_producer_line_tested_here() -> None:
    assert readme_lines()["phonet-producer"] == README_PRODUCER


def for_names(line: tuple[str, str, str], exchange: str, queue: str) -> tuple[str, ...]:
    """The README's regexes with this test's exchange and queue names in place of the
    defaults."""
    return tuple(
        p.replace(r"phonet\.(events|click2call)", f"({re.escape(exchange)}|{re.escape(queue)})")
        .replace(r"phonet\.events", re.escape(exchange))
        .replace(r"phonet\.click2call", re.escape(queue))
        for p in line
    )


async def test_least_privilege_users_can_do_their_job_and_no_more(
    make_user: MakeUser,  # first: its users outlive the producer (torn down last)
    sim: PhonetSimulator,
    start_producer: StartProducer,
    exchange_name: str,
    command_queue: str,
    collector: Collector,
) -> None:
    lines = readme_lines()
    producer_url = await make_user(
        "producer", *for_names(lines["phonet-producer"], exchange_name, command_queue)
    )
    # The consumer's and the sender's lines use their own queue prefixes (crm., amq.gen-).
    consumer_url = await make_user("consumer", *for_names(lines["crm-events"], exchange_name, ""))
    sender_url = await make_user("sender", *for_names(lines["crm-dialer"], exchange_name, ""))

    await start_producer(amqp_url=producer_url)  # declares, publishes, consumes: all allowed
    await sim.wait_connected(SUBSCRIBERS)
    assert await sim.send("001", call()) == 1
    await collector.wait_for(lambda ms: any(m.routing_key == "call.dial.001" for m in ms))

    # The sender dials and gets its reply (on a server-named reply queue).
    sender = await open_connection(sender_url, timeout=10, name="tests sender")
    try:
        rpc = await RpcClient(sender, command_queue).start()
        reply = await rpc.call({"subscriber": "002", "to": "380991234567"})
        assert reply.json["event"] == "success"
    finally:
        await sender.close()

    # The consumer reads the stream through its own queue…
    consumer = await open_connection(consumer_url, timeout=10, name="tests consumer")
    try:
        channel = await consumer.channel()
        queue = await channel.declare_queue(f"crm.{secrets.token_hex(4)}", exclusive=True)
        await queue.bind(exchange_name, "call.#")
        assert await sim.send("002", call()) == 1
        message = await queue.get(timeout=10, fail=False)
        for _ in range(50):
            if message is not None:
                break
            await asyncio.sleep(0.1)
            message = await queue.get(timeout=10, fail=False)
        assert message is not None
        assert message.routing_key == "call.dial.002"
        # …and cannot publish a command, nor write to the events exchange.
        publisher = await consumer.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await publisher.default_exchange.publish(
                aio_pika.Message(b'{"subscriber":"001","to":"380991234567"}'),
                routing_key=command_queue,
            )
        publisher = await consumer.channel(publisher_confirms=True)
        events = await publisher.get_exchange(exchange_name, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await events.publish(aio_pika.Message(b"{}"), routing_key="call.dial.001")
    finally:
        await consumer.close()
    assert [s for s, _ in sim.actions] == ["002"]  # only the sender's command was dialed
