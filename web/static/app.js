// splitpoint live view: renders the gateway's server-sent events and sends
// the controls' commands. No library, no network beyond this gateway.
'use strict';

const WINDOW_MS = 10 * 60 * 1000; // the chart's longest span
const MAX_POINTS = 1200;          // history kept per device in the page
const STALE_MS = 10 * 1000;       // telemetry older than this: "stale"

let csrf = document.querySelector('meta[name="csrf-token"]').content;
const devices = new Map(); // id → {data, hist, el, frameShown, frameLoading}
let skew = 0;              // gateway clock − this clock (ms)
const serverNow = () => Date.now() + skew;

const $ = (root, sel) => root.querySelector(sel);

function setText(el, s) { if (el.textContent !== s) el.textContent = s; }

function fmt(v, digits) {
  return (v === null || v === undefined || !Number.isFinite(v)) ? '–' : v.toFixed(digits);
}

function ago(ms) {
  if (ms < 0) ms = 0;
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s ago';
  const m = Math.round(s / 60);
  if (m < 60) return m + ' min ago';
  return Math.round(m / 60) + ' h ago';
}

// --- live updates ---------------------------------------------------------

function connect() {
  const conn = document.getElementById('conn');
  const es = new EventSource('events');
  es.onopen = () => { conn.dataset.state = 'live'; conn.textContent = 'live'; };
  es.onerror = () => { conn.dataset.state = 'down'; conn.textContent = 'reconnecting…'; };
  es.addEventListener('snapshot', (e) => apply(JSON.parse(e.data)));
  es.addEventListener('update', (e) => apply(JSON.parse(e.data)));
}

function apply(v) {
  skew = v.now - Date.now();
  if (v.reset) {
    const keep = new Set(v.devices.map((d) => d.id));
    for (const id of [...devices.keys()]) if (!keep.has(id)) removeDevice(id);
  }
  for (const d of v.devices) {
    let cur = devices.get(d.id);
    if (!cur) {
      cur = { hist: [], el: makeCard(d.id), frameShown: 0, frameLoading: false };
      devices.set(d.id, cur);
      placeCard(d.id, cur.el);
    }
    if (v.reset) cur.hist = [];
    const last = cur.hist.length ? cur.hist[cur.hist.length - 1][0] : -Infinity;
    for (const p of d.history || []) if (p[0] > last) cur.hist.push(p);
    if (cur.hist.length > MAX_POINTS) cur.hist.splice(0, cur.hist.length - MAX_POINTS);
    cur.data = d;
    render(d.id, cur);
  }
  for (const id of v.removed || []) removeDevice(id);
  if (v.clouds) renderClouds(v.clouds);
  const ign = document.getElementById('ignored');
  ign.hidden = !v.ignored;
  if (v.ignored) ign.textContent = v.ignored + ' device(s) not shown: the live view holds at most its limit of devices.';
  document.getElementById('empty').hidden = devices.size > 0;
}

function removeDevice(id) {
  const cur = devices.get(id);
  if (cur) cur.el.remove();
  devices.delete(id);
}

function placeCard(id, el) {
  const main = document.getElementById('devices');
  const after = [...main.querySelectorAll('.card')].find((c) => c.dataset.device > id);
  main.insertBefore(el, after || null);
}

function renderClouds(clouds) {
  const box = document.getElementById('clouds');
  box.replaceChildren(...clouds.map((c) => {
    const s = document.createElement('span');
    s.className = 'chip ' + (c.online ? 'online' : 'offline');
    let t = 'cloud ' + c.id + (c.online ? '' : ' (offline)');
    if (c.online && c.workers) t += ' · ' + c.workers + ' workers · ' + Math.round(c.utilisation * 100) + '% busy';
    s.textContent = t;
    return s;
  }));
}

// --- a device's card ------------------------------------------------------

