/*
 * page_storage.js: the storage page: logical, unique and stored bytes, the
 * ratios, the store's growth over time, and the share of each model.
 *
 * The growth chart is derived from the checkpoints the store holds now (no
 * history endpoint exists): sorted by created_at, the running sum of their
 * sizes (what was uploaded) and of their dedup.new_bytes (the tensor bytes
 * each upload added, before compression). Checkpoints deleted since, and the
 * space gc gave back, are not in it; the chart's note says so. The chart is
 * loaded after the page is shown (one list request per model, four at a
 * time), and #s-growth gets data-ready when it is drawn.
 */
import { html, render } from './html.js';
import { fmtBytes, fmtLocal, fmtNum, fmtRatio, fmtRel, pct, plural } from './format.js';
import { API, api, ckptHref, listCheckpoints, modelHref } from './api.js';
import { drawChart } from './chart.js';
import { main, navigate, ready, showError, stat } from './ui.js';

const GROWTH_COLORS = { uploaded: '#a5b4fc', added: '#4338ca' };

export function pageStorage(alive) {
  const st = { dead: false, growth: null };
  let resizeTimer = null;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => !st.dead && st.growth && drawGrowth(st.growth), 120);
  };
  window.addEventListener('resize', onResize);
  (async () => {
    let s;
    let models;
    try {
      [s, models] = await Promise.all([api(`${API}/stats`), api(`${API}/models`).catch(() => null)]);
    } catch (err) {
      if (alive()) showError(err);
      return;
    }
    if (!alive()) return;
    s = s || {};
    models = models?.models || [];
    renderPage(s, models);
    ready();
    if (!models.length) return;
    let rows;
    try {
      rows = await loadGrowth(models);
    } catch (err) {
      if (alive()) render(document.getElementById('s-growth-chart'), html`<div class="chart-empty">Could not load the checkpoints: ${err.message}</div>`);
      return;
    }
    if (!alive() || st.dead) return;
    st.growth = rows;
    drawGrowth(rows);
  })();
  return {
    destroy() {
      st.dead = true;
      window.removeEventListener('resize', onResize);
    },
  };
}

function renderPage(s, models) {
  const logical = s.logical_bytes || 0;
  const unique = s.unique_bytes || 0;
  const stored = s.stored_bytes || 0;
  const max = Math.max(logical, unique, stored, 1);
  const saved = logical > 0 ? 1 - stored / logical : 0;
  const bar = (label, value, cls, note) => {
    const w = Math.max((value / max) * 100, value > 0 ? 0.5 : 0);
    return html`<div class="bar-row"><div class="bar-label">${label}<span class="muted">${note}</span></div>
      <div class="bar-track" role="img" aria-label="${label}: ${fmtBytes(value)}"><div class="bar ${cls}" style="width:${w.toFixed(2)}%"></div></div>
      <div class="bar-value">${fmtBytes(value)}</div></div>`;
  };
  const tot = models.reduce((a, m) => a + (m.bytes || 0), 0) || 1;
  const byModel = models.length ? html`<section class="card table-card"><h2 class="pad-h">By model</h2><div class="table-wrap">
    <table class="table"><thead><tr><th scope="col">Model</th><th scope="col" class="num">Checkpoints</th>
    <th scope="col" class="num">Uploaded</th><th scope="col" class="num">Added to store</th><th scope="col" class="hide-sm">Share of uploads</th>
    </tr></thead><tbody>${models.slice().sort((a, b) => (b.bytes || 0) - (a.bytes || 0)).map((m) => html`<tr>
      <td><a href="${modelHref(m.name)}">${m.name}</a></td><td class="num">${fmtNum(m.checkpoints)}</td>
      <td class="num">${fmtBytes(m.bytes)}</td><td class="num">${fmtBytes(m.bytes_added)}</td>
      <td class="hide-sm"><div class="mini-track"><div class="bar b-logical" style="width:${(((m.bytes || 0) / tot) * 100).toFixed(2)}%"></div></div></td>
    </tr>`)}</tbody></table></div></section>` : '';
  const growth = models.length ? html`<section class="card pad chart-card" id="s-growth"><div class="card-head"><h2>Growth over time</h2>
      <div class="legend">
        <span class="legend-key"><span class="swatch" style="background:${GROWTH_COLORS.uploaded}"></span>Uploaded</span>
        <span class="legend-key"><span class="swatch" style="background:${GROWTH_COLORS.added}"></span>Added to the store</span>
      </div></div>
      <div class="chart" id="s-growth-chart"><div class="loading" aria-busy="true">Loading the checkpoints…</div></div>
      <p class="chart-note muted" id="s-growth-note"></p></section>` : '';
  render(main, html`<div class="page-head"><div><h1>Storage</h1><p class="sub">What the store holds, before and after
      deduplication and compression</p></div></div>
    <div class="stats">
      ${stat('Logical', fmtBytes(logical), 'sum of every upload', 'logical')}
      ${stat('Stored', fmtBytes(stored), logical ? `${pct(saved)} saved` : 'on disk', 'stored')}
      ${stat('Dedup ratio', `${fmtRatio(s.dedup_ratio)}×`, 'logical ÷ unique bytes', 'dedup')}
      ${stat('Compression', fmtRatio(s.compression_ratio), 'stored ÷ unique; lower is better', 'compression')}
      ${stat('Overall', fmtRatio(s.overall_ratio), 'stored ÷ logical', 'overall')}
      ${stat('Blobs', fmtNum(s.blobs), `${plural(s.checkpoints ?? 0, 'checkpoint')} · ${plural(s.models ?? 0, 'model')}`, 'blobs')}
    </div>
    <section class="card pad"><h2>Bytes</h2><div class="bars">
      ${bar('Logical', logical, 'b-logical', 'what was uploaded')}
      ${bar('Unique', unique, 'b-unique', 'after deduplication')}
      ${bar('Stored', stored, 'b-stored', 'after compression')}
    </div></section>
    ${growth}${byModel}`);
}

