"""The publish path's settings: the exchange, the buffer, the spool, the history stream."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from producer.core.settings import Group, Lower, OptionalPath, check_name

PUBLISH_WINDOW = 1024
"""Publishes awaiting a broker confirmation at once: enough to keep a local broker busy
(tests/bench: the batch publisher's ceiling), small enough to rewind quickly."""


class PublishSettings(Group):
    """Where events go and what holds them until the broker confirms them."""

    phonet_exchange: Annotated[str, AfterValidator(check_name)] = Field(
        "phonet.events", description="topic exchange, durable, declared at start"
    )
    phonet_buffer_size: int = Field(
        100_000, ge=10, description="events held in memory while unconfirmed; oldest dropped"
    )
    phonet_buffer_max_bytes: int = Field(
        268_435_456,
        ge=1_048_576,
        description="bytes of memory those events may take (256 MiB: fits the chart's 512Mi)",
    )
    phonet_publish_timeout: float = Field(
        30.0, gt=0, description="a confirm not received this long reopens the connection"
    )
    phonet_spool_dir: OptionalPath = Field(
        None, description="directory where unconfirmed events survive a crash (empty: memory only)"
    )
    phonet_spool_max_bytes: int = Field(
        268_435_456, ge=1_048_576, description="largest size of the spool on disk"
    )
    phonet_spool_fsync: Annotated[Literal["never", "batch", "always"], Lower] = Field(
        "never", description="`never`, `batch` (once a second) or `always` (every event)"
    )
    phonet_history_stream: str = Field(
        "", description="a RabbitMQ stream that keeps every event for replay (empty: none)"
    )
    phonet_history_max_age: float = Field(
        7 * 86400.0, gt=0, description="seconds the history stream keeps events"
    )
    phonet_history_max_bytes: int = Field(
        2 * 1024**3, ge=1024 * 1024, description="bytes the history stream keeps at most"
    )

    @field_validator("phonet_history_stream")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        return check_name(value) if value else value
