#!/usr/bin/env python3
"""A screenshot of the call card page once its cards are drawn.

    python consumers_examples/call_card/screenshot.py [--url http://127.0.0.1:8080/]
        [--out call-card.png] [--cards 1] [--timeout 60] [--chromium /usr/bin/chromium]

It opens the page in headless Chromium (Debian's ``chromium``, driven by Playwright:
``pip install playwright``, no browser download), waits until the page is connected and
``--cards`` call cards are on it (so place a call, or run the demo, meanwhile), then saves a
full-page PNG. Chromium's sandbox cannot run as root, so as root it starts with
``--no-sandbox``. Exit 0 saved, 1 no cards in time, 2 no Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path

QUIET = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_args() -> list[str]:
    """Flags for a headless Chromium on a server: no network chatter, and no sandbox when
    running as root (where Chromium refuses to start with one)."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return [*QUIET, *(["--no-sandbox"] if root else [])]


async def capture(url: str, out: Path, *, cards: int, timeout: float, chromium: str) -> bool:
    """Save a screenshot once ``cards`` cards are drawn; False when they are not in time."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=chromium_args())
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 330})
            await page.goto(url)
            try:
                await page.wait_for_selector('#status[data-state="online"]', timeout=timeout * 1000)
                await page.wait_for_function(
                    f"document.querySelectorAll('.card').length >= {cards}",
                    timeout=timeout * 1000,
                )
            except PlaywrightTimeout:
                return False
            await page.wait_for_timeout(300)  # let the entry transition finish
            await page.screenshot(path=str(out), full_page=True)
            return True
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/")
    parser.add_argument("--out", type=Path, default=Path("call-card.png"))
    parser.add_argument("--cards", type=int, default=1, help="wait for this many cards")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not os.path.exists(args.chromium):
        print(f"no Chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    saved = asyncio.run(
        capture(args.url, args.out, cards=args.cards, timeout=args.timeout, chromium=args.chromium)
    )
    if not saved:
        print(f"no {args.cards} call card(s) within {args.timeout:g}s", file=sys.stderr)
        return 1
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
