"""``turnscale relay --kubernetes`` against the fake API server, through kubernetes-asyncio:
routes, endpoints, Secrets and listeners change while aioice clients keep their allocations,
and refused objects get a status that says why."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

from relay import settings as relay_settings
from relay.core.auth import rest_credentials
from relay.gateway.kube import Apis
from relay.gateway.live import LiveGateway
from relay.net.server import RelayServer
from scaler.common.flags import ConfigError
from scaler.common.kube.client import connect
from tests.gateway.objects import (
    changed,
    config,
    gateway,
    route,
    static_service,
    turn_port,
)
from tests.gateway.test_file_relay import Receiver, echoed
from tests.k8s_fake import FakeKubeApi, fast_timing
from tests.relay.turn_client import echo_peer
from tests.waiting import eventually

REALM = "stunner.example.org"
SECRET = "first-shared-secret"
STATIC = {"group": "stunner.l7mp.io", "kind": "StaticService"}


def secret(value: str, name: str = "stunner-credentials") -> dict[str, Any]:
    encoded = base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "stunner"},
        "type": "Opaque",
        "data": {"password": encoded},
    }


def endpoint_slice(*endpoints: tuple[str, bool], service: str = "media-server") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-abcde",
            "namespace": "apps",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready, "serving": True, "terminating": not ready},
            }
            for address, ready in endpoints
        ],
        "ports": [{"name": "rtp", "port": 5000, "protocol": "UDP"}],
    }


def issue_example(udp: int, tcp: int) -> list[dict[str, Any]]:
    """The issue's example (Secret referenced from the GatewayConfig), on free ports."""
    return [
        gateway(
            {"name": "udp-listener", "port": udp, "protocol": "TURN-UDP"},
            {"name": "tcp-listener", "port": tcp, "protocol": "TURN-TCP"},
        ),
        route({"name": "media-server", "namespace": "apps"}),
        config(
            authType="longterm",
            authLifetime=86400,
            userName="stunner",
            password={"name": "stunner-credentials", "namespace": "stunner", "key": "password"},
        ),
        secret(SECRET),
        endpoint_slice(("127.0.0.1", True)),
    ]


@dataclass
class Live:
    fake: FakeKubeApi
    server: RelayServer
    gateway: LiveGateway
    ports: dict[str, int]

    def status(self, kind: str, name: str, namespace: str = "stunner") -> dict[str, Any]:
        found = self.fake.get(kind, name, namespace)
        assert found is not None
        return found.get("status") or {}

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        status = self.status(kind, name)
        conditions = status.get("conditions")
        if conditions is None:
            parents = status.get("parents") or [{}]
            conditions = parents[-1].get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)

    async def condition_is(
        self, kind: str, name: str, type_: str, status: str, reason: str | None = None
    ) -> dict[str, Any]:
        def holds() -> bool:
            found = self.condition(kind, name, type_)
            return (
                found is not None
                and found["status"] == status
                and (reason is None or found["reason"] == reason)
            )

        await eventually(holds, f"{kind} {name} {type_}={status} {reason or ''}")
        found = self.condition(kind, name, type_)
        assert found is not None
        return found


@contextlib.asynccontextmanager
async def live_relay(tmp_path: Path, *objects: dict[str, Any]) -> AsyncIterator[Live]:
    fake = FakeKubeApi()
    await fake.start()
    for obj in objects:
        fake.apply(obj)
    flags = [
        *("--kubernetes", "--kubeconfig", str(fake.kubeconfig(tmp_path))),
        *("--namespace", "stunner", "--gateway", "stunner-gateway"),
        *("--listener-address", "127.0.0.1", "--relay-address", "127.0.0.1"),
        *("--health", "127.0.0.1:0"),
    ]
    loaded = relay_settings.load(flags, environ={})
    assert loaded.gateway is not None and loaded.gateway.kubernetes is not None
    kube = await connect(loaded.gateway.kubernetes)
    server = RelayServer(loaded.relay)
    live = LiveGateway(server, loaded.gateway, Apis(kube.api_client), timing=fast_timing())
    await server.start()
    await live.start()
    try:
        yield Live(fake, server, live, {})
    finally:
        await live.stop()
        await server.stop()
        await kube.close()
        await fake.stop()


