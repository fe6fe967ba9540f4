"""Real third-party tools the tests run: missing locally skips, missing in CI fails."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Path of ``name`` on PATH; without it, fail under CI=true and skip elsewhere."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (run make tools to see how to get it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def require_root() -> None:
    """Tests that build network namespaces need root: skip elsewhere, fail under CI=true."""
    if os.geteuid() == 0:
        return
    message = "needs root (network namespaces, veth pairs and nftables)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)
