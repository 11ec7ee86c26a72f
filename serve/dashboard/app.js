// app.js is the dashboard: it polls /v1/stats, /v1/status and /v1/query,
// follows /v1/views/{view}/live, and redraws the charts (chart.js).
'use strict';

const COLORS = { batch: '#4e9af1', speed: '#f1a94e', a: '#5ccf8a', b: '#e85d75', c: '#b48ef1', d: '#f1e34e' };
const PALETTE = [COLORS.batch, COLORS.speed, COLORS.a, COLORS.c, COLORS.d, COLORS.b];

const state = {
  token: localStorage.getItem('tideline-token') || '',
  views: [],
  view: null,
  measure: null,
  stats: {},        // stream -> [Stats], oldest first
  corrections: {},  // view -> [[t, count]]
  status: {},
  live: 0,
  liveAbort: null,
  measuresDue: 0,
};

const $ = sel => document.querySelector(sel);

async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) {
    $('#auth').hidden = false;
    throw new Error('this server needs a bearer token');
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function query(sql) {
  return api('/v1/query', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sql }) });
}

function qi(name) { return '"' + name.replaceAll('"', '""') + '"'; }

function setConn(ok, text) {
  const c = $('#conn');
  c.textContent = text;
  c.className = 'conn ' + (ok ? 'ok' : 'bad');
}

// The measure's aggregate across groups: counts and sums add up, minimums
// and maximums take theirs.
function across(m) {
  return m.kind === 'min' ? 'min' : m.kind === 'max' ? 'max' : 'sum';
}

// ---- stats: throughput, freshness, late and dead-lettered ----

async function pollStats() {
  const last = Object.values(state.stats).flat().map(s => s.time).sort().pop();
  const res = await api('/v1/stats' + (last ? '?since=' + encodeURIComponent(last) : ''));
  const cutoff = Date.now() - 5 * 60 * 1000;
  for (const [stream, list] of Object.entries(res.streams)) {
    const h = (state.stats[stream] || []).concat(list).filter(s => Date.parse(s.time) >= cutoff);
    state.stats[stream] = h;
  }
  drawStats();
}

function total(events) { return Object.values(events || {}).reduce((a, b) => a + b, 0); }

function drawStats() {
  const through = [], fresh = [], late = [];
  Object.entries(state.stats).filter(([, h]) => h.length).forEach(([stream, h], i) => {
    const rate = [], p50 = [], worst = [], lateN = [], dead = [];
    for (let j = 0; j < h.length; j++) {
      const s = h[j], t = Date.parse(s.time);
      if (j > 0 && h[j - 1].started === s.started) {
        const dt = (t - Date.parse(h[j - 1].time)) / 1000;
        const d = total(s.events) - total(h[j - 1].events);
        if (dt > 0 && d >= 0) rate.push([t, d / dt]);
      }
      if (s.freshness_max_ms > 0) {
        p50.push([t, s.freshness_p50_ms]);
        worst.push([t, s.freshness_max_ms]);
      }
      lateN.push([t, total(s.late)]);
      dead.push([t, s.dead_lettered]);
    }
    const c = PALETTE[i % PALETTE.length];
    const lastOf = p => p.length ? p[p.length - 1][1] : undefined;
    through.push({ name: stream, color: c, type: 'line', points: rate, last: lastOf(rate) });
    fresh.push({ name: stream + ' p50', color: c, type: 'line', points: p50, last: lastOf(p50) },
      { name: stream + ' worst', color: COLORS.b, type: 'line', points: worst, last: lastOf(worst) });
    late.push({ name: stream + ' late', color: COLORS.speed, type: 'line', points: lateN, last: lastOf(lateN) },
      { name: stream + ' dead-lettered', color: COLORS.b, type: 'line', points: dead, last: lastOf(dead) });
  });
  const none = 'no stats yet: is `tideline stream` running?';
  draw($('#throughput'), { series: through, empty: none });
  draw($('#freshness'), { series: fresh, empty: none });
  draw($('#late'), { series: late, empty: none });
}

