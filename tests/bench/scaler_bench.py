"""Report ingest benchmark: turnscale scaler against a real Prometheus Pushgateway.

Both servers run pinned to one core and get the same relay states over
keep-alive HTTP from a load generator on the other core. Prints reports/s,
events/s, ingest latency, /metrics render time at 10, 100 and 1000 relays, and
the scaler's memory. Bounded: every phase runs for a fixed time on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from itertools import count

import aiohttp

from scaler import wire
from tests.bench.common import (
    free_port,
    percentile,
    pin_self_to_client_core,
    rss_kib,
    start_pinned,
    start_scaler,
    stop,
    table,
    wait_http,
)
from tests.reports import created, deleted, report

CONCURRENCY = 32
PHASE_SECONDS = 5.0
RELAY_COUNTS = (10, 100, 1000)
EVENTS_PER_REPORT = 50


def snapshot(pod: int, seq: int, events: int = 0) -> wire.Report:
    evs: list[wire.Event] = []
    for n in range(events // 2):
        evs.append(created(f"{seq}-{n}"))
        evs.append(deleted(f"{seq}-{n}", duration=float(n)))
    return report(
        f"relay-{pod}",
        seq=seq,
        udp=seq % 100,
        tcp=seq % 7,
        connections={"udp": seq * 3, "tcp": seq},
        received={"client": seq * 1000, "peer": seq * 900},
        sent={"client": seq * 950, "peer": seq * 1010},
        events=evs,
    )


def pushgateway_body(item: wire.Report) -> bytes:
    """The same relay state in the exposition format a Pushgateway user would push."""
    state = item.state
    lines = ["# TYPE stunner_allocations_active gauge"]
    lines += [
        f'stunner_allocations_active{{transport="{t}"}} {v}' for t, v in state.allocations.items()
    ]
    lines.append("# TYPE stunner_connections_total counter")
    lines += [
        f'stunner_connections_total{{transport="{t}"}} {v}'
        for t, v in state.connections_total.items()
    ]
    for name, values in (
        ("stunner_bytes_received_total", state.bytes_received_total),
        ("stunner_bytes_sent_total", state.bytes_sent_total),
    ):
        lines.append(f"# TYPE {name} counter")
        lines += [f'{name}{{side="{side}"}} {v}' for side, v in values.items()]
    return ("\n".join(lines) + "\n").encode()


Request = tuple[str, str, bytes]  # method, url, body


def fresh_reports(base: str, first_seq: int, events: int = 0) -> Iterator[Request]:
    """Every pod's next seq, round-robin: each request is a new state, never a duplicate."""
    for seq in count(first_seq):
        for pod in range(1000):
            yield ("POST", f"{base}/v1/reports", wire.encode(snapshot(pod, seq, events)))


