"""``turnscale auth``'s ``/ice`` mints only for known callers, at a bounded rate.

Found by an attack round: anyone in the cluster could mint (1564 mints/s, any user id;
in static mode that hands out the static password), and the NetworkPolicy admitted every
namespace.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.gateway import ice_server
from relay.gateway.callers import CallerGate
from relay.gateway.ice_server import IceState
from scaler.common.flags import ConfigError
from tests.clock import FakeClock
from tests.gateway.test_ice import EPHEMERAL, NOW, ice_endpoint

BACKEND = "backend-token-0123456789abcdef"
OTHER = "other-backend-token-0123456789"


@contextlib.asynccontextmanager
async def endpoint(gate: CallerGate) -> AsyncIterator[str]:
    state = IceState(EPHEMERAL, ("192.0.2.1",), clock=lambda: NOW)
    async with ice_endpoint(state, gate) as base:
        yield f"{base}/ice?service=turn&username=alice"


async def mint(url: str, authorization: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        return answer.status, dict(answer.headers), await answer.json()


async def test_only_a_caller_with_a_known_token_gets_credentials() -> None:
    gate = CallerGate([BACKEND, OTHER], rate=10, burst=20, clock=FakeClock())
    async with endpoint(gate) as url:
        for authorization in (None, "Bearer wrong-token-0123456789", f"Basic {BACKEND}"):
            status, headers, body = await mint(url, authorization)
            assert status == 401, authorization
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert "iceServers" not in body
        status, _, body = await mint(url, f"Bearer {BACKEND}")
        assert status == 200 and body["iceServers"][0]["username"].endswith(":alice")
        assert (await mint(url, f"bearer  {OTHER} "))[0] == 200


async def test_each_caller_mints_at_most_its_rate() -> None:
    clock = FakeClock()
    gate = CallerGate([BACKEND, OTHER], rate=1, burst=3, clock=clock)
    async with endpoint(gate) as url:
        statuses = [(await mint(url, f"Bearer {BACKEND}"))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, headers, body = await mint(url, f"Bearer {BACKEND}")
        assert status == 429 and headers["Retry-After"] == "1"
        assert "--mint-rate" in body["error"]
        # Another backend has its own budget.
        assert (await mint(url, f"Bearer {OTHER}"))[0] == 200
        clock.now += 1.0  # one more credential a second
        assert (await mint(url, f"Bearer {BACKEND}"))[0] == 200
        assert (await mint(url, f"Bearer {BACKEND}"))[0] == 429


def test_a_non_loopback_endpoint_needs_caller_tokens(tmp_path: Path) -> None:
    base = ["--kubernetes", "--kubeconfig", str(_kubeconfig(tmp_path))]
    with pytest.raises(ConfigError, match="--caller-token-file"):
        ice_server.load([*base, "--http", "0.0.0.0:8087"], environ={})
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the backends\n{BACKEND}\n\n{OTHER}\n")
    loaded = ice_server.load(
        [*base, "--http", "0.0.0.0:8087", "--caller-token-file", str(tokens)], environ={}
    )
    assert loaded.caller_tokens == (BACKEND, OTHER)
    assert BACKEND not in repr(loaded)
    assert ice_server.load([*base, "--http", "127.0.0.1:8087"], environ={}).caller_tokens == ()
    tokens.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        ice_server.load([*base, "--caller-token-file", str(tokens)], environ={})


def _kubeconfig(directory: Path) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "c",'
        ' "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}],'
        ' "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}'
    )
    return path
