"""ICE server configurations for browsers: what ``GET /ice`` answers. Pure.

``GET /ice?service=turn&username=U&ttl=S`` gives an RTCConfiguration-style object::

    {"iceServers": [{"urls": ["turn:192.0.2.1:3478?transport=udp",
                              "turn:192.0.2.1:3478?transport=tcp"],
                     "username": "1763790000:U", "credential": "..."}]}

``urls`` has one entry per public address and Gateway listener: ``turn:`` for TURN-UDP and
TURN-TCP, ``turns:HOST:PORT?transport=tcp`` for TURN-TLS (RFC 7065 §3). A client checks the
relay's certificate against the host it dialled, so a TLS listener's host is its
``hostname`` (unless a wildcard), else the public addresses that are DNS names, else the
IP addresses (then the certificate needs them as IP subjectAltNames). TURN-DTLS listeners
give ``turns:HOST:PORT?transport=udp`` only when the query asks (``dtls=true``): no browser
speaks TURN over DTLS (see the README for what a browser does with such a URL).

With ``ephemeral`` credentials the username is ``EXPIRY:U`` (TURN REST API format) and the
credential
``base64(HMAC-SHA1(shared secret, username))``, valid for ``ttl`` seconds (default and
maximum: the GatewayConfig's ``authLifetime``); without ``username`` the GatewayConfig's
``userName`` is the user id, else there is none. With ``static`` credentials the answer
carries the static user and password (there is nothing to mint).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from relay.core.auth import rest_credentials
from relay.gateway.translate import (
    INVALID_CERTIFICATE_REF,
    EphemeralAuth,
    GatewaySettings,
    ListenerSettings,
)

__all__ = ["IceError", "ice_configuration", "secure_hosts", "turn_urls"]

MAX_USER_ID: Final = 128
_USER_ID: Final = re.compile(r"[!-9;-~]+")  # printable ASCII, no ':' and no space


class IceError(ValueError):
    """A bad ``/ice`` query: answered 400 with this message."""


#: The URI scheme and ``transport`` of each listener transport (RFC 7065 §3).
SCHEMES: Final = {
    "udp": ("turn", "udp"),
    "tcp": ("turn", "tcp"),
    "tls": ("turns", "tcp"),
    "dtls": ("turns", "udp"),
}


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def secure_hosts(listener: ListenerSettings, addresses: Sequence[str]) -> list[str]:
    """Where a TLS/DTLS listener is dialled: a name its certificate can carry."""
    if listener.hostname is not None and not listener.hostname.startswith("*."):
        return [listener.hostname]
    names = [address for address in addresses if not _is_ip(address)]
    return names or list(addresses)


def turn_urls(
    settings: GatewaySettings, addresses: Sequence[str], *, dtls: bool = False
) -> list[str]:
    """Every listener's URLs (``turn:`` first, then ``turns:``; DTLS ones with ``dtls``)."""
    urls = []
    plain = [item for item in settings.listeners if not item.secure]
    for address in addresses:
        for listener in plain:
            urls.append(_url(listener, address))
    for listener in settings.listeners:
        # A ref that can never work (no ref, not a Secret) is never served: no URL for it.
        # Whether a grant permits a ref is the relays' to see; the URL stays.
        broken = (
            listener.ref_problem is not None
            and listener.ref_problem.reason == INVALID_CERTIFICATE_REF
        )
        wanted = not broken and (dtls or listener.transport != "dtls")
        if listener.secure and wanted:
            urls.extend(_url(listener, host) for host in secure_hosts(listener, addresses))
    return urls


def _url(listener: ListenerSettings, address: str) -> str:
    scheme, transport = SCHEMES[listener.transport]
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}:{host}:{listener.port}?transport={transport}"


def _flag(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name, "false")
    if text not in ("true", "false"):
        raise IceError(f"{name}: {text!r} is not true or false")
    return text == "true"


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
    urls = turn_urls(settings, addresses, dtls=_flag(query, "dtls"))
    server: dict[str, Any] = {"urls": urls}
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