def rest(secret_value: str = SECRET, user: str = "web") -> tuple[str, str]:
    return rest_credentials(secret_value, user, time.time(), 600)


def listener(server: RelayServer, transport: str) -> tuple[str, int]:
    item = next(i for i in server.listeners if i.transport == transport)
    return item.address.host, item.address.port


async def allocate(
    server: RelayServer, transport: str, secret_value: str = SECRET, **options: Any
) -> tuple[Any, Receiver]:
    username, password = rest(secret_value)
    return await asyncio.wait_for(
        create_turn_endpoint(
            Receiver,
            server_addr=listener(server, transport),
            username=username,
            password=password,
            transport=transport,
            **options,
        ),
        10,
    )


async def refused(turn_transport: Any, receiver: Receiver, peer: Any) -> None:
    turn_transport.sendto(b"not routed", peer)
    error = await asyncio.wait_for(receiver.errors.get(), 5)
    assert isinstance(error, aioice_stun.TransactionFailed)
    assert error.response.attributes["ERROR-CODE"][0] == 403


async def test_a_live_relay_serves_its_gateway_and_reports_status(tmp_path: Path) -> None:
    udp, tcp = turn_port(), turn_port()
    async with (
        live_relay(tmp_path, *issue_example(udp, tcp)) as live,
        echo_peer("127.0.0.1") as (media, _),
    ):
        await eventually(lambda: live.server.policy.permits(*media), "configured from the API")
        assert live.server.configured
        assert {(i.transport, i.address.port) for i in live.server.listeners} == {
            ("udp", udp),
            ("tcp", tcp),
        }
        for transport in ("udp", "tcp"):
            turn_transport, receiver = await allocate(live.server, transport)
            try:
                await echoed(turn_transport, receiver, media, f"via {transport}".encode())
            finally:
                turn_transport.close()
        accepted = await live.condition_is("Gateway", "stunner-gateway", "Accepted", "True")
        assert accepted["reason"] == "Accepted" and accepted["observedGeneration"] == 1
        await live.condition_is("Gateway", "stunner-gateway", "Programmed", "True")
        await live.condition_is("UDPRoute", "media-route", "Accepted", "True", "Accepted")
        await live.condition_is("UDPRoute", "media-route", "ResolvedRefs", "True")
        parent = live.status("UDPRoute", "media-route")["parents"][0]
        assert parent["parentRef"]["name"] == "stunner-gateway"
        # Written once: an unchanged status is not patched again.
        patches = len(live.fake.patches)
        live.fake.apply(changed(endpoint_slice(("127.0.0.1", True)), "metadata.labels.x", "y"))
        rounds = live.gateway.reconciles
        await eventually(lambda: live.gateway.reconciles > rounds, "another round")
        assert len(live.fake.patches) == patches


