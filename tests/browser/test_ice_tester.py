"""The ICE tester page in Debian's Chromium against real fleets: ``turnscale run`` over UDP,
TCP and TLS (``turns:``, with a certificate Chromium really validates), and ``turnscale
auth`` with caller tokens and with credentials the relay refuses.

Chromium trusts the test relay's certificate through ``--ignore-certificate-errors-spki-list``
with the SHA-256 of that one leaf's public key: nothing else is trusted, and a leaf with
another key (the second test) fails the ``turns:`` call while UDP and TCP still connect.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.async_api import Request

from relay.gateway.tester import CONTENT_SECURITY_POLICY
from tests.browser import chromium
from tests.browser.fleet import REST_SECRET, EmbeddedRun, embedded_run, gateway_auth
from tests.browser.tester import diagnostics, open_tester, spki_sha256, statuses, verdicts
from tests.relay.servers import relay_process
from tests.relay.tls_helpers import Authority, Leaf
from tests.waiting import eventually

CALLER_TOKEN = "browser-test-caller-token-0123456789"


@pytest.fixture(scope="module")
def tls_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRun, Leaf]]:
    """``turnscale run`` with a tls:// listener serving a leaf of a throw-away CA."""
    leaf = Authority(tmp_path_factory.mktemp("ca")).leaf("relay")
    with embedded_run("--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key)) as run:
        yield run, leaf


def trusting(cert: Path) -> tuple[str, ...]:
    return (f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}",)


def flowing(found: dict[str, Any]) -> bool:
    """Every call echoes on its data channel, receives video and decodes it."""
    return all(
        c["rttMs"] is not None
        and c["packetsReceived"] > 0
        and c["framesDecoded"] > 0
        and (c["bitrateKbps"] or 0) > 0
        for c in found["calls"]
    )


async def test_udp_tcp_and_turns_calls_connect_through_the_relay_only(
    tls_run: tuple[EmbeddedRun, Leaf],
) -> None:
    run, leaf = tls_run
    async with chromium(extra_args=trusting(leaf.cert)) as browser:
        page = await open_tester(browser, run.tester)
        found = await verdicts(page)
        assert [c["url"] for c in found["calls"]] == [
            f"turn:{run.addresses['turn']}?transport=udp",
            f"turn:{run.addresses['tcp']}?transport=tcp",
            f"turns:{run.addresses['tls']}?transport=tcp",
        ]
        for call, protocol in zip(found["calls"], ("udp", "tcp", "tls"), strict=True):
            assert call["status"] == "connected" and call["ok"], call
            # iceTransportPolicy "relay": no host or srflx candidate, gathered or used.
            assert call["candidateTypesGathered"] == ["relay"], call
            assert call["candidateTypesUsed"] == ["relay"], call
            assert call["relayProtocol"] == protocol, call
            assert call["connectMs"] > 0 and call["candidateErrors"] == [], call

        async def media_flows() -> bool:
            return flowing(await diagnostics(page))

        await eventually(media_flows, "echo round trips and video on every call", 15)
        assert set((await statuses(page)).values()) == {"PASS: connected through the relay"}
        summary = await page.text_content("#summary")
        assert summary == "3 of 3 TURN server URLs connected (3 calls up)"


async def test_a_turns_certificate_chromium_does_not_trust_fails_that_call_only(
    tls_run: tuple[EmbeddedRun, Leaf], tmp_path: Path
) -> None:
    run, _ = tls_run
    stranger = Authority(tmp_path / "other-ca").leaf("other")  # trusted: another key
    async with chromium(extra_args=trusting(stranger.cert)) as browser:
        page = await open_tester(browser, run.tester)
        found = await verdicts(page)
        by_url = {c["url"]: c for c in found["calls"]}
        turns = by_url.pop(f"turns:{run.addresses['tls']}?transport=tcp")
        assert turns["status"] == "failed" and not turns["ok"], turns
        assert "relay" not in turns["candidateTypesGathered"], turns
        assert all(c["ok"] for c in by_url.values()), by_url
        shown = await statuses(page)
        assert shown[turns["url"]].startswith("FAIL: no relayed candidate"), shown
        assert "trusted by this browser?" in shown[turns["url"]], shown
        assert await page.text_content("#summary") == (
            "2 of 3 TURN server URLs connected (2 calls up)"
        )


async def test_the_page_is_same_origin_only_and_usable_from_the_keyboard(
    tls_run: tuple[EmbeddedRun, Leaf],
) -> None:
    run, leaf = tls_run
    async with aiohttp.ClientSession() as session, session.get(run.tester) as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["Referrer-Policy"] == "no-referrer"
    async with chromium(extra_args=trusting(leaf.cert)) as browser:
        requests: list[str] = []
        context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
        page = await context.new_page()
        page.on("request", lambda request: requests.append(request.url))
        await page.goto(run.tester)
        await verdicts(page)
        # "Copy diagnostics": the JSON an operator pastes into a ticket, without credentials.
        await page.click("#copy")
        copied = json.loads(await page.evaluate("navigator.clipboard.readText()"))
        assert [c["url"] for c in copied["calls"]] == copied["ice"]["urls"]
        assert all(c["ok"] for c in copied["calls"]), copied
        assert "credential" not in json.dumps(copied) and "username" not in json.dumps(copied)
        assert await page.text_content("#copy-status") == "Diagnostics copied to the clipboard."
        origin = urlsplit(run.tester).netloc
        assert requests and {urlsplit(url).netloc for url in requests} == {origin}, requests
        # Every control has a label; results and summary are announced.
        for control in ("token", "diagnostics"):
            assert await page.locator(f"label[for={control}]").count() == 1
        assert await page.get_attribute("#results", "aria-live") == "polite"
        assert await page.get_attribute("#summary", "role") == "status"
        # Tab to "Hang up" and press Enter: every call ends, said in words.
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.id") == "hangup":
                break
        await page.keyboard.press("Enter")
        assert set((await statuses(page)).values()) == {"PASS: connected, then hung up"}
        await context.close()


async def test_caller_tokens_come_from_the_fragment_and_a_wrong_one_is_shown(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "callers"
    tokens.write_text(f"{CALLER_TOKEN}\n")
    with relay_process("--auth-secret", REST_SECRET) as relay:
        listeners = [("udp", relay.udp[1]), ("tcp", relay.tcp[1])]
        with gateway_auth(tmp_path, listeners, "--caller-token-file", str(tokens)) as auth:
            assert auth.serving["tester"] == f"{auth.tester}#token=CALLER-TOKEN"
            async with chromium() as browser:
                page = await open_tester(browser, f"{auth.tester}#token=not-a-caller-token")
                found = await verdicts(page)
                error = "GET /ice answered 401: missing or unknown caller token"
                assert found["ice"]["error"].startswith(error), found
                assert (await page.text_content("#summary") or "").startswith(f"FAIL: {error}")
                assert found["calls"] == []

                sent: list[Request] = []
                page = await open_tester(browser, "about:blank")

                def record(request: Request) -> None:  # a builtin cannot be a Playwright handler
                    sent.append(request)

                page.on("request", record)
                await page.goto(f"{auth.tester}#token={CALLER_TOKEN}")
                found = await verdicts(page)
                assert [c["ok"] for c in found["calls"]] == [True, True], found
                assert "token" not in page.url  # out of the address bar
                for request in sent:
                    assert CALLER_TOKEN not in request.url
                    assert "referer" not in await request.all_headers()
                (ice,) = [r for r in sent if urlsplit(r.url).path == "/ice"]
                assert (await ice.all_headers())["authorization"] == f"Bearer {CALLER_TOKEN}"


async def test_credentials_the_relay_refuses_show_its_401_on_the_page(tmp_path: Path) -> None:
    with relay_process("--auth-secret", REST_SECRET) as relay:
        listeners = [("udp", relay.udp[1]), ("tcp", relay.tcp[1])]
        with gateway_auth(tmp_path, listeners, secret="not-the-relays-secret") as auth:
            async with chromium() as browser:
                page = await open_tester(browser, auth.tester)
                found = await verdicts(page)
                assert len(found["calls"]) == 2, found
                for call in found["calls"]:
                    assert call["status"] == "failed" and not call["ok"], call
                    assert 401 in {e["errorCode"] for e in call["candidateErrors"]}, call
                shown = await statuses(page)
                refused = "the TURN server refused these credentials (401)"
                assert all(s.startswith("FAIL: ") and refused in s for s in shown.values()), shown
                errors = await page.locator(".result .errors").all_text_contents()
                assert all("401" in text for text in errors), errors
