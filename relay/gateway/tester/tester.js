// turnscale ICE tester. For every TURN URL that this server's /ice returns, a relay-only call
// between two RTCPeerConnections in this page (iceTransportPolicy "relay": only relayed
// candidates, RFC 8656 allocations, are gathered), carrying a data channel echo and a
// synthetic canvas video. Plain script, no dependencies, nothing fetched from elsewhere.
"use strict";

(() => {
  const CONNECT_TIMEOUT_MS = 15000;
  const TICK_MS = 1000;          // stats and echo pings, per call
  const MAX_CALLS = 16;          // an /ice answer with more URLs is cut here
  const MAX_ERRORS = 20;         // candidate errors (and candidates) kept per call
  const MAX_RTT_SAMPLES = 30;
  const VIDEO_FPS = 15;

  const $ = (selector, root = document) => root.querySelector(selector);
  const page = { calls: [], ice: null, startedAt: null, token: "" };

  // The caller token travels in the fragment: browsers never send a fragment to the server,
  // so it appears in no request line, access log or Referer. It leaves the address bar too.
  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token !== null) {
      history.replaceState(null, "", location.pathname + location.search);
    }
    return token || "";
  }

  async function fetchIce(token) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    let response;
    try {
      response = await fetch("ice?service=turn&username=ice-tester",
        { headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    } catch (error) {
      throw new Error("GET /ice failed: " + error.message);
    }
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const why = body && typeof body.error === "string" ? body.error : response.statusText;
      throw new Error(`GET /ice answered ${response.status}: ${why}`);
    }
    if (!body || !Array.isArray(body.iceServers)) {
      throw new Error("GET /ice answered no iceServers");
    }
    return body;
  }

  // One entry per turn:/turns: URL, each with the credentials of its server.
  function turnServers(answer) {
    const out = [];
    for (const server of answer.iceServers) {
      const urls = Array.isArray(server.urls) ? server.urls : [server.urls];
      for (const url of urls) {
        if (typeof url === "string" && /^turns?:/.test(url)) {
          out.push({ url, username: server.username, credential: server.credential });
        }
      }
    }
    return out.slice(0, MAX_CALLS);
  }

  // One synthetic video source for every call: a moving bar and a frame counter.
  let source = null;
  function videoSource() {
    if (source) return source;
    const canvas = document.createElement("canvas");
    canvas.width = 320;
    canvas.height = 240;
    const g = canvas.getContext("2d");
    let frame = 0;
    const draw = () => {
      frame += 1;
      g.fillStyle = "#203040";
      g.fillRect(0, 0, canvas.width, canvas.height);
      g.fillStyle = "#f0c000";
      g.fillRect((frame * 4) % canvas.width, 60, 40, 120);
      g.fillStyle = "#ffffff";
      g.font = "24px monospace";
      g.fillText("turnscale " + frame, 16, 40);
    };
    draw();
    const timer = setInterval(draw, 1000 / VIDEO_FPS);
    source = { stream: canvas.captureStream(VIDEO_FPS), timer };
    return source;
  }

  // What an icecandidateerror means for an operator (RFC 8656 §6.4 error codes; 7xx are
  // the browser's own: no answer, no connection, no TLS session).
  function hint(error, url) {
    if (error.errorCode === 401) return "the TURN server refused these credentials (401): " +
      "the relays and /ice do not share the secret, or the clocks disagree";
    if (error.errorCode === 403) return "the TURN server refused the allocation (403): is it draining?";
    if (error.errorCode === 486) return "allocation quota reached (486)";
    if (error.errorCode === 508) return "the TURN server is out of relay ports (508)";
    if (error.errorCode >= 700 && url.startsWith("turns:")) {
      return `no TLS connection (${error.errorCode} ${error.errorText}): is the certificate ` +
        "valid for this host name and trusted by this browser?";
    }
    if (error.errorCode >= 700) return `no answer (${error.errorCode} ${error.errorText}): ` +
      "is the TURN server reachable on this port and transport?";
    return `${error.errorCode} ${error.errorText}`;
  }

  function describeError(event) {
    return {
      errorCode: event.errorCode,
      errorText: event.errorText || "",
      url: event.url || "",
      address: event.address || null,
      port: event.port || null,
    };
  }

  class Call {
    constructor(server, view) {
      this.server = server;
      this.view = view;
      this.status = "connecting";
      this.error = null;
      this.connectMs = null;
      this.rttMs = [];
      this.bitrateKbps = null;
      this.packetsReceived = 0;
      this.packetsLost = 0;
      this.framesDecoded = 0;
      this.bytesReceived = 0;
      this.gathered = [];
      this.selected = null;
      this.relayProtocol = null;
      this.candidateErrors = [];
      this.timers = [];
      this.previous = null;
      this.seq = 0;
    }

    get ok() {
      return this.status === "connected" || (this.status === "hung up" && this.connectMs !== null && !this.error);
    }

    async start() {
      const t0 = performance.now();
      const config = {
        iceServers: [{ urls: [this.server.url], username: this.server.username,
                       credential: this.server.credential }],
        iceTransportPolicy: "relay",
      };
      const a = new RTCPeerConnection(config);
      const b = new RTCPeerConnection(config);
      this.pcs = [a, b];
      // A candidate may arrive before the other side has its remote description.
      const remoteSet = new Map();
      for (const pc of this.pcs) {
        let resolve;
        remoteSet.set(pc, { promise: new Promise((r) => { resolve = r; }), resolve });
      }
      const wire = (pc, other) => {
        pc.onicecandidate = (event) => {
          if (!event.candidate) return;
          const c = event.candidate;
          // A relayed candidate is one allocation on the TURN server (RFC 8656 §7).
          if (this.gathered.length < MAX_ERRORS) {
            this.gathered.push({ type: c.type || "unknown", address: c.address, port: c.port,
                                 relayProtocol: c.relayProtocol || null });
          }
          remoteSet.get(other).promise
            .then(() => other.addIceCandidate(event.candidate))
            .catch((error) => this.fail("addIceCandidate: " + error.message));
        };
        pc.onicecandidateerror = (event) => {
          if (this.candidateErrors.length < MAX_ERRORS) {
            this.candidateErrors.push(describeError(event));
          }
          this.render();
        };
        pc.onicegatheringstatechange = () => {
          if (pc.iceGatheringState === "complete" && this.status === "connecting"
              && !this.gathered.some((c) => c.type === "relay")) {
            const first = this.candidateErrors[0];
            this.fail("no relayed candidate: the TURN server gave no allocation" +
              (first ? "; " + hint(first, this.server.url) : ""));
          }
        };
        pc.onconnectionstatechange = () => {
          const s = pc.connectionState;
          if ((s === "failed" || s === "disconnected") && this.status !== "hung up") {
            this.fail(this.status === "connected" ? "connection lost (" + s + ")" : "ICE " + s);
          }
        };
      };
      wire(a, b);
      wire(b, a);

      const channel = a.createDataChannel("echo", { ordered: true });
      b.ondatachannel = (event) => {
        const echo = event.channel;
        echo.onmessage = (message) => echo.send(message.data);
      };
      channel.onmessage = (message) => {
        const sent = JSON.parse(message.data).t;
        this.rttMs.push(performance.now() - sent);
        if (this.rttMs.length > MAX_RTT_SAMPLES) this.rttMs.shift();
      };
      this.channel = channel;
      const track = videoSource().stream.getVideoTracks()[0].clone();
      this.track = track;
      a.addTrack(track, new MediaStream([track]));
      b.ontrack = (event) => {
        const video = this.view.video;
        video.srcObject = event.streams[0] || new MediaStream([event.track]);
        video.play().catch(() => { /* muted autoplay; a refusal only hides the preview */ });
      };

      const opened = new Promise((resolve) => { channel.onopen = resolve; });
      await a.setLocalDescription();
      await b.setRemoteDescription(a.localDescription);
      remoteSet.get(b).resolve();
      await b.setLocalDescription();
      await a.setRemoteDescription(b.localDescription);
      remoteSet.get(a).resolve();

      const timeout = new Promise((resolve) => {
        this.timers.push(setTimeout(resolve, CONNECT_TIMEOUT_MS, "timeout"));
      });
      const outcome = await Promise.race([opened.then(() => "open"), timeout, this.failed()]);
      if (this.status !== "connecting") return;
      if (outcome !== "open") {
        this.fail(`not connected within ${CONNECT_TIMEOUT_MS / 1000} s`);
        return;
      }
      this.connectMs = Math.round(performance.now() - t0);
      this.status = "connected";
      await this.tick();
      this.timers.push(setInterval(() => this.tick(), TICK_MS));
      this.render();
    }

    failed() {
      return new Promise((resolve) => { this.onFail = resolve; });
    }

    fail(reason) {
      if (this.status === "failed" || this.status === "hung up") return;
      this.status = "failed";
      this.error = reason;
      this.close();
      if (this.onFail) this.onFail("failed");
      render();
    }

    async tick() {
      if (this.status !== "connected") return;
      if (this.channel.readyState === "open") {
        this.channel.send(JSON.stringify({ seq: ++this.seq, t: performance.now() }));
      }
      const [sent, received] = await Promise.all(this.pcs.map((pc) => pc.getStats()));
      const pairs = [selectedPair(sent), selectedPair(received)];
      this.selected = { caller: pairs[0], callee: pairs[1] };
      this.relayProtocol = pairs[0] ? pairs[0].relayProtocol : null;
      received.forEach((report) => {
        if (report.type === "inbound-rtp" && report.kind === "video") {
          const now = { bytes: report.bytesReceived || 0, at: report.timestamp };
          if (this.previous && now.at > this.previous.at) {
            this.bitrateKbps = Math.round((now.bytes - this.previous.bytes) * 8 / (now.at - this.previous.at));
          }
          this.previous = now;
          this.packetsReceived = report.packetsReceived || 0;
          this.packetsLost = report.packetsLost || 0;
          this.framesDecoded = report.framesDecoded || 0;
          this.bytesReceived = report.bytesReceived || 0;
        }
      });
      const types = this.usedTypes();
      const other = types.find((type) => type !== "relay");
      if (other !== undefined) {
        this.fail(`a ${other} candidate was used: the call did not go through the relay`);
        return;
      }
      render();
    }

    usedTypes() {
      const types = [];
      for (const pair of [this.selected && this.selected.caller, this.selected && this.selected.callee]) {
        if (pair) types.push(pair.local, pair.remote);
      }
      return types;
    }

    close() {
      for (const timer of this.timers) { clearTimeout(timer); clearInterval(timer); }
      this.timers = [];
      if (this.track) this.track.stop();
      for (const pc of this.pcs || []) pc.close();
    }

    hangUp() {
      if (this.status === "connected" || this.status === "connecting") {
        this.close();
        this.status = "hung up";
      }
    }

    diagnostics() {
      const rtt = this.rttMs.length ? this.rttMs[this.rttMs.length - 1] : null;
      return {
        url: this.server.url,
        status: this.status,
        ok: this.ok,
        error: this.error,
        connectMs: this.connectMs,
        rttMs: rtt === null ? null : Math.round(rtt * 10) / 10,
        rttSamplesMs: this.rttMs.map((v) => Math.round(v * 10) / 10),
        bitrateKbps: this.bitrateKbps,
        packetsReceived: this.packetsReceived,
        packetsLost: this.packetsLost,
        framesDecoded: this.framesDecoded,
        bytesReceived: this.bytesReceived,
        relayProtocol: this.relayProtocol,
        candidateTypesGathered: [...new Set(this.gathered.map((c) => c.type))],
        relayedCandidates: this.gathered.filter((c) => c.type === "relay").length,
        candidates: this.gathered,
        candidateTypesUsed: [...new Set(this.usedTypes())],
        selected: this.selected,
        candidateErrors: this.candidateErrors,
      };
    }

    render() {
      const d = this.diagnostics();
      const v = this.view;
      const words = {
        connecting: "CONNECTING…",
        connected: "PASS: connected through the relay",
        failed: "FAIL: " + d.error,
        "hung up": d.ok ? "PASS: connected, then hung up" : "hung up",
      };
      v.status.textContent = words[d.status];
      v.root.classList.toggle("pass", d.ok);
      v.root.classList.toggle("fail", d.status === "failed");
      v.connect.textContent = d.connectMs === null ? "-" : `${d.connectMs} ms`;
      v.rtt.textContent = d.rttMs === null ? "-" : `${d.rttMs} ms`;
      v.bitrate.textContent = d.bitrateKbps === null ? "-" : `${d.bitrateKbps} kbit/s`;
      v.packets.textContent = `${d.packetsReceived} / ${d.packetsLost}`;
      v.frames.textContent = String(d.framesDecoded);
      v.candidates.textContent = d.candidateTypesUsed.length
        ? d.candidateTypesUsed.join(", ") + (d.relayProtocol ? ` (to the TURN server over ${d.relayProtocol})` : "")
        : (d.candidateTypesGathered.length ? "gathered: " + d.candidateTypesGathered.join(", ") : "-");
      const errors = new Set(d.candidateErrors.map((e) => `${e.errorCode} ${e.errorText} (${e.url})`));
      v.errors.textContent = errors.size ? [...errors].join("; ") : "none";
    }
  }

  function selectedPair(stats) {
    let pairId = null;
    stats.forEach((report) => {
      if (report.type === "transport" && report.selectedCandidatePairId) pairId = report.selectedCandidatePairId;
    });
    const pair = pairId && stats.get(pairId);
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      local: local ? local.candidateType : "unknown",
      remote: remote ? remote.candidateType : "unknown",
      relayProtocol: local && local.relayProtocol ? local.relayProtocol : null,
      stunRttMs: typeof pair.currentRoundTripTime === "number" ? Math.round(pair.currentRoundTripTime * 1000) : null,
    };
  }

  function newView(url) {
    const root = $("#result-template").content.firstElementChild.cloneNode(true);
    $(".url", root).textContent = url;
    $("#results").append(root);
    return {
      root,
      status: $(".status", root),
      connect: $(".connect-time", root),
      rtt: $(".rtt", root),
      bitrate: $(".bitrate", root),
      packets: $(".packets", root),
      frames: $(".frames", root),
      candidates: $(".candidates", root),
      errors: $(".errors", root),
      video: $("video", root),
    };
  }

  function diagnostics() {
    return {
      tester: "turnscale ICE tester",
      page: location.origin + location.pathname,
      userAgent: navigator.userAgent,
      startedAt: page.startedAt,
      ice: page.ice,
      calls: page.calls.map((call) => call.diagnostics()),
    };
  }

  function render() {
    for (const call of page.calls) call.render();
    const summary = $("#summary");
    if (page.ice && page.ice.error) {
      summary.textContent = "FAIL: " + page.ice.error;
    } else if (page.calls.length) {
      const done = page.calls.filter((c) => c.status !== "connecting").length;
      const ok = page.calls.filter((c) => c.ok).length;
      const live = page.calls.filter((c) => c.status === "connected").length;
      summary.textContent = done < page.calls.length
        ? `Testing ${page.calls.length} TURN server URLs…`
        : `${ok} of ${page.calls.length} TURN server URLs connected` + (live ? ` (${live} calls up)` : "");
    }
    $("#diagnostics").value = JSON.stringify(diagnostics(), null, 2);
    $("#hangup").disabled = !page.calls.some((c) => c.status === "connected" || c.status === "connecting");
    $("#copy").disabled = page.startedAt === null;
  }

  function hangUp() {
    for (const call of page.calls) call.hangUp();
    render();
  }

  async function run() {
    hangUp();
    page.calls = [];
    page.ice = null;
    page.startedAt = new Date().toISOString();
    $("#results").replaceChildren();
    $("#summary").textContent = "Fetching /ice…";
    page.token = $("#token").value.trim();
    let servers;
    try {
      servers = turnServers(await fetchIce(page.token));
      page.ice = { ok: true, urls: servers.map((s) => s.url), error: null };
      if (!servers.length) throw new Error("GET /ice answered no turn: or turns: URL");
    } catch (error) {
      page.ice = { ok: false, urls: [], error: error.message };
      render();
      return;
    }
    page.calls = servers.map((server) => new Call(server, newView(server.url)));
    render();
    await Promise.all(page.calls.map((call) =>
      call.start().catch((error) => call.fail(error.message || String(error)))));
    render();
  }

  async function copyDiagnostics() {
    const text = JSON.stringify(diagnostics(), null, 2);
    $("#diagnostics").value = text;
    try {
      await navigator.clipboard.writeText(text);
      $("#copy-status").textContent = "Diagnostics copied to the clipboard.";
    } catch (_) {
      // No clipboard permission: leave the JSON selected for Ctrl-C.
      $("#diagnostics-box").open = true;
      $("#diagnostics").select();
      $("#copy-status").textContent = "Diagnostics selected below: press Ctrl-C to copy.";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#token").value = takeTokenFromFragment();
    $("#controls").addEventListener("submit", (event) => { event.preventDefault(); run(); });
    $("#hangup").addEventListener("click", hangUp);
    $("#copy").addEventListener("click", copyDiagnostics);
    window.addEventListener("pagehide", hangUp);
    run();
  });
})();
