"""Debian's Chromium, headless, driven by Playwright: the browser users run, never downloaded.

``chromium()`` launches ``/usr/bin/chromium`` (missing: skip locally, fail under CI=true).
With ``netns=NAME`` the browser process runs inside that network namespace: Playwright talks
to it over pipes, which cross ``ip netns exec`` unchanged, so the test process stays in the
root namespace while the browser's sockets live in the test network.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from tests.tools import require_tool

# Flags a headless machine needs, and nothing else. Playwright already passes --no-sandbox
# (the suite runs as root, where Chromium's sandbox refuses to start).
HEADLESS_FLAGS: tuple[str, ...] = (
    # No GPU on the machine: software rendering for the canvas captureStream() video.
    "--disable-gpu",
    # /dev/shm is small in containers; Chromium would crash tabs under media load.
    "--disable-dev-shm-usage",
)

# A media server's host candidates must be real addresses for the relay's CreatePermission;
# Chromium hides them behind mDNS .local names unless this feature is off.
REAL_HOST_CANDIDATES: tuple[str, ...] = ("--disable-features=WebRtcHideLocalIpsWithMdns",)


def _netns_wrapper(directory: Path, chromium: str, netns: str) -> str:
    """An executable that starts Chromium inside ``netns`` with the arguments it is given."""
    ip = require_tool("ip")
    script = directory / f"chromium-in-{netns}"
    script.write_text(f'#!/bin/sh\nexec {ip} netns exec {netns} {chromium} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@contextlib.asynccontextmanager
async def chromium(
    *, netns: str | None = None, extra_args: tuple[str, ...] = ()
) -> AsyncIterator[Browser]:
    """A headless Chromium, closed (with every page and process it started) on exit."""
    executable = require_tool("chromium")
    with tempfile.TemporaryDirectory(prefix="turnscale-chromium-") as scratch:
        if netns is not None:
            executable = _netns_wrapper(Path(scratch), executable, netns)
        env: dict[str, str | float | bool] = dict(os.environ)
        # Keep the browser's profile, crash dumps and caches inside the scratch directory.
        env["HOME"] = scratch
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable,
                headless=True,
                args=[*HEADLESS_FLAGS, *extra_args],
                env=env,
                timeout=30_000,
            )
            try:
                yield browser
            finally:
                await browser.close()


#: A fake camera and microphone, granted without a prompt. A page that gets them through
#: getUserMedia also gets WebRTC's permission to gather a host candidate on every interface:
#: without it Chromium offers only the address of its default route, and a media server's
#: namespace has none.
FAKE_MEDIA_DEVICES: tuple[str, ...] = (
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


async def secure_page(browser: Browser, origin: str = "https://media.turnscale.test") -> Page:
    """A new blank page at ``origin``, answered by Playwright itself (no network, no
    certificate): a secure context, which getUserMedia requires and about:blank is not."""
    page = await browser.new_page()
    await page.route(
        f"{origin}/**",
        lambda route: route.fulfill(
            body="<!doctype html><title>turnscale</title>", content_type="text/html"
        ),
    )
    await page.goto(f"{origin}/", timeout=10_000)
    return page
