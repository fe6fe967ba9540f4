"""The fleet-wide user quota end to end: two real relays, one real scaler, aioice clients.

``python -m scaler --fleet-user-quota 4`` and two ``python -m relay`` processes pushing to
it. One static user opens allocations on both relays; once the fleet holds four, the
second relay (which holds only one of them) answers the fifth Allocate with 486
(RFC 8656 §7.2), while the open allocations keep relaying; after two are closed the user
allocates again. A relay of the first release (reports without per-user counts, answers
read for nothing but their status) keeps being counted.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final

import aiohttp
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from tests.e2e.clients import TIMEOUT, Receiver, clients_of
from tests.e2e.processes import pushing_relay, scaler_process
from tests.fixtures import wire_v1_first as first
from tests.relay.servers import PASSWORD, USER
from tests.relay.turn_client import TurnClient, echo_peer
from tests.waiting import eventually

QUOTA: Final = 4
INTERVAL: Final = "0.5s"

Peer = tuple[str, int]


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    async with echo_peer() as (where, _):
        yield where


async def status(http: aiohttp.ClientSession, relay: Any) -> dict[str, Any]:
    async with http.get(f"{relay.health}/status") as response:
        body: dict[str, Any] = await response.json()
        return body


async def listed(http: aiohttp.ClientSession, relay: Any) -> int:
    """Users the relay refuses fleet-wide now (the union of its scalers' lists)."""
    reporting = (await status(http, relay))["reporting"]
    count: int = reporting["fleet_quota"]["users_over_quota"]
    return count


async def allocate_error(server: tuple[str, int]) -> int:
    """One more aioice Allocate; the STUN error code it gets (0: it succeeded)."""
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(
                Receiver, server_addr=server, username=USER, password=PASSWORD, transport="udp"
            ),
            TIMEOUT,
        )
    except stun.TransactionFailed as failure:
        code: int = failure.response.attributes["ERROR-CODE"][0]
        return code
    transport.close()
    return 0


def old_report(pod: str, seq: int, udp: int, started_at: float) -> bytes:
    """A report as a relay of the first release encodes it: no per-user counts."""
    return first.encode(
        first.Report(
            version=1,
            relay=first.RelayIdentity(pod, "quota", "quota-gateway", "old1", started_at),
            seq=seq,
            sent_at=time.time(),
            state=first.RelayState(
                allocations={"udp": udp, "tcp": 0},
                connections_total={"udp": udp, "tcp": 0},
                bytes_received_total={"client": 0, "peer": 0},
                bytes_sent_total={"client": 0, "peer": 0},
            ),
        )
    )


async def test_a_user_is_refused_fleet_wide_at_the_quota_and_freed_below_it(peer: Peer) -> None:
    suffix = secrets.token_hex(3)
    fleet = {"namespace": "quota", "gateway": "quota-gateway", "interval": INTERVAL}
    with (
        scaler_process("--fleet-user-quota", str(QUOTA)) as scaler,
        pushing_relay(scaler.base, f"quota-a-{suffix}", **fleet) as relay_a,
        pushing_relay(scaler.base, f"quota-b-{suffix}", **fleet) as relay_b,
    ):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            clients_of(relay_a.udp) as on_a,
            clients_of(relay_b.udp) as on_b,
            TurnClient(relay_b.udp, USER, PASSWORD) as held_on_b,
        ):
            await on_a.allocate(3)
            await held_on_b.allocate()  # relay b's one: refreshed later by hand
            # The fleet holds 4 of the user's: within a report interval both relays know.
            await eventually(lambda: listed(http, relay_b), "relay b lists the user")
            await eventually(lambda: listed(http, relay_a), "relay a lists the user")
            # Relay b holds 1 (< 4), relay a 3: the fifth is refused wherever it goes.
            assert await allocate_error(relay_b.udp) == 486
            assert await allocate_error(relay_a.udp) == 486
            refused = (await status(http, relay_b))["allocations_refused"]
            assert refused == {"user_quota": 0, "total_quota": 0, "fleet_user_quota": 1}
            # The next report carries it to the scaler's counter (by relay and reason).
            sample = (
                'stunner_allocations_refused_total{gateway="quota-gateway",namespace="quota",'
                f'pod="quota-b-{suffix}",reason="fleet_user_quota"}} 1.0'
            )
            await eventually(lambda: _metrics_have(http, scaler.base, sample), "refusal counted")
            # What is open is never cut: every allocation still relays, and refreshes.
            await on_a.echo(peer, rounds=2)
            assert await held_on_b.refresh(600) == 600
            await held_on_b.create_permission(peer)
            held_on_b.send_indication(peer, b"still relaying")
            assert await held_on_b.receive() == (peer, b"still relaying")
            # Close two: 2 in the fleet, and the next answer frees the user on relay b.
            await on_a.close(on_a.open[:2])
            await eventually(lambda: _zero(listed(http, relay_b)), "relay b frees the user")
            assert await allocate_error(relay_b.udp) == 0
            await on_b.allocate(1)
            async with http.get(f"{scaler.base}/metrics") as response:
                metrics = await response.text()
            assert "stunner_scaler_users_over_quota 0.0" in metrics
            assert "stunner_scaler_fleet_user_quota 4.0" in metrics


async def _metrics_have(http: aiohttp.ClientSession, base: str, sample: str) -> bool:
    async with http.get(f"{base}/metrics") as response:
        return sample in await response.text()


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_a_relay_of_the_first_release_keeps_being_counted() -> None:
    with scaler_process("--fleet-user-quota", "1") as scaler:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            started = time.time() - 10
            for seq in (1, 2):
                async with http.post(
                    f"{scaler.base}/v1/reports",
                    data=old_report("old-relay", seq, 7, started),
                    headers={"Content-Type": "application/json"},
                ) as response:
                    # Accepted; the extra answer key is one such a relay never reads.
                    assert response.status == 202
                    answer = await response.json()
            assert answer["result"] == "accepted"
            assert answer["over_quota"] == {"version": 1, "users": [], "truncated": False}
            async with http.get(
                f"{scaler.base}/v1/scale", params={"gateway": "quota-gateway"}
            ) as r:
                assert (await r.json())["allocations"] == 7
