"""consumers_examples/call_card end to end in headless Chromium (Debian's, driven by
Playwright): simulator → producer → RabbitMQ → the app → the page, and the page's
"call back" button → click2call through the producer → the simulated PBX."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumers_examples.call_card.app import CallCard
from phonet_simulator import PhonetSimulator
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = (
    Path(__file__).resolve().parents[2] / "consumers_examples" / "call_card" / "screenshot.png"
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def card_app(
    start_producer: StartProducer, amqp_url: str, exchange_name: str, command_queue: str
) -> AsyncIterator[CallCard]:
    await start_producer()
    app = CallCard(amqp_url, exchange_name, command_queue, port=0)
    await app.start()
    yield app
    await app.close()


def frame(
    event: str, uuid: str, *, lg: int = 4, bridged: bool = False, **client: Any
) -> dict[str, Any]:
    now = int(time.time() * 1000)
    other = {
        "id": "7",
        "name": "Олена Коваль",
        "num": "+380671112233",
        "companyName": "ТОВ Світанок",
        "url": "https://crm.example.com/contacts/7",
        **client,
    }
    return {
        "event": event,
        "uuid": uuid,
        "parentUuid": None,
        "lgDirection": lg,
        "leg": {"id": 120, "type": 1, "displayName": "Anna Support", "ext": "911"},
        "leg2": None,
        "otherLegs": [other],
        "dialAt": now - (5000 if bridged else 0),
        "bridgeAt": now - 1000 if bridged else None,
        "serverTime": now,
        "trunkNum": "567850550",
        "trunkName": "Main line",
    }


async def open_page(browser: Any, app: CallCard) -> Any:
    page = await browser.new_page(viewport={"width": 1100, "height": 330})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A missing favicon (or any 404) is a console error in the browser's tools.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.errors = errors
    await page.goto(f"http://127.0.0.1:{app.port}/")
    await page.wait_for_selector('#status[data-state="online"]')
    return page


async def test_a_call_rings_is_answered_called_back_and_ends(
    sim: PhonetSimulator, card_app: CallCard, browser: Any, tmp_path: Path
) -> None:
    await sim.wait_connected(SUBSCRIBERS)
    page = await open_page(browser, card_app)
    # The README's screenshot command, as a user runs it (as root here: --no-sandbox): it
    # opens its own page and waits for the three cards of this test.
    out = SCREENSHOT if os.environ.get("CALL_CARD_SCREENSHOT") else tmp_path / "card.png"
    shooter = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCREENSHOT.parent / "screenshot.py"),
        "--url",
        f"http://127.0.0.1:{card_app.port}/",
        "--out",
        str(out),
        "--cards",
        "3",
        "--timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await until(lambda: len(card_app.pages) == 2, timeout=30, what="the screenshot page")
    await sim.send("001", frame("call.dial", "card-1"))
    card = page.locator('[data-uuid="card-1"]')
    await card.wait_for()
    assert await card.get_attribute("data-state") == "ringing"
    assert await card.locator(".name").text_content() == "Олена Коваль"
    assert await card.locator(".company").text_content() == "ТОВ Світанок"
    assert await card.locator(".number").text_content() == "+380671112233"
    assert await card.locator(".crm").get_attribute("href") == "https://crm.example.com/contacts/7"
    assert "incoming" in (await card.locator(".direction").text_content() or "")
    assert "employee 001 · Anna Support (911)" in (
        await card.locator(".employee").text_content() or ""
    )
    assert (await card.locator(".timer").text_content() or "").startswith("ringing")

    await sim.send("001", frame("call.bridge", "card-1", bridged=True))
    await page.wait_for_selector('[data-uuid="card-1"][data-state="talking"]')

    await card.locator(".callback").click()
    await until(
        lambda: ("001", {"action": "call", "to": "+380671112233"}) in sim.actions,
        what="the PBX got the call-back",
    )
    await page.wait_for_function(
        "document.querySelector('[data-uuid=\"card-1\"] .outcome').textContent"
        " === 'calling +380671112233 now'"
    )

    await sim.send("001", frame("call.hangup", "card-1", bridged=True))
    await page.wait_for_selector('[data-uuid="card-1"][data-state="ended"]')
    assert "talked" in (await card.locator(".timer").text_content() or "")
    assert page.errors == []

    # A few more calls for the picture in the README.
    await sim.send(
        "002",
        frame(
            "call.dial",
            "card-2",
            lg=4,
            name="Ivan Petrenko",
            companyName="Acme Ltd",
            num="+380501234567",
        ),
    )
    await sim.send(
        "ivan.petrov@example.com",
        frame(
            "call.bridge",
            "card-3",
            lg=2,
            bridged=True,
            name=None,
            companyName=None,
            num="+380442223344",
        ),
    )
    await page.wait_for_selector('[data-uuid="card-3"]')
    assert await page.locator('[data-uuid="card-3"] .name').text_content() == "Unknown client"
    assert page.errors == []
    _, stderr = await asyncio.wait_for(shooter.communicate(), 60)
    assert shooter.returncode == 0, stderr.decode()
    assert out.read_bytes().startswith(b"\x89PNG")


async def test_a_refused_call_back_says_why(
    sim: PhonetSimulator, card_app: CallCard, browser: Any
) -> None:
    await sim.wait_connected(SUBSCRIBERS)
    page = await open_page(browser, card_app)
    await sim.send("002", frame("call.dial", "card-x", num="000123"))
    card = page.locator('[data-uuid="card-x"]')
    await card.wait_for()
    await card.locator(".callback").click()
    await page.wait_for_function(
        "document.querySelector('[data-uuid=\"card-x\"] .outcome').textContent"
        " === 'could not call: number unreachable'"
    )


async def test_hostile_client_data_is_shown_as_text(
    sim: PhonetSimulator, card_app: CallCard, browser: Any
) -> None:
    await sim.wait_connected(SUBSCRIBERS)
    page = await open_page(browser, card_app)
    evil = '<img src=x onerror="window.pwned=1">'
    await sim.send(
        "001", frame("call.dial", "card-evil", name=evil, url="javascript:window.pwned=2")
    )
    card = page.locator('[data-uuid="card-evil"]')
    await card.wait_for()
    assert await card.locator(".name").text_content() == evil
    assert await card.locator(".crm").is_hidden()
    assert await page.evaluate("window.pwned") is None


async def test_one_subscriber_only(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp_url: str,
    exchange_name: str,
    command_queue: str,
    browser: Any,
) -> None:
    await start_producer()
    app = CallCard(
        amqp_url, exchange_name, command_queue, subscriber="ivan.petrov@example.com", port=0
    )
    await app.start()
    try:
        await sim.wait_connected(SUBSCRIBERS)
        page = await open_page(browser, app)
        await sim.send("001", frame("call.dial", "not-mine"))
        await sim.send("ivan.petrov@example.com", frame("call.dial", "mine"))
        await page.locator('[data-uuid="mine"]').wait_for()
        assert await page.locator('[data-uuid="not-mine"]').count() == 0
    finally:
        await app.close()
