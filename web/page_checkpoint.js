/*
 * page_checkpoint.js: one checkpoint: its numbers, downloads, tensors, and a
 * diff against the previous epoch of the same run. A checkpoint of several
 * files (SPEC 3.2) also lists its files, with the rank and bucket of each
 * torch.distributed.checkpoint data file (__R_S.distcp), and downloads as a
 * tar archive.
 */
import { html, render } from './html.js';
import { fmtBytes, fmtExact, fmtNum, fmtShape, fmtValue } from './format.js';
import { API, LIST_MAX, api, apiCkpt, ckptHref, modelHref } from './api.js';
import { deleteCkpt, fmtMetrics, tagChips, togglePin } from './ckpt.js';
import { main, navigate, ready, setTitle, showError, stat, timeEl } from './ui.js';

const TENSOR_PAGE = 200;

/* Rank and write bucket of a DCP data file's name (__R_S.distcp), or null. */
function dcpRank(name) {
  const m = /(?:^|\/)__(\d+)_(\d+)\.distcp$/.exec(name);
  return m ? { rank: Number(m[1]), bucket: Number(m[2]) } : null;
}

function filesSection(base, files) {
  const ranks = new Set(files.map((f) => dcpRank(f.name)?.rank).filter((r) => r != null));
  return html`<section class="card table-card" id="c-files"><div class="card-head pad-h"><h2>Files
    <span class="muted count">${fmtNum(files.length)}</span>${ranks.size
      ? html` <span class="muted">· written by ${fmtNum(ranks.size)} rank${ranks.size === 1 ? '' : 's'}</span>` : ''}</h2></div>
    <div class="table-wrap"><table class="table" id="file-table"><thead><tr><th scope="col">Name</th><th scope="col">Rank</th>
    <th scope="col">Format</th><th scope="col" class="num">Tensors</th><th scope="col" class="num">Size</th>
    <th scope="col" class="hide-md">SHA-256</th></tr></thead><tbody>${files.map((f) => {
      const r = dcpRank(f.name);
      const href = `${base}/files/${f.name.split('/').map(encodeURIComponent).join('/')}`;
      return html`<tr data-file="${f.name}"><td class="mono path"><a href="${href}" download>${f.name}</a></td>
        <td data-rank="${r ? r.rank : ''}">${r ? html`${fmtNum(r.rank)} <span class="muted">(bucket ${fmtNum(r.bucket)})</span>` : html`<span class="muted">—</span>`}</td>
        <td class="mono">${f.format}</td><td class="num">${fmtNum(f.tensor_count)}</td>
        <td class="num" title="${fmtNum(f.size)} bytes">${fmtBytes(f.size)}</td>
        <td class="mono hide-md muted" title="${f.sha256}">${String(f.sha256).slice(0, 12)}</td></tr>`;
    })}</tbody></table></div></section>`;
}

/* The checkpoint this one is compared with: the same run's checkpoint at the
 * highest epoch below this one's (else the run's previous upload). */
async function findPrevious(name, c) {
  const base = `${API}/models/${encodeURIComponent(name)}/checkpoints?run=${encodeURIComponent(c.run)}`;
  if (c.epoch != null) {
    const d = await api(`${base}&epoch=${c.epoch - 1}&order=-created&limit=1`);
    if (d?.checkpoints?.length) return d.checkpoints[0];
    const all = await api(`${base}&order=-epoch&limit=${LIST_MAX}`);
    return (all?.checkpoints || []).find((x) => x.epoch != null && x.epoch < c.epoch) || null;
  }
  const all = await api(`${base}&order=-created&limit=${LIST_MAX}`);
  return (all?.checkpoints || []).find((x) => x.id < c.id) || null;
}

