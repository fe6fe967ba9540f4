"""The event flow end to end: real relays, real scalers, real TURN clients, on loopback.

Relays and scalers run as ``python -m relay`` / ``python -m scaler`` processes wherever a
scenario sends them signals or restarts them; in-process only where a test must set what
flags cannot (a name resolver, the pusher's event buffer). TURN clients are aioice
(tests/e2e/clients.py), the peer a UDP echo server. A :class:`ScalerWatch` polls
``/metrics``, ``/v1/scale`` and gRPC ``GetMetrics`` all along and checks that no sample
is negative and no counter goes down (see tests/e2e/watch.py).
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import AsyncIterator
from typing import Final

import pytest

from relay.net.server import RelayServer
from relay.reporting.pusher import BATCH_WINDOW
from tests.e2e.clients import clients_of
from tests.e2e.inprocess import attach_pusher, link_to, resolving_to
from tests.e2e.processes import FAST_EXPIRY, ScalerProcess, pushing_relay, scaler_process
from tests.e2e.watch import Reading, ScalerWatch, watching
from tests.net import free_port
from tests.relay.servers import address, relay_config
from tests.relay.turn_client import echo_peer
from tests.waiting import eventually

NAMESPACE: Final = "e2e"
GATEWAY: Final = "e2e-gateway"
# The relays' heartbeat in these tests (--report-interval).
INTERVAL: Final = 0.5
# How long the restarted scaler stays away: several report intervals.
OUTAGE: Final = 2.5
# Polling /metrics, /v1/scale and GetMetrics, and process scheduling on a loaded 2-core
# machine, on top of what a "within" requirement allows.
ALLOWANCE: Final = 0.45
FLEET: Final = {"namespace": NAMESPACE, "gateway": GATEWAY}

Peer = tuple[str, int]


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    async with echo_peer() as (where, _):
        yield where


def bytes_of(reading: Reading, pod: str, direction: str, side: str) -> float:
    return reading.total(f"stunner_bytes_{direction}_total", pod=pod, side=side)


def peer_bytes(watch: ScalerWatch, pod: str, expected: int) -> bool:
    """Both peer-side counters of ``pod`` say ``expected`` (every byte echoed once)."""
    reading = watch.latest
    return reading is not None and all(
        bytes_of(reading, pod, direction, "peer") == expected for direction in ("sent", "received")
    )


def relay_up(reading: Reading | None, pod: str) -> float | None:
    if reading is None or not reading.has("stunner_relay_up", pod=pod):
        return None
    return reading.total("stunner_relay_up", pod=pod)


async def test_allocations_show_within_a_second_and_bytes_grow_on_both_sides(
    peer: Peer,
) -> None:
    with (
        scaler_process() as scaler,
        pushing_relay(scaler.base, "relay-a", **FLEET) as relay,
    ):
        async with (
            watching(scaler.http, scaler.grpc, **FLEET) as watch,
            clients_of(relay.udp, relay.tcp) as clients,
        ):
            await eventually(lambda: watch.shows(0, {"relay-a": 0}), "the relay reported")
            start = watch.latest
            assert start is not None

            await clients.allocate(12, "udp")
            await clients.allocate(4, "tcp")
            # The requirement: the scaler answers within one second of the allocations.
            await eventually(
                lambda: watch.shows(16, {"relay-a": 16}),
                "16 allocations in /metrics, /v1/scale and GetMetrics",
                within=1.0,
            )
            shown = watch.latest
            assert shown is not None
            assert shown.allocations(pod="relay-a", transport="udp") == 12
            assert shown.allocations(pod="relay-a", transport="tcp") == 4
            assert shown.total("stunner_connections_total", pod="relay-a", transport="udp") == 12
            assert shown.scale["desiredReplicas"] == 2

            sent = await clients.echo(peer, size=200, rounds=3)
            # Byte counters travel with the state of the next report (a heartbeat).
            await eventually(lambda: peer_bytes(watch, "relay-a", sent), "peer-side bytes")
            after = watch.latest
            assert after is not None
            for direction in ("received", "sent"):
                grown = bytes_of(after, "relay-a", direction, "client") - bytes_of(
                    start, "relay-a", direction, "client"
                )
                # Allocate, ChannelBind and ChannelData headers come on top of the payloads.
                assert grown > sent, (direction, grown, sent)

            await clients.close()
            await eventually(lambda: watch.shows(0, {"relay-a": 0}), "back to 0 allocations")
            ended = watch.latest
            assert ended is not None
            assert ended.total("stunner_allocations_created_total", pod="relay-a") == 16
            deleted = ended.total(
                "stunner_allocations_deleted_total", pod="relay-a", reason="refresh_zero"
            )
            assert deleted == 16
        watch.check_sound()


async def test_a_killed_relay_expires_and_its_successor_keeps_counters_monotonic(
    peer: Peer,
) -> None:
    with scaler_process(*FAST_EXPIRY) as scaler:
        async with watching(scaler.http, scaler.grpc, **FLEET) as watch:
            with (
                pushing_relay(scaler.base, "relay-k", **FLEET) as doomed,
                pushing_relay(scaler.base, "relay-s", **FLEET) as survivor,
            ):
                async with clients_of(doomed.udp) as lost, clients_of(survivor.udp) as kept:
                    await lost.allocate(6)
                    await kept.allocate(2)
                    first_bytes = await lost.echo(peer, rounds=2)
                    await eventually(
                        lambda: (
                            watch.shows(8, {"relay-k": 6, "relay-s": 2})
                            and peer_bytes(watch, "relay-k", first_bytes)
                        ),
                        "both relays reported",
                    )
                    doomed.process.kill()  # SIGKILL: no drain, no last report
                    doomed.wait()
                    lost.abandon()
                    # Silent past --stale-after: exported as not up, still counted...
                    await eventually(
                        lambda: relay_up(watch.latest, "relay-k") == 0 and watch.shows(8),
                        "relay-k stale but counted",
                    )
                    # ...and past --expire-after it leaves the scaling metric and /metrics.
                    await eventually(
                        lambda: (
                            watch.shows(2, {"relay-s": 2})
                            and relay_up(watch.latest, "relay-k") is None
                        ),
                        "relay-k expired",
                    )

                    # The pod's relay comes back (a new instance under the same pod name).
                    with pushing_relay(scaler.base, "relay-k", **FLEET) as successor:
                        async with clients_of(successor.udp) as again:
                            await again.allocate(3)
                            more_bytes = await again.echo(peer, rounds=1)
                            await eventually(
                                lambda: (
                                    watch.shows(5, {"relay-k": 3, "relay-s": 2})
                                    and peer_bytes(watch, "relay-k", first_bytes + more_bytes)
                                ),
                                "relay-k back, counters continued",
                            )
                            back = watch.latest
                            assert back is not None
                            connections = back.total(
                                "stunner_connections_total", pod="relay-k", transport="udp"
                            )
                            assert connections == 6 + 3
                            assert (
                                back.total("stunner_allocations_created_total", pod="relay-k") == 9
                            )
        watch.check_sound()


async def test_a_restarted_scaler_is_exact_again_within_one_report_interval(
    peer: Peer,
) -> None:
    http, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    scaler = ScalerProcess(http=http, grpc=grpc)
    try:
        with pushing_relay(scaler.base, "relay-a", **FLEET, interval=f"{INTERVAL}s") as relay:
            async with (
                watching(http, grpc, **FLEET) as watch,
                clients_of(relay.udp, relay.tcp) as clients,
            ):
                await clients.allocate(5)
                await clients.allocate(2, "tcp")
                echoed = await clients.echo(peer, rounds=2)
                await eventually(
                    lambda: watch.shows(7, {"relay-a": 7}) and peer_bytes(watch, "relay-a", echoed),
                    "the relay's state",
                )
                before = watch.latest
                assert before is not None

                scaler.kill()  # its state was only in memory
                await eventually(lambda: watch.latest is None, "the scaler gone")
                # The fleet changes while the scaler is down.
                await clients.close(clients.open[:2])
                await clients.allocate(3)
                echoed += await clients.echo(peer)
                # A restart takes a while (a pod's does): the pusher keeps retrying, its
                # backoff growing past the report interval if nothing caps it.
                await asyncio.sleep(OUTAGE)
                scaler = await asyncio.to_thread(ScalerProcess, http=http, grpc=grpc)
                await eventually(
                    lambda: watch.shows(8, {"relay-a": 8}) and peer_bytes(watch, "relay-a", echoed),
                    "exact state from the restarted scaler within one report interval",
                    within=INTERVAL + BATCH_WINDOW + ALLOWANCE,
                )
                after = watch.latest
                assert after is not None
                # Counters from the relays' state restart at the relay's totals: never lower.
                for (name, labels), value in before.metrics.items():
                    if name.startswith(("stunner_bytes_", "stunner_connections_")):
                        assert after.metrics[(name, labels)] >= value, (name, labels)
            watch.check_sound()
    finally:
        scaler.stop()


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def failing(server: RelayServer) -> int:
    """Failed attempts in a row of the relay's pusher (its only scaler address)."""
    assert server.pusher is not None
    (status,) = server.pusher.status()["scalers"].values()  # type: ignore[attr-defined]
    return int(status["failing"])


