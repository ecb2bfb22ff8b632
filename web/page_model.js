/*
 * page_model.js: one model: its summary, the chart of its runs (plot.js) and
 * the table of its checkpoints.
 *
 * Every checkpoint is loaded in one request (limit 100000) for the chart; the
 * table is sorted and paged in the browser. A one-row request every few
 * seconds picks up uploads and deletes without a reload.
 */
import { html, render } from './html.js';
import { fmtBytes, fmtNum, fmtValue, plural } from './format.js';
import { API, api, ckptHref, compareHref, listCheckpoints } from './api.js';
import { deleteCkpt, downloadLinks, fmtMetrics, renderPager, tagChips, togglePin } from './ckpt.js';
import { Plot, plotMarkup } from './plot.js';
import { bestOf, keyLabel, valueKeys, valueOf } from './series.js';
import { RUN_COLORS, main, navigate, ready, showError, stat, timeEl, toast } from './ui.js';

const PAGE_SIZE = 50;
const POLL_MS = 2500;

/* Runs in name order with "default" first. */
function runOrder(a, b) {
  if (a === b) return 0;
  if (a === 'default') return -1;
  if (b === 'default') return 1;
  return a < b ? -1 : 1;
}

/* Sorts by "created", "epoch", "step", "loss" or "metric.NAME", "-" first
 * for descending; checkpoints without the value come last, ties by id. */
function sortList(list, order) {
  const desc = order.startsWith('-');
  const k = desc ? order.slice(1) : order;
  const get = k === 'created' ? (c) => c.id : k === 'epoch' || k === 'step' ? (c) => c[k] ?? null : (c) => valueOf(c, k);
  const sign = desc ? -1 : 1;
  return list
    .map((c) => [get(c), c])
    .sort(([p, a], [q, b]) => (p == null) - (q == null) || (p == null ? 0 : sign * (p - q)) || sign * (a.id - b.id))
    .map(([, c]) => c);
}

export function pageModel(alive, name) {
  const st = {
    name, all: [], total: 0, latestId: null, best: null, runs: [], colors: {},
    run: '', sort: '-created', page: 0, timer: null, polling: false, dead: false,
  };
  const plot = new Plot('m', {
    chartLabel: name,
    open: (g, c) => navigate(ckptHref(name, c.id)),
  });
  let resizeTimer = null;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => !st.dead && plot.draw(), 120);
  };
  window.addEventListener('resize', onResize);

  async function load(first) {
    const { checkpoints, total } = await listCheckpoints(name);
    if (!alive() || st.dead) return;
    st.all = checkpoints;
    st.total = total;
    st.latestId = checkpoints.length ? checkpoints[checkpoints.length - 1].id : null;
    st.best = bestOf(checkpoints, 'loss', 'min');
    const counts = new Map();
    for (const c of checkpoints) counts.set(c.run, (counts.get(c.run) || 0) + 1);
    st.runs = [...counts.keys()].sort(runOrder).map((r) => ({ name: r, count: counts.get(r) }));
    st.runs.forEach((r, i) => {
      st.colors[r.name] = RUN_COLORS[i % RUN_COLORS.length];
    });
    if (st.run && !counts.has(st.run)) st.run = '';
    if (first) layout(st, plot);
    renderSummary(st);
    renderFilters(st);
    const byRun = new Map(st.runs.map((r) => [r.name, []]));
    for (const c of checkpoints) byRun.get(c.run).push(c);
    plot.setData(st.runs.map((r) => ({
      key: r.name, label: r.name, run: r.name, model: name, color: st.colors[r.name], checkpoints: byRun.get(r.name),
    })));
    renderTable(st);
  }

  async function poll() {
    st.timer = null;
    if (st.dead) return;
    if (!document.hidden && !st.polling) {
      st.polling = true;
      try {
        const data = await api(`${API}/models/${encodeURIComponent(name)}/checkpoints?order=-created&limit=1`);
        const latest = data?.checkpoints?.[0]?.id ?? null;
        if (!st.dead && ((data?.total ?? 0) !== st.total || latest !== st.latestId)) await load(false);
      } catch {
        /* a missed poll is retried on the next tick */
      }
      st.polling = false;
    }
    if (!st.dead) st.timer = setTimeout(poll, POLL_MS);
  }
  st.reload = () => load(false).catch((e) => toast(e.message, 'error'));

  (async () => {
    try {
      await load(true);
    } catch (err) {
      if (alive()) showError(err);
      return;
    }
    if (!alive() || st.dead) return;
    ready();
    st.timer = setTimeout(poll, POLL_MS);
  })();

  return {
    destroy() {
      st.dead = true;
      clearTimeout(st.timer);
      window.removeEventListener('resize', onResize);
    },
  };
}

