"""click2call guards without sockets: who may dial, where, how fast; the audit's masking."""

from __future__ import annotations

import re

import pytest

from producer.click2call.commands import MAX_COMMAND_BYTES, normalise_number, parse_command
from producer.click2call.policy import (
    Policy,
    RateLimiter,
    compile_numbers,
    mask_number,
    sender_of,
)
from producer.core.errors import Forbidden, InvalidCommand, NumberNotAllowed, RateLimited

UKRAINE = re.compile(r"\+?380\d{9}")


@pytest.mark.parametrize(
    ("allowed", "user_id", "refused"),
    [
        pytest.param(None, None, False, id="no-list-anyone"),
        pytest.param(None, "crm", False, id="no-list-named"),
        pytest.param(frozenset({"crm"}), "crm", False, id="listed"),
        pytest.param(frozenset({"crm"}), "crm2", True, id="not-listed"),
        pytest.param(frozenset({"crm"}), "CRM", True, id="case-matters"),
        pytest.param(frozenset({"crm"}), None, True, id="no-user-id"),
        pytest.param(frozenset({"crm", "helpdesk"}), "helpdesk", False, id="second-of-two"),
    ],
)
def test_sender(allowed: frozenset[str] | None, user_id: str | None, refused: bool) -> None:
    policy = Policy(allowed_users=allowed)
    if refused:
        with pytest.raises(Forbidden, match=r"^forbidden$") as caught:
            policy.check_sender(user_id)
        assert caught.value.result == "forbidden"
    else:
        policy.check_sender(user_id)


@pytest.mark.parametrize(
    ("pattern", "to", "allowed"),
    [
        pytest.param("", "+1 900 555 0100", True, id="no-pattern-anything"),
        pytest.param(r"\+?380\d{9}", "+380991234567", True, id="ua-plus"),
        pytest.param(r"\+?380\d{9}", "380 99 123 45 67", True, id="ua-normalised-first"),
        pytest.param(r"\+?380\d{9}", "+3809912345678", False, id="one-digit-too-many"),
        pytest.param(r"\+?380\d{9}", "+4420712345678", False, id="uk"),
        pytest.param(r"\+?380\d{9}", "00380991234567", False, id="full-match-not-search"),
        pytest.param(r"0\d{9}|\+?380\d{9}", "0441234567", True, id="alternation-local"),
        pytest.param(r"(?!\+?(1900|44870))\+?\d+", "+1900555", False, id="deny-premium"),
        pytest.param(r"(?!\+?(1900|44870))\+?\d+", "+1212555", True, id="deny-premium-other"),
    ],
)
def test_numbers(pattern: str, to: str, allowed: bool) -> None:
    number = normalise_number(to)
    assert number is not None
    policy = Policy(allowed_numbers=compile_numbers(pattern))
    if allowed:
        policy.check_number(number)
    else:
        with pytest.raises(NumberNotAllowed, match=r"^number not allowed$"):
            policy.check_number(number)


def test_a_regex_bomb_number_never_reaches_the_pattern() -> None:
    """A catastrophic pattern is only ever run on a validated number (≤ 21 characters):
    a hostile ``to`` is refused by validation first, in no time."""
    bomb = compile_numbers(r"(\d+)+\+")  # exponential on a long run of digits
    policy = Policy(allowed_numbers=bomb)
    hostile = "1" * 5000 + "x"
    with pytest.raises(InvalidCommand, match="not a phone number"):
        parse_command(f'{{"subscriber":"001","to":"{hostile}"}}'.encode(), {"001"})
    assert normalise_number("1" * 65) is None
    with pytest.raises(NumberNotAllowed):
        policy.check_number("1" * 20)  # the longest a number gets: 2^20 steps at worst


def test_a_huge_body_is_refused_unread() -> None:
    body = b'{"subscriber":"001","to":"380991234567","pad":"' + b"x" * MAX_COMMAND_BYTES + b'"}'
    with pytest.raises(InvalidCommand, match=f"larger than {MAX_COMMAND_BYTES} bytes"):
        parse_command(body, {"001"})