def events_delivered(reading: Reading | None, pod: str) -> float:
    if reading is None:
        return -1
    created = reading.total("stunner_allocations_created_total", pod=pod)
    return created + reading.total("stunner_allocations_deleted_total", pod=pod)


async def test_a_scaler_unreachable_for_a_while_is_exact_again_and_drops_are_counted(
    peer: Peer,
) -> None:
    with scaler_process() as scaler:
        async with (
            link_to(host_port(scaler.http)) as link,
            watching(scaler.http, scaler.grpc, **FLEET) as watch,
        ):
            # In-process: the pusher's event buffer is not a flag; 4 makes drops certain.
            server = RelayServer(relay_config())
            pusher = attach_pusher(
                server,
                [link.url],
                "relay-u",
                namespace=NAMESPACE,
                gateway=GATEWAY,
                interval=INTERVAL,
                event_buffer=4,
            )
            await server.start()
            try:
                async with clients_of(address(server, "udp")) as clients:
                    await clients.allocate(3)
                    await eventually(lambda: watch.shows(3, {"relay-u": 3}), "the relay's state")

                    await link.cut()
                    # The report in flight is retried as-is; new events wait in the buffer.
                    await eventually(lambda: failing(server) >= 1, "the pusher failing")
                    await clients.allocate(8)
                    await clients.close(clients.open[:2])
                    echoed = await clients.echo(peer)
                    await eventually(lambda: failing(server) >= 4, "the pusher retrying")
                    assert pusher.events_dropped == 10 - 4  # the oldest dropped, and counted
                    assert watch.shows(3, {"relay-u": 3})  # the scaler still has the old state

                    await link.restore()
                    await eventually(
                        lambda: (
                            watch.shows(9, {"relay-u": 9})
                            and peer_bytes(watch, "relay-u", echoed)
                            and events_delivered(watch.latest, "relay-u") == 3 + 4
                        ),
                        "exact state after the outage",
                    )
                    assert failing(server) == 0
                    assert clients.opened + clients.closed == 7 + pusher.events_dropped
            finally:
                await server.stop()
        watch.check_sound()


