"""producer/asyncapi.yaml agrees with the code without running it: the names it documents
are the settings' defaults, and its command schema accepts exactly the commands the
producer parses. (The official parser and real captured messages:
``tests/e2e/test_contract.py``.)"""

from __future__ import annotations

import orjson
import pytest

from producer.click2call.commands import parse_command
from producer.core.errors import InvalidCommand
from tests.support import document, validator


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
