// rtstream remote viewer page: plain JS, no dependencies, works offline.
//
// Per-frame metadata arrives on the "overlay" data channel keyed by the source RTP
// timestamp; the frame on screen is identified by requestVideoFrameCallback's
// rtpTimestamp minus the sender's constant offset (sent by the server as "offset").
// Findings of the live analysis ({"t": "findings", "rtp", "w", "h", "findings"}) arrive on
// the same channel, keyed by the RTP timestamp of the frame they were made on; each frame
// shown draws the findings of its own timestamp, else the latest ones made at most
// FINDINGS_HOLD ticks before it (the analysis may skip frames), else none.
"use strict";

const FINDINGS_HOLD = 45000;      // 0.5 s of the 90 kHz media clock

// sets: Map(rtp -> message); returns the set to draw over the frame of source rtp `frame`.
function rtsFindingsFor(sets, frame) {
  const exact = sets.get(frame);
  if (exact) return exact;
  let best = null, bestAge = Infinity;
  for (const [rtp, m] of sets) {
    const age = (frame - rtp) >>> 0;
    if (age > 0 && age <= FINDINGS_HOLD && age < bestAge) { best = m; bestAge = age; }
  }
  return best;
}

// -- diagnosis of a page that does not play (pure; tests/viewer/test_page_diagnosis.py) ----
// The page never sits on "connecting": past these limits it says what is wrong and what to do.
const CONNECT_TIMEOUT_MS = 10000;   // from the offer to a connected peer connection
const STALL_MS = 10000;             // connected, but no new video frame for this long

// s: {connState, everConnected, sinceConnectMs, lastFrameAgoMs, candidates, pageHost,
//     streamListed}; returns null (all well, or too early to say) or {title, cause, fix}.
function rtsDiagnose(s) {
  const where = (s.candidates && s.candidates.length) ? s.candidates.join(", ") : "none offered";
  const noIce = !s.everConnected &&
    (s.connState === "failed" || (s.connState !== "connected" && s.sinceConnectMs >= CONNECT_TIMEOUT_MS));
  if (noIce) {
    return {
      title: "No connection to the viewer's media (" + (s.connState === "failed" ? "ICE failed" :
        "not connected after " + Math.round(s.sinceConnectMs / 1000) + " s") + ")",
      cause: "this browser cannot reach the viewer's ICE candidates (" + where + "); the page " +
        "itself came from " + s.pageHost + ".",
      fix: "Start the viewer with --http on an address this browser reaches (ICE follows it), " +
        "or name the interface with --ice-interface; across networks add --ice-server " +
        "stun:/turn:. On the same machine, open the page there (127.0.0.1).",
    };
  }
  const gone = s.streamListed === false;
  const stalled = s.everConnected && s.lastFrameAgoMs >= STALL_MS;
  if (gone || stalled || (s.everConnected && (s.connState === "failed" || s.connState === "closed"))) {
    return {
      title: gone ? "The stream is gone" : "No video for " + Math.round(s.lastFrameAgoMs / 1000) + " s",
      cause: "the sender stopped, or its packets no longer reach the viewer.",
      fix: "Check the sender, and that the SDP the viewer was started with (--sdp) still " +
        "describes it: address, ports and, for multicast, --interface. Reload the page " +
        "when it is back.",
    };
  }
  return null;
}

// The addresses of the a=candidate lines of an SDP.
function rtsCandidates(sdp) {
  const out = [];
  for (const line of (sdp || "").split(/\r?\n/)) {
    const f = line.split(" ");
    if (line.startsWith("a=candidate:") && f.length > 5 && !out.includes(f[4])) out.push(f[4]);
  }
  return out;
}

// -- through Janus: which source RTP timestamp is the frame on screen? (pure; tested with node) --
// Janus gives every viewer its own RTP timestamp base, so browser rtp - source rtp is a
// constant the page must learn. Each overlay message is sent just before its frame's
// packets, but arrives on another path (SCTP) that may lag the video a little; a frame is
// paired with the message whose arrival is nearest its receive time (either side, within
// a window below half a frame period), and the difference that wins most votes is taken.
const OFFSET_VOTES = 8;          // agreeing pairs needed
const OFFSET_SHARE = 0.75;       // ... and this share of all votes cast

