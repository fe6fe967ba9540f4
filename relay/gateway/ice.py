"""ICE server configurations for browsers: what ``GET /ice`` answers. Pure.

``GET /ice?service=turn&username=U&ttl=S`` gives an RTCConfiguration-style object::

    {"iceServers": [{"urls": ["turn:192.0.2.1:3478?transport=udp",
                              "turn:192.0.2.1:3478?transport=tcp"],
                     "username": "1763790000:U", "credential": "..."}]}

``urls`` has one entry per public address and Gateway listener. With ``ephemeral``
credentials the username is ``EXPIRY:U`` (TURN REST API format) and the credential
``base64(HMAC-SHA1(shared secret, username))``, valid for ``ttl`` seconds (default and
maximum: the GatewayConfig's ``authLifetime``); without ``username`` the GatewayConfig's
``userName`` is the user id, else there is none. With ``static`` credentials the answer
carries the static user and password (there is nothing to mint).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from relay.core.auth import rest_credentials
from relay.gateway.translate import EphemeralAuth, GatewaySettings

__all__ = ["IceError", "ice_configuration", "turn_urls"]

MAX_USER_ID: Final = 128
_USER_ID: Final = re.compile(r"[!-9;-~]+")  # printable ASCII, no ':' and no space


class IceError(ValueError):
    """A bad ``/ice`` query: answered 400 with this message."""


def turn_urls(settings: GatewaySettings, addresses: Sequence[str]) -> list[str]:
    """``turn:HOST:PORT?transport=udp|tcp`` for every address and listener."""
    urls = []
    for address in addresses:
        host = f"[{address}]" if ":" in address else address
        for listener in settings.listeners:
            urls.append(f"turn:{host}:{listener.port}?transport={listener.transport}")
    return urls


def _ttl(text: str | None, lifetime: int) -> int:
    if text is None or text == "":
        return lifetime
    if not text.isascii() or not text.isdigit():
        raise IceError(f"ttl: {text!r} is not a whole number of seconds")
    ttl = int(text)
    if not 1 <= ttl <= lifetime:
        raise IceError(f"ttl: {ttl} is outside 1..{lifetime} (the gateway's authLifetime)")
    return ttl


def ice_configuration(
    settings: GatewaySettings,
    addresses: Sequence[str],
    query: Mapping[str, str],
    now: float,
) -> dict[str, Any]:
    """The answer to ``GET /ice`` with ``query`` at ``now`` (unix seconds); IceError for a
    bad query."""
    service = query.get("service", "turn")
    if service != "turn":
        raise IceError(f"service: {service!r} is not 'turn'")
    auth = settings.auth
    server: dict[str, Any] = {"urls": turn_urls(settings, addresses)}
    if isinstance(auth, EphemeralAuth):
        user_id = query.get("username") or auth.user_id or ""
        if user_id and (len(user_id) > MAX_USER_ID or _USER_ID.fullmatch(user_id) is None):
            raise IceError(
                f"username: at most {MAX_USER_ID} printable ASCII characters, no ':' or space"
            )
        ttl = _ttl(query.get("ttl"), auth.lifetime)
        username, credential = rest_credentials(auth.secret, user_id, now, ttl)
    else:
        username, credential = auth.username, auth.password
    server["username"] = username
    server["credential"] = credential
    return {"iceServers": [server]}