// ---- status and corrections ----

function ago(iso) {
  if (!iso || iso.startsWith('0001-')) return '—';
  return iso.replace('T', ' ').replace(/\.\d+/, '').replace('Z', ' UTC');
}

async function pollStatus() {
  const res = await api('/v1/status');
  state.status = res.views;
  const now = Date.now();
  const rows = [];
  for (const v of state.views) {
    const s = res.views[v.name];
    if (!s) continue;
    const h = (state.corrections[v.name] || []).concat([[now, s.corrections]]).filter(p => p[0] >= now - 5 * 60 * 1000);
    state.corrections[v.name] = h;
    const tr = document.createElement('tr');
    const failed = (s.failures || []).map(f => f.partition + ': ' + f.type + ': ' + f.message).join('\n');
    for (const text of [v.name, ago(s.tideline), ago(s.watermark), ago(s.last_compaction), s.partitions_pending, s.corrections, s.stale ? 'stale by ' + s.stale + ': batch only' : 'fresh', failed || '—']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    if (failed) tr.className = 'failed';
    rows.push(tr);
  }
  $('#status tbody').replaceChildren(...rows);
  draw($('#corrections'), {
    series: state.views.map((v, i) => ({ name: v.name, color: PALETTE[i % PALETTE.length], type: 'line', points: state.corrections[v.name] || [], last: (res.views[v.name] || {}).corrections })),
  });
}

async function pollCorrectionList() {
  const parts = state.views.map(v => `SELECT view, kind, window_start, dims, measure, old_value, new_value, recorded_at FROM ${qi('corrections_' + v.name)}`);
  if (!parts.length) return;
  const res = await query(parts.join(' UNION ALL ') + ' ORDER BY recorded_at DESC LIMIT 8');
  $('#corrections tbody').replaceChildren(...res.rows.map(r => {
    const tr = document.createElement('tr');
    for (const text of [r[0], r[1], ago(r[2]), r[3], r[4], `${r[5]} → ${r[6]}`]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
}

// ---- the view's measure over time, tideline marked ----

async function pollMeasures() {
  const v = state.view, m = v && v.measures.find(x => x.name === state.measure);
  if (!m) return;
  const f = across(m);
  // Sessions start at any instant: their bars are the minute they start in.
  const start = v.session ? "date_trunc('minute', window_start)" : 'window_start';
  const res = await query(`SELECT ${start}, source, CAST(${f}(${qi(m.name)}) AS DOUBLE) FROM ${qi(v.name)} ` +
    `WHERE window_start >= (SELECT max(window_start) FROM ${qi(v.name)}) - INTERVAL 30 MINUTE GROUP BY ALL ORDER BY 1`);
  const scale = Math.pow(10, m.scale || 0);
  const pts = { batch: [], speed: [] };
  for (const [t, source, val] of res.rows) pts[source].push([Date.parse(t), val / scale]);
  const st = state.status[v.name] || {};
  const marks = st.tideline && !st.tideline.startsWith('0001-') ? [{ t: Date.parse(st.tideline), label: 'tideline' }] : [];
  $('#measures-title').textContent = `${v.name}: ${f}(${m.name}) across groups, last 30 minutes of windows`;
  draw($('#measures'), {
    series: [{ name: 'batch', color: COLORS.batch, type: 'bar', points: pts.batch }, { name: 'speed', color: COLORS.speed, type: 'bar', points: pts.speed }],
    barWidth: parseDuration(v.hop || '1m'), marks, empty: 'no windows in this view yet',
  });
}

function parseDuration(s) { // Go's time.Duration text: 1m0s, 5m0s, 1h0m0s
  let ms = 0;
  for (const [, n, u] of s.matchAll(/([\d.]+)(h|ms|m|s)/g)) ms += parseFloat(n) * { h: 3600e3, m: 60e3, s: 1e3, ms: 1 }[u];
  return ms || 60e3;
}

// follow reads the view's server-sent events with fetch, so the bearer
// token goes along, counts them, and redraws the measure soon after.
async function follow() {
  if (state.liveAbort) state.liveAbort.abort();
  const ctl = new AbortController();
  state.liveAbort = ctl;
  const headers = state.token ? { Authorization: 'Bearer ' + state.token } : {};
  try {
    const r = await fetch('/v1/views/' + encodeURIComponent(state.view.name) + '/live', { headers, signal: ctl.signal });
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const n = (dec.decode(value, { stream: true }).match(/^event: update$/gm) || []).length;
      if (n) {
        state.live += n;
        $('#live').textContent = `live: ${state.live} updates`;
        $('#measures').dataset.live = state.live;
        state.measuresDue = Math.min(state.measuresDue || Infinity, Date.now() + 500);
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  setTimeout(() => { if (state.liveAbort === ctl) follow(); }, 2000);
}

// ---- decisions (the payments example) ----

async function pollDecisions() {
  const v = state.views.find(x => x.measures.some(m => m.name === 'flagged') && x.measures.some(m => m.name === 'decisions'));
  if (!v) {
    draw($('#decisions'), { series: [], empty: 'no view with decisions and flagged measures in the spec' });
    return;
  }
  $('#decisions-title').textContent = `approved and flagged per window, from ${v.name}`;
  const res = await query(`SELECT window_start, CAST(sum(decisions) - sum(flagged) AS DOUBLE), CAST(sum(flagged) AS DOUBLE) FROM ${qi(v.name)} ` +
    `WHERE window_start >= (SELECT max(window_start) FROM ${qi(v.name)}) - INTERVAL 30 MINUTE GROUP BY 1 ORDER BY 1`);
  draw($('#decisions'), {
    series: [{ name: 'approved', color: COLORS.a, type: 'bar', points: res.rows.map(r => [Date.parse(r[0]), r[1]]) },
      { name: 'flagged', color: COLORS.b, type: 'bar', points: res.rows.map(r => [Date.parse(r[0]), r[2]]) }],
    barWidth: parseDuration(v.hop || '1m'), stack: true, empty: 'no decisions yet: the scorer publishes them',
  });
}

// ---- wiring ----

function pickView(name) {
  state.view = state.views.find(v => v.name === name) || state.views[0];
  const ms = $('#measure');
  ms.replaceChildren(...state.view.measures.map(m => new Option(m.name, m.name)));
  state.measure = state.view.measures[0].name;
  state.live = 0;
  follow();
  state.measuresDue = Date.now();
}

// every runs f every ms; a failure shows in the panels it draws (figs)
// and in the header.
async function every(ms, f, ...figs) {
  for (;;) {
    try {
      await f();
      setConn(true, 'connected');
    } catch (e) {
      setConn(false, e.message);
      for (const fig of figs) draw($(fig), { series: [], empty: 'cannot read: ' + e.message });
    }
    await new Promise(r => setTimeout(r, ms));
  }
}

async function start() {
  $('#auth').addEventListener('submit', e => {
    e.preventDefault();
    state.token = $('#token').value;
    localStorage.setItem('tideline-token', state.token);
    location.reload();
  });
  for (;;) {
    try {
      state.views = (await api('/v1/views')).views;
      break;
    } catch (e) {
      setConn(false, e.message);
      await new Promise(r => setTimeout(r, 2000));
    }
  }
  $('#view').replaceChildren(...state.views.map(v => new Option(v.name, v.name)));
  $('#view').addEventListener('change', e => pickView(e.target.value));
  $('#measure').addEventListener('change', e => { state.measure = e.target.value; state.measuresDue = Date.now(); });
  if (state.views.length) pickView(state.views[0].name);
  every(1000, pollStats, '#throughput', '#freshness', '#late');
  every(1000, pollStatus, '#corrections');
  every(3000, pollCorrectionList);
  every(3000, pollDecisions, '#decisions');
  every(100, async () => {
    if (state.measuresDue && Date.now() >= state.measuresDue) {
      state.measuresDue = Date.now() + 2000; // at least every 2s; sooner on live updates
      await pollMeasures();
    }
  }, '#measures');
}

start();
