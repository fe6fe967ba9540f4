"""``GET /ice``: TURN REST credentials minted with the gateway's shared secret, urls for every
listener; accepted by a relay configured from the same objects, refused once expired."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

from relay import settings as relay_settings
from relay.core.auth import rest_password
from relay.gateway import ice_server
from relay.gateway.callers import CallerGate
from relay.gateway.ice import IceError, ice_configuration, turn_urls
from relay.gateway.ice_server import IceState, create_app
from relay.gateway.objects import parse
from relay.gateway.translate import Catalog, GatewaySettings, translate
from scaler.common.flags import ConfigError
from tests.gateway.objects import (
    ephemeral_config,
    gateway,
    static_config,
    write_yaml,
)
from tests.gateway.test_file_relay import (
    REALM,
    SECRET,
    Receiver,
    echoed,
    file_relay,
    write_config,
)
from tests.gateway.test_peers import FakeDns
from tests.gateway.test_translate import Secrets
from tests.net import free_port
from tests.relay.turn_client import echo_peer
from tests.waiting import eventually

NOW = 1_763_700_000.0
SECRET_LIVE = "first-shared-secret"  # tests.gateway.test_live's


def settings_of(*documents: dict[str, Any]) -> GatewaySettings:
    catalog = Catalog.of(parse(d, "stunner") for d in documents)
    return translate(catalog, ("stunner", "stunner-gateway"), Secrets())


EPHEMERAL = settings_of(gateway(), ephemeral_config("s3cret", authLifetime=3600, userName="app"))


def test_urls_for_every_address_and_listener() -> None:
    assert turn_urls(EPHEMERAL, ["192.0.2.1", "2001:db8::1", "turn.example.org"]) == [
        "turn:192.0.2.1:3478?transport=udp",
        "turn:192.0.2.1:3478?transport=tcp",
        "turn:[2001:db8::1]:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=tcp",
        "turn:turn.example.org:3478?transport=udp",
        "turn:turn.example.org:3478?transport=tcp",
    ]


TLS_REF = {"tls": {"certificateRefs": [{"name": "turn-tls"}]}}
SECURE = settings_of(
    gateway(
        {"name": "udp", "port": 3478, "protocol": "TURN-UDP"},
        {"name": "tls", "port": 443, "protocol": "TURN-TLS", **TLS_REF},
        {"name": "dtls", "port": 443, "protocol": "DTLS", **TLS_REF},
    ),
    ephemeral_config("s3cret"),
)


def test_tls_listeners_give_turns_urls_on_a_name_their_certificate_can_carry() -> None:
    # RFC 7065: turns: with transport=tcp is TURN over TLS; a DNS name comes first for it.
    assert turn_urls(SECURE, ["192.0.2.1", "turn.example.org"]) == [
        "turn:192.0.2.1:3478?transport=udp",
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:443?transport=tcp",
    ]
    # Only IP addresses known: the certificate must name them (IP subjectAltNames).
    assert turn_urls(SECURE, ["192.0.2.1", "2001:db8::1"], dtls=True) == [
        "turn:192.0.2.1:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=udp",
        "turns:192.0.2.1:443?transport=tcp",
        "turns:[2001:db8::1]:443?transport=tcp",
        "turns:192.0.2.1:443?transport=udp",
        "turns:[2001:db8::1]:443?transport=udp",
    ]
    named = settings_of(
        gateway(
            {"name": "tls", "port": 443, "protocol": "TLS", "hostname": "turn.example.com",
             **TLS_REF},
            {"name": "wild", "port": 5349, "protocol": "TLS", "hostname": "*.example.com",
             **TLS_REF},
        ),
        ephemeral_config("s3cret"),
    )  # fmt: skip
    assert turn_urls(named, ["192.0.2.1"]) == [
        "turns:turn.example.com:443?transport=tcp",  # the listener's hostname
        "turns:192.0.2.1:5349?transport=tcp",  # a wildcard names no host to dial
    ]
    refused = settings_of(
        gateway(
            {"name": "tls", "port": 443, "protocol": "TLS",
             "tls": {"certificateRefs": [{"kind": "ConfigMap", "name": "x"}]}},
        ),
        ephemeral_config("s3cret"),
    )  # fmt: skip
    assert turn_urls(refused, ["turn.example.org"]) == []  # not served: not handed out
    # Across namespaces, the relays (which watch the grants) decide: the URL is handed out.
    cross = settings_of(
        gateway(
            {"name": "tls", "port": 443, "protocol": "TLS",
             "tls": {"certificateRefs": [{"name": "x", "namespace": "certs"}]}},
        ),
        ephemeral_config("s3cret"),
    )  # fmt: skip
    assert turn_urls(cross, ["turn.example.org"]) == ["turns:turn.example.org:443?transport=tcp"]


def test_dtls_urls_only_when_asked() -> None:
    def urls(query: dict[str, str]) -> list[str]:
        answer = ice_configuration(SECURE, ["turn.example.org"], query, NOW)
        found: list[str] = answer["iceServers"][0]["urls"]
        return found

    assert "turns:turn.example.org:443?transport=udp" not in urls({})
    assert "turns:turn.example.org:443?transport=udp" not in urls({"dtls": "false"})
    assert urls({"dtls": "true"})[-1] == "turns:turn.example.org:443?transport=udp"
    with pytest.raises(IceError, match="dtls: 'yes' is not true or false"):
        urls({"dtls": "yes"})


def test_ephemeral_credentials_in_the_turn_rest_format() -> None:
    answer = ice_configuration(
        EPHEMERAL, ["192.0.2.1"], {"service": "turn", "username": "alice", "ttl": "60"}, NOW
    )
    (server,) = answer["iceServers"]
    assert server["username"] == f"{int(NOW) + 60}:alice"
    assert server["credential"] == rest_password("s3cret", server["username"])
    assert len(server["urls"]) == 2
    default = ice_configuration(EPHEMERAL, ["192.0.2.1"], {}, NOW)["iceServers"][0]
    assert default["username"] == f"{int(NOW) + 3600}:app"  # authLifetime, userName
    anonymous = settings_of(gateway(), ephemeral_config("s3cret"))
    plain = ice_configuration(anonymous, ["192.0.2.1"], {}, NOW)["iceServers"][0]
    assert plain["username"] == str(int(NOW) + 86400)


def test_static_credentials_are_handed_out_as_they_are() -> None:
    settings = settings_of(gateway(), static_config("user-1", "pass-1"))
    server = ice_configuration(settings, ["192.0.2.1"], {"ttl": "60"}, NOW)["iceServers"][0]
    assert (server["username"], server["credential"]) == ("user-1", "pass-1")


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"service": "stun"}, "service: 'stun' is not 'turn'"),
        ({"ttl": "0"}, "ttl: 0 is outside 1..3600"),
        ({"ttl": "3601"}, "ttl: 3601 is outside 1..3600 (the gateway's authLifetime)"),
        ({"ttl": "1h"}, "ttl: '1h' is not a whole number"),
        ({"ttl": "-5"}, "is not a whole number"),
        ({"username": "a:b"}, "username: at most 128"),
        ({"username": "a b"}, "username"),
        ({"username": "x" * 129}, "username"),
    ],
)
def test_bad_queries(query: dict[str, str], fragment: str) -> None:
    with pytest.raises(IceError, match=re.escape(fragment)):
        ice_configuration(EPHEMERAL, ["192.0.2.1"], query, NOW)


@contextlib.asynccontextmanager
async def ice_endpoint(state: IceState, callers: CallerGate | None = None) -> AsyncIterator[str]:
    runner = aiohttp.web.AppRunner(create_app(state, callers), access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_the_http_endpoint() -> None:
    state = IceState(None, ("192.0.2.1",), clock=lambda: NOW)
    async with ice_endpoint(state) as base:
        assert (await get(f"{base}/readyz"))[0] == 503
        status, body, _ = await get(f"{base}/ice?service=turn")
        assert (status, body) == (503, {"error": "no gateway configuration yet"})
        state.settings = EPHEMERAL
        status, body, headers = await get(f"{base}/ice?service=turn&username=bob&ttl=120")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert body["iceServers"][0]["username"] == f"{int(NOW) + 120}:bob"
        status, body, _ = await get(f"{base}/ice?ttl=forever")
        assert status == 400 and "ttl" in body["error"]
        assert (await get(f"{base}/readyz"))[0] == 200
        assert (await get(f"{base}/healthz"))[0] == 200


def test_the_auth_command_flags(tmp_path: Path) -> None:
    flags = write_config(tmp_path)
    files = [flags[i + 1] for i, flag in enumerate(flags) if flag in ("--config", "--secrets-dir")]
    config_path, secrets = files
    with pytest.raises(ConfigError, match="no public address for Gateway stunner/stunner-gateway"):
        ice_server.load(["--config", config_path, "--secrets-dir", secrets], environ={})
    loaded = ice_server.load(
        [
            *("--config", config_path, "--secrets-dir", secrets),
            *("--public-address", "turn.example.org", "--http", "127.0.0.1:0"),
        ],
        environ={},
    )
    assert loaded.addresses == ("turn.example.org",)
    assert loaded.settings is not None and loaded.settings.realm == REALM
    assert SECRET not in repr(loaded)
    with pytest.raises(ConfigError, match=r"give --config FILE\.\.\. or --kubernetes"):
        ice_server.load([], environ={})
    with pytest.raises(ConfigError, match="--public-address"):
        ice_server.load(["--config", config_path, "--public-address", "a b"], environ={})
    addressed = write_yaml(
        tmp_path / "addressed.yaml",
        [
            {**gateway(), "spec": {**gateway()["spec"], "addresses": [{"value": "192.0.2.7"}]}},
            static_config(),
        ],
    )
    by_spec = ice_server.load(["--config", str(addressed), "--http", "127.0.0.1:0"], environ={})
    assert IceState(by_spec.settings, by_spec.addresses).public_addresses() == ("192.0.2.7",)


def server_address(url: str) -> tuple[str, int]:
    match = re.fullmatch(r"turn:(.+):(\d+)\?transport=(udp|tcp)", url)
    assert match is not None, url
    return match.group(1), int(match.group(2))


async def allocate(server: dict[str, Any], transport: str) -> tuple[Any, Receiver]:
    url = next(u for u in server["urls"] if u.endswith(f"transport={transport}"))
    return await asyncio.wait_for(
        create_turn_endpoint(
            Receiver,
            server_addr=server_address(url),
            username=server["username"],
            password=server["credential"],
            transport=transport,
        ),
        10,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_ice_credentials_work_on_the_relay_and_stop_when_they_expire(
    transport: str, tmp_path: Path
) -> None:
    flags = write_config(tmp_path)
    relay = relay_settings.load(flags, environ={})
    assert relay.gateway is not None
    auth = ice_server.load(
        [*flags[:4], "--public-address", "127.0.0.1", "--http", "127.0.0.1:0"], environ={}
    )
    state = IceState(auth.settings, auth.addresses)
    dns = FakeDns({"media-server.apps.svc": frozenset({"127.0.0.1"})})
    async with (
        file_relay(relay, dns) as gateway_relay,
        ice_endpoint(state) as base,
        echo_peer("127.0.0.1") as (media, _),
    ):
        await eventually(lambda: gateway_relay.server.policy.permits(*media), "the route applied")
        status, body, _ = await get(f"{base}/ice?service=turn&username=browser-1")
        assert status == 200
        (server,) = body["iceServers"]
        turn_transport, receiver = await allocate(server, transport)
        try:
            await echoed(turn_transport, receiver, media, b"minted by /ice")
        finally:
            turn_transport.close()
        status, body, _ = await get(f"{base}/ice?service=turn&username=browser-2&ttl=1")
        (short,) = body["iceServers"]
        expiry = int(short["username"].partition(":")[0])
        await asyncio.sleep(max(0.0, expiry - time.time()) + 0.1)  # until it has expired
        with pytest.raises(aioice_stun.TransactionFailed) as refused:
            await allocate(short, transport)
        assert refused.value.response.attributes["ERROR-CODE"][0] == 401


def test_the_auth_process_serves_ice_and_stops_on_sigterm(tmp_path: Path) -> None:
    flags = write_config(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", "from scaler.cli import main; main()", "auth"),
            *flags[:4],
            *("--public-address", "192.0.2.1", "--http", f"127.0.0.1:{port}"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stderr or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            entry = json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            if entry["event"] == "ice endpoint serving":
                break
        assert entry["addresses"] == ["192.0.2.1"] and entry["auth"] == "ephemeral"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ice?username=u", timeout=10) as r:
            body = json.loads(r.read())
        assert body["iceServers"][0]["urls"][0].startswith("turn:192.0.2.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)


async def test_the_auth_service_follows_the_gateway_live(tmp_path: Path) -> None:
    from relay.core.auth import rest_password as password_of
    from relay.gateway.ice_server import LiveIce
    from relay.gateway.kube import Apis
    from scaler.common.kube.client import connect
    from tests.gateway.test_live import issue_example, secret
    from tests.k8s_fake import FakeKubeApi, fast_timing

    fake = FakeKubeApi()
    await fake.start()
    for obj in issue_example(3478, 3479):
        fake.apply(obj)
    loaded = ice_server.load(
        [
            *("--kubernetes", "--kubeconfig", str(fake.kubeconfig(tmp_path))),
            *("--namespace", "stunner", "--public-address", "192.0.2.1"),
            *("--http", "127.0.0.1:0"),
        ],
        environ={},
    )
    assert loaded.settings is None and loaded.gateway == ("stunner", "stunner-gateway")
    assert loaded.kubernetes is not None
    kube = await connect(loaded.kubernetes)
    state = IceState(None, loaded.addresses)
    live = LiveIce(state, Apis(kube.api_client), loaded.gateway, timing=fast_timing())
    await live.start()
    try:
        async with ice_endpoint(state) as base:
            await eventually(lambda: state.settings is not None, "configured from the API")
            status, body, _ = await get(f"{base}/ice?username=u")
            server = body["iceServers"][0]
            assert status == 200 and server["urls"][0] == "turn:192.0.2.1:3478?transport=udp"
            assert server["credential"] == password_of(SECRET_LIVE, server["username"])
            fake.apply(secret("rotated-secret"))
            await eventually(
                lambda: (
                    state.settings is not None
                    and getattr(state.settings.auth, "secret", None) == "rotated-secret"
                ),
                "rotated",
            )
            body = (await get(f"{base}/ice?username=u"))[1]
            server = body["iceServers"][0]
            assert server["credential"] == password_of("rotated-secret", server["username"])
            fake.delete("Secret", "stunner-credentials")  # refused: the last good one stays
            rounds = live.reconciles
            await eventually(lambda: live.reconciles > rounds, "another round")
            assert (await get(f"{base}/ice"))[0] == 200
    finally:
        await live.stop()
        await kube.close()
        await fake.stop()


async def test_chromium_takes_the_ice_answer_with_turns_urls_as_it_is() -> None:
    """What a backend hands a browser is a valid RTCConfiguration: Debian's Chromium builds
    a peer connection from it, turns: URLs (and, when asked for, the DTLS ones) included."""
    from tests.browser import chromium

    answer = ice_configuration(SECURE, ["turn.example.org"], {"dtls": "true"}, time.time())
    async with chromium() as browser:
        page = await browser.new_page()
        outcome = await page.evaluate(
            """(configuration) => {
                try {
                    const pc = new RTCPeerConnection(configuration);
                    const urls = pc.getConfiguration().iceServers[0].urls;
                    pc.close();
                    return {urls};
                } catch (error) {
                    return {error: `${error.name}: ${error.message}`};
                }
            }""",
            answer,
        )
    assert outcome == {"urls": answer["iceServers"][0]["urls"]}, outcome
    assert "turns:turn.example.org:443?transport=tcp" in outcome["urls"]