/* Every checkpoint of every model, oldest first, with running sums. */
async function loadGrowth(models) {
  const all = [];
  let next = 0;
  async function worker() {
    while (next < models.length) {
      const m = models[next++];
      const { checkpoints } = await listCheckpoints(m.name);
      for (const c of checkpoints) {
        const t = Date.parse(c.created_at);
        if (!Number.isNaN(t)) all.push({ t, created: c.created_at, id: c.id, model: m.name, size: c.size || 0, added: c.dedup?.new_bytes || 0 });
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(4, models.length) }, worker));
  all.sort((a, b) => a.t - b.t || a.id - b.id);
  let uploaded = 0;
  let added = 0;
  for (const r of all) {
    uploaded += r.size;
    added += r.added;
    r.uploaded = uploaded;
    r.addedSum = added;
  }
  return all;
}

function drawGrowth(rows) {
  const box = document.getElementById('s-growth-chart');
  const section = document.getElementById('s-growth');
  if (!box) return;
  const series = [
    { key: 'uploaded', label: 'Uploaded', color: GROWTH_COLORS.uploaded, points: rows.map((r) => ({ x: r.t, y: r.uploaded, id: r.id, r })) },
    { key: 'added', label: 'Added to the store', color: GROWTH_COLORS.added, points: rows.map((r) => ({ x: r.t, y: r.addedSum, id: r.id, r })) },
  ];
  drawChart(box, {
    series,
    x: { kind: 'time', label: 'upload time' },
    y: { kind: 'bytes', label: 'bytes' },
    steps: true,
    area: true,
    label: 'The store’s growth: bytes uploaded and bytes added to the store over time',
    empty: 'No checkpoints.',
    tip: (s, p) => html`<div class="tip-head">${p.r.model} · #${p.r.id}</div><dl>
      <dt>uploaded</dt><dd>${fmtBytes(p.r.uploaded)}</dd><dt>added</dt><dd>${fmtBytes(p.r.addedSum)}</dd>
      <dt>this upload</dt><dd>${fmtBytes(p.r.size)}, ${fmtBytes(p.r.added)} new</dd><dt>time</dt><dd>${fmtRel(p.r.created)}</dd></dl>
      <div class="tip-time">${fmtLocal(p.r.created)}</div>`,
    open: (s, p) => navigate(ckptHref(p.r.model, p.r.id)),
  });
  const last = rows[rows.length - 1];
  document.getElementById('s-growth-note').textContent = rows.length
    ? `Running sums over the ${plural(rows.length, 'checkpoint')} the store holds now, by upload time: ` +
      `${fmtBytes(last.uploaded)} uploaded, ${fmtBytes(last.addedSum)} of tensor data added to the store (before compression). ` +
      'Checkpoints deleted since, and the space garbage collection gave back, are not counted.'
    : '';
  section.setAttribute('data-ready', '');
}
