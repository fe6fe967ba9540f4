"""Tester tabs are real load: their allocations reach Prometheus (``/metrics``), KEDA's
metrics-api (``/v1/scale``) and KEDA's external scaler (gRPC ``GetMetrics``) within a
second, move ``desiredReplicas``, and leave when the tabs close."""

from __future__ import annotations

import functools

import aiohttp
from playwright.async_api import BrowserContext

from tests.browser import chromium
from tests.browser.fleet import embedded_run
from tests.browser.tester import open_tester, verdicts
from tests.e2e.watch import watching
from tests.waiting import eventually

#: turnscale run's relay, in its reports.
FLEET = {"namespace": "stunner", "gateway": "stunner-gateway"}
POD = "demo-relay"
#: A tab calls through UDP and TCP, two peer connections each: 4 allocations.
PER_TAB = 4


async def relay_holds(health: str) -> int:
    """Allocations the relay itself says it holds (its /status)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{health}/status") as r:
        body = await r.json()
    return sum(body["allocations"].values())


async def test_tabs_show_in_the_scaler_within_a_second_and_leave_when_closed() -> None:
    with embedded_run("--target-per-replica", str(PER_TAB)) as run:
        health = run.addresses["health"]
        async with (
            watching(run.addresses["http"], run.addresses["grpc"], **FLEET) as watch,
            chromium() as browser,
        ):
            await eventually(lambda: watch.shows(0, {POD: 0}), "the relay reported")
            tabs: list[BrowserContext] = []
            for count in (1, 2, 3):
                page = await open_tester(browser, run.tester)
                tabs.append(page.context)
                found = await verdicts(page)
                assert [c["ok"] for c in found["calls"]] == [True, True], found
                # One relayed candidate, one allocation, per peer connection and URL.
                assert sum(c["relayedCandidates"] for c in found["calls"]) == PER_TAB
                held = count * PER_TAB

                async def relay_has(held: int = held) -> bool:
                    return await relay_holds(health) == held

                await eventually(relay_has, f"the relay holding {held} allocations")
                await eventually(
                    functools.partial(watch.shows, held, {POD: held}),
                    f"{held} allocations in /metrics, /v1/scale and GetMetrics",
                    within=1.0,
                )
                assert watch.latest is not None
                assert watch.latest.scale["desiredReplicas"] == max(2, count)

            for tab in tabs:  # closing a tab releases its allocations (Refresh, lifetime 0)
                await tab.close()
            await eventually(lambda: watch.shows(0, {POD: 0}), "every allocation released")
            assert watch.latest is not None and watch.latest.scale["desiredReplicas"] == 2
        watch.check_sound()