// messages: [{rtp, at}] (source rtp, arrival ms); frameAt: the frame's receive time (ms).
// Returns the candidate difference (uint32) or null when no message arrived near it.
function rtsPairOffset(messages, frameRtp, frameAt, windowMs) {
  let best = null, bestGap = Infinity;
  for (const m of messages) {
    const gap = Math.abs(frameAt - m.at);
    if (gap <= windowMs && gap < bestGap) { best = m; bestGap = gap; }
  }
  return best === null ? null : ((frameRtp - best.rtp) >>> 0);
}

// votes: Map(offset -> count), updated in place; returns the decided offset or null.
function rtsVoteOffset(votes, candidate) {
  if (candidate !== null) votes.set(candidate, (votes.get(candidate) || 0) + 1);
  let total = 0, best = null, bestN = 0;
  for (const [k, n] of votes) { total += n; if (n > bestN) { best = k; bestN = n; } }
  return bestN >= OFFSET_VOTES && bestN >= OFFSET_SHARE * total ? best : null;
}

if (typeof module !== "undefined") {
  module.exports = { rtsDiagnose, rtsCandidates, rtsPairOffset, rtsVoteOffset, rtsFindingsFor,
    FINDINGS_HOLD,
    CONNECT_TIMEOUT_MS, STALL_MS, OFFSET_VOTES };
}

