"""uclient loads in alternating rounds, for comparisons on shared cores.

Every server is up at once and each load runs against each server in turn, ``rounds`` times.
A change in what else runs on the machine then hits every server alike, and one unlucky run
no longer decides a ratio. A row is the sum of the rounds, a ratio the median of the
per-round ratios. The per-round ratios are printed beside it, so the spread is visible.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.bench.relay_bench import Load, LoadResult, run_uclient

__all__ = [
    "FLOOD",
    "MESSAGE_ROUNDS",
    "PACED",
    "Server",
    "alternating_loads",
    "cpu_ratios",
    "load_rows",
    "merged",
    "per_message_us",
    "print_cpu_ratio",
]

#: The secure-transport comparison loads (TLS, DTLS): coturn loses nothing at the paced one,
#: and much over TLS at the flood.
PACED = Load("paced", 10, 1000, 5)
FLOOD = Load("flood", 10, 1000, 0)
#: Rounds of each load per server (the per-round ratios move by up to ±30% on shared cores).
MESSAGE_ROUNDS = 5


@dataclass(frozen=True)
class Server:
    """A running server to load: its port, its process id (for its CPU time) and the uclient
    flags that pick the transport (``-S``, ``-t -S``)."""

    port: int
    pid: int
    flags: Sequence[str] = ()


def alternating_loads(
    servers: Mapping[str, Server],
    loads: Sequence[Load],
    peer_port: int,
    rounds: int = MESSAGE_ROUNDS,
) -> dict[Load, dict[str, list[LoadResult]]]:
    """``rounds`` rounds; in each, every load against every server, the servers' order
    rotated by one from round to round (no server always runs first or last)."""
    results: dict[Load, dict[str, list[LoadResult]]] = {
        load: {name: [] for name in servers} for load in loads
    }
    names = list(servers)
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for load in loads:
            for name in order:
                server = servers[name]
                outcome = run_uclient(load, server.port, peer_port, server.pid, server.flags)
                results[load][name].append(outcome)
    return results


def merged(results: Sequence[LoadResult]) -> LoadResult:
    """The rounds as one: messages, losses and CPU summed, the median rate."""
    total = LoadResult(
        sent=sum(r.sent for r in results),
        received=sum(r.received for r in results),
        lost=sum(max(r.lost, 0) for r in results),
        cpu=sum(r.cpu for r in results),
        wall=sum(r.wall for r in results),
    )
    total.loss_percent = 100.0 * total.lost / total.sent if total.sent else float("nan")
    rates = [r.rate for r in results if r.rate == r.rate]  # NaN: a run without a ramp
    total.rate = statistics.median(rates) if rates else float("nan")
    if any(r.lost < 0 for r in results):
        total.lost = -1  # a run gave no result: say so rather than undercount
    return total


def per_message_us(result: LoadResult) -> float:
    """Server CPU microseconds per delivered message."""
    return result.cpu / result.received * 1e6 if result.received else float("nan")


def cpu_ratios(ours: Sequence[LoadResult], theirs: Sequence[LoadResult]) -> list[float]:
    """CPU per message, ours over theirs, round by round (rounds where both delivered and
    used measurable CPU)."""
    return [
        per_message_us(mine) / per_message_us(other)
        for mine, other in zip(ours, theirs, strict=True)
        if mine.received and other.received and other.cpu > 0
    ]


def load_rows(
    names: Sequence[str], by_server: Mapping[str, Sequence[LoadResult]]
) -> list[list[object]]:
    """A table of the rounds summed, one row per server in ``names``."""
    rows: list[list[object]] = [
        ["server", "messages", "msgs/s (median)", "loss", "server CPU s", "CPU us per message"]
    ]
    for name in names:
        r = merged(by_server[name])
        rows.append(
            [
                name,
                f"{r.received:,}/{r.sent:,}",
                f"{r.rate:,.0f}",
                f"{r.lost} ({r.loss_percent:.2f}%)",
                f"{r.cpu:.2f}",
                f"{per_message_us(r):.1f}",
            ]
        )
    return rows


def print_cpu_ratio(
    label: str,
    ours: Sequence[LoadResult],
    theirs: Sequence[LoadResult],
    goal: float | None = None,
) -> None:
    """The median of the per-round CPU-per-message ratios, the rounds' ratios beside it."""
    ratios = cpu_ratios(ours, theirs)
    if not ratios:
        print(f"server CPU per message, {label}: no round to compare")
        return
    each = ", ".join(f"{r:.2f}" for r in ratios)
    target = f" (goal <= {goal})" if goal is not None else ""
    print(
        f"server CPU per message, {label}: {statistics.median(ratios):.2f} median of the "
        f"rounds [{each}]{target}"
    )
