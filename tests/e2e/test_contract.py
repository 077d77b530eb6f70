"""producer/asyncapi.yaml cannot drift from the code: it is valid AsyncAPI 3.0 (checked by the
official parser), and real messages captured from an end-to-end run — call events with every
quirk, invalid frames, click2call commands, replies and outcomes — validate against its
schemas and channel addresses. (Its agreement with the code, checked without running it:
``tests/unit/producer/test_asyncapi.py``; the schema helpers: ``tests/support.py``.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from phonet_simulator import CallFactory, PhonetSimulator, Quirks
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import (
    DOC_PATH,
    MESSAGE_OF,
    ROOT,
    Collector,
    RpcClient,
    address_pattern,
    channel_of,
    check,
    document,
    validator,
)

CONTRACT = ROOT / "tests" / "contract"


# --- the document itself -------------------------------------------------------------------
@pytest.fixture(scope="module")
def asyncapi_parser() -> Path:
    """tests/contract/node_modules with @asyncapi/parser (``npm ci`` on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the official AsyncAPI parser")
    if not (CONTRACT / "node_modules" / "@asyncapi" / "parser").exists():
        subprocess.run(
            [npm, "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=CONTRACT,
            check=True,
            timeout=300,
        )
    return CONTRACT / "validate.mjs"


def test_the_document_is_valid_asyncapi_3(asyncapi_parser: Path) -> None:
    result = subprocess.run(
        ["node", str(asyncapi_parser), str(DOC_PATH)], capture_output=True, text=True, timeout=120
    )
    report = json.loads(result.stdout)
    errors = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert errors == [], errors
    assert report["valid"] is True
    assert result.returncode == 0
    assert document()["asyncapi"] == "3.0.0"
    bindings = document()["channels"]["callEvents"]["bindings"]["amqp"]
    assert bindings["bindingVersion"] == "0.3.0"


def test_the_parser_catches_mistakes(asyncapi_parser: Path, tmp_path: Path) -> None:
    """Guard against a validator that passes everything."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(DOC_PATH.read_text().replace("deliveryMode: 2", "deliveryMode: 9"))
    result = subprocess.run(
        ["node", str(asyncapi_parser), str(broken)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "deliveryMode" in result.stdout


# --- real messages -----------------------------------------------------------------------
async def test_captured_messages_validate_against_the_document(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    rpc: RpcClient,
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    factory = CallFactory(list(SUBSCRIBERS), seed=5, quirks=Quirks(0.5, 0.3, 0.2, 0.5))
    for n in range(40):
        for _, subscriber, frame in factory.make(1_764_000_000_000 + n).sorted():
            await sim.send(subscriber, frame)
    hostile: list[tuple[str, str | bytes, bool | None]] = [
        ("001", "not json", None),
        ("002", b"\x00\x01", None),  # a binary frame
        ("001", "[1]", None),
        ("002", '{"x":1}', None),
        ("001", '{"event":5}', None),
        ("001", b'{"event":"\xff"}', True),  # a text frame with invalid UTF-8
        ("002", orjson.dumps({"event": "*" * 300}).decode(), None),
        ("001", orjson.dumps({"event": "#.weird", "uuid": 7}).decode(), None),  # a valid event
    ]
    for subscriber, payload, text in hostile:
        await sim.send(subscriber, payload, text=text)
    commands = [
        {"subscriber": "001", "to": "380991234567", "id": "ok"},
        {"subscriber": "002", "to": "000123", "id": 7},
        {"subscriber": "ivan.petrov@example.com", "to": "call me"},
        {"subscriber": "999", "to": "380991234567"},
    ]
    replies = await asyncio.gather(*(rpc.call(c) for c in commands))
    replies.append(await rpc.call(b"junk"))
    sent = len(sim.sent)
    await collector.wait_count(sent + len(commands) + 1, timeout=30)

    seen: dict[str, int] = {}
    for message in collector.messages:
        channel = channel_of(message.routing_key)
        assert address_pattern(channel).fullmatch(message.routing_key), message.routing_key
        check(message, MESSAGE_OF[channel])
        seen[channel] = seen.get(channel, 0) + 1
    assert seen == {"callEvents": sent - 7, "invalidFrames": 7, "click2callOutcomes": 5}
    for reply in replies:
        check(reply, "click2callReply")
        assert reply.correlation_id
    validate_commands = validator("#/components/schemas/Click2callCommand")
    assert [validate_commands.is_valid(c) for c in commands] == [True, True, False, True]
