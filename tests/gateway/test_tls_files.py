"""A TURN-TLS Gateway listener in file mode: its certificate is the ``kubernetes.io/tls`` Secret
of ``tls.certificateRefs``, mounted under ``--secrets-dir`` the way kubelet mounts it.

aioice's TURN client over TLS verifies the chain against the test CA (and 127.0.0.1 against
the leaf's IP subjectAltName); a kubelet-style ``..data`` swap of the Secret reaches new
handshakes while an open allocation keeps echoing; a bad Secret stops the relay at start
with a message naming the listener and the Secret's key. The relay process from
``--config`` carries coturn's ``turnutils_uclient -t -S`` with zero loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioice.turn import create_turn_endpoint

from relay import settings as relay_settings
from relay.gateway.run import FileGateway
from relay.net.server import RelayServer
from relay.settings import Settings
from scaler.common.flags import ConfigError
from tests.gateway.objects import (
    ephemeral_config,
    gateway,
    rotate_secret,
    route,
    static_service,
    tls_listener,
    turn_port,
    write_secret,
    write_yaml,
)
from tests.gateway.test_file_relay import MEDIA, Receiver, credentials, echoed
from tests.gateway.test_live import STATIC
from tests.gateway.test_peers import FakeDns
from tests.processes import LoggedProcess
from tests.relay.servers import free_port_pair
from tests.relay.test_coturn import LOAD, Outcome
from tests.relay.tls_helpers import (
    Authority,
    Leaf,
    dtls_served_fingerprint,
    fingerprint,
    served_certificate,
)
from tests.relay.turn_client import echo_peer
from tests.tools import require_tool
from tests.waiting import eventually

SECRET = "the-gateway-shared-secret"


def pem(leaf: Leaf, key: Leaf | None = None) -> dict[str, str]:
    """A ``kubernetes.io/tls`` Secret's keys for ``leaf`` (``key``: another leaf's key)."""
    return {"tls.crt": leaf.cert.read_text(), "tls.key": (key or leaf).key.read_text()}


def write_objects(directory: Path, tls_secret: dict[str, str] | None) -> list[str]:
    """A Gateway with a UDP and a TURN-TLS listener, its route and GatewayConfig; the
    shared secret and (unless None) the certificate mounted under ``secrets``."""
    documents = [
        gateway(
            {"name": "udp-listener", "port": turn_port(), "protocol": "TURN-UDP"},
            tls_listener(turn_port()),
        ),
        route({"name": "media-server", "namespace": "apps"}),
        ephemeral_config({"name": "stunner-credentials", "key": "password"}),
    ]
    path = write_yaml(directory / "gateway.yaml", documents)
    secrets = directory / "secrets"
    write_secret(secrets, "stunner", "stunner-credentials", {"password": SECRET})
    if tls_secret is not None:
        write_secret(secrets, "stunner", "turn-tls", tls_secret)
    return [
        *("--config", str(path), "--secrets-dir", str(secrets)),
        *("--listener-address", "127.0.0.1", "--health", "127.0.0.1:0"),
    ]


def edit_config(flags: list[str], old: str, new: str) -> None:
    """Replace ``old`` with ``new`` in the ``--config`` file of ``flags``."""
    path = Path(flags[flags.index("--config") + 1])
    path.write_text(path.read_text().replace(old, new))


@contextlib.asynccontextmanager
async def tls_relay(loaded: Settings) -> AsyncIterator[FileGateway]:
    assert loaded.gateway is not None
    dns = FakeDns({MEDIA: frozenset({"127.0.0.1"})})
    gateway_ = FileGateway(loaded.relay, loaded.gateway, resolve=dns, tls_poll_interval=0.05)
    await gateway_.start()
    await gateway_.server.start()
    try:
        yield gateway_
    finally:
        await gateway_.server.stop()
        await gateway_.stop()


def tls_port(gateway_: FileGateway) -> int:
    (item,) = [i for i in gateway_.server.listeners if i.transport == "tls"]
    return item.address.port


async def allocate_over_tls(gateway_: FileGateway, context: ssl.SSLContext) -> tuple[Any, Receiver]:
    username, password = credentials()
    return await asyncio.wait_for(
        create_turn_endpoint(
            Receiver,
            server_addr=("127.0.0.1", tls_port(gateway_)),
            username=username,
            password=password,
            transport="tcp",
            ssl=context,
        ),
        10,
    )


async def served(gateway_: FileGateway, context: ssl.SSLContext) -> str:
    der = await asyncio.to_thread(served_certificate, tls_port(gateway_), context)
    return fingerprint(der)


async def test_a_tls_listener_serves_its_secret_and_follows_its_rotation(
    authority: Authority, tmp_path: Path
) -> None:
    first, second = authority.leaf("gateway-first"), authority.leaf("gateway-second")
    loaded = relay_settings.load(write_objects(tmp_path, pem(first)), environ={})
    assert loaded.relay.tls is None  # no --tls-cert: the listener brings its own
    context = authority.client_context()
    async with tls_relay(loaded) as relay, echo_peer("127.0.0.1") as (media, _):
        server = relay.server
        await eventually(lambda: server.policy.permits(*media), "the route applied")
        assert {i.transport for i in server.listeners} == {"udp", "tls"}
        call, call_rx = await allocate_over_tls(relay, context)
        try:
            await echoed(call, call_rx, media, b"over TLS")
            assert server.stats.allocations["tls"] == 1
            assert await served(relay, context) == first.fingerprint

            # cert-manager renews: kubelet swaps the Secret volume's ..data link.
            rotate_secret(tmp_path / "secrets", "stunner", "turn-tls", pem(second), "renewed")

            async def renewed() -> bool:
                return await served(relay, context) == second.fingerprint

            await eventually(renewed, "new handshakes get the renewed certificate")
            for index in range(3):  # the call set up before keeps its session
                await echoed(call, call_rx, media, f"still talking {index}".encode())
            assert server.stats.allocations["tls"] == 1
            (contexts,) = server.certificates.values()
            assert contexts.reloads == 1 and contexts.refusals == 0
            assert server.stats.tls is not None
            status: Any = server.stats.tls()  # what /status shows per tls:// listener
            (shown,) = status.values()
            assert shown["fingerprint_sha256"] == second.fingerprint
            assert shown["cert_file"].endswith("secrets/stunner/turn-tls/tls.crt")
        finally:
            call.close()


@pytest.mark.parametrize(
    ("problem", "fragment"),
    [
        ("absent", "Secret stunner/turn-tls: not mounted"),
        ("no key", "Secret stunner/turn-tls: has no 'tls.key'"),
        ("mismatch", "Secret stunner/turn-tls: tls.key does not match the certificate of tls.crt"),
        ("expired", "Secret stunner/turn-tls: tls.crt: the certificate expired"),
        ("not pem", "Secret stunner/turn-tls: tls.crt: no PEM certificate in it"),
        ("encrypted", "Secret stunner/turn-tls: 'tls.key' is encrypted"),
    ],
)
def test_a_bad_certificate_secret_stops_the_relay_at_start(
    authority: Authority, tmp_path: Path, problem: str, fragment: str
) -> None:
    leaf = authority.leaf(f"bad-{problem.replace(' ', '-')}")
    keys: dict[str, str] | None = None
    if problem == "no key":
        keys = {"tls.crt": leaf.cert.read_text()}
    elif problem == "mismatch":
        keys = pem(leaf, authority.leaf("other-key"))
    elif problem == "expired":
        keys = pem(authority.leaf("expired", days=-1))
    elif problem == "not pem":
        keys = {"tls.crt": "not a certificate", "tls.key": leaf.key.read_text()}
    elif problem == "encrypted":
        locked = subprocess.run(
            [
                *(require_tool("openssl"), "pkcs8", "-topk8", "-in", str(leaf.key)),
                *("-passout", "pass:a-pass-phrase"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        keys = {"tls.crt": leaf.cert.read_text(), "tls.key": locked.stdout}
    flags = write_objects(tmp_path, keys)
    with pytest.raises(ConfigError) as caught:
        relay_settings.load(flags, environ={})
    message = str(caught.value)
    assert "Gateway stunner/stunner-gateway: listener 'tls-listener'" in message, message
    assert fragment in message, message
    assert "PRIVATE KEY" not in message


def test_a_certificate_ref_of_the_wrong_kind_stops_the_relay_at_start(tmp_path: Path) -> None:
    flags = write_objects(tmp_path, None)
    edit_config(flags, "kind: Secret", "kind: ConfigMap")
    with pytest.raises(ConfigError, match=r"tls.certificateRefs\[0\]: ConfigMap .* not a Secret"):
        relay_settings.load(flags, environ={})


# A STUN Binding request (RFC 8489 §5): what a plain UDP listener would answer.
BINDING_REQUEST = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)


async def test_a_dtls_listener_serves_its_own_secret_over_dtls(
    authority: Authority, tmp_path: Path
) -> None:
    """A TURN-DTLS listener hands new DTLS handshakes the certificate of its mounted Secret
    (verified against the test CA), never plain UDP."""
    leaf = authority.leaf("dtls-file")
    flags = write_objects(tmp_path, pem(leaf))
    edit_config(flags, "TURN-TLS", "TURN-DTLS")
    loaded = relay_settings.load(flags, environ={})
    (dtls,) = [item for item in loaded.relay.listen if item.transport == "dtls"]
    assert dtls.certificate is not None and dtls.certificate.cert.name == "tls.crt"
    server = RelayServer(loaded.relay)
    await server.start()
    try:
        (listener,) = server.dtls_listeners
        assert await dtls_served_fingerprint(listener.local, authority) == leaf.fingerprint
        # A plain STUN Binding on the DTLS port is not TURN over UDP: it gets no answer.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.5)
            probe.sendto(BINDING_REQUEST, listener.local)
            with pytest.raises(TimeoutError):
                probe.recv(2048)
    finally:
        await server.stop()


def test_coturn_s_client_over_the_gateway_s_tls_listener_loses_nothing(
    authority: Authority, tmp_path: Path
) -> None:
    """The relay process from --config, and coturn's ``turnutils_uclient -t -S`` (TCP with
    TLS, channels, TURN REST credentials) through the TURN-TLS listener to an echo peer."""
    uclient = require_tool("turnutils_uclient")
    peer_binary = require_tool("turnutils_peer")
    peer_port = free_port_pair()
    tls_port = turn_port()
    documents = [
        gateway(tls_listener(tls_port)),
        route({**STATIC, "name": "echo-peer"}),
        static_service("127.0.0.1/32", name="echo-peer"),
        ephemeral_config({"name": "stunner-credentials", "key": "password"}),
    ]
    path = write_yaml(tmp_path / "gateway.yaml", documents)
    secrets = tmp_path / "secrets"
    write_secret(secrets, "stunner", "stunner-credentials", {"password": SECRET})
    write_secret(secrets, "stunner", "turn-tls", pem(authority.leaf("coturn-client")))
    peer = subprocess.Popen(
        [peer_binary, "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    relay = LoggedProcess(
        "relay",
        [
            sys.executable,
            *("-m", "relay", "--config", str(path), "--secrets-dir", str(secrets)),
            *("--listener-address", "127.0.0.1", "--health", "127.0.0.1:0"),
            "--legacy-channels",  # uclient's channel numbers (RFC 5766)
        ],
        env={"TURNSCALE_EVENT_LOOP": "asyncio"},
    )
    try:
        serving = relay.wait_for("relay serving")
        assert serving["listen"] == [f"tls://127.0.0.1:{tls_port}"]
        client = subprocess.run(
            [
                uclient,
                *LOAD,
                *("-t", "-S", "-u", "web-client", "-W", SECRET),
                *("-e", "127.0.0.1", "-r", str(peer_port), "-p", str(tls_port)),
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        outcome = Outcome(client.returncode, client.stdout + client.stderr)
        assert outcome.returncode == 0, outcome.output[-2000:]
        sent, received = outcome.totals
        assert sent > 0 and (outcome.lost, received) == (0, sent), outcome.output[-2000:]
    finally:
        relay.kill()
        peer.terminate()
        peer.wait(timeout=10)
    (loaded,) = relay.events("gateway configuration loaded")
    assert loaded["listeners"] == [f"tls-listener=tls:{tls_port}"]


async def test_each_tls_listener_serves_its_own_secret_and_shared_ones_load_once(
    authority: Authority, tmp_path: Path
) -> None:
    one, other = authority.leaf("listener-one"), authority.leaf("listener-other")
    ports = [turn_port() for _ in range(3)]
    documents = [
        gateway(
            tls_listener(ports[0], name="one", secret="one"),
            tls_listener(ports[1], name="other", secret="other"),
            tls_listener(ports[2], name="one-again", secret="one", protocol="TLS"),
        ),
        route({"name": "media-server", "namespace": "apps"}),
        ephemeral_config({"name": "stunner-credentials", "key": "password"}),
    ]
    path = write_yaml(tmp_path / "gateway.yaml", documents)
    secrets = tmp_path / "secrets"
    write_secret(secrets, "stunner", "stunner-credentials", {"password": SECRET})
    write_secret(secrets, "stunner", "one", pem(one))
    write_secret(secrets, "stunner", "other", pem(other))
    flags = [
        *("--config", str(path), "--secrets-dir", str(secrets)),
        *("--listener-address", "127.0.0.1", "--health", "127.0.0.1:0"),
    ]
    context = authority.client_context()
    async with tls_relay(relay_settings.load(flags, environ={})) as relay:
        got = [
            fingerprint(await asyncio.to_thread(served_certificate, port, context))
            for port in ports
        ]
        assert got == [one.fingerprint, other.fingerprint, one.fingerprint]
        assert len(relay.server.certificates) == 2  # "one" is loaded and watched once
