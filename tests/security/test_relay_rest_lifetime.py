"""A TURN REST API username is good for at most the REST lifetime (draft-uberti-behave-turn-
rest-00 §2.2): ``--rest-max-lifetime``, or the GatewayConfig's ``authLifetime``.

Found by an attack round: ``999999999999:alice`` (expiring in the year 33658) was accepted,
so one leaked credential was good forever.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from relay import settings
from relay.core.auth import rest_password
from relay.core.credentials import REST_CLOCK_LEEWAY
from relay.net.server import RelayServer
from tests.gateway.objects import by_kind, changed, turn_port, write_yaml
from tests.gateway.test_file_relay import write_config
from tests.gateway.test_live import issue_example, live_relay
from tests.relay.servers import SECRET, address, relay_config, running
from tests.relay.turn_client import TurnClient, TurnError
from tests.waiting import eventually


def rest_user(expiry: int, user: str = "alice") -> tuple[str, str]:
    username = f"{expiry}:{user}"
    return username, rest_password(SECRET, username)


async def allocate(server: RelayServer, username: str, password: str) -> int:
    client = TurnClient(address(server, "udp"), username=username, password=password)
    async with client as c:
        try:
            await c.allocate()
        except TurnError as error:
            return error.code
        return 200


async def test_far_future_rest_username_is_401() -> None:
    async with running(relay_config(rest_max_lifetime=3600)) as server:
        assert await allocate(server, *rest_user(999_999_999_999)) == 401
        now = int(time.time())
        assert await allocate(server, *rest_user(now + 7200)) == 401
        assert await allocate(server, *rest_user(now + 3600 + REST_CLOCK_LEEWAY - 5)) == 200
        assert await allocate(server, *rest_user(now + 600, "bob")) == 200


def test_the_flag_and_its_default() -> None:
    assert settings.load(["--user", "a:b"], {}).relay.rest_max_lifetime == 86400
    loaded = settings.load(["--user", "a:b", "--rest-max-lifetime", "1h"], {})
    assert loaded.relay.rest_max_lifetime == 3600
    env = settings.load(["--user", "a:b"], {"TURNSCALE_REST_MAX_LIFETIME": "10m"})
    assert env.relay.rest_max_lifetime == 600


@pytest.mark.parametrize("lifetime", [600, 86400])
def test_gateway_mode_uses_auth_lifetime(tmp_path: Path, lifetime: int) -> None:
    flags = write_config(tmp_path)
    path = Path(flags[flags.index("--config") + 1])
    documents = list(yaml.safe_load_all(path.read_text()))
    config = by_kind(documents, "GatewayConfig")
    documents[documents.index(config)] = changed(config, "spec.authLifetime", lifetime)
    write_yaml(path, documents)
    loaded = settings.load([*flags, "--rest-max-lifetime", "5s"], {})
    assert loaded.relay.rest_max_lifetime == lifetime


async def test_live_mode_uses_auth_lifetime(tmp_path: Path) -> None:
    async with live_relay(tmp_path, *issue_example(turn_port(), turn_port())) as live:
        await eventually(lambda: live.server.configured, "configured from the API")
        store = live.server.handler.auth.store
        assert getattr(store, "max_ttl", None) == 86400  # the example's authLifetime
