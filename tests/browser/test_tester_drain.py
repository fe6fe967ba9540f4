"""A call keeps its media through a relay drain: SIGTERM to the relay process while the
tester page holds calls through it. Packets keep arriving (getStats, as the page shows
them), the scaler stops counting the relay, a new tab is refused, and the relay exits as
soon as the page hangs up. The in-cluster shape: ``python -m scaler``, ``python -m relay``
and ``turnscale auth`` as three processes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.browser import chromium
from tests.browser.fleet import REST_SECRET, gateway_auth
from tests.browser.tester import diagnostics, open_tester, verdicts
from tests.e2e.processes import pushing_relay, scaler_process
from tests.e2e.watch import watching
from tests.waiting import eventually

FLEET = {"namespace": "stunner", "gateway": "stunner-gateway"}
POD = "relay-drained"
#: Seconds of media checked after SIGTERM, one getStats reading (shown by the page) each.
DRAINING_ROUNDS = 4


def packets(found: dict[str, object]) -> list[int]:
    calls = found["calls"]
    assert isinstance(calls, list)
    return [int(call["packetsReceived"]) for call in calls]


async def test_media_keeps_flowing_through_a_relay_drain_until_the_page_hangs_up(
    tmp_path: Path,
) -> None:
    with (
        scaler_process() as scaler,
        pushing_relay(scaler.base, POD, "--auth-secret", REST_SECRET, **FLEET) as relay,
    ):
        listeners = [("udp", relay.udp[1]), ("tcp", relay.tcp[1])]
        with gateway_auth(tmp_path, listeners) as auth:
            async with (
                watching(scaler.http, scaler.grpc, **FLEET) as watch,
                chromium() as browser,
            ):
                page = await open_tester(browser, auth.tester)
                found = await verdicts(page)
                assert [c["ok"] for c in found["calls"]] == [True, True], found
                await eventually(lambda: watch.shows(4, {POD: 4}), "the calls counted")

                relay.process.send_signal(signal.SIGTERM)
                relay.wait_for("relay draining")
                # Draining: still exported with its allocations, no longer counted for scaling.
                await eventually(lambda: watch.shows(0, {POD: 4}), "the relay not counted")
                before = packets(await diagnostics(page))
                for _ in range(DRAINING_ROUNDS):
                    await asyncio.sleep(1.0)
                    now = await diagnostics(page)
                    assert all(c["status"] == "connected" for c in now["calls"]), now
                    after = packets(now)
                    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
                    before = after
                assert relay.process.poll() is None, "the relay left before the calls ended"

                late = await open_tester(browser, auth.tester)
                refused = await verdicts(late)
                assert len(refused["calls"]) == 2, refused
                for call in refused["calls"]:
                    assert not call["ok"], call
                    assert "(403): is it draining?" in call["error"], call
                await late.context.close()

                await page.click("#hangup")
                assert await asyncio.to_thread(relay.wait) == 0
                (finished,) = relay.events("drain finished")
                assert (finished["outcome"], finished["allocations_left"]) == ("drained", 0)
                await eventually(lambda: watch.shows(0, {POD: 0}), "the last report says 0")
