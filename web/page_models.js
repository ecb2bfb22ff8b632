/*
 * page_models.js: the models page: the store in four numbers and a table of
 * every model.
 */
import { html, render } from './html.js';
import { fmtBytes, fmtNum, fmtValue, pct, plural } from './format.js';
import { API, api, ckptHref, modelHref } from './api.js';
import { main, ready, showError, stat, timeEl } from './ui.js';

export function pageModels(alive) {
  (async () => {
    let models;
    let s;
    try {
      [models, s] = await Promise.all([api(`${API}/models`), api(`${API}/stats`).catch(() => null)]);
    } catch (err) {
      if (alive()) showError(err);
      return;
    }
    if (!alive()) return;
    models = models?.models || [];
    const head = html`<div class="page-head"><div><h1>Models</h1><p class="sub">${plural(models.length, 'model')}</p></div>
      ${models.length ? html`<div class="head-actions"><a class="btn" href="/ui/compare">Compare runs</a></div>` : ''}</div>`;
    if (!models.length) {
      render(main, html`${head}<div class="empty"><h2>No checkpoints yet</h2><p>Upload one from a training job:</p>
        <pre class="code">curl --data-binary @model.pth \\\n  "${location.origin}/api/v1/models/my-model/checkpoints?epoch=1&amp;loss=0.42"</pre></div>`);
      ready();
      return;
    }
    const tiles = s ? html`<div class="stats">
      ${stat('Checkpoints', fmtNum(s.checkpoints), plural(s.models, 'model'), 'checkpoints')}
      ${stat('Uploaded', fmtBytes(s.logical_bytes), 'sum of every upload', 'logical')}
      ${stat('Stored', fmtBytes(s.stored_bytes), 'after dedup and compression', 'stored')}
      ${stat('Saved', s.logical_bytes ? pct(1 - s.stored_bytes / s.logical_bytes) : '—',
        html`<a href="/ui/storage">storage details</a>`, 'saved')}</div>` : '';
    const rows = models.map((m) => {
      const runs = m.runs || [];
      return html`<tr data-model="${m.name}"><td><a class="strong" href="${modelHref(m.name)}">${m.name}</a></td>
        <td class="num">${fmtNum(m.checkpoints)}</td>
        <td class="hide-sm">${runs.length ? html`${runs.slice(0, 3).map((r) => html`<span class="chip">${r}</span> `)}${
          runs.length > 3 ? html`<span class="muted">+${runs.length - 3}</span>` : ''}` : '—'}</td>
        <td class="num">${m.best != null ? html`<a href="${ckptHref(m.name, m.best)}">${fmtValue(m.best_loss)}</a>` : '—'}</td>
        <td class="num hide-sm" title="${m.latest_epoch != null ? `the latest upload is epoch ${m.latest_epoch}` : ''}">${
          m.max_epoch != null ? fmtNum(m.max_epoch) : m.latest_epoch != null ? fmtNum(m.latest_epoch) : '—'}</td>
        <td class="num" title="${fmtNum(m.bytes)} bytes uploaded">${fmtBytes(m.bytes)}</td>
        <td class="num hide-sm">${fmtBytes(m.bytes_added)}</td>
        <td>${m.updated_at ? timeEl(m.updated_at) : '—'}</td></tr>`;
    });
    render(main, html`${head}${tiles}<div class="card table-card"><div class="table-wrap"><table class="table" id="models-table"><thead><tr>
      <th scope="col">Name</th><th scope="col" class="num">Checkpoints</th><th scope="col" class="hide-sm">Runs</th>
      <th scope="col" class="num">Best loss</th><th scope="col" class="num hide-sm">Latest epoch</th><th scope="col" class="num">Size</th>
      <th scope="col" class="num hide-sm" title="tensor bytes these uploads added to the store">Added to store</th>
      <th scope="col">Updated</th></tr></thead><tbody>${rows}</tbody></table></div></div>`);
    ready();
  })();
  return null;
}
