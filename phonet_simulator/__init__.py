"""The embedded Phonet simulator (demo, tests, benchmarks)."""

from phonet_simulator.calls import VENDOR_SAMPLE, CallFactory, Quirks, Script, click2call_reply
from phonet_simulator.server import PhonetSimulator, Reply

__all__ = [
    "VENDOR_SAMPLE",
    "CallFactory",
    "PhonetSimulator",
    "Quirks",
    "Reply",
    "Script",
    "click2call_reply",
]