async def test_changes_apply_while_allocations_keep_going(tmp_path: Path) -> None:
    udp, tcp = turn_port(), turn_port()
    async with (
        live_relay(tmp_path, *issue_example(udp, tcp)) as live,
        echo_peer("127.0.0.1") as (media, _),
        echo_peer("127.0.0.2") as (other, _),
    ):
        fake, server = live.fake, live.server
        await eventually(lambda: server.policy.permits(*media), "configured")
        # A call set up through the media server; every send binds its channel again, so
        # each one asks the relay's current policy.
        call, call_rx = await allocate(server, "udp", channel_refresh_time=0)
        try:
            await echoed(call, call_rx, media, b"call set up")

            # A route added: its StaticService's peer is reachable at once.
            fake.apply(static_service("127.0.0.2/32", name="recorder"))
            fake.apply(route({**STATIC, "name": "recorder"}, name="recorder-route"))
            await eventually(lambda: server.policy.permits(*other), "second route applied")
            second, second_rx = await allocate(server, "tcp")
            await echoed(second, second_rx, other, b"to the recorder")
            second.close()
            await echoed(call, call_rx, media, b"still talking 1")

            # The media pod terminates: its endpoint leaves the EndpointSlice's ready set.
            fake.apply(endpoint_slice(("127.0.0.1", False)))
            await eventually(lambda: not server.policy.permits(*media), "endpoint left")
            await echoed(call, call_rx, media, b"still talking 2")
            newcomer, newcomer_rx = await allocate(server, "tcp")
            await refused(newcomer, newcomer_rx, media)
            newcomer.close()

            # The route is deleted: new allocations cannot reach its peer any more.
            fake.delete("UDPRoute", "recorder-route")
            await eventually(lambda: not server.policy.permits(*other), "route deleted")

            # The shared secret rotates: new credentials work, old ones are refused, and
            # the call's allocation stays.
            fake.apply(secret("second-shared-secret"))
            credentials = server.handler.auth.store
            await eventually(lambda: server.handler.auth.store is not credentials, "rotated")
            rotated, _ = await allocate(server, "tcp", "second-shared-secret")
            rotated.close()
            with pytest.raises(aioice_stun.TransactionFailed) as old:
                await allocate(server, "tcp", SECRET)
            assert old.value.response.attributes["ERROR-CODE"][0] == 401
            assert any(a.transport == "udp" for a in server.table)

            # The TCP listener moves to another port: only it restarts.
            moved = turn_port()
            fake.apply(
                gateway(
                    {"name": "udp-listener", "port": udp, "protocol": "TURN-UDP"},
                    {"name": "tcp-listener", "port": moved, "protocol": "TURN-TCP"},
                )
            )
            await eventually(lambda: listener(server, "tcp")[1] == moved, "tcp listener moved")
            assert listener(server, "udp")[1] == udp
            await echoed(call, call_rx, media, b"still talking 3")
            assert server.stats.allocations["udp"] == 1
            await live.condition_is("Gateway", "stunner-gateway", "Accepted", "True")
            gateway_now = fake.get("Gateway", "stunner-gateway")
            assert gateway_now is not None and gateway_now["metadata"]["generation"] == 2
            accepted = live.condition("Gateway", "stunner-gateway", "Accepted")
            await eventually(
                lambda: (
                    (live.condition("Gateway", "stunner-gateway", "Accepted") or {}).get(
                        "observedGeneration"
                    )
                    == 2
                ),
                "status for generation 2",
            )
            assert accepted is not None
        finally:
            call.close()


async def test_refused_objects_get_a_reason_and_change_nothing(tmp_path: Path) -> None:
    udp, tcp = turn_port(), turn_port()
    async with (
        live_relay(tmp_path, *issue_example(udp, tcp)) as live,
        echo_peer("127.0.0.1") as (media, _),
    ):
        fake, server = live.fake, live.server
        await eventually(lambda: server.policy.permits(*media), "configured")
        before = list(server.listeners)

        sctp = gateway(
            {"name": "udp-listener", "port": udp, "protocol": "TURN-UDP"},
            {"name": "sctp-listener", "port": 443, "protocol": "TURN-SCTP"},
        )
        fake.apply(sctp)
        refusal = await live.condition_is(
            "Gateway", "stunner-gateway", "Accepted", "False", "ListenersNotValid"
        )
        assert "spec.listeners[1].protocol: 'TURN-SCTP' is not a TURN" in refusal["message"]
        await live.condition_is("Gateway", "stunner-gateway", "Programmed", "False")
        assert server.listeners == before  # the last good configuration stays
        call, call_rx = await allocate(server, "tcp")
        await echoed(call, call_rx, media, b"on the old listeners")
        call.close()

        fake.apply(issue_example(udp, tcp)[0])
        await live.condition_is("Gateway", "stunner-gateway", "Accepted", "True")

        fake.apply(route({"name": "x", "kind": "Pod"}, name="bad-kind"))
        bad = await live.condition_is(
            "UDPRoute", "bad-kind", "Accepted", "False", "UnsupportedValue"
        )
        assert "spec.rules[0].backendRefs[0].kind" in bad["message"]
        fake.apply(route({**STATIC, "name": "nowhere"}, name="dangling"))
        dangling = await live.condition_is(
            "UDPRoute", "dangling", "ResolvedRefs", "False", "BackendNotFound"
        )
        assert "StaticService stunner/nowhere not found" in dangling["message"]
        await live.condition_is("UDPRoute", "dangling", "Accepted", "True")

        fake.delete("Secret", "stunner-credentials")
        missing = await live.condition_is(
            "Gateway", "stunner-gateway", "Accepted", "False", "InvalidParameters"
        )
        assert "Secret stunner/stunner-credentials: not found" in missing["message"]
        assert SECRET not in missing["message"]
        call, call_rx = await allocate(server, "udp")  # the last good credentials still work
        await echoed(call, call_rx, media, b"still configured")
        call.close()
        fake.apply(secret(SECRET))
        await live.condition_is("Gateway", "stunner-gateway", "Accepted", "True")