function layout(st, plot) {
  const n = st.name;
  render(main, html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/ui/">Models</a><span aria-hidden="true">/</span><span>${n}</span></nav>
    <div class="page-head"><div><h1 class="mono-title">${n}</h1><p class="sub" id="m-sub"></p></div>
      <div class="head-actions"><a class="btn" id="m-compare" hidden title="These runs on the compare page, where runs of other models can join them">Compare runs</a>
      <span class="live" title="This page checks for new checkpoints every few seconds"><span class="pulse" aria-hidden="true"></span>Live</span></div></div>
    <div class="stats" id="m-stats"></div>
    <section class="card pad chart-card">${plotMarkup('m', 'Loss')}</section>
    <section class="card table-card"><div class="card-head pad-h"><h2>Checkpoints</h2><div class="table-tools">
      <label>Run <select id="m-run"></select></label>
      <label>Sort <select id="m-sort"></select></label></div></div>
      <div class="table-wrap"><table class="table" id="ckpt-table"><thead><tr>
      <th scope="col">ID</th><th scope="col" class="col-run">Run</th><th scope="col" class="num">Epoch</th>
      <th scope="col" class="num hide-sm">Step</th><th scope="col" class="num">Loss</th>
      <th scope="col" class="hide-md">Metrics</th><th scope="col" class="num">Size</th>
      <th scope="col" class="num hide-sm" title="tensor bytes this upload added to the store">Added</th>
      <th scope="col">Created</th><th scope="col">Download</th><th scope="col"><span class="sr">Actions</span></th>
      </tr></thead><tbody></tbody></table></div>
      <div class="pager" id="m-pager"></div></section>`);
  plot.wire();
  const runSel = document.getElementById('m-run');
  const sortSel = document.getElementById('m-sort');
  runSel.addEventListener('change', () => {
    st.run = runSel.value;
    st.page = 0;
    renderTable(st);
  });
  sortSel.addEventListener('change', () => {
    st.sort = sortSel.value;
    st.page = 0;
    renderTable(st);
  });
  document.getElementById('m-pager').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-page]');
    if (!b) return;
    st.page = Number(b.dataset.page);
    renderTable(st);
    const t = document.getElementById('ckpt-table');
    if (t && t.getBoundingClientRect().top < 0) t.scrollIntoView();
  });
  document.querySelector('#ckpt-table tbody').addEventListener('click', async (e) => {
    const b = e.target.closest('button[data-act]');
    if (!b) return;
    const id = Number(b.dataset.id);
    const c = st.all.find((x) => x.id === id);
    if (!c) return;
    if (b.dataset.act === 'pin') {
      await togglePin(st.name, c, b);
      st.reload();
    } else if (await deleteCkpt(st.name, c, b)) {
      st.reload();
    }
  });
}

function renderSummary(st) {
  const { all } = st;
  let bytes = 0;
  let added = 0;
  let maxEpoch = null;
  for (const c of all) {
    bytes += c.size || 0;
    added += c.dedup?.new_bytes || 0;
    if (c.epoch != null && (maxEpoch == null || c.epoch > maxEpoch)) maxEpoch = c.epoch;
  }
  const latest = all.length ? all[all.length - 1] : null;
  render(document.getElementById('m-sub'), html`${plural(all.length, 'checkpoint')} · ${plural(st.runs.length, 'run')}${
    latest ? html` · last upload ${timeEl(latest.created_at)}` : ''}`);
  const b = st.best;
  render(document.getElementById('m-stats'), html`${
    stat('Best loss', b ? html`<a href="${ckptHref(st.name, b.id)}">${fmtValue(b.loss)}</a>` : '—',
      b ? `${b.epoch != null ? `epoch ${b.epoch} · ` : ''}run ${b.run}` : 'no checkpoint has a loss', 'best')}${
    stat('Latest epoch', maxEpoch != null ? fmtNum(maxEpoch) : '—', latest ? `checkpoint #${latest.id}` : '', 'epoch')}${
    stat('Checkpoints', fmtNum(all.length), plural(st.runs.length, 'run'), 'count')}${
    stat('Uploaded', fmtBytes(bytes), `${fmtBytes(added)} added to the store`, 'bytes')}`);
  const cmp = document.getElementById('m-compare');
  cmp.href = compareHref(st.runs.map((r) => ({ model: st.name, run: r.name })));
  cmp.hidden = false;
}

function renderFilters(st) {
  const runSel = document.getElementById('m-run');
  render(runSel, html`<option value="">All runs</option>${
    st.runs.map((r) => html`<option value="${r.name}">${r.name} (${fmtNum(r.count)})</option>`)}`);
  runSel.value = st.run;
  const sorts = [['-created', 'Newest first'], ['created', 'Oldest first'], ['epoch', 'Epoch ↑'], ['-epoch', 'Epoch ↓'],
    ['step', 'Step ↑'], ['-step', 'Step ↓']];
  for (const k of valueKeys(st.all)) {
    const label = keyLabel(k);
    sorts.push([k, `${label} ↑${k === 'loss' ? ' (best first)' : ''}`], [`-${k}`, `${label} ↓`]);
  }
  if (!sorts.some(([v]) => v === st.sort)) st.sort = '-created';
  const sortSel = document.getElementById('m-sort');
  render(sortSel, html`${sorts.map(([v, label]) => html`<option value="${v}">${label}</option>`)}`);
  sortSel.value = st.sort;
}

function renderTable(st) {
  const tbody = document.querySelector('#ckpt-table tbody');
  if (!tbody) return;
  document.getElementById('ckpt-table').classList.toggle('one-run', st.runs.length <= 1);
  const list = sortList(st.run ? st.all.filter((c) => c.run === st.run) : st.all, st.sort);
  const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
  if (st.page >= pages) st.page = pages - 1;
  const rows = list.slice(st.page * PAGE_SIZE, (st.page + 1) * PAGE_SIZE);
  if (!rows.length) {
    render(tbody, html`<tr><td colspan="11" class="empty-row">No checkpoints${st.run ? ` in run ${st.run}` : ''}.</td></tr>`);
  } else {
    render(tbody, html`${rows.map((c) => {
      const isBest = st.best && c.id === st.best.id;
      const added = c.dedup ? c.dedup.new_bytes : null;
      return html`<tr data-id="${c.id}" class="${isBest ? 'is-best' : ''}">
        <td><a class="strong" href="${ckptHref(st.name, c.id)}">#${c.id}</a>${
          c.pinned ? html` <span class="badge pin" title="Pinned: retention never removes it">pinned</span>` : ''}${tagChips(c.tags)}</td>
        <td class="col-run"><span class="swatch" style="background:${st.colors[c.run] || '#999'}"></span>${c.run}</td>
        <td class="num">${c.epoch == null ? '—' : fmtNum(c.epoch)}</td>
        <td class="num hide-sm">${c.step == null ? '—' : fmtNum(c.step)}</td>
        <td class="num">${fmtValue(c.loss)}${isBest ? html` <span class="badge best">best</span>` : ''}</td>
        <td class="hide-md metrics">${fmtMetrics(c.metrics)}</td>
        <td class="num" title="${fmtNum(c.size)} bytes">${fmtBytes(c.size)}</td>
        <td class="num hide-sm" title="${c.dedup ? `${fmtNum(c.dedup.new_tensors)} of ${fmtNum(c.dedup.tensors)} tensors were new` : ''}">${
          added == null ? '—' : added === 0 ? html`<span class="muted">0 B</span>` : fmtBytes(added)}</td>
        <td class="nowrap">${timeEl(c.created_at)}</td>
        <td>${downloadLinks(st.name, c)}</td>
        <td class="actions"><button type="button" class="btn btn-sm" data-act="pin" data-id="${c.id}" aria-pressed="${String(!!c.pinned)}">${
          c.pinned ? 'Unpin' : 'Pin'}</button><button type="button" class="btn btn-sm btn-danger" data-act="delete" data-id="${c.id}"
          aria-label="Delete checkpoint ${c.id}">Delete</button></td></tr>`;
    })}`);
  }
  renderPager(document.getElementById('m-pager'), st.page, pages, list.length, PAGE_SIZE, 'checkpoint');
}
