"""Fixtures of the relay's TLS and DTLS tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.core.certs import TlsFiles
from tests.relay.tls_helpers import Authority, Leaf, install


@pytest.fixture
def served(authority: Authority, tmp_path: Path) -> tuple[TlsFiles, Leaf]:
    """The files the relay is given (copies of a fresh leaf), and that leaf."""
    leaf = authority.leaf(f"leaf-{tmp_path.name}")
    files = TlsFiles(tmp_path / "tls.crt", tmp_path / "tls.key")
    install(leaf, files.cert, files.key)
    return files, leaf