async def test_two_scaler_replicas_behind_one_name_hold_the_same_state(peer: Peer) -> None:
    port = free_port()
    with (
        scaler_process(http=f"127.0.0.1:{port}") as first,
        scaler_process(http=f"127.0.0.2:{port}") as second,
    ):
        async with (
            watching(first.http, first.grpc, **FLEET) as one,
            watching(second.http, second.grpc, **FLEET) as two,
        ):
            # No DNS server here: the pusher's resolver makes the name a headless Service.
            server = RelayServer(relay_config())
            attach_pusher(
                server,
                [f"http://scalers.e2e.test:{port}"],
                "relay-r",
                namespace=NAMESPACE,
                gateway=GATEWAY,
                resolve=resolving_to("127.0.0.1", "127.0.0.2"),
            )
            await server.start()
            try:
                async with clients_of(address(server, "udp"), address(server, "tcp")) as clients:
                    await clients.allocate(4)
                    await clients.allocate(2, "tcp")
                    echoed = await clients.echo(peer, rounds=2)
                    await clients.close(clients.open[:1])
                    for watch in (one, two):
                        await eventually(
                            functools.partial(holds_relay_r, watch, echoed),
                            f"replica at {watch.http}",
                        )
                    # The same relay series in both (a heartbeat may land between reads).
                    await eventually(
                        lambda: (
                            relay_series(one.latest) == relay_series(two.latest)
                            and bool(relay_series(one.latest))
                        ),
                        "both replicas agree",
                    )
            finally:
                await server.stop()
        one.check_sound()
        two.check_sound()


