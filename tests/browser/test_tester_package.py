"""The wheel ships the tester page: built from the source as ``pip install .`` (and the
image's Dockerfile) builds it, installed apart, it serves the same bytes at ``/``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from relay.gateway.tester import ASSETS

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "relay" / "gateway" / "tester"

# Serves create_app on port 0 and fetches every asset; prints where the package came from.
SERVE_AND_FETCH = """
import asyncio, hashlib, json, sys
import aiohttp
from aiohttp import web
import relay.gateway.tester as tester
from relay.gateway.ice_server import IceState, create_app

async def main():
    runner = web.AppRunner(create_app(IceState(None)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    out = {"file": tester.__file__, "assets": {}}
    try:
        async with aiohttp.ClientSession() as session:
            for path in sys.argv[1:]:
                async with session.get(f"http://127.0.0.1:{port}{path}") as answer:
                    body = await answer.read()
                    out["assets"][path] = [answer.status, answer.content_type,
                                           hashlib.sha256(body).hexdigest()]
    finally:
        await runner.cleanup()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_the_installed_wheel_serves_the_page(tmp_path: Path) -> None:
    tree = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "relay", "scaler", "dashboards", "pyproject.toml", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:  # a clean copy: no build/ or egg-info left in the work tree
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes((ROOT / name).read_bytes())
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, tree],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("turnscale-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", site, wheel],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    served = subprocess.run(
        [sys.executable, "-c", SERVE_AND_FETCH, *ASSETS],
        cwd=tmp_path,  # not the source tree
        env={**os.environ, "PYTHONPATH": str(site)},  # before the editable install's finder
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 0, served.stderr
    answer = json.loads(served.stdout)
    assert Path(answer["file"]).is_relative_to(site), answer["file"]
    for path, (name, content_type) in ASSETS.items():
        digest = hashlib.sha256((SOURCE / name).read_bytes()).hexdigest()
        assert answer["assets"][path] == [200, content_type, digest], path
