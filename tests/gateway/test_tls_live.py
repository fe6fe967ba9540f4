"""TURN-TLS Gateway listeners in live mode, against the fake API server through
kubernetes-asyncio: the ``kubernetes.io/tls`` Secret of ``tls.certificateRefs`` is watched,
written into the relay's private directory and served to aioice over TLS (chain checked
against the test CA). An updated Secret reaches new handshakes while a call keeps echoing; a
bad or missing one is that listener's ``ResolvedRefs`` False ``InvalidCertificateRef`` (the
other listeners served) until it is fixed; a TURN-DTLS listener serves its own Secret over DTLS."""

from __future__ import annotations

import asyncio
import base64
import ssl
import stat
import time
from pathlib import Path
from typing import Any

from aioice.turn import create_turn_endpoint

from relay.net.server import RelayServer
from tests.gateway.objects import gateway, tls_listener, turn_port
from tests.gateway.test_file_relay import Receiver, echoed
from tests.gateway.test_live import Live, allocate, issue_example, live_relay, rest
from tests.gateway.test_translate import reference_grant
from tests.relay.tls_helpers import (
    Authority,
    Leaf,
    dtls_served_fingerprint,
    fingerprint,
    served_certificate,
)
from tests.relay.turn_client import echo_peer
from tests.waiting import eventually


def tls_secret(
    leaf: Leaf | None, name: str = "turn-tls", namespace: str = "stunner", **data: str
) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret holding ``leaf`` (``data`` overrides keys)."""
    keys = {"tls.crt": leaf.cert.read_text(), "tls.key": leaf.key.read_text()} if leaf else {}
    keys.update(data)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
    }


def objects(udp: int, *listeners: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's example with a UDP listener and ``listeners``."""
    example = issue_example(udp, turn_port())
    example[0] = gateway({"name": "udp-listener", "port": udp, "protocol": "TURN-UDP"}, *listeners)
    return example


def listener_condition(live: Live, listener: str, type_: str) -> dict[str, Any] | None:
    status = live.status("Gateway", "stunner-gateway")
    entry = next((e for e in status.get("listeners") or [] if e["name"] == listener), None)
    if entry is None:
        return None
    return next((c for c in entry["conditions"] if c["type"] == type_), None)


async def listener_is(
    live: Live, listener: str, type_: str, status: str, reason: str
) -> dict[str, Any]:
    def holds() -> bool:
        found = listener_condition(live, listener, type_)
        return found is not None and (found["status"], found["reason"]) == (status, reason)

    await eventually(
        holds,
        f"listener {listener} {type_}={status} {reason}",
        explain=lambda: str(live.status("Gateway", "stunner-gateway").get("listeners")),
    )
    found = listener_condition(live, listener, type_)
    assert found is not None
    return found


def tls_port(server: RelayServer, port: int) -> bool:
    return any(i.transport == "tls" and i.address.port == port for i in server.listeners)


async def served(port: int, context: ssl.SSLContext) -> str:
    return fingerprint(await asyncio.to_thread(served_certificate, port, context))


async def allocate_tls(port: int, context: ssl.SSLContext) -> tuple[Any, Receiver]:
    username, password = rest()
    return await asyncio.wait_for(
        create_turn_endpoint(
            Receiver,
            server_addr=("127.0.0.1", port),
            username=username,
            password=password,
            transport="tcp",
            ssl=context,
        ),
        10,
    )


async def test_a_live_tls_listener_serves_its_secret_and_follows_its_updates(
    authority: Authority, tmp_path: Path
) -> None:
    first, second, third = (authority.leaf(f"live-{n}") for n in ("first", "second", "third"))
    udp, port = turn_port(), turn_port()
    context = authority.client_context()
    async with (
        live_relay(tmp_path, *objects(udp, tls_listener(port)), tls_secret(first)) as live,
        echo_peer("127.0.0.1") as (media, _),
    ):
        fake, server = live.fake, live.server
        await eventually(lambda: tls_port(server, port), "the TLS listener opened")
        await listener_is(live, "tls-listener", "ResolvedRefs", "True", "ResolvedRefs")
        await listener_is(live, "tls-listener", "Programmed", "True", "Programmed")
        assert await served(port, context) == first.fingerprint
        entries = live.status("Gateway", "stunner-gateway")["listeners"]
        assert [(e["name"], e["attachedRoutes"]) for e in entries] == [
            ("udp-listener", 1),  # the route names no sectionName: it attaches to both
            ("tls-listener", 1),
        ]
        assert entries[1]["supportedKinds"] == [{"group": "stunner.l7mp.io", "kind": "UDPRoute"}]
        # The pair lives in a private directory: 0700, the key 0600.
        store = live.gateway.certificate_store
        assert store is not None
        assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
        (files,) = server.certificates
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600

        call, call_rx = await allocate_tls(port, context)
        try:
            await echoed(call, call_rx, media, b"over TLS, live")

            # The Secret is renewed: the next handshake gets the new certificate.
            renewed_at = time.perf_counter()
            fake.apply(tls_secret(second))

            async def serving(leaf: Leaf) -> bool:
                return await served(port, context) == leaf.fingerprint

            await eventually(lambda: serving(second), "the renewed certificate served")
            print(
                "Secret update to the first handshake with the new certificate: "
                f"{(time.perf_counter() - renewed_at) * 1000:.1f} ms"
            )
            await echoed(call, call_rx, media, b"the call keeps its session")

            # A bad update (the key of another certificate) is refused: the listener keeps
            # the pair it has, and says why.
            fake.apply(tls_secret(second, **{"tls.key": third.key.read_text()}))
            refused = await listener_is(
                live, "tls-listener", "ResolvedRefs", "False", "InvalidCertificateRef"
            )
            assert "Secret stunner/turn-tls: tls.key does not match" in refused["message"]
            assert "PRIVATE KEY" not in refused["message"]
            programmed = await listener_is(live, "tls-listener", "Programmed", "False", "Invalid")
            assert "keeps serving its previous certificate" in programmed["message"]
            assert await served(port, context) == second.fingerprint
            await echoed(call, call_rx, media, b"still talking")
            udp_ok = listener_condition(live, "udp-listener", "Programmed")
            assert udp_ok is not None and udp_ok["status"] == "True"
            await live.condition_is("Gateway", "stunner-gateway", "Accepted", "True")

            # Deleted: still the previous pair, now "not found".
            fake.delete("Secret", "turn-tls")
            await eventually(
                lambda: (
                    "not found"
                    in (listener_condition(live, "tls-listener", "ResolvedRefs") or {}).get(
                        "message", ""
                    )
                ),
                "a missing Secret reported",
            )
            assert await served(port, context) == second.fingerprint

            # Fixed: the listener recovers with the new pair.
            fake.apply(tls_secret(third))
            await listener_is(live, "tls-listener", "ResolvedRefs", "True", "ResolvedRefs")
            await listener_is(live, "tls-listener", "Programmed", "True", "Programmed")
            await eventually(lambda: serving(third), "the fixed certificate served")
            await echoed(call, call_rx, media, b"after the fix")
            assert server.stats.allocations["tls"] == 1
        finally:
            call.close()


