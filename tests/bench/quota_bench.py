"""Fleet user quota benchmark: what per-user counts cost ingest, and how fast they bite.

1. Report ingest at 1000 relays x 100 users each, against the same ingest without users,
   in the same run: two scaler processes pinned to the server core, one plain, one with
   ``--fleet-user-quota``, fed alternately by the same load generator on the other core
   (plain without users, plain with users, quota with users; three rounds), each phase's
   server CPU per report from the process's CPU-time clock. 80 users per relay come from a
   pool of 100,000 (about one relay each), 20 are on every relay (over the quota together:
   every answer lists them), and from one report to the next 5 users' counts move by one.
2. From a user crossing the quota on one relay to another relay refusing it: a scaler and
   two relay processes, the user holding one allocation on relay B; an Allocate on relay
   A brings the fleet to the quota, and relay B's ``/status`` is polled until it lists
   the user (then an Allocate there must get 486). Bounded by B's report interval, since
   B learns with the answer to its next report.

Bounded: fixed phase lengths and trial counts, loopback only, every process stopped.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from itertools import count

import aiohttp
import msgspec

from scaler import wire
from tests.bench.common import (
    cpu_seconds,
    free_port,
    percentile,
    pin_self_to_client_core,
    python_argv,
    start_pinned,
    stop,
    table,
    wait_http,
)
from tests.bench.scaler_bench import CONCURRENCY, Request, drive, snapshot
from tests.e2e.processes import pushing_relay, scaler_process
from tests.relay.servers import PASSWORD, USER
from tests.relay.turn_client import TurnClient, TurnError

RELAYS = 1000
USERS_PER_RELAY = 100
USER_POOL = 100_000
#: Users on every relay: 1000 allocations each across the fleet, over the quota.
HEAVY = 20
#: Users whose count changes from one report of a relay to the next.
CHURN = 5
PHASE_SECONDS = 5.0
#: Each kind of phase runs this many times, alternated (the machine is shared: noise)
ROUNDS = 3
FLEET_QUOTA = 10
# Variants of each relay's users, cycled by seq, so every report changes the sums.
VARIANTS = 4
TRIALS = 20
INTERVAL = 1.0


def start_bench_scaler(port: int, *flags: str) -> subprocess.Popen[bytes]:
    process = start_pinned(
        python_argv(
            "-m",
            "scaler",
            *("--http", f"127.0.0.1:{port}", "--grpc", "127.0.0.1:0"),
            *("--log-level", "warning", "--stale-after", "300s", "--expire-after", "600s"),
            *flags,
        )
    )
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return process


def user_variants(rng: random.Random) -> list[list[dict[str, int]]]:
    """Each relay's users: HEAVY users on every relay (a leaked credential used fleet-wide,
    over the quota together) and the rest drawn from the pool; each variant moves a few
    users' counts by one, as allocations come and go between two reports."""
    heavy = [wire.user_digest(f"rest:leaked{n}") for n in range(HEAVY)]
    pool = [wire.user_digest(f"rest:user{n}") for n in range(USER_POOL)]
    out = []
    for _ in range(RELAYS):
        base = dict.fromkeys(heavy, 1)
        base.update((user, rng.randint(1, 2)) for user in rng.sample(pool, USERS_PER_RELAY - HEAVY))
        keys = list(base)
        variants = []
        for variant in range(VARIANTS):
            users = dict(base)
            for user in keys[HEAVY + variant * CHURN : HEAVY + (variant + 1) * CHURN]:
                users[user] += 1
            variants.append(users)
        out.append(variants)
    return out


def reports(
    base: str, first_seq: int, users: list[list[dict[str, int]]] | None
) -> Iterator[Request]:
    """Every relay's next seq, round-robin (each a new state); with ``users``, each report
    carries one of its relay's per-user variants."""
    for seq in count(first_seq):
        for pod in range(RELAYS):
            item = snapshot(pod, seq)
            if users is not None:
                raw = wire.users_field(users[pod][seq % VARIANTS])
                state = msgspec.structs.replace(item.state, users=raw)
                item = msgspec.structs.replace(item, state=state)
            yield ("POST", f"{base}/v1/reports", wire.encode(item))


async def ingest_phases(
    plain: tuple[str, int], quota: tuple[str, int], users: list[list[dict[str, int]]]
) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    """Reports/s and server CPU microseconds per report, per phase, for (base, pid) each."""
    headers = {"Content-Type": "application/json"}
    rates: dict[str, list[int]] = {"plain": [], "carried": [], "users": []}
    cpu_per_report: dict[str, list[float]] = {name: [] for name in rates}
    # The plain scaler takes both kinds of report, so their seqs continue one another.
    next_seq = {"plain": 1, "carried": 1, "users": 1}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(ROUNDS):
            for name, (base, pid), with_users in (
                ("plain", plain, None),
                ("carried", plain, users),
                ("users", quota, users),
            ):
                source = reports(base, next_seq[name], with_users)
                cpu_before = cpu_seconds(pid)
                rate, latencies, failures = await drive(
                    session, source, headers, PHASE_SECONDS, lambda status: status == 202
                )
                cpu = cpu_seconds(pid) - cpu_before
                cpu_per_report[name].append(cpu / max(len(latencies), 1) * 1e6)
                assert failures == 0, f"{failures} reports not accepted ({name})"
                _, _, unsent = next(source)
                following = wire.decode(unsent).seq + 1
                if name in ("plain", "carried"):
                    next_seq["plain"] = next_seq["carried"] = following
                else:
                    next_seq[name] = following
                rates[name].append(rate)
    return rates, cpu_per_report


