// chart.js draws the dashboard's charts as plain SVG: lines and bars over
// time, with optional vertical marks (the tideline). No library, nothing
// fetched: the dashboard renders offline.
'use strict';

const SVGNS = 'http://www.w3.org/2000/svg';

function svgEl(name, attrs, parent) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtTime(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

function fmtNum(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(0) + 'k';
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  return v.toFixed(2);
}

// draw renders spec into the figure's svg and legend, and records the
// number of points drawn in data-points (the browser test reads it).
//   spec.series: [{name, color, type: 'line'|'bar', points: [[tMillis, value]]}]
//   spec.barWidth: a bar's width in ms (bars start at their t)
//   spec.stack: bars at the same t stack in series order
//   spec.marks: [{t, label}] vertical lines, drawn at the edge when outside
//   spec.empty: the text shown when there is nothing to draw
function draw(fig, spec) {
  const svg = fig.querySelector('svg');
  const W = svg.clientWidth || 400, H = svg.clientHeight || 180;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const series = spec.series || [];
  const n = series.reduce((a, s) => a + s.points.length, 0);
  fig.dataset.points = n;
  const legend = fig.querySelector('.legend');
  if (legend) {
    legend.replaceChildren(...series.map(s => {
      const span = document.createElement('span');
      const i = document.createElement('i');
      i.style.background = s.color;
      span.append(i, s.name + (s.last !== undefined ? ' ' + fmtNum(s.last) : ''));
      return span;
    }));
  }
  if (n === 0) {
    svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, svg).textContent = spec.empty || 'no data yet';
    return;
  }
  const bw = spec.barWidth || 0;
  let t0 = Infinity, t1 = -Infinity, top = 0;
  const stacked = new Map();
  for (const s of series) {
    for (const [t, v] of s.points) {
      t0 = Math.min(t0, t);
      t1 = Math.max(t1, t + (s.type === 'bar' ? bw : 0));
      if (spec.stack && s.type === 'bar') {
        const h = (stacked.get(t) || 0) + v;
        stacked.set(t, h);
        top = Math.max(top, h);
      } else {
        top = Math.max(top, v);
      }
    }
  }
  if (t1 <= t0) t1 = t0 + 1000;
  const ymax = niceMax(top);
  const L = 44, R = 8, T = 8, B = 18;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => H - B - v / ymax * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    svgEl('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }, svg);
    svgEl('text', { x: L - 4, y: y(v) + 3, 'text-anchor': 'end' }, svg).textContent = fmtNum(v);
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + (t1 - t0) * i / 3;
    svgEl('text', { x: x(t), y: H - 4, 'text-anchor': i === 0 ? 'start' : i === 3 ? 'end' : 'middle' }, svg).textContent = fmtTime(t);
  }
  const base = new Map();
  for (const s of series) {
    if (s.type === 'bar') {
      for (const [t, v] of s.points) {
        const b = spec.stack ? (base.get(t) || 0) : 0;
        base.set(t, b + v);
        const w = Math.max(1, x(t + bw) - x(t) - 1);
        svgEl('rect', { x: x(t), y: y(b + v), width: w, height: Math.max(0, y(b) - y(b + v)), fill: s.color }, svg);
      }
    } else {
      const d = s.points.map(([t, v], i) => (i ? 'L' : 'M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1)).join('');
      svgEl('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 1.6 }, svg);
    }
  }
  for (const m of spec.marks || []) {
    const t = Math.min(Math.max(m.t, t0), t1);
    const label = m.t < t0 ? '← ' + m.label : m.t > t1 ? m.label + ' →' : m.label;
    svgEl('line', { x1: x(t), x2: x(t), y1: T, y2: H - B, class: 'tide' }, svg);
    svgEl('text', { x: x(t) + (m.t > t1 ? -4 : 4), y: T + 10, 'text-anchor': m.t > t1 ? 'end' : 'start', class: 'tide-label' }, svg).textContent = label;
  }
}
