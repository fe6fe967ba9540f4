"""Each test gets its own NAT topology (tests/netns.py), deleted after it, pass or fail;
without root, ``ip`` or ``nft`` every test here skips locally and fails under CI=true."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import netns
from tests.network.stack import TARGET_PER_REPLICA, Stack, stack
from tests.tools import require_root, require_tool


@pytest.fixture(autouse=True)
def _network_privileges() -> None:
    """Every test here builds namespaces: root, ip and nft (skip locally, fail under CI)."""
    require_root()
    require_tool("ip")
    require_tool("nft")


@pytest.fixture
def topology() -> Iterator[netns.NatTopology]:
    with netns.nat_topology() as built:
        yield built


@pytest.fixture
def relay(topology: netns.NatTopology) -> Iterator[Stack]:
    """The relay alone in ``topology``."""
    with stack(topology) as running:
        yield running


@pytest.fixture
def relay_and_scaler(topology: netns.NatTopology) -> Iterator[Stack]:
    """The relay pushing to a scaler in the relay namespace (``--target-per-replica 10``)."""
    flags = ("--target-per-replica", str(TARGET_PER_REPLICA))
    with stack(topology, with_scaler=True, scaler_flags=flags) as running:
        yield running
