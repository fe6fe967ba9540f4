"""How ``turnscale auth`` serves the tester page: to anyone, same-origin only by its
Content-Security-Policy, while ``/ice`` keeps its caller checks; a loopback endpoint without
caller tokens answers ``/ice`` only under a loopback Host (no DNS rebinding)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from relay.gateway.callers import CallerGate
from relay.gateway.ice_server import IceState, ice_tester_url
from relay.gateway.tester import ASSETS, CONTENT_SECURITY_POLICY
from scaler.common.flags import HostPort
from tests.gateway.test_ice import EPHEMERAL, ice_endpoint

SOURCE = Path(__file__).resolve().parents[2] / "relay" / "gateway" / "tester"
TOKEN = "a-caller-token-of-the-backend"


async def test_the_page_and_its_assets_are_served_to_anyone_with_the_policy() -> None:
    gate = CallerGate([TOKEN], rate=1.0, burst=1, clock=time.monotonic)
    async with (
        ice_endpoint(IceState(EPHEMERAL, ("192.0.2.1",)), gate) as base,
        aiohttp.ClientSession() as session,
    ):
        for path, (name, content_type) in ASSETS.items():
            async with session.get(f"{base}{path}") as answer:
                assert answer.status == 200, path
                assert answer.content_type == content_type
                assert await answer.read() == (SOURCE / name).read_bytes()
                assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
        async with session.get(f"{base}/ice") as answer:
            assert answer.status == 401  # the page is public, minting is not
        async with session.get(f"{base}/ice", headers={"Host": "turn.example.org"}) as answer:
            assert answer.status == 401  # with caller tokens, any Host (a Service name)
        async with session.get(f"{base}/other.js") as answer:
            assert answer.status == 404


def test_the_policy_allows_this_origin_only() -> None:
    directives = dict(part.partition(" ")[::2] for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src", "img-src", "media-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY
    # The page itself loads nothing from elsewhere and runs no inline script.
    html = (SOURCE / "index.html").read_text()
    assert "<script>" not in html and "http" not in html.replace('"http-equiv"', "")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8087", 200),
        ("localhost:8087", 200),
        ("[::1]:8087", 200),
        ("localhost", 200),
        ("rebound.example.org:8087", 403),
        ("127.0.0.1.nip.io:8087", 403),
        ("192.0.2.1:8087", 403),
    ],
)
async def test_a_loopback_endpoint_mints_only_under_a_loopback_host(host: str, status: int) -> None:
    async with (
        ice_endpoint(IceState(EPHEMERAL, ("192.0.2.1",))) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/ice", headers={"Host": host}) as answer,
    ):
        assert answer.status == status
        if status == 403:
            assert (await answer.json())["error"] == "Host must be a loopback address or localhost"


async def test_extra_urls_follow_the_listeners() -> None:
    state = IceState(EPHEMERAL, ("127.0.0.1",), extra_urls=("turns:127.0.0.1:5349?transport=tcp",))
    async with (
        ice_endpoint(state) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/ice") as answer,
    ):
        (server,) = (await answer.json())["iceServers"]
    assert server["urls"] == [
        "turn:127.0.0.1:3478?transport=udp",
        "turn:127.0.0.1:3478?transport=tcp",
        "turns:127.0.0.1:5349?transport=tcp",
    ]


def test_the_tester_link_printed() -> None:
    assert (
        ice_tester_url(HostPort("127.0.0.1", 8087), token_needed=False) == "http://127.0.0.1:8087/"
    )
    assert ice_tester_url(HostPort("0.0.0.0", 8087), token_needed=True) == (
        "http://127.0.0.1:8087/#token=CALLER-TOKEN"
    )
    assert ice_tester_url(HostPort("::1", 80), token_needed=False) == "http://[::1]:80/"