export function pageCheckpoint(alive, name, id) {
  const st = { name, filter: '', page: 0, tensors: [], diffStatus: null, dead: false };
  (async () => {
    let c;
    try {
      c = await api(apiCkpt(name, id));
    } catch (err) {
      if (alive()) showError(err);
      return;
    }
    if (!alive()) return;
    st.c = c;
    st.tensors = c.tensors || [];
    if (String(c.id) !== String(id)) setTitle(`${name} #${c.id} (${id})`);
    const base = apiCkpt(name, c.id);
    const files = Array.isArray(c.files) ? c.files : null;
    const fileAction = files ? 'archive' : 'file';
    const tensorBytes = st.tensors.reduce((a, t) => a + (t.nbytes || 0), 0);
    const tags = c.tags?.length ? tagChips(c.tags) : html`<span class="muted">—</span>`;
    render(main, html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/ui/">Models</a><span aria-hidden="true">/</span>
      <a href="${modelHref(name)}">${name}</a><span aria-hidden="true">/</span><span>#${c.id}</span></nav>
      <div class="page-head"><div><h1>Checkpoint #${c.id}${c.pinned ? html` <span class="badge pin">pinned</span>` : ''}</h1>
        <p class="sub">${name} · run ${c.run}${c.epoch != null ? ` · epoch ${fmtNum(c.epoch)}` : ''} · uploaded ${timeEl(c.created_at)}</p></div>
        <div class="head-actions">
          <a class="btn btn-primary" href="${`${base}/${fileAction}`}" download data-dl="${fileAction}">${
            files ? 'Download all (tar)' : 'Download file'}</a>
          <a class="btn" href="${`${base}/state_dict`}" download data-dl="state_dict">state_dict</a>
          <a class="btn" href="${`${base}/state_dict?format=safetensors`}" download data-dl="safetensors">safetensors</a>
          <button type="button" class="btn" id="c-pin">${c.pinned ? 'Unpin' : 'Pin'}</button>
          <button type="button" class="btn btn-danger" id="c-del">Delete</button></div></div>
      <div class="stats">
        ${stat('Loss', fmtValue(c.loss), c.step != null ? `step ${fmtNum(c.step)}` : '', 'loss')}
        ${stat('Epoch', c.epoch != null ? fmtNum(c.epoch) : '—', `run ${c.run}`, 'epoch')}
        ${stat('Size', fmtBytes(c.size), `${fmtNum(c.size)} bytes · ${c.format || ''}`, 'size')}
        ${stat('Tensors', fmtNum(c.tensor_count ?? st.tensors.length), `${fmtBytes(tensorBytes)} of tensor data`, 'tensors')}
        ${stat('Added to store', c.dedup ? fmtBytes(c.dedup.new_bytes) : '—',
          c.dedup ? `${fmtNum(c.dedup.new_tensors)} of ${fmtNum(c.dedup.tensors)} tensors new` : '', 'added')}
      </div>
      <section class="card pad details"><dl class="props">
        <dt>SHA-256</dt><dd class="mono break" id="c-sha">${c.sha256}</dd>
        <dt>Created</dt><dd>${fmtExact(c.created_at)}</dd>
        <dt>Metrics</dt><dd id="c-metrics">${fmtMetrics(c.metrics)}</dd>
        <dt>Tags</dt><dd id="c-tags">${tags}</dd>
        <dt>curl</dt><dd><code class="break">${files ? `curl ${location.origin}${base}/archive | tar x`
          : `curl -OJ ${location.origin}${base}/file`}</code></dd>
      </dl></section>
      ${files ? filesSection(base, files) : ''}
      <section class="card table-card" id="c-diff"><div class="card-head pad-h"><h2>Changes since the previous epoch</h2></div>
        <div class="pad-h diff-body"><p class="muted">Looking for the previous checkpoint…</p></div></section>
      <section class="card table-card"><div class="card-head pad-h"><h2>Tensors <span class="muted count">${fmtNum(st.tensors.length)}</span></h2>
        <div class="table-tools"><input type="search" id="t-filter" placeholder="Filter by path" aria-label="Filter tensors by path"></div></div>
        <div class="table-wrap"><table class="table" id="tensor-table"><thead><tr><th scope="col">Path</th><th scope="col">dtype</th>
        <th scope="col">Shape</th><th scope="col" class="num">Size</th>
        <th scope="col" class="num" title="Other references to the same bytes across the store">Shared with</th>
        <th scope="col" class="hide-md">Blob</th></tr></thead><tbody></tbody></table></div><div class="pager" id="t-pager"></div></section>`);
    renderTensors(st);
    document.getElementById('t-filter').addEventListener('input', (e) => {
      st.filter = e.target.value.trim().toLowerCase();
      st.page = 0;
      renderTensors(st);
    });
    document.getElementById('t-pager').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-page]');
      if (!b) return;
      st.page = Number(b.dataset.page);
      renderTensors(st);
    });
    document.getElementById('c-pin').addEventListener('click', async (e) => {
      await togglePin(name, c, e.currentTarget);
      if (alive()) navigate(location.pathname + location.search + location.hash, { replace: true });
    });
    document.getElementById('c-del').addEventListener('click', async (e) => {
      if ((await deleteCkpt(name, c, e.currentTarget)) && alive()) navigate(modelHref(name), { replace: true });
    });
    ready();
    await loadDiff(alive, st);
  })();
  return {
    destroy() {
      st.dead = true;
    },
  };
}

function renderTensors(st) {
  const tbody = document.querySelector('#tensor-table tbody');
  if (!tbody) return;
  const list = st.filter ? st.tensors.filter((t) => String(t.path).toLowerCase().includes(st.filter)) : st.tensors;
  const pages = Math.max(1, Math.ceil(list.length / TENSOR_PAGE));
  if (st.page >= pages) st.page = pages - 1;
  const rows = list.slice(st.page * TENSOR_PAGE, (st.page + 1) * TENSOR_PAGE);
  const status = st.diffStatus;
  if (!rows.length) {
    render(tbody, html`<tr><td colspan="6" class="empty-row">${st.tensors.length ? 'No tensor matches.' : 'This checkpoint has no tensors.'}</td></tr>`);
  } else {
    render(tbody, html`${rows.map((t) => {
      const refs = t.refs == null ? null : t.refs - 1;
      const ds = status ? status.get(t.path) : null;
      return html`<tr data-path="${t.path}"><td class="mono path">${t.path}${
        ds && ds !== 'same' ? html` <span class="badge d-${ds}">${ds}</span>` : ''}</td>
        <td class="mono">${t.dtype}</td>
        <td class="mono" data-shape="${JSON.stringify(t.shape || [])}">${fmtShape(t.shape)}</td>
        <td class="num" title="${fmtNum(t.nbytes)} bytes">${fmtBytes(t.nbytes)}</td>
        <td class="num" title="The blob has ${t.refs} references across the store">${
          refs == null ? '—' : refs <= 0 ? html`<span class="muted">—</span>` : fmtNum(refs)}</td>
        <td class="mono hide-md muted" title="${t.blob}">${String(t.blob || '').slice(0, 12)}</td></tr>`;
    })}`);
  }
  const pager = document.getElementById('t-pager');
  if (pages <= 1) {
    render(pager, '');
    return;
  }
  const p = st.page;
  render(pager, html`<span class="muted">${fmtNum(p * TENSOR_PAGE + 1)}–${fmtNum(Math.min(list.length, (p + 1) * TENSOR_PAGE))} of
    ${fmtNum(list.length)}</span><div class="pager-btns"><button type="button" class="btn btn-sm" data-page="${p - 1}"
    ${p === 0 ? html`disabled` : ''}>‹ Prev</button><span class="page-no">Page ${p + 1} of ${pages}</span><button type="button"
    class="btn btn-sm" data-page="${p + 1}" ${p + 1 >= pages ? html`disabled` : ''}>Next ›</button></div>`);
}

async function loadDiff(alive, st) {
  const { c, name } = st;
  const body = () => document.querySelector('#c-diff .diff-body');
  let prev;
  try {
    prev = await findPrevious(name, c);
  } catch {
    if (alive() && body()) render(body(), html`<p class="muted">Diff unavailable.</p>`);
    return;
  }
  if (!alive() || !body()) return;
  if (!prev) {
    render(body(), html`<p class="muted">This is the first checkpoint of run ${c.run}: nothing to compare with.</p>`);
    return;
  }
  render(document.querySelector('#c-diff h2'), html`Changes since <a href="${ckptHref(name, prev.id)}">#${prev.id}</a>${
    prev.epoch != null ? html` <span class="muted">(epoch ${fmtNum(prev.epoch)})</span>` : ''}`);
  let d;
  try {
    d = await api(`${apiCkpt(name, prev.id)}/diff/${encodeURIComponent(c.id)}`);
  } catch (err) {
    if (alive() && body()) {
      render(body(), html`<p class="muted">Diff unavailable${err?.status && err.status !== 404 ? `: ${err.message}` : ''}.</p>`);
    }
    return;
  }
  if (alive() && body()) renderDiff(st, prev, d);
}

function renderDiff(st, prev, d) {
  const tensors = Array.isArray(d?.tensors) ? d.tensors.filter(Boolean) : [];
  const sum = d?.summary || {};
  const count = (s) => tensors.filter((t) => t.status === s).length;
  const n = {};
  for (const s of ['same', 'changed', 'added', 'removed']) n[s] = sum[s] ?? count(s);
  st.diffStatus = new Map(tensors.filter((t) => t.path != null).map((t) => [t.path, t.status]));
  const changedBytes = sum.changed_bytes
    ?? tensors.reduce((a, t) => a + (t.status !== 'same' && typeof t.bytes === 'number' ? t.bytes : 0), 0);
  const rows = tensors.filter((t) => t.status !== 'same');
  const shown = rows.slice(0, 500);
  let table = '';
  if (rows.length) {
    table = html`<div class="table-wrap"><table class="table compact" id="diff-table"><thead><tr><th scope="col">Path</th>
      <th scope="col">Status</th><th scope="col" class="num">Bytes</th></tr></thead><tbody>${shown.map((t) => html`<tr data-status="${t.status}">
      <td class="mono path">${t.path}</td><td><span class="badge d-${t.status}">${t.status}</span></td>
      <td class="num">${fmtBytes(t.bytes)}</td></tr>`)}</tbody></table></div>${
      rows.length > shown.length ? html`<p class="muted">and ${fmtNum(rows.length - shown.length)} more</p>` : ''}`;
  } else if (tensors.length) {
    table = html`<p class="muted">Every tensor is the same as in #${prev.id}.</p>`;
  }
  render(document.querySelector('#c-diff .diff-body'), html`<div class="diff-summary">
    <span class="badge d-changed">${fmtNum(n.changed)} changed</span><span class="badge d-added">${fmtNum(n.added)} added</span>
    <span class="badge d-removed">${fmtNum(n.removed)} removed</span><span class="badge d-same">${fmtNum(n.same)} same</span>
    <span class="muted">${fmtBytes(changedBytes)} changed</span></div>${table}`);
  renderTensors(st);
}