async def test_a_relay_waits_unready_for_its_gateway(tmp_path: Path) -> None:
    udp, tcp = turn_port(), turn_port()
    objects = issue_example(udp, tcp)
    async with live_relay(tmp_path, *objects[1:]) as live:
        await eventually(lambda: live.gateway.error is not None, "first round")
        assert not live.server.configured and live.server.listeners == []
        assert live.gateway.error is not None and live.gateway.error.reason == "NotFound"
        live.fake.apply(objects[0])
        await eventually(lambda: live.server.configured, "configured once the Gateway exists")
        assert len(live.server.listeners) == 2


async def test_a_gateway_class_names_the_gateway_config(tmp_path: Path) -> None:
    udp, tcp = turn_port(), turn_port()
    objects = issue_example(udp, tcp)
    other = config(name="other-config", authType="static", userName="u", password="p")
    gateway_class = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "stunner-gatewayclass"},
        "spec": {
            "controllerName": "stunner.l7mp.io/gateway-operator",
            "parametersRef": {
                "group": "stunner.l7mp.io",
                "kind": "GatewayConfig",
                "name": "stunner-config",
                "namespace": "stunner",
            },
        },
    }
    async with live_relay(tmp_path, *objects, other, gateway_class) as live:
        await eventually(lambda: live.server.configured, "configured")
        assert live.gateway.settings is not None
        assert live.gateway.settings.config == ("stunner", "stunner-config")
        parents = await eventually_parents(live)
        assert parents[0]["controllerName"] == "stunner.l7mp.io/gateway-operator"


async def eventually_parents(live: Live) -> list[dict[str, Any]]:
    await eventually(lambda: live.status("UDPRoute", "media-route").get("parents"), "route status")
    parents: list[dict[str, Any]] = live.status("UDPRoute", "media-route")["parents"]
    return parents


def test_kubernetes_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config cannot be combined with --kubernetes"):
        relay_settings.load(["--kubernetes", "--config", "x.yaml"], environ={})
    with pytest.raises(ConfigError, match="--user cannot be combined with --kubernetes"):
        relay_settings.load(["--kubernetes", "--user", "a:b"], environ={})
    with pytest.raises(ConfigError, match="--kubeconfig"):
        relay_settings.load(["--kubernetes", "--kubeconfig", str(tmp_path / "none")], environ={})


async def test_a_route_that_detaches_loses_the_gateway_s_status_entry(tmp_path: Path) -> None:
    udp, tcp = turn_port(), turn_port()
    async with live_relay(tmp_path, *issue_example(udp, tcp)) as live:
        await live.condition_is("UDPRoute", "media-route", "Accepted", "True")
        other = {"name": "other-gateway"}
        live.fake.apply(route({"name": "media-server", "namespace": "apps"}, parents=[other]))
        await eventually(
            lambda: live.status("UDPRoute", "media-route").get("parents") == [],
            "our entry removed",
        )