def over_quota_now(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("stunner_scaler_users_over_quota "):
                return float(line.split()[1])
    return -1.0


def relay_lists(health: str) -> int:
    with urllib.request.urlopen(f"{health}/status", timeout=5) as response:
        status = json.loads(response.read())
    count_: int = status["reporting"]["fleet_quota"]["users_over_quota"]
    return count_


async def until(check: object, within: float) -> float:
    """Seconds until ``check()`` is true (polled every 5 ms), at most ``within``."""
    started = time.perf_counter()
    deadline = started + within
    while not check():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def refusal_latency() -> list[float]:
    """Crossing the quota on relay A to relay B listing the user, over TRIALS trials."""
    latencies: list[float] = []
    fleet = {"namespace": "bench", "gateway": "bench-gateway", "interval": f"{INTERVAL:g}s"}
    with (
        scaler_process("--fleet-user-quota", "2") as scaler,
        pushing_relay(scaler.base, "bench-a", **fleet) as relay_a,
        pushing_relay(scaler.base, "bench-b", **fleet) as relay_b,
    ):
        async with TurnClient(relay_b.udp, USER, PASSWORD) as held:
            await held.allocate()
            await asyncio.sleep(INTERVAL)
            for trial in range(TRIALS):
                # Cross at a random phase of relay B's heartbeat.
                await asyncio.sleep(random.uniform(0, INTERVAL))
                async with TurnClient(relay_a.udp, USER, PASSWORD) as crossing:
                    await crossing.allocate()
                    latencies.append(await until(lambda: relay_lists(relay_b.health), 3 * INTERVAL))
                    async with TurnClient(relay_b.udp, USER, PASSWORD) as refused:
                        try:
                            await refused.allocate()
                        except TurnError as error:
                            assert error.code == 486, error.code
                        else:
                            raise AssertionError(f"trial {trial}: relay B allocated")
                    await crossing.refresh(0)
                await until(lambda: not relay_lists(relay_b.health), 3 * INTERVAL)
            await held.refresh(0)
    return latencies


def main() -> None:
    pin_self_to_client_core()
    users = user_variants(random.Random(7))
    plain_port, quota_port = free_port(), free_port()
    plain = start_bench_scaler(plain_port)
    quota = start_bench_scaler(quota_port, "--fleet-user-quota", str(FLEET_QUOTA))
    try:
        rates, cpu = asyncio.run(
            ingest_phases(
                (f"http://127.0.0.1:{plain_port}", plain.pid),
                (f"http://127.0.0.1:{quota_port}", quota.pid),
                users,
            )
        )
        over = over_quota_now(f"http://127.0.0.1:{quota_port}")
    finally:
        stop(plain)
        stop(quota)
    latencies = asyncio.run(refusal_latency())

    plain_rate = sum(rates["plain"]) / len(rates["plain"])
    users_rate = sum(rates["users"]) / len(rates["users"])
    plain_cpu = sum(cpu["plain"]) / len(cpu["plain"])
    users_cpu = sum(cpu["users"]) / len(cpu["users"])
    print(
        f"\n== fleet user quota: ingest at {RELAYS} relays x {USERS_PER_RELAY} users "
        f"(scalers pinned to one core, {PHASE_SECONDS:g} s phases, alternated)"
    )
    print(
        table(
            [
                ["reports", "phase reports/s", "mean reports/s", "server CPU per report"],
                [
                    "without users (no quota)",
                    " / ".join(map(str, rates["plain"])),
                    int(plain_rate),
                    f"{plain_cpu:.0f} us",
                ],
                [
                    "with users, quota off (carried, size-checked)",
                    " / ".join(map(str, rates["carried"])),
                    int(sum(rates["carried"]) / len(rates["carried"])),
                    f"{sum(cpu['carried']) / len(cpu['carried']):.0f} us",
                ],
                [
                    f"with users (--fleet-user-quota {FLEET_QUOTA})",
                    " / ".join(map(str, rates["users"])),
                    int(users_rate),
                    f"{users_cpu:.0f} us",
                ],
                [
                    "ratio with/without",
                    "",
                    f"{users_rate / plain_rate:.2f}x",
                    f"{users_cpu / plain_cpu:.2f}x",
                ],
            ]
        )
    )
    print(f"users over the quota at the end: {over:g} of the {USER_POOL} in the pool")
    print(
        f"\n== crossing the quota on relay A to relay B refusing ({TRIALS} trials, "
        f"--report-interval {INTERVAL:g}s)"
    )
    print(
        table(
            [
                ["min", "p50", "p90", "max", "max / report interval"],
                [
                    f"{min(latencies) * 1000:.0f} ms",
                    f"{percentile(latencies, 0.5) * 1000:.0f} ms",
                    f"{percentile(latencies, 0.9) * 1000:.0f} ms",
                    f"{max(latencies) * 1000:.0f} ms",
                    f"{max(latencies) / INTERVAL:.2f}",
                ],
            ]
        )
    )


if __name__ == "__main__":
    main()