async def drive(
    session: aiohttp.ClientSession,
    source: Iterator[Request],
    headers: dict[str, str],
    seconds: float,
    ok: Callable[[int], bool],
) -> tuple[int, list[float], int]:
    """Send requests from ``source`` with CONCURRENCY workers for ``seconds``."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            method, url, body = next(source)
            start = time.perf_counter()
            async with session.request(method, url, data=body, headers=headers) as response:
                await response.read()
                if not ok(response.status):
                    failures += 1
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    return int(len(latencies) / elapsed), latencies, failures


async def metrics_render_ms(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    times = []
    size = 0
    for _ in range(15):
        start = time.perf_counter()
        async with session.get(url) as response:
            size = len(await response.read())
        times.append((time.perf_counter() - start) * 1000)
    return percentile(times, 0.5), size


async def bench_scaler(base: str) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    results: dict[str, object] = {}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        seq = 1
        render = []
        for relays in RELAY_COUNTS:
            for pod in range(relays):
                body = wire.encode(snapshot(pod, seq))
                async with session.post(f"{base}/v1/reports", data=body, headers=headers) as r:
                    assert r.status in (200, 202), await r.text()
            median, size = await metrics_render_ms(session, f"{base}/metrics")
            render.append((relays, median, size))
        results["render"] = render

        # Snapshot-only reports from 1000 relays; only 202 (accepted, applied) counts.
        source = fresh_reports(base, seq + 1)
        rate, latencies, failures = await drive(
            session, source, headers, PHASE_SECONDS, lambda status: status == 202
        )
        results["reports"] = (rate, percentile(latencies, 0.5), percentile(latencies, 0.99))
        results["report_failures"] = failures

        # Continue every pod's seq past the last phase (seq of a relay only grows).
        _, _, unsent = next(source)
        last = wire.decode(unsent).seq
        with_events = fresh_reports(base, last + 1, EVENTS_PER_REPORT)
        rate, latencies, failures = await drive(
            session, with_events, headers, PHASE_SECONDS, lambda status: status == 202
        )
        results["events"] = (
            rate * EVENTS_PER_REPORT,
            rate,
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
        )
        results["event_failures"] = failures
    return results


async def bench_pushgateway(base: str) -> tuple[int, float, float, int]:
    def bodies() -> Iterator[Request]:
        for seq in count(1):
            for pod in range(1000):
                body = pushgateway_body(snapshot(pod, seq))
                yield ("PUT", f"{base}/metrics/job/stunner/pod/relay-{pod}", body)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        rate, latencies, failures = await drive(
            session, bodies(), {"Content-Type": "text/plain"}, PHASE_SECONDS, lambda s: s < 300
        )
    return rate, percentile(latencies, 0.5), percentile(latencies, 0.99), failures


def main() -> None:
    pin_self_to_client_core()
    port = free_port()
    scaler = start_scaler(port, 0)
    try:
        results = asyncio.run(bench_scaler(f"http://127.0.0.1:{port}"))
        memory = rss_kib(scaler.pid)
    finally:
        stop(scaler)

    pushgateway = None
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary:
        gw_port = free_port()
        gateway = start_pinned(
            [binary, f"--web.listen-address=127.0.0.1:{gw_port}", "--log.level=warn"]
        )
        try:
            wait_http(f"http://127.0.0.1:{gw_port}/-/ready")
            pushgateway = asyncio.run(bench_pushgateway(f"http://127.0.0.1:{gw_port}"))
        finally:
            stop(gateway)

    print(
        "\n== scaler ingest (server pinned to one core, "
        f"{CONCURRENCY} keep-alive connections, {PHASE_SECONDS:g} s per phase)"
    )
    reports = results["reports"]
    events = results["events"]
    assert isinstance(reports, tuple) and isinstance(events, tuple)
    rows: list[list[object]] = [["server", "relay-state updates/s", "p50 ms", "p99 ms", "failures"]]
    rows.append(
        [
            "turnscale scaler",
            reports[0],
            f"{reports[1] * 1000:.2f}",
            f"{reports[2] * 1000:.2f}",
            results["report_failures"],
        ]
    )
    if pushgateway:
        rows.append(
            [
                "prometheus-pushgateway",
                pushgateway[0],
                f"{pushgateway[1] * 1000:.2f}",
                f"{pushgateway[2] * 1000:.2f}",
                pushgateway[3],
            ]
        )
        rows.append(
            [
                "ratio turnscale/pushgateway",
                f"{reports[0] / max(pushgateway[0], 1):.2f}x",
                "",
                "",
                "",
            ]
        )
    else:
        rows.append(["prometheus-pushgateway", "not installed", "", "", ""])
    print(table(rows))
    print(
        f"\nevents: {events[0]} events/s ({events[1]} reports/s of {EVENTS_PER_REPORT} events), "
        f"p50 {events[2] * 1000:.2f} ms, p99 {events[3] * 1000:.2f} ms, "
        f"failures {results['event_failures']}"
    )
    render = results["render"]
    assert isinstance(render, list)
    print(
        "\n"
        + table(
            [
                ["relays", "/metrics median ms", "bytes"],
                *[[n, f"{ms:.1f}", size] for n, ms, size in render],
            ]
        )
    )
    print(f"\nscaler RSS after the run: {memory / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