function makeCard(id) {
  const el = document.getElementById('card').content.firstElementChild.cloneNode(true);
  el.dataset.device = id;
  setText($(el, '.name'), id);
  for (const b of el.querySelectorAll('.mode-btn')) {
    b.addEventListener('click', () => send(el, { device: id, mode: b.dataset.mode }, b.dataset.mode + ' mode'));
  }
  $(el, '.target-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = Number($(el, 'input[name=target]').value);
    send(el, { device: id, target_fps: v }, 'target ' + v + ' fps');
  });
  const img = $(el, '.frame img');
  img.addEventListener('load', () => { devices.get(id) && (devices.get(id).frameLoading = false); $(el, '.frame').hidden = false; });
  img.addEventListener('error', () => { devices.get(id) && (devices.get(id).frameLoading = false); });
  return el;
}

function render(id, cur) {
  const d = cur.data, el = cur.el;
  const now = serverNow();
  const stale = d.status === 'online' && d.telemetry_at > 0 && now - d.telemetry_at > STALE_MS;
  const status = stale ? 'stale' : (d.status || 'unknown');
  const badge = $(el, '.status');
  badge.className = 'badge status ' + status;
  setText(badge, status);
  el.classList.toggle('offline', d.status === 'offline');
  setText($(el, '.pipeline'), d.pipeline || '');
  setText($(el, '.age'), d.telemetry_at ? 'telemetry ' + ago(now - d.telemetry_at) : 'no telemetry yet');

  setText($(el, '.fps'), fmt(d.fps, 1));
  setText($(el, '.of-target'), d.target_fps ? '/ ' + fmt(d.target_fps, 1) : '');
  setText($(el, '.split'), d.split ? String(d.split) : '–');
  const dec = d.decision;
  setText($(el, '.pending'), dec && dec.split !== d.split ? '→ ' + dec.split : (d.stages ? 'of ' + (d.stages - 1) : ''));
  setText($(el, '.mode'), d.mode || '–');
  setText($(el, '.target'), d.target_fps ? fmt(d.target_fps, 1) + ' fps' : '–');
  setText($(el, '.latency'), fmt(d.latency_p50_ms, 1) + ' / ' + fmt(d.latency_p99_ms, 1) + ' ms');
  setText($(el, '.results'), fmt(d.results_per_s, 1));
  setText($(el, '.cpu'), d.cpu_percent === null || d.cpu_percent === undefined ? '–' : fmt(d.cpu_percent, 0) + ' %');
  setText($(el, '.inflight'), d.window ? d.in_flight + ' / ' + d.window : '–');
  setText($(el, '.reason'), dec ? dec.reason + ' (' + ago(now - dec.at) + ')' : 'no decision yet');

  const err = $(el, '.error');
  const showErr = d.error && now - d.error.at < 120000;
  err.hidden = !showErr;
  if (showErr) setText(err, 'refused: ' + d.error.received + ' — ' + d.error.error);

  // Split buttons 1..stages-1, the applied one highlighted.
  const box = $(el, '.splits');
  const n = Math.max(0, (d.stages || 0) - 1);
  if (box.children.length !== n) {
    box.replaceChildren();
    for (let k = 1; k <= n; k++) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = String(k);
      b.dataset.split = String(k);
      b.title = 'run stages 1–' + k + ' on the device (manual)';
      b.addEventListener('click', () => send(el, { device: id, split: k }, 'split ' + k));
      box.append(b);
    }
  }
  for (const b of box.children) b.classList.toggle('active', Number(b.dataset.split) === d.split);
  for (const b of el.querySelectorAll('.mode-btn')) b.classList.toggle('active', b.dataset.mode === d.mode);
  const input = $(el, 'input[name=target]');
  if (document.activeElement !== input && d.target_fps) input.value = String(d.target_fps);

  if (d.frame > cur.frameShown && !cur.frameLoading) {
    cur.frameShown = d.frame;
    cur.frameLoading = true;
    $(el, '.frame img').src = 'frame/' + encodeURIComponent(id) + '?n=' + d.frame;
  }
  drawChart($(el, '.chart'), cur.hist, d.stages, now);
}

// --- chart ----------------------------------------------------------------

// The chart spans the history it has, on a nice scale from 30 s to 10 min.
const SPANS = [30e3, 60e3, 120e3, 300e3, 600e3];

function spanLabel(ms) {
  return ms < 60e3 ? '−' + ms / 1000 + ' s' : '−' + ms / 60e3 + ' min';
}

