"""The live view's one page: plain HTML, CSS and JavaScript, no build step, no external files.

It shows ``stream.mjpg`` (the camera with the overlay), polls ``api/status`` every
second for the decision, the codec and the timeline, draws the timeline on a canvas, and
calls ``api/pin``, ``api/auto`` and ``api/policy`` (the same operations as ``splitctl
pin``, ``auto`` and ``policy``). A ``?token=...`` in the page address is sent as the
bearer token on every call (needed when the view is bound beyond localhost).
"""
from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>splitinfer live view</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 12px; background: #f4f4f4; color: #222; }
 h1 { font-size: 18px; margin: 0 0 8px; }
 #main { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; }
 #feed { display: block; background: #000; image-rendering: auto; }
 .panel { background: #fff; border-radius: 6px; padding: 10px 12px; box-shadow: 0 1px 3px #0002; }
 dl { display: grid; grid-template-columns: max-content auto; gap: 3px 12px; margin: 0 0 8px; }
 dt { color: #666; } dd { margin: 0; font-family: ui-monospace, monospace; }
 button { margin: 2px; padding: 4px 10px; cursor: pointer; }
 button.current { background: #2a7; color: #fff; border: 1px solid #185; }
 #error { color: #b00; min-height: 1.2em; }
 canvas { background: #fff; border-radius: 6px; box-shadow: 0 1px 3px #0002; margin-top: 12px; }
</style></head>
<body>
<h1>splitinfer live view &mdash; <span id="agent">?</span></h1>
<div id="main">
 <div><img id="feed" alt="camera feed with overlay"></div>
 <div class="panel" id="status">
  <dl>
   <dt>cut</dt><dd id="cut">?</dd>
   <dt>mode</dt><dd id="mode">?</dd>
   <dt>objective</dt><dd id="objective">?</dd>
   <dt>codec</dt><dd id="codec">?</dd>
   <dt>reason</dt><dd id="reason">?</dd>
   <dt>results</dt><dd id="results">?</dd>
   <dt>latency</dt><dd id="latency">?</dd>
   <dt>circuit</dt><dd id="circuit">?</dd>
  </dl>
  <div>Pin a cut: <span id="cuts"></span></div>
  <div><button id="auto">Auto</button>
   <select id="objective-select"><option>latency</option><option>energy</option><option>slo</option></select>
   SLO <input id="slo" type="number" min="1" step="1" size="5" placeholder="ms">
   <button id="apply-policy">Set objective</button></div>
  <div id="error"></div>
 </div>
</div>
<canvas id="timeline" width="900" height="360"></canvas>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? {"Authorization": "Bearer " + token} : {};
const q = token ? "?token=" + encodeURIComponent(token) : "";
document.getElementById("feed").src = "stream.mjpg" + q;

let opError = "";  // an operation's error stays shown until the next operation, not the next refresh
async function call(path, body) {
  const r = await fetch(path, {method: body === undefined ? "GET" : "POST",
    headers: Object.assign({"Content-Type": "application/json"}, auth),
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json();
  if (body !== undefined) opError = r.ok ? "" : (data.error || r.statusText);
  document.getElementById("error").textContent = r.ok ? opError : (data.error || r.statusText);
  return data;
}
function text(id, value) { document.getElementById(id).textContent = value; }

function drawTimeline(points, cutNames) {
  const c = document.getElementById("timeline"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const rows = [["cut", p => p.cut_order, v => cutNames[v] || v],
                ["latency ms", p => p.latency_ms, v => v.toFixed(0)],
                ["uplink kbit/s", p => p.uplink_kbps, v => v.toFixed(0)],
                ["gate % / exit %", p => p.gate_pct, v => v.toFixed(0), p => p.exit_pct]];
  const h = c.height / rows.length, left = 110, w = c.width - left - 10;
  rows.forEach(([name, f, fmt, f2], i) => {
    const top = i * h + 8, bottom = (i + 1) * h - 8;
    g.fillStyle = "#444"; g.font = "12px sans-serif"; g.fillText(name, 6, top + 12);
    g.strokeStyle = "#ddd"; g.strokeRect(left, top, w, bottom - top);
    const vals = points.map(f).concat(f2 ? points.map(f2) : []).filter(v => v !== null);
    if (!vals.length) return;
    const lo = Math.min(0, ...vals), hi = Math.max(1, ...vals);
    g.fillText(fmt(hi), 6, top + 28); g.fillText(fmt(lo), 6, bottom);
    [[f, "#2a7"], [f2, "#c60"]].forEach(([fn, color]) => {
      if (!fn) return;
      g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
      points.forEach((p, k) => {
        const v = fn(p); if (v === null) return;
        const x = left + (points.length < 2 ? 0 : k * w / (points.length - 1));
        const y = bottom - (v - lo) / (hi - lo) * (bottom - top);
        if (k === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    });
  });
}

let cutsShown = "";
async function refresh() {
  let s;
  try { s = await call("api/status"); } catch (e) { text("error", String(e)); return; }
  if (!s.decision) return;
  text("agent", s.agent_id + " / " + s.bundle);
  text("cut", s.decision.cut); text("mode", s.decision.mode); text("objective", s.objective +
    (s.slo_ms ? " (" + s.slo_ms + " ms)" : ""));
  text("codec", s.codec); text("reason", s.decision.reason);
  text("results", s.results + " (" + s.frames_dropped + " dropped, " + s.frames_gated + " gated)");
  text("latency", s.mean_latency_ms === null ? "-" : s.mean_latency_ms.toFixed(1) + " ms");
  text("circuit", s.circuit);
  const key = s.cuts.join(",");
  if (key !== cutsShown) {
    const box = document.getElementById("cuts"); box.textContent = "";
    s.cuts.forEach(cut => { const b = document.createElement("button"); b.textContent = cut;
      b.dataset.cut = cut; b.onclick = () => call("api/pin", {cut}).then(refresh); box.appendChild(b); });
    cutsShown = key;
  }
  document.querySelectorAll("#cuts button").forEach(b =>
    b.classList.toggle("current", b.dataset.cut === s.decision.cut));
  drawTimeline(s.timeline, s.cuts);
}
document.getElementById("auto").onclick = () => call("api/auto", {}).then(refresh);
document.getElementById("apply-policy").onclick = () => {
  const slo = parseFloat(document.getElementById("slo").value);
  call("api/policy", {objective: document.getElementById("objective-select").value,
                      slo_ms: isNaN(slo) ? null : slo}).then(refresh);
};
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
