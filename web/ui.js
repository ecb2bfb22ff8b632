/*
 * ui.js: what every page shares: the <main> element and its "ready" mark,
 * navigation, the page title and nav, toasts, stat tiles, times, errors.
 *
 * main[data-ready] is set once a page has rendered (the browser tests wait
 * for it) together with the performance mark "ckptd-ready".
 */
import { html, render } from './html.js';
import { fmtExact, fmtRel } from './format.js';

export const main = document.getElementById('main');

let renderPage = () => {};

/* app.js registers the function that draws the page for the current URL. */
export function setRenderer(fn) {
  renderPage = fn;
}

export function navigate(href, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  renderPage();
  window.scrollTo(0, 0);
}

/* Changes the query string without a new history entry or a redraw. */
export function setQuery(params) {
  const q = params.toString();
  history.replaceState(null, '', `${location.pathname}${q ? `?${q}` : ''}${location.hash}`);
}

export function setTitle(t) {
  document.title = t ? `${t} · ckptd` : 'ckptd';
}

export function setNav(section) {
  for (const a of document.querySelectorAll('.nav a')) {
    const on = a.dataset.section === section;
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/* Marks the page as rendered; the layout is forced first so the mark
 * includes it. */
export function ready() {
  void main.offsetHeight;
  main.setAttribute('data-ready', '');
  performance.mark?.('ckptd-ready');
}

export function loading(what) {
  render(main, html`<div class="loading" aria-busy="true">Loading ${what}…</div>`);
}

export function errorBox(err) {
  const status = err?.status ? ` (${err.status})` : '';
  return html`<div class="empty error"><h2>Could not load this page${status}</h2><p>${err?.message ?? String(err)}</p></div>`;
}

export function showError(err) {
  render(main, errorBox(err));
  ready();
}

/* A relative time with the exact time on hover; app.js refreshes it. */
export function timeEl(s) {
  return html`<time datetime="${s}" title="${fmtExact(s)}" data-rel>${fmtRel(s)}</time>`;
}

/* One stat tile. value and note may be Html (a link) or text. */
export function stat(label, value, note, key) {
  return html`<div class="stat" data-stat="${key || ''}"><div class="stat-label">${label}</div>
    <div class="stat-value">${value}</div>${note ? html`<div class="stat-note">${note}</div>` : ''}</div>`;
}

export function toast(msg, kind = 'info') {
  const box = document.getElementById('toasts');
  const el = document.createElement('div');
  el.className = `toast ${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  render(el, html`<span>${msg}</span><button type="button" class="x" aria-label="Dismiss">×</button>`);
  el.querySelector('button').addEventListener('click', () => el.remove());
  box.appendChild(el);
  setTimeout(() => el.remove(), kind === 'error' ? 9000 : 3500);
}

/* Run colours, in order of the runs' names. */
export const RUN_COLORS = ['#4f46e5', '#0891b2', '#d97706', '#db2777', '#16a34a', '#7c3aed',
  '#dc2626', '#0d9488', '#ca8a04', '#2563eb'];