def holds_relay_r(watch: ScalerWatch, echoed: int) -> bool:
    """relay-r's state and every event it sent: 6 allocations made, 1 closed."""
    return (
        watch.shows(5, {"relay-r": 5})
        and peer_bytes(watch, "relay-r", echoed)
        and events_delivered(watch.latest, "relay-r") == 7
    )


def relay_series(reading: Reading | None) -> dict[object, float]:
    """Every stunner_* sample about relays, the report age and the relayed bytes/s left out:
    each replica times them by the reports it got (the pusher builds one per address)."""
    if reading is None:
        return {}
    return {
        sample: value
        for sample, value in reading.metrics.items()
        if sample[0].startswith("stunner_") and sample[0] not in PER_REPLICA_TIMING
    }


PER_REPLICA_TIMING: Final = frozenset(
    {
        "stunner_relay_report_age_seconds",
        "stunner_relay_bandwidth_bytes_per_second",
        "stunner_scaler_bandwidth_bytes_per_second",
    }
)


async def test_a_draining_relay_is_exported_as_draining_not_counted_and_ends_at_zero() -> None:
    with (
        scaler_process() as scaler,
        pushing_relay(scaler.base, "relay-a", **FLEET) as steady,
        pushing_relay(scaler.base, "relay-d", "--drain-timeout", "60s", **FLEET) as leaving,
    ):
        async with (
            watching(scaler.http, scaler.grpc, **FLEET) as watch,
            clients_of(steady.udp) as staying,
            clients_of(leaving.udp, leaving.tcp) as moving,
        ):
            await staying.allocate(3)
            await moving.allocate(3)
            await moving.allocate(1, "tcp")
            await eventually(lambda: watch.shows(7, {"relay-a": 3, "relay-d": 4}), "both relays")

            leaving.process.send_signal(signal.SIGTERM)  # Kubernetes terminates the pod
            await eventually(
                lambda: (
                    draining(watch.latest, "relay-d") == 1
                    and watch.shows(3, {"relay-a": 3, "relay-d": 4})
                ),
                "relay-d draining, its allocations exported but not counted",
            )
            reading = watch.latest
            assert reading is not None
            assert reading.total("stunner_scaler_allocations", **FLEET) == 3
            assert reading.scale["relays"] == 1
            assert draining(reading, "relay-a") == 0

            await moving.close(moving.open[:1])  # existing allocations keep working
            await eventually(lambda: watch.shows(3, {"relay-d": 3}), "one allocation ended")

            leaving.process.send_signal(signal.SIGTERM)  # a second signal: exit now
            assert await asyncio.to_thread(leaving.wait) == 0
            moving.abandon()
            stopped = leaving.wait_for("relay stopped")
            assert stopped["closed_allocations"] == 3
            # Its last report: zero allocations, the rest deleted as drained.
            await eventually(
                lambda: (
                    watch.shows(3, {"relay-a": 3, "relay-d": 0})
                    and deleted(watch.latest, "relay-d", "drained") == 3
                ),
                "relay-d's last report",
            )
            reading = watch.latest
            assert reading is not None
            assert deleted(reading, "relay-d", "refresh_zero") == 1
            assert draining(reading, "relay-d") == 1
        watch.check_sound()


def draining(reading: Reading | None, pod: str) -> float | None:
    if reading is None or not reading.has("stunner_relay_draining", pod=pod):
        return None
    return reading.total("stunner_relay_draining", pod=pod)


def deleted(reading: Reading | None, pod: str, reason: str) -> float:
    if reading is None:
        return -1
    return reading.total("stunner_allocations_deleted_total", pod=pod, reason=reason)
