"""producer/asyncapi.yaml cannot drift from the code: it is valid AsyncAPI 3.0 (checked by the
official parser), and real messages captured from an end-to-end run — call events with every
quirk, invalid frames, click2call commands, replies and outcomes — validate against its
schemas and channel addresses."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from phonet_simulator import CallFactory, PhonetSimulator, Quirks
from producer.click2call.commands import parse_command
from producer.core.errors import InvalidCommand
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import Collector, Received, RpcClient

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "producer" / "asyncapi.yaml"
CONTRACT = ROOT / "tests" / "contract"
WORD = r"(?:[A-Za-z0-9_@+\-]|%[0-9A-F]{2})+"


@cache
def document() -> dict[str, Any]:
    return yaml.safe_load(DOC_PATH.read_text())  # type: ignore[no-any-return]


def validator(pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at ``pointer`` (a ``#/components/...`` reference)."""
    registry = Registry().with_resource(
        "urn:asyncapi", Resource.from_contents(document(), default_specification=DRAFT7)
    )
    return jsonschema.Draft7Validator({"$ref": f"urn:asyncapi{pointer}"}, registry=registry)


def message_schemas(
    name: str,
) -> tuple[jsonschema.Draft7Validator | None, jsonschema.Draft7Validator]:
    message = document()["components"]["messages"][name]
    headers = message.get("headers")
    payload = message["payload"]
    base = f"#/components/messages/{name}"
    return (
        validator(f"{base}/headers") if headers else None,
        validator(f"{base}/payload") if payload else jsonschema.Draft7Validator({}),
    )


def address_pattern(channel: str) -> re.Pattern[str]:
    """The channel's address with parameters as escaped routing words (event: 1+ words)."""
    address = document()["channels"][channel]["address"]
    enums = document()["channels"][channel].get("parameters", {})

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1)
        if "enum" in enums.get(name, {}):
            return "(?:" + "|".join(map(re.escape, enums[name]["enum"])) + ")"
        return rf"{WORD}(?:\.{WORD})*" if name == "event" else WORD

    return re.compile(re.sub(r"\\\{(\w+)\\\}", parameter, re.escape(address)))


def channel_of(routing_key: str) -> str:
    for channel in ("invalidFrames", "click2callOutcomes", "gaps", "historyCalls", "activeCalls"):
        if address_pattern(channel).fullmatch(routing_key):
            return channel
    return "callEvents"


MESSAGE_OF = {
    "callEvents": "callEvent",
    "invalidFrames": "invalidFrame",
    "click2callOutcomes": "click2callOutcome",
    "gaps": "gap",
    "historyCalls": "historyCall",
    "activeCalls": "activeCall",
}


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


def test_documented_names_match_the_code() -> None:
    from producer.click2call.settings import Click2CallSettings
    from producer.publish.settings import PublishSettings

    doc = document()
    queue = doc["channels"]["click2callCommands"]["bindings"]["amqp"]["queue"]["name"]
    exchange = doc["channels"]["callEvents"]["bindings"]["amqp"]["exchange"]["name"]
    assert queue == Click2CallSettings.model_fields["phonet_click2call_queue"].default
    assert exchange == PublishSettings.model_fields["phonet_exchange"].default
    assert doc["info"]["version"] == __import__("producer").__version__


@pytest.mark.parametrize(
    "body",
    [
        b'{"subscriber":"001","to":"380991234567"}',
        b'{"subscriber":"001","to":"+38 (099) 123-45-67","id":5}',
        b'{"subscriber":"001","to":"call me"}',
        b'{"subscriber":"001","to":"1"}',
        b'{"to":"12"}',
        b'{"subscriber":"001","to":"' + b"1" * 21 + b'"}',
        b'{"subscriber":"001","to":"[044]123"}',
    ],
)
def test_command_schema_agrees_with_the_producer(body: bytes) -> None:
    schema_ok = validator("#/components/schemas/Click2callCommand").is_valid(orjson.loads(body))
    try:
        parse_command(body, {"001"})
        producer_ok = True
    except InvalidCommand:
        producer_ok = False
    assert schema_ok is producer_ok


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


def check(message: Received, name: str) -> None:
    headers, payload = message_schemas(name)
    if headers is not None:
        errors = [e.message for e in headers.iter_errors(message.headers)]
        assert errors == [], (name, message.routing_key, message.headers, errors)
    if name != "invalidFrame":
        data = orjson.loads(message.body)
        errors = [e.message for e in payload.iter_errors(data)]
        assert errors == [], (name, message.routing_key, data, errors)
    assert message.content_type == "application/json"
    assert message.message_id