@pytest.mark.parametrize(
    ("per_minute", "takes", "expected"),
    [
        # (seconds since start, subscriber) → taken?
        pytest.param(0, [(0, "a")] * 100, [True] * 100, id="off"),
        pytest.param(60, [(0, "a")] * 11, [True] * 10 + [False], id="burst-of-ten-seconds"),
        pytest.param(
            60, [(0, "a")] * 10 + [(0.5, "a"), (1.0, "a")], [True] * 10 + [False, True], id="refill"
        ),
        pytest.param(6, [(0, "a"), (0, "a"), (10, "a")], [True, False, True], id="slow-burst-1"),
        pytest.param(
            6, [(0, "a"), (0, "b"), (0, "a"), (0, "b")], [True, True, False, False], id="per-sub"
        ),
        pytest.param(
            60, [(0, "a")] * 10 + [(3600, "a")] * 11, [True] * 20 + [False], id="caps-at-burst"
        ),
        pytest.param(
            60, [(5, "a"), (4, "a")], [True, True], id="clock-backwards-no-refill-no-crash"
        ),
    ],
)
def test_rate_limiter(
    per_minute: float, takes: list[tuple[float, str]], expected: list[bool]
) -> None:
    limiter = RateLimiter(per_minute)
    assert [limiter.take(sub, now) for now, sub in takes] == expected


def test_rate_check_counts_only_allowed_numbers() -> None:
    policy = Policy(allowed_numbers=UKRAINE, rate=RateLimiter(6))  # a burst of one
    with pytest.raises(NumberNotAllowed):
        policy.check("001", "+4420712345678", 0.0)
    policy.check("001", "+380991234567", 0.0)  # the refused one took no token
    with pytest.raises(RateLimited, match=r"^rate limited$"):
        policy.check("001", "+380991234567", 0.0)


def test_forget_keeps_only_configured_subscribers() -> None:
    limiter = RateLimiter(6)
    assert limiter.take("a", 0)
    assert limiter.take("b", 0)
    limiter.forget(["b"])
    assert limiter.take("a", 0)  # a fresh bucket
    assert not limiter.take("b", 0)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        pytest.param("+380991234567", "+********4567", id="international"),
        pytest.param("+38 (099) 123-45-67", "+** (***) ***-45-67", id="keeps-layout"),
        pytest.param("1234", "1234", id="four-digits-kept"),
        pytest.param("12", "12", id="short"),
        pytest.param(380991234567, "********4567", id="integer"),
        pytest.param("x" * 100, "x" * 32, id="bounded"),
        pytest.param(None, None, id="none"),
        pytest.param(["1"], None, id="not-text"),
    ],
)
def test_mask_number(text: object, masked: str | None) -> None:
    assert mask_number(text) == masked


@pytest.mark.parametrize(
    ("user_id", "app_id", "sender"),
    [
        pytest.param("crm", "billing", "user:crm", id="user-id-wins"),
        pytest.param(None, "billing", "app:billing", id="app-id-marked"),
        pytest.param(None, None, None, id="anonymous"),
        pytest.param("u" * 100, None, "user:" + "u" * 64, id="bounded"),
        pytest.param(None, "crm\nforged line", "app:crm?forged line", id="no-line-breaks"),
    ],
)
def test_sender_of(user_id: str | None, app_id: str | None, sender: str | None) -> None:
    assert sender_of(user_id, app_id) == sender


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        pytest.param("", True, id="empty"),
        pytest.param(r"\+?380\d{9}", True, id="ua"),
        pytest.param("(", False, id="unbalanced"),
        pytest.param("[", False, id="bracket"),
    ],
)
def test_compile_numbers(pattern: str, valid: bool) -> None:
    if valid:
        compile_numbers(pattern)
    else:
        with pytest.raises(re.error):
            compile_numbers(pattern)