// niceStep is the smallest of 1, 2, 2.5, 5 × 10^k at least v.
function niceStep(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v - 1e-9) return m * p;
  return 10 * p;
}

function drawChart(canvas, hist, stages, now) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const L = 34, R = 24, T = 8, B = 18;
  const pw = w - L - R, ph = h - T - B;
  const have = hist.length ? now - hist[0][0] : 0;
  const span = SPANS.find((s) => s >= have) || WINDOW_MS;
  const t0 = now - span;
  const pts = hist.filter((p) => p[0] >= t0 - 5000);
  let top = 0;
  for (const p of pts) top = Math.max(top, p[1], p[3]);
  const step = niceStep(Math.max(top, 1) * 1.05 / 4);
  const ticks = Math.max(1, Math.ceil(Math.max(top, 1) * 1.05 / step));
  const fmax = ticks * step;
  const smax = Math.max(1, (stages || 2) - 1);
  const x = (t) => L + (t - t0) / span * pw;
  const yf = (f) => T + ph - Math.min(f, fmax) / fmax * ph;
  const ys = (s) => T + ph - s / smax * ph;

  ctx.font = '10px system-ui, sans-serif';
  ctx.lineWidth = 1;
  ctx.strokeStyle = color('--line');
  ctx.fillStyle = color('--muted');
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= ticks; i++) {
    const y = yf(i * step);
    ctx.beginPath(); ctx.moveTo(L, Math.round(y) + .5); ctx.lineTo(L + pw, Math.round(y) + .5); ctx.stroke();
    ctx.textAlign = 'right';
    ctx.fillText(String(+(i * step).toFixed(1)), L - 4, y);
  }
  ctx.textAlign = 'left';
  ctx.fillStyle = color('--split');
  for (let s = 1; s <= smax; s++) ctx.fillText(String(s), L + pw + 5, ys(s));
  ctx.fillStyle = color('--muted');
  ctx.textBaseline = 'alphabetic';
  for (const [ago, label, align] of [[span, spanLabel(span), 'left'], [span / 2, spanLabel(span / 2), 'center'], [0, 'now', 'right']]) {
    ctx.textAlign = align;
    ctx.fillText(label, x(now - ago), h - 4);
  }
  if (!pts.length) return;
  ctx.save();
  ctx.beginPath(); ctx.rect(L, T - 2, pw, ph + 4); ctx.clip();
  const line = (val, y, style, dash, step) => {
    ctx.beginPath();
    ctx.setLineDash(dash);
    ctx.strokeStyle = style;
    ctx.lineWidth = 2;
    pts.forEach((p, i) => {
      const px = x(p[0]), py = y(p[val]);
      if (i === 0) ctx.moveTo(px, py);
      else if (step) { ctx.lineTo(px, y(pts[i - 1][val])); ctx.lineTo(px, py); }
      else ctx.lineTo(px, py);
    });
    ctx.stroke();
  };
  line(3, yf, color('--target'), [5, 4], true);
  line(2, ys, color('--split'), [], true);
  line(1, yf, color('--fps'), [], false);
  ctx.restore();
}

// --- controls -------------------------------------------------------------

async function post(body) {
  return fetch('api/control', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
    body: JSON.stringify(body),
  });
}

async function send(el, body, what) {
  const msg = $(el, '.msg');
  msg.classList.remove('bad');
  setText(msg, 'sending ' + what + '…');
  try {
    let res = await post(body);
    if (res.status === 403) {
      // A restarted gateway signs tokens with a new key: get one, retry once.
      const s = await fetch('api/session', { credentials: 'same-origin' });
      if (s.ok) {
        csrf = (await s.json()).token;
        res = await post(body);
      }
    }
    const out = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(out.error || res.statusText);
    setText(msg, 'sent ' + what + ' (' + out.cmd_id + '); the gateway decides and the device confirms');
  } catch (e) {
    msg.classList.add('bad');
    setText(msg, what + ' not sent: ' + e.message);
  }
}

// Time moves: redraw the charts and the "ago"s every second.
setInterval(() => { for (const [id, cur] of devices) if (cur.data) render(id, cur); }, 1000);
window.addEventListener('resize', () => { for (const [id, cur] of devices) if (cur.data) render(id, cur); });
connect();
