"""The self-contained HTML timeline: plain JS + canvas, the trace inlined, no network.

Tracks as in the Chrome JSON (one per ``tid``, nested slices stacked by depth, instants in a
lane on top, counters as step plots below). Zoom: wheel (around the pointer), drag to pan,
the buttons, keys w/s (zoom), a/d (pan), 0 (reset); hover shows an event's fields. Drawing
culls what is off-screen and draws one column per pixel where slices or instants are
narrower than a pixel (binary search per pixel), so 100k+ events stay fluid.

For tests and scripts the page exposes ``window.slicertTimeline``: ``slices`` / ``instants``
/ ``counters`` (what it loaded, per track in ``tracks``), ``frame`` (the last drawing:
``represented`` slices, ``drawn`` one by one, ``columns`` aggregated), ``view``, and
``zoom(factor)``, ``pan(fraction)``, ``reset()``; ``<body data-slices=N>`` and
``data-visible-slices`` mirror the counts.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

_CSS = """
body{margin:0;font:12px/1.4 system-ui,sans-serif;color:#222;background:#fff}
header{padding:6px 10px;border-bottom:1px solid #ddd}
header h1{font-size:15px;margin:0 0 2px}
#bar button{font:inherit;margin-right:3px;padding:1px 8px}
#bar span{margin-left:10px;color:#555}
#wrap{position:relative}
canvas{display:block;width:100%;cursor:grab}
#tip{position:absolute;display:none;pointer-events:none;background:#fffbe6;
 border:1px solid #bbb;padding:4px 6px;white-space:pre;font:11px monospace;z-index:2}
#legend span{display:inline-block;margin-right:10px}
#legend i{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:-1px}
"""

_JS = r"""
(function () {
'use strict';
const DOC = JSON.parse(document.getElementById('trace-data').textContent);
const OD = DOC.otherData || {};
const COLORS = {kernel: '#b8c4d6', layer: '#8fb3de', tile: '#9ccfa8', micro_tile: '#5c9fd6',
  micro_tile_b: '#3f7fb8', calibration: '#7fc9c2', pendsv: '#f0a04b', isr: '#d9534f',
  rt_job: '#5cb85c', tick: '#9b7fd1'};
const MARKS = {yield: '#777', preempt: '#f0a04b', irq_assert: '#d9534f',
  rt_release: '#3c9a3c', slice_expire: '#9b7fd1', deadline_miss: '#e0003c'};
const ROW = 16, LANE = 9, GAP = 6, LABEL = 170, RULER = 22, CBAND = 38;
const tracks = [], byTid = {};
const counters = {};
let nSlices = 0, nInstants = 0, nCounters = 0;
const sortIdx = {};
for (const e of DOC.traceEvents) {
  if (e.ph !== 'M') continue;
  if (e.name === 'thread_name') {
    const t = {tid: e.tid, name: e.args.name, raw: [], inst: [], levels: []};
    tracks.push(t); byTid[e.tid] = t;
  } else if (e.name === 'thread_sort_index') sortIdx[e.tid] = e.args.sort_index;
}
tracks.sort((a, b) => (sortIdx[a.tid] || 0) - (sortIdx[b.tid] || 0));
function track(tid) {
  if (!byTid[tid]) {
    const t = {tid: tid, name: 'thread ' + tid, raw: [], inst: [], levels: []};
    tracks.push(t); byTid[tid] = t;
  }
  return byTid[tid];
}
let tMin = Infinity, tMax = -Infinity;
for (const e of DOC.traceEvents) {
  if (e.ph === 'X') { track(e.tid).raw.push(e); nSlices++; }
  else if (e.ph === 'i' || e.ph === 'I') { track(e.tid).inst.push(e); nInstants++; }
  else if (e.ph === 'C') {
    for (const k in e.args) {
      const name = e.name + (Object.keys(e.args).length > 1 ? '.' + k : '');
      (counters[name] = counters[name] || {name: name, ts: [], v: []});
      counters[name].ts.push(e.ts); counters[name].v.push(+e.args[k]);
    }
    nCounters++;
  } else continue;
  if (e.ph !== 'M') {
    tMin = Math.min(tMin, e.ts); tMax = Math.max(tMax, e.ts + (e.dur || 0));
  }
}
if (!isFinite(tMin)) { tMin = 0; tMax = 1; }
if (tMax <= tMin) tMax = tMin + 1;
// nesting depth per track: slices sorted by start (longer first), a stack of open ends
for (const t of tracks) {
  t.raw.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
  const stack = [];
  for (const e of t.raw) {
    const end = e.ts + e.dur;
    while (stack.length && stack[stack.length - 1] <= e.ts + 1e-9) stack.pop();
    const d = stack.length;
    stack.push(end);
    (t.levels[d] = t.levels[d] || []).push(e);
  }
  t.levels = t.levels.map(l => ({ev: l, s: Float64Array.from(l, e => e.ts),
    e: Float64Array.from(l, e => e.ts + e.dur)}));
  t.inst.sort((a, b) => a.ts - b.ts);
  const cats = {};  // instants per category: culled per pixel without hiding one another
  for (const e of t.inst) (cats[e.cat] = cats[e.cat] || []).push(e);
  t.marks = Object.keys(cats).sort((a, b) => (a === 'yield' ? -1 : b === 'yield' ? 1 : 0))
    .map(c => ({cat: c, ev: cats[c], ts: Float64Array.from(cats[c], e => e.ts)}));
  t.depth = Math.max(1, t.levels.length);
}
const clist = Object.values(counters);
for (const c of clist) {
  c.ts = Float64Array.from(c.ts); c.max = c.v.reduce((a, b) => Math.max(a, b), 1e-9);
}

const canvas = document.getElementById('tl'), ctx = canvas.getContext('2d');
const tip = document.getElementById('tip'), info = document.getElementById('info');
let W = 0, H = 0, t0 = tMin, t1 = tMax;
const layout = [];
function doLayout() {
  layout.length = 0;
  let y = RULER;
  for (const t of tracks) {
    const h = LANE + t.depth * ROW;
    layout.push({kind: 'track', t: t, y: y, h: h}); y += h + GAP;
  }
  for (const c of clist) { layout.push({kind: 'counter', c: c, y: y, h: CBAND}); y += CBAND + GAP; }
  return y;
}
function resize() {
  const dpr = window.devicePixelRatio || 1;
  W = canvas.parentElement.clientWidth; H = doLayout();
  canvas.width = W * dpr; canvas.height = H * dpr; canvas.style.height = H + 'px';
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  draw();
}
const plotW = () => Math.max(10, W - LABEL);
const X = ts => LABEL + (ts - t0) / (t1 - t0) * plotW();
const T = x => t0 + (x - LABEL) / plotW() * (t1 - t0);
function lower(a, v, lo) {  // first index with a[i] >= v
  let hi = a.length; lo = lo || 0;
  while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < v) lo = m + 1; else hi = m; }
  return lo;
}
function fmt(us) {
  const a = Math.abs(us);
  if (a >= 1000) return (us / 1000).toFixed(a >= 1e4 ? 1 : 2) + ' ms';
  if (a >= 1) return us.toFixed(a >= 100 ? 0 : 1) + ' µs';
  return (us * 1000).toFixed(0) + ' ns';
}
function color(e) {
  if (e.cat === 'micro_tile') return (e.args.index & 1) ? COLORS.micro_tile_b : COLORS.micro_tile;
  if (e.cat === 'layer') return ['#8fb3de', '#a9cbe8', '#7aa3d1', '#b6c9ea'][e.args.op % 4];
  return COLORS[e.cat] || '#aaa';
}
const frame = {represented: 0, drawn: 0, columns: 0, instants: 0};
function drawRuler() {
  ctx.fillStyle = '#f6f6f6'; ctx.fillRect(0, 0, W, RULER);
  const span = t1 - t0, target = span / (plotW() / 90);
  const p = Math.pow(10, Math.floor(Math.log10(target)));
  const step = [1, 2, 5, 10].map(k => k * p).find(s => s >= target) || p * 10;
  ctx.fillStyle = '#555'; ctx.strokeStyle = '#e4e4e4'; ctx.font = '11px sans-serif';
  for (let v = Math.ceil(t0 / step) * step; v <= t1; v += step) {
    const x = X(v);
    ctx.beginPath(); ctx.moveTo(x, RULER - 6); ctx.lineTo(x, H); ctx.stroke();
    ctx.fillText(fmt(v), x + 2, 12);
  }
}
function drawTrack(L) {
  const t = L.t, x0 = LABEL, pw = plotW(), px = (t1 - t0) / pw;
  ctx.fillStyle = '#fafafa'; ctx.fillRect(x0, L.y, pw, L.h);
  t.levels.forEach((lv, d) => {
    const y = L.y + LANE + d * ROW;
    let i = lower(lv.e, t0);
    const n = lv.ev.length;
    while (i < n && lv.s[i] <= t1) {
      const e = lv.ev[i], xa = X(lv.s[i]), xb = X(lv.e[i]);
      if (xb - xa < 1) {  // narrower than a pixel: one column for all slices starting in it
        const col = Math.floor(xa);
        let j = lower(lv.s, T(col + 1), i + 1);
        if (j - 1 > i && X(lv.e[j - 1]) >= col + 1) j--;  // a wide one starts in this pixel
        ctx.fillStyle = color(e); ctx.globalAlpha = 0.85;
        ctx.fillRect(col, y, 1, ROW - 2); ctx.globalAlpha = 1;
        frame.represented += j - i; frame.columns++; i = j; continue;
      }
      const a = Math.max(xa, x0), b = Math.min(xb, x0 + pw);
      ctx.fillStyle = color(e);
      ctx.fillRect(a, y, Math.max(1, b - a - (b - a > 3 ? 1 : 0)), ROW - 2);
      if (b - a > 28) {
        ctx.save(); ctx.beginPath(); ctx.rect(a, y, b - a - 2, ROW - 2); ctx.clip();
        ctx.fillStyle = '#111'; ctx.fillText(e.name, a + 3, y + ROW - 5); ctx.restore();
      }
      frame.represented++; frame.drawn++; i++;
    }
  });
  for (const g of t.marks) {
  let i = lower(g.ts, t0);
  while (i < g.ev.length && g.ts[i] <= t1) {
    const e = g.ev[i], x = X(g.ts[i]);
    ctx.fillStyle = MARKS[e.cat] || '#333';
    if (e.cat === 'deadline_miss') {  // a bar in the lane; across the track when zoomed in
      ctx.fillRect(Math.floor(x), L.y, 2, LANE);
      if ((t1 - t0) / plotW() * 6 < (g.ts[i + 1] || Infinity) - g.ts[i]) {
        ctx.fillRect(Math.floor(x), L.y + LANE, 1, L.h - LANE);
      }
    } else if (e.cat === 'yield') {
      ctx.fillRect(Math.floor(x), L.y + 1, 1, LANE - 2);
    } else {
      ctx.beginPath(); ctx.moveTo(x - 3.5, L.y); ctx.lineTo(x + 3.5, L.y);
      ctx.lineTo(x, L.y + LANE - 1); ctx.fill();
    }
    frame.instants++;
    const j = lower(g.ts, T(Math.floor(x) + 1), i + 1);  // one mark per pixel and kind
    i = Math.max(i + 1, j);
  }
  }
  ctx.fillStyle = '#fff'; ctx.fillRect(0, L.y, LABEL, L.h);
  ctx.fillStyle = '#222'; ctx.font = 'bold 12px sans-serif';
  ctx.fillText(t.name, 6, L.y + 13);
  ctx.font = '11px sans-serif'; ctx.fillStyle = '#777';
  ctx.fillText(t.raw.length + ' slices, ' + t.inst.length + ' instants', 6, L.y + 26);
}
function drawCounter(L) {
  const c = L.c, pw = plotW(), n = c.ts.length;
  ctx.fillStyle = '#fafafa'; ctx.fillRect(LABEL, L.y, pw, L.h);
  const base = L.y + L.h - 2, sc = (L.h - 6) / c.max;
  let k = Math.max(0, lower(c.ts, t0) - 1);
  for (let col = 0; col < pw && k < n; col++) {
    const tb = T(LABEL + col + 1);
    if (c.ts[k] >= tb) continue;  // the counter starts later
    let lo = c.v[k], hi = c.v[k];
    while (k + 1 < n && c.ts[k + 1] < tb) {
      k++; lo = Math.min(lo, c.v[k]); hi = Math.max(hi, c.v[k]);
    }
    ctx.fillStyle = 'rgba(80,120,200,0.3)'; ctx.fillRect(LABEL + col, base - hi * sc, 1, hi * sc);
    ctx.fillStyle = '#4a6fb3';
    ctx.fillRect(LABEL + col, base - hi * sc, 1, Math.max(1, (hi - lo) * sc));
  }
  ctx.fillStyle = '#fff'; ctx.fillRect(0, L.y, LABEL, L.h);
  ctx.fillStyle = '#222'; ctx.font = 'bold 12px sans-serif'; ctx.fillText(c.name, 6, L.y + 13);
  ctx.font = '11px sans-serif'; ctx.fillStyle = '#777';
  ctx.fillText(c.ts.length + ' samples, max ' + (+c.max.toFixed(3)), 6, L.y + 26);
}
function draw() {
  frame.represented = frame.drawn = frame.columns = frame.instants = 0;
  ctx.clearRect(0, 0, W, H); ctx.font = '11px sans-serif';
  drawRuler();
  for (const L of layout) (L.kind === 'track' ? drawTrack : drawCounter)(L);
  api.view = {t0: t0, t1: t1};
  document.body.dataset.visibleSlices = frame.represented;
  info.textContent = fmt(t0) + ' – ' + fmt(t1) + ' (' + fmt(t1 - t0) + ' shown); ' +
    frame.represented + ' of ' + nSlices + ' slices in view';
}
let pending = false;
function redraw() {
  if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
}
function setView(a, b) {
  const minSpan = 1e-3, full = tMax - tMin;
  let span = Math.min(Math.max(b - a, minSpan), full * 1.02);
  let c = (a + b) / 2;
  a = c - span / 2; b = c + span / 2;
  if (a < tMin - full * 0.01) { b += tMin - full * 0.01 - a; a = tMin - full * 0.01; }
  if (b > tMax + full * 0.01) { a -= b - tMax - full * 0.01; b = tMax + full * 0.01; }
  t0 = a; t1 = b;
}
function zoom(f, at) {
  const c = at === undefined ? (t0 + t1) / 2 : at;
  setView(c - (c - t0) / f, c + (t1 - c) / f); draw();
}
function pan(frac) { const d = (t1 - t0) * frac; setView(t0 + d, t1 + d); draw(); }
function reset() { t0 = tMin; t1 = tMax; draw(); }
const api = window.slicertTimeline = {slices: nSlices, instants: nInstants, counters: nCounters,
  tracks: tracks.map(t => ({tid: t.tid, name: t.name, slices: t.raw.length,
    instants: t.inst.length, depth: t.depth})),
  counterNames: clist.map(c => c.name), frame: frame, view: {}, zoom: zoom, pan: pan,
  reset: reset, draw: draw};
document.body.dataset.slices = nSlices;
document.body.dataset.instants = nInstants;

canvas.addEventListener('wheel', ev => {
  ev.preventDefault();
  if (Math.abs(ev.deltaX) > Math.abs(ev.deltaY) || ev.shiftKey) {
    pan((ev.deltaX || ev.deltaY) / plotW());
  } else if (ev.offsetX > LABEL) {
    zoom(Math.pow(1.0015, -ev.deltaY), T(ev.offsetX));
  }
}, {passive: false});
let drag = null;
canvas.addEventListener('mousedown', ev => {
  drag = {x: ev.clientX, t0: t0, t1: t1}; canvas.style.cursor = 'grabbing';
});
window.addEventListener('mouseup', () => { drag = null; canvas.style.cursor = 'grab'; });
window.addEventListener('mousemove', ev => {
  if (!drag) return;
  const d = (drag.x - ev.clientX) / plotW() * (drag.t1 - drag.t0);
  setView(drag.t0 + d, drag.t1 + d); redraw();
});
canvas.addEventListener('dblclick', ev => zoom(3, T(ev.offsetX)));
function hit(x, y) {
  const t = T(x), tol = 3 * (t1 - t0) / plotW();
  for (const L of layout) {
    if (L.kind !== 'track' || y < L.y || y >= L.y + L.h) continue;
    if (y < L.y + LANE) {
      let best = null;
      for (const g of L.t.marks) {
        const i = lower(g.ts, t - tol);
        if (i < g.ev.length && g.ts[i] <= t + tol) best = g.ev[i];
      }
      return best;
    }
    const lv = L.t.levels[Math.floor((y - L.y - LANE) / ROW)];
    if (!lv) return null;
    const i = lower(lv.e, t - tol);
    return i < lv.ev.length && lv.s[i] <= t + tol ? lv.ev[i] : null;
  }
  return null;
}
canvas.addEventListener('mousemove', ev => {
  const e = drag ? null : hit(ev.offsetX, ev.offsetY);
  if (!e) { tip.style.display = 'none'; return; }
  let s = e.name + '  [' + e.cat + ']\nat ' + fmt(e.ts);
  if (e.dur !== undefined) s += ', lasts ' + fmt(e.dur);
  for (const k in e.args) if (e.args[k] !== null) s += '\n' + k + ': ' + e.args[k];
  tip.textContent = s; tip.style.display = 'block';
  tip.style.left = Math.min(ev.offsetX + 14, W - 260) + 'px';
  tip.style.top = (ev.offsetY + 14) + 'px';
});
canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
document.getElementById('zin').onclick = () => zoom(2);
document.getElementById('zout').onclick = () => zoom(0.5);
document.getElementById('left').onclick = () => pan(-0.25);
document.getElementById('right').onclick = () => pan(0.25);
document.getElementById('reset').onclick = reset;
window.addEventListener('keydown', ev => {
  const k = ev.key.toLowerCase();
  if (k === 'w') zoom(1.5); else if (k === 's') zoom(1 / 1.5);
  else if (k === 'a') pan(-0.15); else if (k === 'd') pan(0.15); else if (k === '0') reset();
});
window.addEventListener('resize', resize);
resize();
})();
"""

_LEGEND = (("micro-tile", "#5c9fd6"), ("tile", "#9ccfa8"), ("layer", "#8fb3de"),
           ("PendSV", "#f0a04b"), ("timer ISR", "#d9534f"), ("RT job", "#5cb85c"),
           ("SysTick", "#9b7fd1"), ("deadline miss", "#e0003c"), ("yield check", "#777"))
_HEADLINE = (("kernel_cycles", "kernel cycles"), ("wall_cycles", "wall cycles"),
             ("yield_checks", "yield checks"), ("max_preemption_latency_cycles",
                                                "worst preemption (cycles)"),
             ("rt_jobs", "RT jobs"), ("deadline_misses", "deadline misses"))


def _summary(other: Mapping[str, Any]) -> str:
    m = other.get("metrics") or {}
    parts = [f"{label} {m[k]:,}" for k, label in _HEADLINE if isinstance(m.get(k), int | float)]
    sched = other.get("schedule") or {}
    if sched:
        parts.append(" ".join(f"{k}={v}" for k, v in sched.items() if "." not in k))
    parts.append(f"{other.get('cpu_mhz', 50):g} MHz: times in µs of the modelled clock")
    if other.get("deadline_cycles"):
        dl = other["deadline_cycles"]
        parts.append(f"RT deadline {dl:,} cycles = {dl / (other.get('cpu_mhz') or 50):g} µs")
    return " · ".join(parts)


def render_html(doc: Mapping[str, Any]) -> str:
    """The page for a Chrome trace document from ``timeline.chrome_trace``."""
    other = doc.get("otherData") or {}
    title = str(other.get("title") or "timeline")
    e = html.escape
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    legend = "".join(f'<span><i style="background:{c}"></i>{e(n)}</span>' for n, c in _LEGEND)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>timeline: {e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Timeline: {e(title)}</h1><div>{e(_summary(other))}</div>"
        "<div id='bar'><button id='zin' title='zoom in (w, wheel)'>+</button>"
        "<button id='zout' title='zoom out (s)'>&minus;</button>"
        "<button id='left' title='pan left (a, drag)'>&larr;</button>"
        "<button id='right' title='pan right (d)'>&rarr;</button>"
        "<button id='reset' title='whole run (0)'>reset</button><span id='info'></span></div>"
        f"<div id='legend'>{legend}</div></header>"
        "<div id='wrap'><canvas id='tl'></canvas><div id='tip'></div></div>"
        f"<script type='application/json' id='trace-data'>{data}</script>"
        f"<script>{_JS}</script></body></html>\n")


def offline_only(page: Any, blocked: list[str]) -> None:
    """Route a (Playwright) page so that only file:// loads: every other request is aborted
    and recorded in ``blocked`` (the page must work without a network)."""
    def route(r: Any) -> None:
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
