/*
 * chart.js: a line chart drawn as one SVG from the points it is given.
 *
 *   drawChart(box, {
 *     series: [{key, label, color, dash, run, metric, points: [{x, y, id}], best}],
 *     x: {kind: 'integer' | 'number' | 'time', label},
 *     y: {kind: 'number' | 'bytes', label, log},
 *     steps,            // draw each series as a step function (cumulative sums)
 *     tip(series, p),   // Html for the tooltip of a point
 *     open(series, p),  // a click on a point or Enter on the focused one
 *     label,            // the SVG's accessible name
 *   })
 *
 * Up to DENSE points get a <circle class="pt"> each, carrying data-series,
 * data-run, data-metric, data-id, data-x, data-y and data-best, so a test (or
 * a user's inspector) can read back what was plotted. Above that, each series
 * is a line plus one path of dots (cheap to build and lay out with thousands
 * of checkpoints) and only the best points keep circles. The SVG carries
 * data-points (the number of points drawn). The pointer and the arrow keys
 * move a hover mark over the nearest point.
 */
import { html, render } from './html.js';
import { fmtBytes, fmtNum, fmtValue } from './format.js';

const DENSE = 400;
const DOTS_MAX = 2000;

export function niceTicks(lo, hi, count) {
  if (!(hi > lo)) hi = lo + 1;
  const span = hi - lo;
  let step = 10 ** Math.floor(Math.log10(span / count));
  const err = span / count / step;
  if (err >= 7.5) step *= 10;
  else if (err >= 3.5) step *= 5;
  else if (err >= 1.5) step *= 2;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const TIME_STEPS = [SEC, 2 * SEC, 5 * SEC, 10 * SEC, 15 * SEC, 30 * SEC, MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN,
  30 * MIN, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 365 * DAY];

/* Ticks at round local times, and a label format that fits their spacing. */
export function timeTicks(lo, hi, count) {
  const want = (hi - lo) / Math.max(1, count);
  const step = TIME_STEPS.find((s) => s >= want) || TIME_STEPS[TIME_STEPS.length - 1];
  const offset = new Date(lo).getTimezoneOffset() * MIN;
  const ticks = [];
  if (step < DAY) {
    for (let t = Math.ceil((lo - offset) / step) * step + offset; t <= hi; t += step) ticks.push(t);
  } else {
    const d = new Date(lo);
    d.setHours(0, 0, 0, 0);
    const days = Math.round(step / DAY);
    while (d.getTime() < lo) d.setDate(d.getDate() + 1);
    for (; d.getTime() <= hi; d.setDate(d.getDate() + days)) ticks.push(d.getTime());
  }
  const opts = step < MIN ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
    : step < DAY ? { hour: '2-digit', minute: '2-digit' }
      : step < 365 * DAY ? { month: 'short', day: 'numeric' } : { year: 'numeric', month: 'short' };
  const f = new Intl.DateTimeFormat(undefined, opts);
  return { ticks, format: (t) => f.format(new Date(t)) };
}

/* Ticks for a byte axis: round numbers of the largest unit that fits. */
function byteTicks(lo, hi, count) {
  let unit = 1;
  while (hi / unit >= 1024 && unit < 1024 ** 5) unit *= 1024;
  return niceTicks(lo / unit, hi / unit, count).map((v) => v * unit);
}

/* An axis label: bytes without trailing zeros ("20 KB", "1.5 MB"). */
function fmtAxisValue(kind, v) {
  if (kind !== 'bytes') return fmtValue(v);
  return fmtBytes(v).replace(/\.0+ /, ' ').replace(/(\.\d*?)0+ /, '$1 ');
}

/* Draws the chart into box (replacing what it held); returns what it drew:
 * {points: [...visible points with _px/_py], W, H}. */
export function drawChart(box, spec) {
  const series = spec.series.filter((s) => s.points.length);
  const total = series.reduce((a, s) => a + s.points.length, 0);
  if (!total) {
    render(box, html`<div class="chart-empty">${spec.empty || 'Nothing to plot.'}</div>`);
    return null;
  }
  const logY = !!spec.y.log;
  const yv = (v) => (logY ? Math.log10(v) : v);
  const W = Math.max(box.clientWidth || 600, 280);
  const H = spec.height || (W < 560 ? 220 : 300);
  const m = { l: spec.y.kind === 'bytes' ? 66 : 56, r: 16, t: 14, b: 36 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;

  let xmin = Infinity;
  let xmax = -Infinity;
  let ymin = Infinity;
  let ymax = -Infinity;
  for (const s of series) {
    for (const p of s.points) {
      const y = yv(p.y);
      if (p.x < xmin) xmin = p.x;
      if (p.x > xmax) xmax = p.x;
      if (y < ymin) ymin = y;
      if (y > ymax) ymax = y;
    }
  }
  if (xmax === xmin) {
    const d = spec.x.kind === 'time' ? MIN : 1;
    xmin -= d;
    xmax += d;
  }
  if (ymax === ymin) {
    const d = Math.abs(ymin) * 0.1 || 1;
    ymin -= d;
    ymax += d;
  }
  const pad = (ymax - ymin) * 0.06;
  ymin -= pad;
  ymax += pad;
  if (!logY && ymin < 0 && ymin + pad >= 0) ymin = 0;
  const X = (v) => m.l + ((v - xmin) / (xmax - xmin)) * iw;
  const Y = (v) => m.t + (1 - (yv(v) - ymin) / (ymax - ymin)) * ih;
  const f1 = (v) => v.toFixed(1);

  /* y ticks, in the value's own units (log: powers of ten) */
  let yt;
  if (logY) {
    yt = niceTicks(Math.floor(ymin), Math.ceil(ymax), 4).filter((v) => v >= ymin && v <= ymax && Number.isInteger(v));
    if (yt.length < 2) yt = niceTicks(ymin, ymax, 4).filter((v) => v >= ymin && v <= ymax);
    yt = yt.map((v) => 10 ** v);
  } else if (spec.y.kind === 'bytes') {
    yt = byteTicks(ymin, ymax, 5).filter((v) => v >= ymin && v <= ymax);
  } else {
    yt = niceTicks(ymin, ymax, 5).filter((v) => v >= ymin && v <= ymax);
  }
  let xt;
  let xfmt;
  if (spec.x.kind === 'time') {
    const tt = timeTicks(xmin, xmax, Math.max(2, Math.floor(iw / 110)));
    xt = tt.ticks.filter((v) => v >= xmin && v <= xmax);
    xfmt = tt.format;
  } else {
    xt = niceTicks(xmin, xmax, Math.max(2, Math.floor(iw / 90)))
      .filter((v) => v >= xmin && v <= xmax && (spec.x.kind !== 'integer' || Number.isInteger(v)));
    xfmt = fmtNum;
  }

  const dense = total > DENSE;
  const visible = [];
  const lines = [];
  const bests = [];
  for (const s of series) {
    let d = '';
    let dots = '';
    const circles = [];
    s.points.forEach((p, i) => {
      p._px = X(p.x);
      p._py = Y(p.y);
      p._s = s;
      visible.push(p);
      if (!i) d += `M${f1(p._px)} ${f1(p._py)}`;
      else if (spec.steps) d += `H${f1(p._px)}V${f1(p._py)}`;
      else d += `L${f1(p._px)} ${f1(p._py)}`;
      const isBest = p === s.best;
      if (isBest) bests.push(p);
      if (dense && !isBest) {
        dots += `M${f1(p._px)} ${f1(p._py)}h0`;
        return;
      }
      circles.push(html`<circle class="pt${isBest ? ' best' : ''}" cx="${f1(p._px)}" cy="${f1(p._py)}" r="${isBest ? 5 : 3}"
        data-series="${s.key}" data-run="${s.run ?? ''}" data-metric="${s.metric ?? ''}" data-id="${p.id ?? ''}"
        data-x="${p.x}" data-y="${p.y}" data-best="${isBest ? 'true' : 'false'}"/>`);
    });
    const area = spec.area
      ? html`<path class="area" d="${`${d}V${f1(m.t + ih)}H${f1(s.points[0]._px)}Z`}" fill="${s.color}"/>` : '';
    lines.push(html`${area}<path class="line" d="${d}" stroke="${s.color}" stroke-dasharray="${s.dash || 'none'}"
      data-series="${s.key}" data-run="${s.run ?? ''}" data-metric="${s.metric ?? ''}"/>`);
    if (dots && s.points.length <= DOTS_MAX) {
      lines.push(html`<path class="dots" d="${dots}" stroke="${s.color}" data-series="${s.key}"/>`);
    }
    lines.push(html`<g class="points" fill="${s.color}">${circles}</g>`);
  }

  /* Each best point's label goes above it, else below, else further up or
   * down, wherever it overlaps no label placed before it. */
  const placed = [];
  const bestMarks = bests.map((p) => {
    const text = `best ${p._s.metricLabel ? `${p._s.metricLabel} ` : ''}${fmtAxisValue(spec.y.kind, p.y)}`;
    const w = text.length * 6.6;
    const right = p._px + 10 + w > W;
    const x0 = right ? p._px - 10 - w : p._px + 10;
    const spots = [p._py - 12, p._py + 20, p._py - 26, p._py + 34, p._py - 40, p._py + 48]
      .filter((y) => y - 11 >= 0 && y <= H - m.b);
    const free = (y) => !placed.some((r) => x0 < r.x + r.w && r.x < x0 + w && Math.abs(y - r.y) < 14);
    const ly = spots.find(free) ?? spots[0] ?? p._py - 12;
    placed.push({ x: x0, y: ly, w });
    return html`<g class="best-mark" aria-hidden="true"><circle cx="${f1(p._px)}" cy="${f1(p._py)}" r="9"/>
      <text x="${f1(right ? p._px - 10 : p._px + 10)}" y="${f1(ly)}" text-anchor="${right ? 'end' : 'start'}">${text}</text></g>`;
  });

  const svg = html`<svg class="chart-svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" tabindex="0"
    aria-label="${spec.label}, ${total} points; use the arrow keys to step through them"
    data-points="${total}" data-lines="${series.length}" data-x="${spec.x.label}" data-y="${spec.y.label}">
    <g class="grid">${yt.map((v) => html`<line x1="${m.l}" x2="${W - m.r}" y1="${f1(Y(v))}" y2="${f1(Y(v))}"/>`)}</g>
    <g class="axis-labels">
      ${yt.map((v) => html`<text x="${m.l - 8}" y="${f1(Y(v) + 4)}" text-anchor="end">${fmtAxisValue(spec.y.kind, v)}</text>`)}
      ${xt.map((v) => html`<text x="${f1(X(v))}" y="${H - m.b + 18}" text-anchor="middle">${xfmt(v)}</text>`)}
      <text class="axis-title" x="${f1(m.l + iw / 2)}" y="${H - 4}" text-anchor="middle">${spec.x.label}</text>
    </g>
    <line class="axis" x1="${m.l}" x2="${W - m.r}" y1="${m.t + ih}" y2="${m.t + ih}"/>
    ${lines}
    ${bestMarks}
    <g class="hover" aria-hidden="true" style="display:none"><line class="hover-line" y1="${m.t}" y2="${m.t + ih}"/>
      <circle class="hover-dot" r="5"/></g>
  </svg><div class="tip" role="status" aria-live="polite" hidden></div>`;
  render(box, svg);

  visible.sort((a, b) => a._px - b._px || a._py - b._py);
  const chart = { points: visible, W, H, focus: -1 };
  wire(box, chart, spec);
  return chart;
}

function wire(box, ch, spec) {
  const svg = box.querySelector('svg');
  const tip = box.querySelector('.tip');
  const hover = svg.querySelector('.hover');
  const hline = svg.querySelector('.hover-line');
  const hdot = svg.querySelector('.hover-dot');
  const a = ch.points;

  /* the point closest to (px, py), looking near px first */
  function nearest(px, py) {
    let lo = 0;
    let hi = a.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (a[mid]._px < px) lo = mid + 1;
      else hi = mid;
    }
    let best = -1;
    let bd = Infinity;
    for (let i = Math.max(0, lo - 40); i < Math.min(a.length, lo + 40); i++) {
      const dx = a[i]._px - px;
      const dy = (a[i]._py - py) * 0.35;
      const d = dx * dx + dy * dy;
      if (d < bd) {
        bd = d;
        best = i;
      }
    }
    return best;
  }

  function show(i) {
    if (i < 0 || i >= a.length) return;
    ch.focus = i;
    const p = a[i];
    hover.style.display = '';
    hline.setAttribute('x1', p._px.toFixed(1));
    hline.setAttribute('x2', p._px.toFixed(1));
    hdot.setAttribute('cx', p._px.toFixed(1));
    hdot.setAttribute('cy', p._py.toFixed(1));
    hdot.setAttribute('fill', p._s.color);
    render(tip, spec.tip ? spec.tip(p._s, p) : html`${p._s.label}: ${p.y}`);
    tip.hidden = false;
    const sw = svg.clientWidth || ch.W;
    const scale = sw / ch.W;
    const x = p._px * scale;
    const y = p._py * scale;
    const tw = tip.offsetWidth;
    let left = x + 14;
    if (left + tw > sw) left = x - tw - 14;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${Math.max(0, y - 20)}px`;
  }

  function hide() {
    hover.style.display = 'none';
    tip.hidden = true;
  }

  function at(e) {
    const r = svg.getBoundingClientRect();
    const k = ch.W / r.width;
    return [(e.clientX - r.left) * k, (e.clientY - r.top) * k];
  }

  svg.addEventListener('mousemove', (e) => show(nearest(...at(e))));
  svg.addEventListener('mouseleave', () => {
    if (document.activeElement !== svg) hide();
  });
  svg.addEventListener('click', (e) => {
    const [px, py] = at(e);
    const p = a[nearest(px, py)];
    if (!p || !spec.open) return;
    const dx = p._px - px;
    const dy = p._py - py;
    if (dx * dx + dy * dy < 100) spec.open(p._s, p);
  });
  svg.addEventListener('focus', () => {
    if (ch.focus >= 0) return show(ch.focus);
    const bi = a.findIndex((p) => p === p._s.best);
    return show(bi >= 0 ? bi : a.length - 1);
  });
  svg.addEventListener('blur', hide);
  svg.addEventListener('keydown', (e) => {
    let i = ch.focus;
    const step = e.shiftKey ? 10 : 1;
    if (e.key === 'ArrowRight' || e.key === 'ArrowUp') i = Math.min(a.length - 1, i + step);
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowDown') i = Math.max(0, i - step);
    else if (e.key === 'Home') i = 0;
    else if (e.key === 'End') i = a.length - 1;
    else if (e.key === 'Enter' && a[i] && spec.open) {
      spec.open(a[i]._s, a[i]);
      return;
    } else if (e.key === 'Escape') {
      hide();
      return;
    } else return;
    e.preventDefault();
    show(i);
  });
}
