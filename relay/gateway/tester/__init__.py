"""The ICE tester page ``turnscale auth`` serves at ``/``: static files shipped as package data.

The page fetches its own ``/ice`` and places a relay-only WebRTC call through every TURN URL
it gets (RFC 8656 relayed candidates, RFC 7065 ``turn:``/``turns:`` URIs). No build step and
nothing from another origin: the Content-Security-Policy allows this origin only, so the
page runs offline and cannot be made to load a third party's script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "Asset", "add_routes", "load_assets"]

#: The page, its script and its style sheet, by URL path.
ASSETS: Final = {
    "/": ("index.html", "text/html"),
    "/tester.js": ("tester.js", "text/javascript"),
    "/tester.css": ("tester.css", "text/css"),
}

#: This origin only (``fetch`` of ``/ice`` included), no inline script or style, no frames.
#: WebRTC is not governed by CSP: the TURN servers come from ``/ice`` itself.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; media-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The token travels in the fragment, which is never in a Referer; say so twice anyway.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> Mapping[str, Asset]:
    """The files from the installed package (read once: a few kilobytes)."""
    files = resources.files(__name__)
    return {
        path: Asset(files.joinpath(name).read_bytes(), content_type)
        for path, (name, content_type) in ASSETS.items()
    }


def add_routes(app: web.Application) -> None:
    """``GET`` (and ``HEAD``) of the page and its assets."""
    for path, asset in load_assets().items():
        app.router.add_get(path, _handler(asset))


def _handler(asset: Asset) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset="utf-8", headers=HEADERS
        )

    return serve
