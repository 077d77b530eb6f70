"""click2call's settings: the command queue, its answers' timing, who may dial what."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from producer.click2call.policy import compile_numbers
from producer.core.settings import CommaList, Group, Lower, check_name

PREFETCH = 32
"""Commands taken off the queue at once: bounds work in progress (each waits at most the
answer timeout), and leaves the rest on the queue for another replica."""


class Click2CallSettings(Group):
    """The command queue and the rules a command passes before it is dialed."""

    phonet_click2call_queue: Annotated[str, AfterValidator(check_name)] = Field(
        "phonet.click2call", description="click2call command queue, durable"
    )
    phonet_click2call_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for the PBX's answer to a command"
    )
    phonet_click2call_max_age: float = Field(
        60.0, gt=0, description="a command older than this is answered 'expired', not dialed"
    )
    phonet_click2call_connect_wait: float = Field(
        3.0, ge=0, description="seconds a command waits for its subscriber's socket"
    )
    phonet_click2call_queue_type: Annotated[Literal["classic", "quorum"], Lower] = Field(
        "classic", description="`classic` or `quorum`"
    )
    phonet_click2call_dead_letter_exchange: str = Field(
        "", description="exchange for rejected commands (empty: none)"
    )
    phonet_click2call_allowed_users: CommaList = Field(
        (),
        description="RabbitMQ users whose commands are dialed (the `user_id` property);"
        " empty: anyone who may publish to the queue",
    )
    phonet_click2call_allowed_numbers: str = Field(
        "",
        description="regular expression the normalised number (`+`, digits) must match in"
        " full, e.g. `\\+?380\\d{9}`; empty: any number",
    )
    phonet_click2call_rate_limit: float = Field(
        60.0,
        ge=0,
        allow_inf_nan=False,
        description="commands a minute per subscriber (bursts of 10 s worth); 0: off",
    )

    @field_validator("phonet_click2call_allowed_numbers")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            compile_numbers(value)
        except re.error as exc:  # the pattern is the user's own: safe to quote the reason
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value.strip()
