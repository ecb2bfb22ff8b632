/*
 * app.js: the ckptd dashboard's entry module: the router, the token panel and
 * the clock that keeps relative times fresh. Each page is a module:
 *
 *   /ui/                                  page_models.js      models
 *   /ui/models/NAME                       page_model.js       one model: chart, runs, checkpoint table
 *   /ui/models/NAME/checkpoints/ID        page_checkpoint.js  tensors, diff with the previous epoch
 *   /ui/compare?run=MODEL:RUN&...         page_compare.js     runs of any models on one chart
 *   /ui/storage                           page_storage.js     sizes, ratios, growth over time
 *
 * Pages share html.js (markup: the only innerHTML), format.js, api.js,
 * ui.js, series.js, chart.js and plot.js. "/" and every "/ui/..." path answer
 * index.html; a model whose name has a dot is routed by the hash
 * ("/ui/#/models/NAME"). A page function gets alive() (false once the user
 * has moved on) and returns an object with destroy(), or null.
 */
import { html, render } from './html.js';
import { fmtRel } from './format.js';
import { setToken, token } from './api.js';
import { main, navigate, ready, setNav, setRenderer, setTitle, toast, loading } from './ui.js';
import { pageModels } from './page_models.js';
import { pageModel } from './page_model.js';
import { pageCheckpoint } from './page_checkpoint.js';
import { pageCompare } from './page_compare.js';
import { pageStorage } from './page_storage.js';

let view = null;
let navSeq = 0;

function currentRoute() {
  let path = location.pathname;
  if (location.hash.startsWith('#/')) path = `/ui${location.hash.slice(1)}`;
  const parts = path.replace(/\/+$/, '').split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === 'ui') parts.shift();
  if (parts.length === 0 || (parts.length === 1 && parts[0] === 'models')) return { page: 'models' };
  if (parts.length === 1 && parts[0] === 'storage') return { page: 'storage' };
  if (parts.length === 1 && parts[0] === 'compare') return { page: 'compare' };
  if (parts[0] === 'models' && parts.length === 2) return { page: 'model', model: parts[1] };
  if (parts[0] === 'models' && parts.length === 4 && parts[2] === 'checkpoints') {
    return { page: 'checkpoint', model: parts[1], id: parts[3] };
  }
  return { page: 'notfound', path: location.pathname };
}

const PAGES = {
  models: { nav: 'models', title: () => 'Models', what: () => 'models', draw: (alive) => pageModels(alive) },
  storage: { nav: 'storage', title: () => 'Storage', what: () => 'storage', draw: (alive) => pageStorage(alive) },
  compare: { nav: 'compare', title: () => 'Compare runs', what: () => 'runs', draw: (alive) => pageCompare(alive) },
  model: { nav: 'models', title: (r) => r.model, what: (r) => r.model, draw: (alive, r) => pageModel(alive, r.model) },
  checkpoint: {
    nav: 'models',
    title: (r) => `${r.model} #${r.id}`,
    what: (r) => `checkpoint ${r.id}`,
    draw: (alive, r) => pageCheckpoint(alive, r.model, r.id),
  },
};

function renderRoute() {
  view?.destroy?.();
  view = null;
  const seq = ++navSeq;
  const r = currentRoute();
  main.removeAttribute('data-ready');
  main.setAttribute('data-page', r.page);
  const page = PAGES[r.page];
  if (!page) {
    setNav('');
    setTitle('Not found');
    render(main, html`<div class="empty"><h2>No such page</h2><p>${r.path} is not a dashboard page.
      <a href="/ui/">See the models</a>.</p></div>`);
    ready();
    return;
  }
  setNav(page.nav);
  setTitle(page.title(r));
  loading(page.what(r));
  view = page.draw(() => seq === navSeq, r);
}

/* Links to /ui/... are client-side routes. */
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest?.('a');
  if (!a || a.target || a.hasAttribute('download')) return;
  const href = a.getAttribute('href');
  if (!href?.startsWith('/ui/')) return;
  ev.preventDefault();
  navigate(href);
});
window.addEventListener('popstate', renderRoute);

setInterval(() => {
  for (const el of document.querySelectorAll('time[data-rel]')) el.textContent = fmtRel(el.getAttribute('datetime'));
}, 30000);

function initToken() {
  const toggle = document.getElementById('token-toggle');
  const panel = document.getElementById('token-panel');
  const input = document.getElementById('token-input');
  const dot = document.getElementById('token-dot');
  const sync = () => {
    dot.classList.toggle('on', !!token());
    toggle.title = token() ? 'A token is set' : 'No token set';
  };
  const open = (on) => {
    panel.hidden = !on;
    toggle.setAttribute('aria-expanded', String(on));
    if (on) {
      input.value = token();
      input.focus();
    }
  };
  toggle.addEventListener('click', () => open(panel.hidden));
  panel.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = input.value.trim();
    setToken(v);
    sync();
    open(false);
    toast(v ? 'Token saved in this browser' : 'Token cleared', 'ok');
    toggle.focus();
  });
  document.getElementById('token-clear').addEventListener('click', () => {
    setToken('');
    input.value = '';
    sync();
    open(false);
    toast('Token cleared', 'ok');
    toggle.focus();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !panel.hidden) {
      open(false);
      toggle.focus();
    }
  });
  document.addEventListener('click', (e) => {
    if (!panel.hidden && !panel.contains(e.target) && !toggle.contains(e.target)) open(false);
  });
  sync();
}

setRenderer(renderRoute);
initToken();
renderRoute();
