"""A WebRTC call between two real Chromium pages, signalled by the test itself.

The caller opens a data channel and sends a canvas video track; the callee echoes every
data channel message and answers with its fake camera's video. Signalling is non-trickle
(JSEP, RFC 8829 §3.5.1: gathering runs to completion first, no RFC 8838 trickling): the
test copies the offer and the answer, candidates included, from one page to the other with
Playwright's ``evaluate``, so no signalling server and no network beyond the test network
is involved. ``iceServers`` is always given explicitly: an empty list means host
candidates only, and a public STUN server is never contacted.

Every wait has a deadline on both sides: in the page (a rejected promise) and around each
``evaluate`` (:data:`STEP_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from playwright.async_api import Browser, Page

from tests.browser import secure_page

#: Bound on one signalling step, one echo or one stats poll, in seconds.
STEP_TIMEOUT: Final = 20.0
#: How long a page waits for ICE gathering to complete before it sends what it has, in
#: milliseconds (a TURN server that never answers, over UDP a firewall drops, holds gathering
#: up for about 40 s; an application gives up waiting sooner, as this does).
GATHER_MS: Final = 5_000

# Shared by both pages: wait until ICE gathering is done, so the SDP holds every candidate,
# or until GATHER_MS has passed, so it holds every candidate gathered by then.
_GATHERED = f"""
() => {{ window.gathered = (pc) => new Promise((resolve) => {{
  if (pc.iceGatheringState === 'complete') return resolve();
  const timer = setTimeout(resolve, {GATHER_MS});
  pc.addEventListener('icegatheringstatechange', () => {{
    if (pc.iceGatheringState === 'complete') {{ clearTimeout(timer); resolve(); }}
  }});
}}); }}
"""

_OFFER = """
async ({iceServers}) => {
  const pc = new RTCPeerConnection({iceServers});
  window.pc = pc;
  window.echoes = [];
  const channel = pc.createDataChannel('echo');
  window.channel = channel;
  channel.onmessage = (event) => window.echoes.push(event.data);
  // A small canvas that changes every frame: real VP8 media without a camera.
  const canvas = document.createElement('canvas');
  canvas.width = 160; canvas.height = 120;
  const context = canvas.getContext('2d');
  let frame = 0;
  window.painter = setInterval(() => {
    context.fillStyle = `hsl(${(frame += 13) % 360}, 80%, 50%)`;
    context.fillRect(0, 0, 160, 120);
  }, 40);
  const stream = canvas.captureStream(25);
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  await pc.setLocalDescription(await pc.createOffer());
  await window.gathered(pc);
  return pc.localDescription.sdp;
}
"""

_ANSWER = """
async ({iceServers, offer}) => {
  const pc = new RTCPeerConnection({iceServers});
  window.pc = pc;
  // The fake camera answers the caller's video (and its grant lets WebRTC gather every
  // interface's host candidate: see tests/browser.py).
  const camera = await navigator.mediaDevices.getUserMedia(
    {video: {width: 160, height: 120, frameRate: 15}});
  for (const track of camera.getTracks()) pc.addTrack(track, camera);
  pc.ondatachannel = (event) => {
    const channel = event.channel;
    channel.onmessage = (message) => channel.send('echo:' + message.data);
  };
  await pc.setRemoteDescription({type: 'offer', sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  await window.gathered(pc);
  return pc.localDescription.sdp;
}
"""

_ACCEPT = (
    "async (answer) => { await window.pc.setRemoteDescription({type: 'answer', sdp: answer}); }"
)

_STATE = "() => [window.pc.iceConnectionState, window.pc.connectionState]"

# The stats a test looks at, as plain objects (RTCStatsReport is a Map).
_STATS = "async () => Array.from((await window.pc.getStats()).values())"


@dataclass(frozen=True, slots=True)
class Call:
    """Both ends of one call: the caller's and the callee's page."""

    caller: Page
    callee: Page
    #: The descriptions exchanged, with every candidate gathered (within :data:`GATHER_MS`).
    offer: str
    answer: str

    async def state(self) -> tuple[str, str]:
        """The caller's ``iceConnectionState`` and ``connectionState``."""
        ice, connection = await self.caller.evaluate(_STATE)
        return (str(ice), str(connection))

    async def wait_for_state(self, wanted: str, within: float = STEP_TIMEOUT) -> None:
        """Until the caller's ``connectionState`` is ``wanted`` (or ``failed``/``closed``, which
        fail the wait early); polled every 100 ms, at most ``within`` seconds."""
        history: list[tuple[str, str]] = []
        deadline = asyncio.get_running_loop().time() + within
        while True:
            state = await self.state()
            if not history or history[-1] != state:
                history.append(state)
            if state[1] == wanted:
                return
            if state[1] in ("failed", "closed"):
                raise AssertionError(f"connection {state[1]}, wanted {wanted}: {history}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not {wanted} after {within} s: {history}")
            await asyncio.sleep(0.1)

    async def echo(self, messages: list[str]) -> list[str]:
        """Send ``messages`` on the open data channel; the echoes, once all are back."""
        script = """
        async (messages) => {
          if (window.channel.readyState !== 'open') {
            await new Promise((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error('data channel not open')), 10000);
              window.channel.onopen = () => { clearTimeout(timer); resolve(); };
            });
          }
          window.echoes = [];
          for (const message of messages) window.channel.send(message);
          const deadline = Date.now() + 10000;
          while (window.echoes.length < messages.length && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          return window.echoes;
        }
        """
        async with asyncio.timeout(STEP_TIMEOUT):
            echoes: list[str] = await self.caller.evaluate(script, messages)
        return echoes

    async def stats(self, page: Page) -> list[dict[str, Any]]:
        async with asyncio.timeout(STEP_TIMEOUT):
            report: list[dict[str, Any]] = await page.evaluate(_STATS)
        return report


async def _page(browser: Browser, *, secure: bool) -> Page:
    page = await (secure_page(browser) if secure else browser.new_page())
    await page.evaluate(_GATHERED)
    return page


async def call(
    caller: Browser,
    callee: Browser,
    *,
    caller_ice: list[dict[str, Any]],
    callee_ice: list[dict[str, Any]],
) -> Call:
    """Offer from a page of ``caller``, answer from a page of ``callee``, each with its own
    ``iceServers`` (``callee`` runs with :data:`tests.browser.FAKE_MEDIA_DEVICES`); returns
    once both descriptions are set (ICE may still be checking)."""
    offering, answering = await asyncio.gather(
        _page(caller, secure=False), _page(callee, secure=True)
    )
    async with asyncio.timeout(STEP_TIMEOUT):
        offer = await offering.evaluate(_OFFER, {"iceServers": caller_ice})
        answer = await answering.evaluate(_ANSWER, {"iceServers": callee_ice, "offer": offer})
        await offering.evaluate(_ACCEPT, answer)
    return Call(offering, answering, offer, answer)


def by_type(report: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The entries of a stats report of one ``type`` (``candidate-pair``, ``inbound-rtp``…)."""
    return [entry for entry in report if entry.get("type") == kind]


def candidates(sdp: str) -> list[tuple[str, str]]:
    """``(type, address)`` of every UDP candidate in a description (RFC 8839 §5.1)."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if fields[2].lower() == "udp":
                found.append((fields[7], fields[4]))
    return found


async def packets_received(page: Page, kind: str = "video") -> int:
    """RTP packets of ``kind`` the page has received so far (``inbound-rtp`` stats)."""
    async with asyncio.timeout(STEP_TIMEOUT):
        report: list[dict[str, Any]] = await page.evaluate(_STATS)
    return sum(
        int(entry["packetsReceived"])
        for entry in by_type(report, "inbound-rtp")
        if entry.get("kind") == kind
    )


def selected_pair(report: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The local and the remote candidate of the transport's selected candidate pair."""
    ids = {entry["id"]: entry for entry in report}
    (transport,) = by_type(report, "transport")
    pair = ids[transport["selectedCandidatePairId"]]
    return ids[pair["localCandidateId"]], ids[pair["remoteCandidateId"]]
