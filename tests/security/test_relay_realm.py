"""The realm must be a REALM (RFC 8489 §14.9: fewer than 128 characters, under 763 bytes).

Found by an attack round: ``--realm`` of any length was accepted, and a realm over 509 bytes
cannot even be encoded into the 401 challenge every client needs first.
"""

from __future__ import annotations

import pytest

from relay import settings
from relay.core.credentials import check_realm
from relay.gateway.objects import parse
from scaler.common.flags import ConfigError
from tests.gateway.objects import static_config
from tests.gateway.test_objects import refused
from tests.relay.test_cli import run_cli


@pytest.mark.parametrize("realm", ["r" * 128, "é" * 128, "\U0001f600" * 200])
def test_too_long_realm_is_a_config_error_naming_the_flag(realm: str) -> None:
    with pytest.raises(ConfigError, match="--realm"):
        settings.load(["--user", "a:b", "--realm", realm], {})
    with pytest.raises(ConfigError, match="--realm"):
        settings.load(["--user", "a:b"], {"TURNSCALE_REALM": realm})


def test_longest_realm_is_accepted() -> None:
    for realm in ("r" * 127, "\U0001f600" * 127):
        assert check_realm(realm) is None
        assert settings.load(["--user", "a:b", "--realm", realm], {}).relay.realm == realm


def test_too_long_realm_exits_2() -> None:
    result = run_cli("--user", "a:b", "--realm", "r" * 200)
    assert result.returncode == 2
    assert "--realm" in result.stderr and "Traceback" not in result.stderr


def test_too_long_gateway_realm_is_refused() -> None:
    long_dns = ".".join(["a" * 60] * 3)  # a DNS name, 182 characters
    refused(static_config(realm=long_dns), "spec.realm", "too long")
    assert parse(static_config(realm="a" * 60), "default") is not None
