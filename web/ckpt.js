/*
 * ckpt.js: pieces of markup and actions about checkpoints that the model and
 * checkpoint pages share: metrics, tags, download links, pin, delete, and
 * the pager under a table.
 */
import { html, render } from './html.js';
import { fmtBytes, fmtNum, fmtValue, plural } from './format.js';
import { api, apiCkpt } from './api.js';
import { toast } from './ui.js';

export function fmtMetrics(m) {
  const keys = Object.keys(m || {}).sort();
  if (!keys.length) return html`<span class="muted">—</span>`;
  return keys.map((k) => html`<span class="kv" data-metric="${k}"><span class="k">${k}</span> ${fmtValue(m[k])}</span> `);
}

export function tagChips(tags) {
  return (tags || []).map((t) => html` <span class="chip" data-tag="${t}">${t}</span>`);
}

export async function togglePin(name, c, btn) {
  if (btn) btn.disabled = true;
  try {
    await api(apiCkpt(name, c.id), { method: 'PATCH', body: { pinned: !c.pinned } });
    toast(`${c.pinned ? 'Unpinned' : 'Pinned'} checkpoint #${c.id}`, 'ok');
  } catch (err) {
    toast(`Could not ${c.pinned ? 'unpin' : 'pin'} #${c.id}: ${err.message}`, 'error');
    if (btn) btn.disabled = false;
  }
}

export async function deleteCkpt(name, c, btn) {
  const what = `#${c.id}${c.epoch != null ? ` (epoch ${c.epoch})` : ''}`;
  if (!window.confirm(`Delete checkpoint ${what} of ${name}? Its file can no longer be downloaded.`)) return false;
  if (btn) btn.disabled = true;
  try {
    await api(apiCkpt(name, c.id), { method: 'DELETE' });
    toast(`Deleted checkpoint ${what}`, 'ok');
    return true;
  } catch (err) {
    toast(`Could not delete ${what}: ${err.message}`, 'error');
    if (btn) btn.disabled = false;
    return false;
  }
}

export function downloadLinks(name, c) {
  const base = apiCkpt(name, c.id);
  return html`<div class="dl"><a href="${`${base}/file`}" download data-dl="file"
      title="The uploaded file, byte for byte (${fmtBytes(c.size)})">file</a><a href="${`${base}/state_dict`}" download
      data-dl="state_dict" title="A state_dict .pth of the model weights">state_dict</a><a
      href="${`${base}/state_dict?format=safetensors`}" download data-dl="safetensors"
      title="The model weights as safetensors">safetensors</a></div>`;
}

/* The pager under a table: "51–100 of 5,000" and first/prev/next/last. */
export function renderPager(pager, p, pages, count, size, noun) {
  if (pages <= 1) {
    render(pager, count ? html`<span class="muted">${plural(count, noun)}</span>` : '');
    return;
  }
  const btn = (to, label, aria) => html`<button type="button" class="btn btn-sm" data-page="${to}"
    ${to < 0 || to >= pages || to === p ? html`disabled` : ''} aria-label="${aria}">${label}</button>`;
  render(pager, html`<span class="muted">${fmtNum(p * size + 1)}–${fmtNum(Math.min(count, (p + 1) * size))} of ${fmtNum(count)}</span>
    <div class="pager-btns">${btn(0, '«', 'First page')}${btn(p - 1, '‹ Prev', 'Previous page')}
    <span class="page-no">Page ${fmtNum(p + 1)} of ${fmtNum(pages)}</span>${btn(p + 1, 'Next ›', 'Next page')}${btn(pages - 1, '»', 'Last page')}</div>`);
}
