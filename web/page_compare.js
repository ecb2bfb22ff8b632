/*
 * page_compare.js: runs of any models on one chart.
 *
 * /ui/compare?run=MODEL:RUN&run=MODEL:RUN&y=...&x=...  A checkbox per run of
 * every model (from GET /models) picks what is drawn; each picked run's
 * checkpoints are fetched once (?run=RUN) and kept while the page is open.
 * Model and run names never hold ":" (docs/API.md, Names).
 */
import { html, render } from './html.js';
import { fmtNum, plural } from './format.js';
import { API, api, ckptHref, listCheckpoints, modelHref } from './api.js';
import { Plot, plotMarkup } from './plot.js';
import { RUN_COLORS, main, navigate, ready, setQuery, showError } from './ui.js';

const pickKey = (model, run) => `${model}:${run}`;

function parsePick(s) {
  const i = s.indexOf(':');
  return i > 0 ? { model: s.slice(0, i), run: s.slice(i + 1) } : null;
}

export function pageCompare(alive) {
  const st = { dead: false, models: [], picked: [], cache: new Map(), seq: 0 };
  const q = new URLSearchParams(location.search);
  st.picked = [...new Set(q.getAll('run'))].map(parsePick).filter(Boolean);
  const plot = new Plot('cmp', {
    chartLabel: 'Compared runs',
    noGroups: 'Pick runs above to draw them on one chart.',
    open: (g, c) => navigate(ckptHref(g.model, c.id)),
  });
  let resizeTimer = null;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => !st.dead && plot.draw(), 120);
  };
  window.addEventListener('resize', onResize);

  async function update() {
    const seq = ++st.seq;
    const params = new URLSearchParams(location.search);
    params.delete('run');
    for (const p of st.picked) params.append('run', pickKey(p.model, p.run));
    setQuery(params);
    const sub = document.getElementById('cmp-sub');
    sub.textContent = st.picked.length ? `${plural(st.picked.length, 'run')} picked` : 'Runs of any models on one chart';
    const groups = await Promise.all(st.picked.map(async (p, i) => {
      const key = pickKey(p.model, p.run);
      if (!st.cache.has(key)) st.cache.set(key, listCheckpoints(p.model, { run: p.run }).then((r) => r.checkpoints));
      let checkpoints;
      try {
        checkpoints = await st.cache.get(key);
      } catch (err) {
        st.cache.delete(key);
        throw err;
      }
      return { key, label: `${p.model} / ${p.run}`, model: p.model, run: p.run, color: RUN_COLORS[i % RUN_COLORS.length], checkpoints };
    }));
    if (!alive() || st.dead || seq !== st.seq) return;
    plot.setData(groups);
  }

  (async () => {
    try {
      const data = await api(`${API}/models`);
      st.models = data?.models || [];
    } catch (err) {
      if (alive()) showError(err);
      return;
    }
    if (!alive()) return;
    render(main, html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/ui/">Models</a><span aria-hidden="true">/</span><span>Compare</span></nav>
      <div class="page-head"><div><h1>Compare runs</h1><p class="sub" id="cmp-sub"></p></div></div>
      <section class="card pad"><div class="card-head"><h2>Runs</h2>
        <input type="search" id="cmp-filter" placeholder="Filter models" aria-label="Filter models by name"></div>
        <div class="picker" id="cmp-picker"></div></section>
      <section class="card pad chart-card">${plotMarkup('cmp', 'Loss')}</section>`);
    plot.wire();
    renderPicker(st);
    document.getElementById('cmp-picker').addEventListener('change', (e) => {
      const box = e.target.closest('input[type=checkbox][data-model]');
      if (!box) return;
      const { model, run } = box.dataset;
      st.picked = st.picked.filter((p) => !(p.model === model && p.run === run));
      if (box.checked) st.picked.push({ model, run });
      update().catch((err) => showError(err));
    });
    document.getElementById('cmp-filter').addEventListener('input', (e) => {
      st.filter = e.target.value.trim().toLowerCase();
      renderPicker(st);
    });
    try {
      await update();
    } catch (err) {
      if (alive()) showError(err);
      return;
    }
    if (alive()) ready();
  })();

  return {
    destroy() {
      st.dead = true;
      window.removeEventListener('resize', onResize);
    },
  };
}

function renderPicker(st) {
  const box = document.getElementById('cmp-picker');
  if (!box) return;
  const on = new Set(st.picked.map((p) => pickKey(p.model, p.run)));
  const models = st.filter ? st.models.filter((m) => m.name.toLowerCase().includes(st.filter)) : st.models;
  render(box, models.length ? html`${models.map((m) => html`<div class="pick-model" data-model="${m.name}">
      <a class="strong" href="${modelHref(m.name)}">${m.name}</a> <span class="muted">${fmtNum(m.checkpoints)}</span>
      <div class="pick-runs">${(m.runs || []).map((r) => html`<label class="pick">
        <input type="checkbox" data-model="${m.name}" data-run="${r}" ${on.has(pickKey(m.name, r)) ? html`checked` : ''}> ${r}</label>`)}</div>
    </div>`)}` : html`<p class="muted">No model matches.</p>`);
}
