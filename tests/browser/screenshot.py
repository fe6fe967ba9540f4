"""``make screenshot``: ``docs/ice-tester.png``, the ICE tester page after a successful run.

It runs what a user runs: ``turnscale run`` with a TLS listener (a throw-away CA's leaf,
trusted by that key alone) and the page in headless Chromium, and takes the screenshot once
every call is connected and carrying media. The PNG records the SHA-256 of the page's
source files in a ``tEXt`` chunk; ``test_tester_screenshot.py`` fails when the page changed
and the screenshot was not taken again.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from relay.gateway.tester import ASSETS
from tests.browser import chromium
from tests.browser.fleet import embedded_run
from tests.browser.tester import diagnostics, spki_sha256, verdicts
from tests.relay.tls_helpers import Authority
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "ice-tester.png"
SOURCE = ROOT / "relay" / "gateway" / "tester"
#: The tEXt keyword holding the page source's digest.
KEY = "turnscale-tester-source"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def source_digest() -> str:
    """SHA-256 over the page's files (name and content, in serving order)."""
    digest = hashlib.sha256()
    for name, _ in ASSETS.values():
        digest.update(name.encode() + b"\0" + (SOURCE / name).read_bytes())
    return digest.hexdigest()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_text(png: bytes, key: str, value: str) -> bytes:
    """``png`` with a tEXt chunk right after IHDR (PNG spec §11.3.4.3)."""
    assert png.startswith(PNG_SIGNATURE)
    ihdr_end = len(PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    text = _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    return png[:ihdr_end] + text + png[ihdr_end:]


def texts(png: bytes) -> dict[str, str]:
    """The tEXt chunks of ``png`` (bounded by its length: every chunk moves forward)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    out: dict[str, str] = {}
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        if kind == b"tEXt":
            key, _, value = png[at + 8 : at + 8 + length].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return out


def _flowing(found: dict[str, Any]) -> bool:
    return bool(found["calls"]) and all(
        c["ok"] and c["rttMs"] is not None and (c["bitrateKbps"] or 0) > 0 for c in found["calls"]
    )


async def take() -> bytes:
    """The PNG of the page after a successful run."""
    with tempfile.TemporaryDirectory(prefix="turnscale-screenshot-") as scratch:
        leaf = Authority(Path(scratch)).leaf("relay")
        trust = f"--ignore-certificate-errors-spki-list={spki_sha256(leaf.cert)}"
        with embedded_run("--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key)) as run:
            async with chromium(extra_args=(trust,)) as browser:
                context = await browser.new_context(viewport={"width": 1000, "height": 700})
                page = await context.new_page()
                await page.goto(run.tester)
                found = await verdicts(page)
                assert all(c["ok"] for c in found["calls"]), found

                async def flowing() -> bool:
                    return _flowing(await diagnostics(page))

                await eventually(flowing, "media on every call", 15)
                await asyncio.sleep(2.0)  # a few more seconds of stats on the page
                png = await page.screenshot(full_page=True)
                await context.close()
    return png


def main() -> None:
    png = asyncio.run(take())
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(with_text(png, KEY, source_digest()))
    print(f"wrote {SCREENSHOT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
