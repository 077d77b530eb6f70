"""phonet-producer's consumer toolkit: read the events exchange, place calls, drop copies.

Import it in the services that use the stream; it loads none of the service's own
machinery (no websockets, no settings, no ``producer`` module), only aio-pika for the
click2call client.

* :mod:`phonet_client.keys` — binding and routing keys, with the producer's own escape;
* :mod:`phonet_client.messages` — typed messages, :func:`parse`;
* :mod:`phonet_client.click2call` — :class:`Click2Call`, one exception per ``result``;
* :mod:`phonet_client.dedupe` — :class:`Seen`, bounded de-duplication by ``message_id``.
"""

from phonet_client.click2call import (
    BrokerRefused,
    Click2Call,
    Click2CallError,
    Expired,
    Forbidden,
    InvalidCommand,
    NoQueue,
    NoReply,
    NotConnected,
    NumberNotAllowed,
    OutcomeUnknown,
    PbxRefused,
    PbxTimeout,
    RateLimited,
    UnknownSubscriber,
)
from phonet_client.dedupe import Seen
from phonet_client.keys import binding_key, parse_routing_key, routing_key, subscriber_token
from phonet_client.messages import (
    BackfilledCall,
    CallEvent,
    Click2CallOutcome,
    Gap,
    InvalidFrame,
    Message,
    Unknown,
    parse,
)

__all__ = [
    "BackfilledCall",
    "BrokerRefused",
    "CallEvent",
    "Click2Call",
    "Click2CallError",
    "Click2CallOutcome",
    "Expired",
    "Forbidden",
    "Gap",
    "InvalidCommand",
    "InvalidFrame",
    "Message",
    "NoQueue",
    "NoReply",
    "NotConnected",
    "NumberNotAllowed",
    "OutcomeUnknown",
    "PbxRefused",
    "PbxTimeout",
    "RateLimited",
    "Seen",
    "Unknown",
    "UnknownSubscriber",
    "binding_key",
    "parse",
    "parse_routing_key",
    "routing_key",
    "subscriber_token",
]