if (typeof document !== "undefined") (function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  if (token) history.replaceState(null, "", location.pathname);  // keep it out of the bar
  const $ = (id) => document.getElementById(id);
  const video = $("video");

  const state = {
    stream: null, pc: null, dc: null, peer: null, codec: null,
    rtpOffset: null,            // browser RTP timestamp - source RTP timestamp (mod 2^32)
    frames: new Map(),          // source rtp -> {origin_ns, overlay}
    order: [],
    shown: null,                // {rtp, info} of the frame on screen
    clockOffsetMs: null,        // server clock (TAI) - page clock (UTC)
    taiUtcMs: 0,                // TAI - UTC, from the server
    bestRtt: Infinity,
    latencies: [],              // origin -> display, ms
    framesPresented: 0, rvfcSupported: "requestVideoFrameCallback" in HTMLVideoElement.prototype,
    lastStats: null, connState: "new", snapshots: [],
    connectStart: null, everConnected: false, candidates: [], lastFrameAt: null,
    framesDecoded: 0, streamListed: null, diagnosis: null,
    late: new Map(),            // source rtp -> display time, for frames shown before their metadata
    matched: 0, lateMatched: 0,
    via: "rtstream",            // or "janus": watching a Janus mountpoint
    janus: null,                // {url, session, handle} while watching through Janus
    arrivals: [],               // [{rtp, at}] recent overlay messages (Janus offset learning)
    offsetVotes: new Map(), offsetRecent: [],
    streamsById: {},
    findings: new Map(),        // source rtp -> findings message
    findingsShown: null,        // {frame, findings, n}: what the canvas shows now
    findingsLog: [],            // recent findingsShown, for tests
    findingsReceived: 0,
  };
  window.rtsViewer = state;   // read by tests and handy in the console

  async function api(path, opts) {
    opts = opts || {};
    opts.headers = Object.assign({ "Authorization": "Bearer " + token }, opts.headers || {});
    const res = await fetch(path, opts);
    let body = null;
    try { body = await res.json(); } catch (e) { body = { error: res.status + " " + res.statusText }; }
    return { status: res.status, ok: res.ok, body };
  }

  // -- stream list ------------------------------------------------------------
  async function loadStreams() {
    const r = await api("api/streams");
    const ul = $("streams");
    if (!r.ok) { ul.innerHTML = '<li class="muted">cannot list streams (' + r.status + ")</li>"; return; }
    const streams = r.body.streams;
    state.streamsById = {};
    for (const x of streams) state.streamsById[x.id] = x;
    if (state.stream) state.streamListed = streams.some((x) => x.id === state.stream);
    ul.innerHTML = "";
    if (!streams.length) { ul.innerHTML = '<li class="muted">no streams yet</li>'; }
    for (const s of streams) {
      const li = document.createElement("li");
      li.className = "stream" + (s.id === state.stream ? " active" : "");
      li.dataset.stream = s.id;
      li.innerHTML = "<div></div><div class=meta></div>";
      li.firstChild.textContent = s.id;
      li.lastChild.textContent = s.width + "×" + s.height + " · " + s.fps.toFixed(1) +
        " fps · " + s.viewers + " viewer" + (s.viewers === 1 ? "" : "s");
      li.onclick = () => connect(s.id);
      ul.appendChild(li);
    }
    if (!state.stream && streams.length === 1) connect(streams[0].id);
  }

  // -- connection ---------------------------------------------------------------
  function setConn(s) {
    state.connState = s;
    if (s === "connected") { state.everConnected = true; state.lastFrameAt = Date.now(); }
    const el = $("conn");
    el.textContent = s;
    el.className = "pill " + ({ connected: "connected", failed: "failed", closed: "closed",
      disconnected: "disconnected", "new": "idle" }[s] || "connecting");
  }

  function waitGathering(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
  }

  async function connect(streamId) {
    if (state.pc) { state.pc.close(); state.pc = null; }
    leaveJanus();
    Object.assign(state, { stream: streamId, rtpOffset: null, shown: null, latencies: [],
      framesPresented: 0, matched: 0, lateMatched: 0, arrivals: [], offsetRecent: [] });
    state.offsetVotes.clear();
    state.late.clear();
    state.frames.clear(); state.order = [];
    state.findings.clear(); state.findingsShown = null; drawFindings(null);
    for (const li of document.querySelectorAll("#streams li.stream"))
      li.classList.toggle("active", li.dataset.stream === streamId);
    $("placeholder").style.display = "none";
    Object.assign(state, { connectStart: Date.now(), everConnected: false, candidates: [],
      lastFrameAt: null, framesDecoded: 0, streamListed: null });
    showDiagnosis(null);
    setConn("connecting");
    const info = state.streamsById[streamId];
    const direct = new URLSearchParams(location.search).has("direct");
    if (info && info.janus && info.janus.mountpoint && !direct) return connectJanus(info.janus);
    state.via = "rtstream";
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    const dc = pc.createDataChannel("overlay");
    state.dc = dc;
    dc.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    dc.onopen = () => { ping(); };
    pc.ontrack = (ev) => {
      video.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => setConn(pc.connectionState);
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc, 3000);
    const r = await api("api/offer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stream: streamId, type: "offer", sdp: pc.localDescription.sdp }),
    });
    if (!r.ok) { setConn("failed"); $("snap-result").textContent = r.body.error; return; }
    state.candidates = rtsCandidates(r.body.sdp);
    state.peer = r.body.peer; state.codec = r.body.codec;
    $("s-codec").textContent = r.body.codec.toUpperCase();
    await pc.setRemoteDescription({ type: "answer", sdp: r.body.sdp });
    $("snap").disabled = false;
  }

  // -- through Janus (its documented HTTP API: session, handle, watch, start) ----------
  async function janusPost(path, body) {
    body.transaction = Math.random().toString(36).slice(2);
    // A text/plain body keeps this a simple cross-origin request (no preflight).
    const r = await fetch(state.janus.url + path, { method: "POST", body: JSON.stringify(body) });
    const j = await r.json();
    if (j.janus === "error") throw new Error("Janus: " + (j.error && j.error.reason));
    return j;
  }

  function leaveJanus() {
    const j = state.janus;
    if (!j || !j.session) { state.janus = null; return; }
    j.closed = true;
    fetch(j.url + "/" + j.session, { method: "POST",
      body: JSON.stringify({ janus: "destroy", transaction: "bye" }) }).catch(() => {});
    state.janus = null;
  }

  async function connectJanus(info) {
    state.via = "janus";
    state.janus = { url: info.url.replace(/\/$/, ""), session: null, handle: null, closed: false };
    const me = state.janus;
    try {
      me.session = (await janusPost("", { janus: "create" })).data.id;
      me.handle = (await janusPost("/" + me.session,
        { janus: "attach", plugin: "janus.plugin.streaming" })).data.id;
      janusPoll(me);
      const body = { request: "watch", id: info.mountpoint };
      if (info.pin) body.pin = info.pin;
      await janusPost("/" + me.session + "/" + me.handle, { janus: "message", body });
    } catch (e) {
      setConn("failed"); $("snap-result").className = "err";
      $("snap-result").textContent = "Janus: " + e.message;
    }
  }

  // Long poll: Janus's events (the offer) and, by itself, the session's keep-alive.
  async function janusPoll(me) {
    while (!me.closed && state.janus === me) {
      let evs;
      try {
        const r = await fetch(me.url + "/" + me.session + "?maxev=10&rid=" + Date.now());
        evs = await r.json();
      } catch (e) { await new Promise((ok) => setTimeout(ok, 1000)); continue; }
      for (const ev of Array.isArray(evs) ? evs : [evs]) {
        const pd = ev.plugindata && ev.plugindata.data;
        if (pd && pd.error) {
          setConn("failed"); $("snap-result").className = "err";
          $("snap-result").textContent = "Janus: " + pd.error;
        }
        if (ev.jsep && ev.jsep.type === "offer") await janusAnswer(me, ev.jsep);
        if (ev.janus === "hangup") setConn("closed");
      }
    }
  }

  async function janusAnswer(me, offer) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    pc.ontrack = (ev) => {
      if (ev.track.kind !== "video") return;
      video.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      video.play().catch(() => {});
    };
    // Janus relays the data port on a channel of the association the browser opens
    // (janus.js opens one too); any channel Janus opens itself is read the same way.
    const listen = (ch) => {
      state.dc = ch;
      ch.onmessage = (m) => {
        let msg;
        try { msg = JSON.parse(typeof m.data === "string" ? m.data : new TextDecoder().decode(m.data)); }
        catch (e) { return; }
        if (msg.t === "frame") {
          state.arrivals.push({ rtp: msg.rtp, at: performance.now() });
          if (state.arrivals.length > 240) state.arrivals.shift();
        }
        onMessage(msg);
      };
    };
    pc.ondatachannel = (ev) => listen(ev.channel);
    pc.onconnectionstatechange = () => setConn(pc.connectionState);
    await pc.setRemoteDescription(offer);
    if (/^m=application/m.test(offer.sdp)) listen(pc.createDataChannel("rtstream"));
    state.candidates = rtsCandidates(offer.sdp);
    await pc.setLocalDescription(await pc.createAnswer());
    await waitGathering(pc, 3000);
    await janusPost("/" + me.session + "/" + me.handle, { janus: "message",
      body: { request: "start" }, jsep: { type: "answer", sdp: pc.localDescription.sdp } });
    state.codec = "h264";
    $("s-codec").textContent = "H264 via Janus";
    $("snap").disabled = false;
    ping();
  }

  // -- data channel ---------------------------------------------------------------
  async function ping() {
    if (state.via === "janus") {   // Janus's data channel only carries the overlay: ask rtstream
      const r = await api("api/clock?c=" + Date.now());
      if (r.ok) onMessage(Object.assign({ t: "pong" }, r.body));
      return;
    }
    if (state.dc && state.dc.readyState === "open")
      state.dc.send(JSON.stringify({ t: "ping", c: Date.now() }));
  }

  function onMessage(m) {
    if (m.t === "frame") {
      state.frames.set(m.rtp, m);
      state.order.push(m.rtp);
      if (state.order.length > 600) state.frames.delete(state.order.shift());
      if (state.late.has(m.rtp)) {    // the frame was shown before its metadata arrived
        state.lateMatched++;
        showInfo(m.rtp, m, state.late.get(m.rtp));
        state.late.delete(m.rtp);
      } else if (!state.rvfcSupported || state.rtpOffset === null) showInfo(m.rtp, m);
    } else if (m.t === "findings") {
      state.findings.set(m.rtp, m);
      state.findingsReceived++;
      if (state.findings.size > 120) state.findings.delete(state.findings.keys().next().value);
      if (state.shown && ((state.shown.rtp - m.rtp) >>> 0) <= FINDINGS_HOLD) drawFindings(state.shown.rtp);
    } else if (m.t === "offset") {
      state.rtpOffset = m.rtp_offset;
    } else if (m.t === "pong") {
      const now = Date.now(), rtt = now - m.c;
      if (rtt <= state.bestRtt) {    // the fastest exchange gives the best estimate
        state.bestRtt = rtt;
        state.clockOffsetMs = Number(BigInt(m.s_ns) / 1000n) / 1000 + rtt / 2 - now;
        state.taiUtcMs = 1000 * (m.tai_utc_s || 0);
      }
    }
  }

  function originMs(info) {
    if (!info || info.origin_ns == null) return null;
    const ns = BigInt(info.origin_ns);
    return Number(ns / 1000000n) + Number(ns % 1000000n) / 1e6;
  }

  // -- findings on the canvas over the video ------------------------------------------
  const COLORS = ["#ffd54a", "#4ad2ff", "#ff6e6e", "#8dff7a", "#d38cff"];
  function drawFindings(frameRtp) {
    const cv = $("findings");
    const box = $("videobox").getBoundingClientRect();
    if (cv.width !== Math.round(box.width) || cv.height !== Math.round(box.height)) {
      cv.width = Math.round(box.width); cv.height = Math.round(box.height);
    }
    const g = cv.getContext("2d");
    g.clearRect(0, 0, cv.width, cv.height);
    const set = frameRtp === null ? null : rtsFindingsFor(state.findings, frameRtp);
    if (!set) { if (frameRtp !== null) logFindings(frameRtp, null, 0); return; }
    // The picture inside the <video> box (object-fit: contain).
    const vr = video.getBoundingClientRect();
    const vw = video.videoWidth || set.w, vh = video.videoHeight || set.h;
    const k = Math.min(vr.width / vw, vr.height / vh);
    const ox = vr.left - box.left + (vr.width - vw * k) / 2;
    const oy = vr.top - box.top + (vr.height - vh * k) / 2;
    const sx = k * vw / set.w, sy = k * vh / set.h;
    const X = (x) => ox + x * sx, Y = (y) => oy + y * sy;
    g.lineWidth = 2; g.font = "13px DejaVu Sans Mono, monospace"; g.textBaseline = "bottom";
    set.findings.forEach((f, i) => {
      const c = COLORS[i % COLORS.length];
      g.strokeStyle = c; g.fillStyle = c;
      let ax, ay;
      if (f.box) {
        g.strokeRect(X(f.box[0]), Y(f.box[1]), f.box[2] * sx, f.box[3] * sy);
        ax = X(f.box[0]); ay = Y(f.box[1]);
      } else if (f.polygon) {
        g.beginPath();
        f.polygon.forEach((p, j) => (j ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1]))));
        g.closePath(); g.stroke();
        ax = X(f.polygon[0][0]); ay = Y(f.polygon[0][1]);
      } else if (f.point) {
        ax = X(f.point[0]); ay = Y(f.point[1]);
        g.beginPath(); g.arc(ax, ay, 5, 0, 2 * Math.PI); g.stroke();
      }
      let caption = f.label;
      if (f.score !== undefined) caption += " " + Number(f.score).toFixed(2);
      if (f.text) caption += " " + f.text;
      g.fillText(caption, ax + 2, ay - 2);
    });
    logFindings(frameRtp, set.rtp, set.findings.length);
  }
  function logFindings(frame, findingsRtp, n) {
    state.findingsShown = { frame, findings: findingsRtp, n };
    state.findingsLog.push(state.findingsShown);
    if (state.findingsLog.length > 600) state.findingsLog.shift();
  }

  function showInfo(rtp, info, displayEpochMs) {
    state.shown = { rtp, info };
    drawFindings(rtp);
    const ov = info.overlay || {};
    $("ov-name").textContent = ov.patient_name || "";
    $("ov-id").textContent = ov.patient_id ? "ID " + ov.patient_id : "";
    $("ov-study").textContent = ov.study_description || "";
    $("ov-modality").textContent = ov.modality || "";
    $("ov-sop").textContent = ov.sop_class || "";
    $("ov-frame").textContent = ov.frame_number || "";
    $("ov-time").textContent = ov.origin_time || "";
    const o = originMs(info);
    if (o !== null && state.clockOffsetMs !== null && displayEpochMs !== undefined) {
      const lat = displayEpochMs + state.clockOffsetMs - o;
      state.latencies.push(lat);
      if (state.latencies.length > 600) state.latencies.shift();
      $("s-lat").textContent = lat.toFixed(0) + " ms";
      $("ov-lat").textContent = "latency " + lat.toFixed(0) + " ms";
    }
  }

  // -- per displayed frame -----------------------------------------------------------
  function onVideoFrame(now, md) {
    state.framesPresented = md.presentedFrames;
    if (state.via === "janus" && md.rtpTimestamp !== undefined) learnOffset(now, md);
    if (md.rtpTimestamp !== undefined && state.rtpOffset !== null) {
      const src = (md.rtpTimestamp - state.rtpOffset) >>> 0;
      const info = state.frames.get(src);
      const shownAt = performance.timeOrigin + (md.expectedDisplayTime || now);
      if (info) { state.matched++; showInfo(src, info, shownAt); }
      else { state.late.set(src, shownAt); if (state.late.size > 120) state.late.delete(state.late.keys().next().value); }
    }
    video.requestVideoFrameCallback(onVideoFrame);
  }
  if (state.rvfcSupported) video.requestVideoFrameCallback(onVideoFrame);

  // Pairs keep being counted over a sliding window, so a wrong early decision (a loaded
  // machine delaying the data channel) or a new Janus base is corrected by later frames.
  function learnOffset(now, md) {
    const at = md.receiveTime !== undefined ? md.receiveTime : now;
    const cand = rtsPairOffset(state.arrivals, md.rtpTimestamp, at, 12);
    if (cand === null) return;
    state.offsetRecent.push(cand);
    if (state.offsetRecent.length > 60) {
      const old = state.offsetRecent.shift(), n = state.offsetVotes.get(old) - 1;
      if (n > 0) state.offsetVotes.set(old, n); else state.offsetVotes.delete(old);
    }
    const decided = rtsVoteOffset(state.offsetVotes, cand);
    if (decided !== null) state.rtpOffset = decided;
  }


  function pct(sorted, p) {
    if (!sorted.length) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  }

  async function pollStats() {
    const pc = state.pc;
    if (!pc) return;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        const prev = state.lastStats;
        state.lastStats = s;
        if ((s.framesDecoded || 0) > state.framesDecoded) {
          state.framesDecoded = s.framesDecoded; state.lastFrameAt = Date.now();
        }
        $("s-res").textContent = (s.frameWidth || 0) + "×" + (s.frameHeight || 0);
        $("s-fps").textContent = s.framesPerSecond !== undefined ? s.framesPerSecond.toFixed(1) : "–";
        const lost = s.packetsLost || 0, recv = s.packetsReceived || 0;
        $("s-loss").textContent = lost + " (" + (recv + lost ? (100 * lost / (recv + lost)).toFixed(2) : "0.00") + " %)";
        if (s.jitterBufferEmittedCount) {
          let jb = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
          if (prev && s.jitterBufferEmittedCount > prev.jitterBufferEmittedCount)
            jb = 1000 * (s.jitterBufferDelay - prev.jitterBufferDelay) /
              (s.jitterBufferEmittedCount - prev.jitterBufferEmittedCount);
          $("s-jb").textContent = jb.toFixed(1) + " ms";
          state.jitterBufferMs = jb;
        }
      }
    });
    const sorted = state.latencies.slice().sort((a, b) => a - b);
    if (sorted.length)
      $("s-latp").textContent = pct(sorted, 0.5).toFixed(0) + " / " + pct(sorted, 0.95).toFixed(0) + " ms";
    if (state.clockOffsetMs !== null) $("s-clk").textContent = (state.clockOffsetMs - state.taiUtcMs).toFixed(1) + " ms";
  }

  // -- what is wrong, said on the page -----------------------------------------------
  function showDiagnosis(d) {
    state.diagnosis = d;
    const el = $("diag");
    if (!d) { el.hidden = true; el.textContent = ""; return; }
    el.hidden = false;
    el.innerHTML = "<b></b><div></div><div></div>";
    el.children[0].textContent = d.title;
    el.children[1].textContent = "Likely cause: " + d.cause;
    el.children[2].textContent = "Fix: " + d.fix;
  }

  function watchdog() {
    if (state.connectStart === null) return;
    const now = Date.now();
    const d = rtsDiagnose({
      connState: state.connState, everConnected: state.everConnected,
      sinceConnectMs: now - state.connectStart,
      lastFrameAgoMs: state.lastFrameAt === null ? 0 : now - state.lastFrameAt,
      candidates: state.candidates, pageHost: location.host, streamListed: state.streamListed,
    });
    if (JSON.stringify(d) !== JSON.stringify(state.diagnosis)) showDiagnosis(d);
    if (d && state.connState === "connecting") setConn("failed");
  }

  // -- snapshot -----------------------------------------------------------------------
  async function snapshot() {
    const out = $("snap-result");
    if (!state.shown) { out.className = "err"; out.textContent = "no frame on screen yet"; return; }
    const rtp = state.shown.rtp;
    $("snap").disabled = true;
    out.className = "muted"; out.textContent = "storing frame " + rtp + "…";
    const r = await api("api/snapshot", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stream: state.stream, rtp_timestamp: rtp }),
    });
    state.snapshots.push(Object.assign({ status: r.status }, r.body));
    if (r.body.ok) { out.className = "ok"; out.textContent = "stored: " + r.body.sop_instance_uid; }
    else { out.className = "err"; out.textContent = "snapshot failed: " + (r.body.error || r.status); }
    $("snap").disabled = false;
  }

  $("snap").onclick = snapshot;
  $("ov-toggle").onchange = (e) => $("overlay").classList.toggle("hidden", !e.target.checked);
  $("fd-toggle").onchange = (e) => $("findings").classList.toggle("hidden", !e.target.checked);
  loadStreams();
  setInterval(loadStreams, 5000);
  setInterval(pollStats, 1000);
  setInterval(ping, 2000);
  setInterval(watchdog, 1000);
})();