async def test_a_listener_without_a_usable_secret_waits_while_the_others_serve(
    authority: Authority, tmp_path: Path
) -> None:
    udp, port, wrong_kind, dtls = turn_port(), turn_port(), turn_port(), turn_port()
    kind = tls_listener(wrong_kind, name="wrong-kind", protocol="TLS")
    kind["tls"]["certificateRefs"][0]["kind"] = "ConfigMap"
    documents = objects(
        udp,
        tls_listener(port),
        kind,
        tls_listener(dtls, name="dtls-listener", protocol="TURN-DTLS", secret="dtls"),
    )
    dtls_leaf = authority.leaf("dtls")
    good = tls_secret(dtls_leaf, name="dtls")
    async with (
        live_relay(tmp_path, *documents, good, tls_secret(None, **{"tls.crt": "x"})) as live,
        echo_peer("127.0.0.1") as (media, _),
    ):
        server = live.server
        missing = await listener_is(
            live, "tls-listener", "ResolvedRefs", "False", "InvalidCertificateRef"
        )
        assert "has no 'tls.key'" in missing["message"]
        pending = await listener_is(live, "tls-listener", "Programmed", "False", "Invalid")
        assert "the listener is not served" in pending["message"]
        wrong = await listener_is(
            live, "wrong-kind", "ResolvedRefs", "False", "InvalidCertificateRef"
        )
        assert "ConfigMap (group '') is not a Secret" in wrong["message"]
        # The DTLS listener's Secret is good: served over DTLS with that Secret's pair.
        await listener_is(live, "dtls-listener", "Programmed", "True", "Programmed")
        assert {(i.transport, i.address.port) for i in server.listeners} == {
            ("udp", udp),
            ("dtls", dtls),
        }
        assert (
            await dtls_served_fingerprint(("127.0.0.1", dtls), authority) == dtls_leaf.fingerprint
        )
        accepted = await live.condition_is(
            "Gateway", "stunner-gateway", "Accepted", "True", "ListenersNotValid"
        )
        assert "listener 'wrong-kind'" in accepted["message"]
        call, call_rx = await allocate(server, "udp")
        await echoed(call, call_rx, media, b"the UDP listener serves")
        call.close()

        leaf = authority.leaf("late")
        live.fake.apply(tls_secret(leaf))
        await eventually(lambda: tls_port(server, port), "opened once its Secret is good")
        await listener_is(live, "tls-listener", "Programmed", "True", "Programmed")
        context = authority.client_context()
        assert await served(port, context) == leaf.fingerprint
        tls_call, tls_rx = await allocate_tls(port, context)
        await echoed(tls_call, tls_rx, media, b"and now TLS")
        tls_call.close()


async def test_a_secret_of_another_namespace_needs_a_reference_grant(
    authority: Authority, tmp_path: Path
) -> None:
    udp, port = turn_port(), turn_port()
    listener = tls_listener(port)
    listener["tls"]["certificateRefs"][0]["namespace"] = "certs"
    leaf = authority.leaf("cross-namespace")
    documents = objects(udp, listener)
    async with live_relay(tmp_path, *documents, tls_secret(leaf, namespace="certs")) as live:
        refused = await listener_is(
            live, "tls-listener", "ResolvedRefs", "False", "RefNotPermitted"
        )
        assert "no ReferenceGrant in certs lets Gateways of stunner" in refused["message"]
        assert not tls_port(live.server, port)

        live.fake.apply(reference_grant())
        await listener_is(live, "tls-listener", "ResolvedRefs", "True", "ResolvedRefs")
        await eventually(lambda: tls_port(live.server, port), "served once granted")
        assert await served(port, authority.client_context()) == leaf.fingerprint

        # The grant is withdrawn: the listener says so (and keeps the pair it serves).
        live.fake.delete("ReferenceGrant", "gateways-to-certs", "certs")
        await listener_is(live, "tls-listener", "ResolvedRefs", "False", "RefNotPermitted")
