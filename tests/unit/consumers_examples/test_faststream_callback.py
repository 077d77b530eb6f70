"""consumers_examples/faststream_callback.py without a broker: its AsyncAPI document (as
FastStream generates it) agrees with the producer's — the routing keys it binds, and every
field it reads, of a type the producer may send. (The service run against the producer:
``tests/e2e/test_example_faststream.py``.)"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from phonet_client import routing_key
from tests.support import ROOT

PRODUCER_DOC = ROOT / "producer" / "asyncapi.yaml"


def the_service_document() -> dict[str, Any]:
    from faststream.specification import AsyncAPI

    from consumers_examples.faststream_callback import broker

    spec = AsyncAPI(broker, title="crm-callback", schema_version="3.0.0").to_specification()
    return json.loads(spec.to_json())  # type: ignore[no-any-return]


def topic_match(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` one word, ``#`` zero or more."""
    words = [
        r"[^.]+" if w == "*" else r"(?:[^.]+(?:\.[^.]+)*)?" if w == "#" else re.escape(w)
        for w in pattern.split(".")
    ]
    return re.fullmatch(r"\.".join(words).replace(r"\.(?:", r"\.?(?:"), key) is not None


def json_types(schema: dict[str, Any], doc: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits (resolving local $ref, anyOf, oneOf, type lists)."""
    schema = resolve(schema, doc)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return set().union(*(json_types(s, doc) for s in schema[key]))
    kind = schema.get("type", ["string", "integer", "number", "boolean", "object", "array", "null"])
    return set(kind if isinstance(kind, list) else [kind])


def resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def disagreements(
    theirs: dict[str, Any],
    their_doc: dict[str, Any],
    ours: dict[str, Any],
    our_doc: dict[str, Any],
    where: str = "",
) -> list[str]:
    """Every field the service reads must be one the producer documents, and accept every
    type the producer says it may carry (recursing into objects and arrays)."""
    found: list[str] = []
    theirs, ours = resolve(theirs, their_doc), resolve(ours, our_doc)
    for name, field in theirs.get("properties", {}).items():
        path = f"{where}.{name}" if where else name
        mine = ours.get("properties", {}).get(name)
        if mine is None:
            found.append(f"{path}: not in the producer's document")
            continue
        missing = json_types(mine, our_doc) - json_types(field, their_doc)
        if missing:
            found.append(f"{path}: the producer may send {sorted(missing)}, the service refuses")
        field_r, mine_r = resolve(field, their_doc), resolve(mine, our_doc)
        if "items" in field_r and "items" in mine_r:
            found += disagreements(field_r["items"], their_doc, mine_r["items"], our_doc, path)
        elif "properties" in field_r:
            found += disagreements(field_r, their_doc, mine_r, our_doc, path)
    return found


def test_the_service_and_the_producer_agree_on_the_message() -> None:
    service = the_service_document()
    producer = yaml.safe_load(PRODUCER_DOC.read_text())
    (operation,) = service["operations"].values()
    (binding,) = operation["bindings"]["amqp"]["cc"]
    # The producer's routing key for a call.dial of any employee reaches the service.
    for subscriber in ("001", "ivan.petrov@example.com"):
        assert topic_match(binding, routing_key("call.dial", subscriber))
    assert not topic_match(binding, routing_key("call.hangup", "001"))
    assert producer["channels"]["callEvents"]["address"] == "{event}.{subscriber}"
    (message,) = service["components"]["messages"].values()
    ours = producer["components"]["messages"]["callEvent"]["payload"]
    assert disagreements(message["payload"], service, ours, producer) == []


def test_the_agreement_check_can_fail() -> None:
    """A field the producer does not document, and a type it sends that the service would
    refuse, are both reported."""
    producer = yaml.safe_load(PRODUCER_DOC.read_text())
    ours = producer["components"]["messages"]["callEvent"]["payload"]
    theirs = {
        "type": "object",
        "properties": {"uuid": {"type": "string"}, "callerName": {"type": "string"}},
    }
    assert disagreements(theirs, {}, ours, producer) == [
        "uuid: the producer may send ['integer'], the service refuses",
        "callerName: not in the producer's document",
    ]
