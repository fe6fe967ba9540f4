"""A real relay configured from the issue's YAML, driven by aioice (a third-party TURN client).

The routed Service ``media-server.apps.svc`` is looked up through an injected resolver (no DNS
server here) that answers the echo peer's loopback address: the relay reaches it only because
the route says so, and a media server that leaves keeps the calls already set up through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

from relay import settings as relay_settings
from relay.core.auth import rest_credentials
from relay.gateway.run import FileGateway
from relay.settings import Settings
from tests.gateway.objects import (
    by_kind,
    changed,
    example,
    turn_port,
    write_secret,
    write_yaml,
)
from tests.gateway.test_peers import FakeDns
from tests.relay.turn_client import echo_peer
from tests.waiting import eventually

SECRET = "the-gateway-shared-secret"
REALM = "stunner.example.org"
MEDIA = "media-server.apps.svc"


class Receiver(asyncio.DatagramProtocol):
    """What comes back through the TURN transport, and the errors of refused sends."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


def write_config(directory: Path) -> list[str]:
    """The issue's example with free loopback ports; its Secret mounted under ``secrets``."""
    documents = example()
    gateway = by_kind(documents, "Gateway")
    documents[documents.index(gateway)] = changed(
        changed(gateway, "spec.listeners.0.port", turn_port()), "spec.listeners.1.port", turn_port()
    )
    path = write_yaml(directory / "gateway.yaml", documents)
    secrets = directory / "secrets"
    write_secret(secrets, "stunner", "stunner-credentials", {"password": SECRET})
    return [
        *("--config", str(path), "--secrets-dir", str(secrets)),
        *("--listener-address", "127.0.0.1", "--health", "127.0.0.1:0"),
    ]


def credentials(user: str = "web-client", ttl: float = 600) -> tuple[str, str]:
    return rest_credentials(SECRET, user, time.time(), ttl)


@contextlib.asynccontextmanager
async def file_relay(loaded: Settings, dns: FakeDns) -> AsyncIterator[FileGateway]:
    assert loaded.gateway is not None
    gateway = FileGateway(loaded.relay, loaded.gateway, resolve=dns)
    await gateway.start()
    await gateway.server.start()
    try:
        yield gateway
    finally:
        await gateway.server.stop()
        await gateway.stop()


def listener(gateway: FileGateway, transport: str) -> tuple[str, int]:
    item = next(item for item in gateway.server.listeners if item.transport == transport)
    return item.address.host, item.address.port


async def turn_endpoint(
    gateway: FileGateway, transport: str, **options: Any
) -> tuple[Any, Receiver]:
    username, password = credentials()
    turn_transport, receiver = await asyncio.wait_for(
        create_turn_endpoint(
            Receiver,
            server_addr=listener(gateway, transport),
            username=username,
            password=password,
            transport=transport,
            **options,
        ),
        10,
    )
    return turn_transport, receiver


async def echoed(turn_transport: Any, receiver: Receiver, peer: Any, payload: bytes) -> None:
    turn_transport.sendto(payload, peer)
    data, source = await asyncio.wait_for(receiver.queue.get(), 5)
    assert (data, tuple(source)) == (payload, tuple(peer))


async def refused(turn_transport: Any, receiver: Receiver, peer: Any) -> None:
    turn_transport.sendto(b"not routed", peer)
    error = await asyncio.wait_for(receiver.errors.get(), 5)
    assert isinstance(error, aioice_stun.TransactionFailed)
    assert error.response.attributes["ERROR-CODE"][0] == 403


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_allocates_through_a_relay_configured_from_files(
    transport: str, tmp_path: Path
) -> None:
    loaded = relay_settings.load(write_config(tmp_path), environ={})
    assert not loaded.relay.allow_loopback_peers  # only the route opens the echo peer's address
    dns = FakeDns({MEDIA: frozenset({"127.0.0.1"})})
    async with (
        file_relay(loaded, dns) as gateway,
        echo_peer("127.0.0.1") as (media, _),
        echo_peer("127.0.0.2") as (elsewhere, _),
    ):
        await eventually(lambda: gateway.server.policy.permits(*media), "the route applied")
        turn_transport, receiver = await turn_endpoint(gateway, transport)
        try:
            await echoed(turn_transport, receiver, media, b"through the route")
            await refused(turn_transport, receiver, elsewhere)
            assert gateway.server.stats.allocations[transport] == 1
        finally:
            turn_transport.close()
        assert gateway.server.config.realm == REALM


async def test_a_leaving_media_server_keeps_the_calls_set_up_through_it(tmp_path: Path) -> None:
    flags = [*write_config(tmp_path), "--resolve-interval", "50ms"]
    loaded = relay_settings.load(flags, environ={})
    dns = FakeDns({MEDIA: frozenset({"127.0.0.1"})})
    async with file_relay(loaded, dns) as gateway, echo_peer("127.0.0.1") as (media, _):
        await eventually(lambda: gateway.server.policy.permits(*media), "the route applied")
        # channel_refresh_time=0: every send binds the channel again, so each one asks the
        # relay's policy anew.
        talking, talking_rx = await turn_endpoint(gateway, "udp", channel_refresh_time=0)
        newcomer, newcomer_rx = await turn_endpoint(gateway, "tcp")
        try:
            await echoed(talking, talking_rx, media, b"call set up")
            dns.answers[MEDIA] = frozenset()  # the media pod terminates: DNS drops it
            await eventually(lambda: not gateway.server.policy.permits(*media), "peer left")
            for index in range(3):
                await echoed(talking, talking_rx, media, f"still talking {index}".encode())
            await refused(newcomer, newcomer_rx, media)
            assert len(gateway.server.table) == 2
        finally:
            talking.close()
            newcomer.close()


def test_the_relay_process_serves_from_files_and_refuses_bad_ones(tmp_path: Path) -> None:
    flags = write_config(tmp_path)
    env = {**os.environ, "TURNSCALE_EVENT_LOOP": "asyncio"}
    bad = subprocess.run(
        [sys.executable, "-m", "relay", *flags, "--user", "a:b"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert bad.returncode == 2
    assert "--user cannot be combined with --config" in bad.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None

    def read() -> None:
        for line in process.stderr or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        events: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while "relay serving" not in events:
            entry = json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            events.setdefault(entry["event"], entry)
        loaded = events["gateway configuration loaded"]
        assert loaded["gateway"] == "stunner/stunner-gateway"
        assert loaded["services"] == [MEDIA]
        serving = events["relay serving"]
        assert serving["realm"] == REALM and serving["gateway"] == "stunner-gateway"
        assert SECRET not in json.dumps(events)
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)
