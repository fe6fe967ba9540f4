"""Fixtures several test directories share."""

from __future__ import annotations

import pytest

from tests.relay.tls_helpers import Authority
from tests.tools import require_tool


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A test certificate authority (openssl), one per test module: leaves it signs are
    trusted by the clients it builds and by nothing else."""
    require_tool("openssl")
    return Authority(tmp_path_factory.mktemp("ca"))
