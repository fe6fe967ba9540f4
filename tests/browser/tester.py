"""Driving the ICE tester page in Chromium: open it, wait for its verdicts, read them.

Everything is read from what the page shows a user: the summary line, each result's status
text, and the JSON of the "Diagnostics" box (what "Copy diagnostics" copies).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from OpenSSL import crypto
from playwright.async_api import Browser, Page

from tests.waiting import eventually

#: The page's own deadline for one call is 15 s; a little more for gathering on a busy box.
VERDICT_WITHIN = 25.0


async def open_tester(browser: Browser, url: str) -> Page:
    """A new tab (its own context: no shared state between tabs) on the tester page."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url, timeout=15_000)
    return page


async def diagnostics(page: Page) -> dict[str, Any]:
    text = await page.input_value("#diagnostics")
    if not text:
        return {"calls": [], "ice": None}
    answer: dict[str, Any] = json.loads(text)
    return answer


async def verdicts(page: Page, within: float = VERDICT_WITHIN) -> dict[str, Any]:
    """The diagnostics once /ice has answered and no call is still connecting."""

    seen: dict[str, Any] = {}

    async def settled() -> bool:
        seen.update(await diagnostics(page))
        ice = seen.get("ice")
        if ice is None:
            return False
        return not ice["ok"] or (
            bool(seen["calls"]) and all(c["status"] != "connecting" for c in seen["calls"])
        )

    await eventually(
        settled,
        "the tester's verdicts",
        within,
        interval=0.2,
        explain=lambda: json.dumps(seen)[:2000],
    )
    return await diagnostics(page)


async def statuses(page: Page) -> dict[str, str]:
    """Each result's status text, by TURN URL, as shown."""
    out: dict[str, str] = {}
    for section in await page.locator("#results .result").all():
        url = await section.locator(".url").text_content()
        out[url or ""] = await section.locator(".status").text_content() or ""
    return out


def spki_sha256(cert: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in ``cert``: what
    Chromium's ``--ignore-certificate-errors-spki-list`` takes (that one key, nothing else)."""
    leaf = crypto.load_certificate(crypto.FILETYPE_PEM, cert.read_bytes())
    spki = crypto.dump_publickey(crypto.FILETYPE_ASN1, leaf.get_pubkey())
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
