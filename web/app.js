/*
 * app.js: the ckptd dashboard, a single page that reads the JSON API.
 *
 * Routes (history.pushState; "/" and every "/ui/..." path answer index.html):
 *   /ui/                                   models
 *   /ui/models/NAME                        one model: chart, runs, checkpoint table
 *   /ui/models/NAME/checkpoints/ID         one checkpoint: tensors, diff with the previous epoch
 *   /ui/storage                            store size, dedup and compression
 * The server answers "/ui/x.y" (a dot in the path) with an asset, so a model
 * whose name has a dot is linked as "/ui/#/models/NAME" (a hash route).
 *
 * The model page loads every checkpoint in one request (limit 100000) for the
 * chart, sorts and pages the table in the browser, and polls a one-row
 * request every few seconds to pick up uploads.
 */
(function () {
  'use strict';

  var API = '/api/v1';
  var PAGE_SIZE = 50;
  var POLL_MS = 2500;
  var TOKEN_KEY = 'ckptd.token';
  var RUN_COLORS = ['#4f46e5', '#0891b2', '#d97706', '#db2777', '#16a34a', '#7c3aed',
    '#dc2626', '#0d9488', '#ca8a04', '#2563eb'];

  var main = document.getElementById('main');
  var view = null; /* the current page's state; cleared on navigation */
  var navSeq = 0;

  /* ---------- formatting ---------- */

  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  function fmtBytes(n) {
    if (n == null || isNaN(n)) return '—';
    var units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    var i = 0;
    var v = Math.abs(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    var s = i === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
    return (n < 0 ? '-' : '') + s + ' ' + units[i];
  }

  function fmtNum(n) {
    if (n == null) return '—';
    return Number(n).toLocaleString('en-US');
  }

  function fmtLoss(x) {
    if (x == null || typeof x !== 'number' || !isFinite(x)) return x == null ? '—' : String(x);
    if (x === 0) return '0';
    var a = Math.abs(x);
    if (a >= 1e5 || a < 1e-4) return x.toExponential(3);
    return String(Number(x.toPrecision(5)));
  }

  function fmtRatio(x, digits) {
    if (x == null || !isFinite(x)) return '—';
    return x.toFixed(digits == null ? 2 : digits);
  }

  function parseTime(s) {
    var t = Date.parse(s);
    return isNaN(t) ? null : t;
  }

  function fmtRel(s) {
    var t = parseTime(s);
    if (t == null) return '—';
    var d = (Date.now() - t) / 1000;
    if (d < 0) d = 0;
    if (d < 10) return 'just now';
    if (d < 60) return Math.floor(d) + ' s ago';
    if (d < 3600) return Math.floor(d / 60) + ' min ago';
    if (d < 86400) return Math.floor(d / 3600) + ' h ago';
    if (d < 86400 * 30) return Math.floor(d / 86400) + ' d ago';
    return new Date(t).toISOString().slice(0, 10);
  }

  var exactFmt = null;
  function fmtExact(s) {
    var t = parseTime(s);
    if (t == null) return s || '';
    if (!exactFmt) {
      exactFmt = new Intl.DateTimeFormat(undefined, {
        year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
        second: '2-digit', timeZoneName: 'short'
      });
    }
    return exactFmt.format(new Date(t)) + ' (' + s + ')';
  }

  function timeHtml(s) {
    return '<time datetime="' + esc(s) + '" title="' + esc(fmtExact(s)) + '" data-rel>' +
      esc(fmtRel(s)) + '</time>';
  }

  function fmtShape(shape) {
    if (!Array.isArray(shape)) return '—';
    if (shape.length === 0) return 'scalar';
    return '[' + shape.join(', ') + ']';
  }

  function fmtMetrics(m) {
    if (!m || typeof m !== 'object') return '';
    var keys = Object.keys(m).sort();
    if (!keys.length) return '<span class="muted">—</span>';
    return keys.map(function (k) {
      return '<span class="kv"><span class="k">' + esc(k) + '</span> ' +
        esc(typeof m[k] === 'number' ? fmtLoss(m[k]) : m[k]) + '</span>';
    }).join(' ');
  }

  function pct(x) {
    if (x == null || !isFinite(x)) return '—';
    return (x * 100).toFixed(x < 0.1 ? 1 : 0) + '%';
  }

  /* ---------- links ---------- */

  function enc(s) { return encodeURIComponent(s); }

  function modelHref(name) {
    return name.indexOf('.') >= 0 ? '/ui/#/models/' + enc(name) : '/ui/models/' + enc(name);
  }

  function ckptHref(name, id) {
    var p = 'models/' + enc(name) + '/checkpoints/' + enc(id);
    return name.indexOf('.') >= 0 ? '/ui/#/' + p : '/ui/' + p;
  }

  function apiCkpt(name, id) {
    return API + '/models/' + enc(name) + '/checkpoints/' + enc(id);
  }

  /* ---------- API ---------- */

  function token() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  function api(path, opts) {
    opts = opts || {};
    var headers = { Accept: 'application/json' };
    var t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    var init = { method: opts.method || 'GET', headers: headers, cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    return fetch(path, init).then(function (res) {
      if (res.status === 204) return null;
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!res.ok) {
          var code = data && data.error ? data.error : 'http_' + res.status;
          var msg = data && data.message ? data.message : (res.status + ' ' + res.statusText);
          if (res.status === 401 && !t) msg += ' (set a token with the Token button at the top)';
          throw new ApiError(res.status, code, msg);
        }
        return data;
      });
    }, function (err) {
      throw new ApiError(0, 'network', 'cannot reach the server: ' + (err && err.message || err));
    });
  }

  /* ---------- toasts ---------- */

  function toast(msg, kind) {
    var box = document.getElementById('toasts');
    var el = document.createElement('div');
    el.className = 'toast ' + (kind || 'info');
    el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    el.innerHTML = '<span>' + esc(msg) + '</span><button type="button" class="x" aria-label="Dismiss">×</button>';
    el.querySelector('button').addEventListener('click', function () { el.remove(); });
    box.appendChild(el);
    setTimeout(function () { el.remove(); }, kind === 'error' ? 9000 : 3500);
  }

  function errorBox(err) {
    var status = err && err.status ? ' (' + err.status + ')' : '';
    return '<div class="empty error"><h2>Could not load this page' + esc(status) + '</h2><p>' +
      esc(err && err.message ? err.message : String(err)) + '</p></div>';
  }

  /* ---------- router ---------- */

  function currentRoute() {
    var path = location.pathname;
    if (location.hash && location.hash.indexOf('#/') === 0) path = '/ui' + location.hash.slice(1);
    path = path.replace(/\/+$/, '');
    var parts = path.split('/').filter(Boolean).map(function (p) {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    if (parts[0] === 'ui') parts.shift();
    if (parts.length === 0 || (parts.length === 1 && parts[0] === 'models')) return { page: 'models' };
    if (parts[0] === 'storage' && parts.length === 1) return { page: 'storage' };
    if (parts[0] === 'models' && parts.length === 2) return { page: 'model', model: parts[1] };
    if (parts[0] === 'models' && parts.length === 4 && parts[2] === 'checkpoints') {
      return { page: 'checkpoint', model: parts[1], id: parts[3] };
    }
    return { page: 'notfound', path: location.pathname };
  }

  function navigate(href, replace) {
    if (replace) history.replaceState(null, '', href);
    else history.pushState(null, '', href);
    render();
    window.scrollTo(0, 0);
  }

  document.addEventListener('click', function (ev) {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    var a = ev.target.closest && ev.target.closest('a');
    if (!a || a.target || a.hasAttribute('download')) return;
    var href = a.getAttribute('href');
    if (!href || href.indexOf('/ui/') !== 0) return;
    ev.preventDefault();
    navigate(href);
  });
  window.addEventListener('popstate', function () { render(); });

  function leave() {
    if (view && view.destroy) view.destroy();
    view = null;
  }

  function setTitle(t) { document.title = t ? t + ' · ckptd' : 'ckptd'; }

  function setNav(section) {
    var links = document.querySelectorAll('.nav a');
    for (var i = 0; i < links.length; i++) {
      var on = links[i].getAttribute('data-section') === section;
      links[i].classList.toggle('active', on);
      if (on) links[i].setAttribute('aria-current', 'page');
      else links[i].removeAttribute('aria-current');
    }
  }

  function render() {
    leave();
    var seq = ++navSeq;
    var r = currentRoute();
    main.removeAttribute('data-ready');
    main.setAttribute('data-page', r.page);
    var alive = function () { return seq === navSeq; };
    if (r.page === 'models') return pageModels(alive);
    if (r.page === 'storage') return pageStorage(alive);
    if (r.page === 'model') return pageModel(alive, r.model);
    if (r.page === 'checkpoint') return pageCheckpoint(alive, r.model, r.id);
    setNav('');
    setTitle('Not found');
    main.innerHTML = '<div class="empty"><h2>No such page</h2><p>' + esc(r.path) +
      ' is not a dashboard page. <a href="/ui/">See the models</a>.</p></div>';
    ready();
  }

  /* Marks the page as rendered: the layout is forced first so the mark (read
   * by the browser tests) includes it. */
  function ready() {
    void main.offsetHeight;
    main.setAttribute('data-ready', '');
    if (window.performance && performance.mark) performance.mark('ckptd-ready');
  }

  function loading(title) {
    main.innerHTML = '<div class="loading" aria-busy="true">Loading ' + esc(title) + '…</div>';
  }

  /* Re-renders relative times every 30 s. */
  setInterval(function () {
    var els = document.querySelectorAll('time[data-rel]');
    for (var i = 0; i < els.length; i++) els[i].textContent = fmtRel(els[i].getAttribute('datetime'));
  }, 30000);

  /* ---------- models page ---------- */

  function pageModels(alive) {
    setNav('models');
    setTitle('Models');
    loading('models');
    Promise.all([api(API + '/models'), api(API + '/stats').catch(function () { return null; })]).then(function (res) {
      if (!alive()) return;
      var models = (res[0] && res[0].models) || [];
      var s = res[1];
      var html = '<div class="page-head"><div><h1>Models</h1><p class="sub">' +
        fmtNum(models.length) + (models.length === 1 ? ' model' : ' models') + '</p></div></div>';
      if (s && models.length) {
        html += '<div class="stats">' +
          stat('Checkpoints', fmtNum(s.checkpoints), fmtNum(s.models) + (s.models === 1 ? ' model' : ' models'), 'checkpoints') +
          stat('Uploaded', fmtBytes(s.logical_bytes), 'sum of every upload', 'logical') +
          stat('Stored', fmtBytes(s.stored_bytes), 'after dedup and compression', 'stored') +
          stat('Saved', s.logical_bytes ? pct(1 - s.stored_bytes / s.logical_bytes) : '—',
            '<a href="/ui/storage">storage details</a>', 'saved') + '</div>';
      }
      if (!models.length) {
        html += '<div class="empty"><h2>No checkpoints yet</h2><p>Upload one from a training job:</p>' +
          '<pre class="code">curl --data-binary @model.pth \\\n  "' + esc(location.origin) +
          '/api/v1/models/my-model/checkpoints?epoch=1&amp;loss=0.42"</pre></div>';
        main.innerHTML = html;
        ready();
        return;
      }
      html += '<div class="card table-card"><div class="table-wrap"><table class="table" id="models-table"><thead><tr>' +
        '<th scope="col">Name</th><th scope="col" class="num">Checkpoints</th>' +
        '<th scope="col" class="hide-sm">Runs</th><th scope="col" class="num">Best loss</th>' +
        '<th scope="col" class="num hide-sm">Latest epoch</th><th scope="col" class="num">Size</th>' +
        '<th scope="col" class="num hide-sm" title="tensor bytes these uploads added to the store">Added to store</th><th scope="col">Updated</th></tr></thead><tbody>';
      models.forEach(function (m) {
        var runs = m.runs || [];
        html += '<tr data-model="' + esc(m.name) + '"><td><a class="strong" href="' + esc(modelHref(m.name)) + '">' +
          esc(m.name) + '</a></td><td class="num">' + fmtNum(m.checkpoints) + '</td>' +
          '<td class="hide-sm">' + (runs.length ? runs.slice(0, 3).map(function (r) {
            return '<span class="chip">' + esc(r) + '</span>';
          }).join(' ') + (runs.length > 3 ? ' <span class="muted">+' + (runs.length - 3) + '</span>' : '') : '—') + '</td>' +
          '<td class="num">' + (m.best != null ? '<a href="' + esc(ckptHref(m.name, m.best)) + '">' + esc(fmtLoss(m.best_loss)) + '</a>' : '—') + '</td>' +
          '<td class="num hide-sm" title="' + esc(m.latest_epoch != null ? 'the latest upload is epoch ' + m.latest_epoch : '') + '">' +
          (m.max_epoch != null ? fmtNum(m.max_epoch) : m.latest_epoch != null ? fmtNum(m.latest_epoch) : '—') + '</td>' +
          '<td class="num" title="' + esc(fmtNum(m.bytes)) + ' bytes uploaded">' + fmtBytes(m.bytes) + '</td>' +
          '<td class="num hide-sm">' + fmtBytes(m.bytes_added) + '</td>' +
          '<td>' + (m.updated_at ? timeHtml(m.updated_at) : '—') + '</td></tr>';
      });
      html += '</tbody></table></div></div>';
      main.innerHTML = html;
      ready();
    }).catch(function (err) {
      if (!alive()) return;
      main.innerHTML = errorBox(err);
      ready();
    });
  }

  /* ---------- storage page ---------- */

  function pageStorage(alive) {
    setNav('storage');
    setTitle('Storage');
    loading('storage');
    Promise.all([api(API + '/stats'), api(API + '/models').catch(function () { return null; })]).then(function (res) {
      if (!alive()) return;
      var s = res[0] || {};
      var models = (res[1] && res[1].models) || [];
      var logical = s.logical_bytes || 0;
      var unique = s.unique_bytes || 0;
      var stored = s.stored_bytes || 0;
      var max = Math.max(logical, unique, stored, 1);
      var saved = logical > 0 ? 1 - stored / logical : 0;
      function bar(label, value, cls, note) {
        var w = Math.max(value / max * 100, value > 0 ? 0.5 : 0);
        return '<div class="bar-row"><div class="bar-label">' + esc(label) + '<span class="muted">' + esc(note) +
          '</span></div><div class="bar-track" role="img" aria-label="' + esc(label + ': ' + fmtBytes(value)) +
          '"><div class="bar ' + cls + '" style="width:' + w.toFixed(2) + '%"></div></div><div class="bar-value">' +
          fmtBytes(value) + '</div></div>';
      }
      var html = '<div class="page-head"><div><h1>Storage</h1><p class="sub">What the store holds, before and after ' +
        'deduplication and compression</p></div></div>';
      html += '<div class="stats">' +
        stat('Logical', fmtBytes(logical), 'sum of every upload', 'logical') +
        stat('Stored', fmtBytes(stored), logical ? pct(saved) + ' saved' : 'on disk', 'stored') +
        stat('Dedup ratio', fmtRatio(s.dedup_ratio) + '×', 'logical ÷ unique bytes', 'dedup') +
        stat('Compression', fmtRatio(s.compression_ratio), 'stored ÷ unique; lower is better', 'compression') +
        stat('Overall', fmtRatio(s.overall_ratio), 'stored ÷ logical', 'overall') +
        stat('Blobs', fmtNum(s.blobs), fmtNum(s.checkpoints) + ' checkpoints · ' + fmtNum(s.models) + ' models', 'blobs') +
        '</div>';
      html += '<section class="card pad"><h2>Bytes</h2><div class="bars">' +
        bar('Logical', logical, 'b-logical', 'what was uploaded') +
        bar('Unique', unique, 'b-unique', 'after deduplication') +
        bar('Stored', stored, 'b-stored', 'after compression') +
        '</div></section>';
      if (models.length) {
        html += '<section class="card table-card"><h2 class="pad-h">By model</h2><div class="table-wrap"><table class="table"><thead><tr>' +
          '<th scope="col">Model</th><th scope="col" class="num">Checkpoints</th><th scope="col" class="num">Uploaded</th>' +
          '<th scope="col" class="num">Added to store</th><th scope="col" class="hide-sm">Share of uploads</th></tr></thead><tbody>';
        var tot = models.reduce(function (a, m) { return a + (m.bytes || 0); }, 0) || 1;
        models.slice().sort(function (a, b) { return (b.bytes || 0) - (a.bytes || 0); }).forEach(function (m) {
          html += '<tr><td><a href="' + esc(modelHref(m.name)) + '">' + esc(m.name) + '</a></td><td class="num">' +
            fmtNum(m.checkpoints) + '</td><td class="num">' + fmtBytes(m.bytes) + '</td><td class="num">' +
            fmtBytes(m.bytes_added) + '</td><td class="hide-sm"><div class="mini-track"><div class="bar b-logical" style="width:' +
            ((m.bytes || 0) / tot * 100).toFixed(2) + '%"></div></div></td></tr>';
        });
        html += '</tbody></table></div></section>';
      }
      main.innerHTML = html;
      ready();
    }).catch(function (err) {
      if (!alive()) return;
      main.innerHTML = errorBox(err);
      ready();
    });
  }

  function stat(label, value, note, key) {
    return '<div class="stat" data-stat="' + esc(key || '') + '"><div class="stat-label">' + esc(label) +
      '</div><div class="stat-value">' + value + '</div>' + (note ? '<div class="stat-note">' + (/^<a /.test(note) ? note : esc(note)) + '</div>' : '') + '</div>';
  }

  /* ---------- model page ---------- */

  function bestOf(list) {
    var best = null;
    for (var i = 0; i < list.length; i++) {
      var c = list[i];
      if (typeof c.loss !== 'number') continue;
      if (!best || c.loss < best.loss || (c.loss === best.loss && c.id > best.id)) best = c;
    }
    return best;
  }

  function pageModel(alive, name) {
    setNav('models');
    setTitle(name);
    loading(name);
    var st = {
      name: name, all: [], total: 0, latestId: null, best: null, runs: [], colors: {},
      run: '', sort: '-created', page: 0, timer: null, polling: false, logScale: false, hidden: {},
      chart: null
    };
    view = {
      destroy: function () {
        if (st.timer) clearTimeout(st.timer);
        st.timer = null;
        window.removeEventListener('resize', onResize);
        st.dead = true;
      }
    };
    var resizeTimer = null;
    function onResize() {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () { if (!st.dead) drawChart(st); }, 120);
    }
    window.addEventListener('resize', onResize);

    function load(first) {
      return api(API + '/models/' + enc(name) + '/checkpoints?order=created&limit=100000').then(function (data) {
        if (!alive() || st.dead) return;
        st.all = (data && data.checkpoints) || [];
        st.total = data && data.total != null ? data.total : st.all.length;
        st.latestId = st.all.length ? st.all[st.all.length - 1].id : null;
        st.best = bestOf(st.all);
        var runs = {};
        st.all.forEach(function (c) { runs[c.run] = (runs[c.run] || 0) + 1; });
        st.runs = Object.keys(runs).sort(function (a, b) {
          return a === 'default' ? -1 : b === 'default' ? 1 : a < b ? -1 : a > b ? 1 : 0;
        }).map(function (r) { return { name: r, count: runs[r] }; });
        st.runs.forEach(function (r, i) { st.colors[r.name] = RUN_COLORS[i % RUN_COLORS.length]; });
        if (st.run && !runs[st.run]) st.run = '';
        if (first) layout(st);
        renderSummary(st);
        renderRuns(st);
        drawChart(st);
        renderTable(st);
      });
    }

    function poll() {
      st.timer = null;
      if (st.dead) return;
      if (document.hidden || st.polling) { schedule(); return; }
      st.polling = true;
      api(API + '/models/' + enc(name) + '/checkpoints?order=-created&limit=1').then(function (data) {
        if (st.dead) return null;
        var latest = data && data.checkpoints && data.checkpoints[0] ? data.checkpoints[0].id : null;
        var total = data && data.total != null ? data.total : 0;
        if (total !== st.total || latest !== st.latestId) return load(false);
        return null;
      }).catch(function () { /* a missed poll is retried on the next tick */ }).then(function () {
        st.polling = false;
        schedule();
      });
    }
    function schedule() { if (!st.dead) st.timer = setTimeout(poll, POLL_MS); }
    st.reload = function () { return load(false).catch(function (e) { toast(e.message, 'error'); }); };

    load(true).then(function () {
      if (!alive() || st.dead) return;
      ready();
      schedule();
    }).catch(function (err) {
      if (!alive()) return;
      main.innerHTML = errorBox(err);
      ready();
    });
  }

  function layout(st) {
    var n = st.name;
    main.innerHTML =
      '<nav class="crumbs" aria-label="Breadcrumb"><a href="/ui/">Models</a><span aria-hidden="true">/</span><span>' + esc(n) + '</span></nav>' +
      '<div class="page-head"><div><h1 class="mono-title">' + esc(n) + '</h1><p class="sub" id="m-sub"></p></div>' +
      '<div class="head-actions"><span class="live" title="This page checks for new checkpoints every few seconds"><span class="pulse" aria-hidden="true"></span>Live</span></div></div>' +
      '<div class="stats" id="m-stats"></div>' +
      '<section class="card pad chart-card"><div class="card-head"><h2>Loss</h2><div class="chart-tools">' +
      '<div class="legend" id="m-legend"></div>' +
      '<label class="check"><input type="checkbox" id="m-log"> Log scale</label></div></div>' +
      '<div class="chart" id="m-chart"></div><p class="chart-note muted" id="m-chart-note"></p></section>' +
      '<section class="card table-card"><div class="card-head pad-h"><h2>Checkpoints</h2><div class="table-tools">' +
      '<label>Run <select id="m-run"></select></label>' +
      '<label>Sort <select id="m-sort">' +
      '<option value="-created">Newest first</option><option value="created">Oldest first</option>' +
      '<option value="epoch">Epoch ↑</option><option value="-epoch">Epoch ↓</option>' +
      '<option value="loss">Loss ↑ (best first)</option><option value="-loss">Loss ↓</option>' +
      '</select></label></div></div>' +
      '<div class="table-wrap"><table class="table" id="ckpt-table"><thead><tr>' +
      '<th scope="col">ID</th><th scope="col" class="col-run">Run</th><th scope="col" class="num">Epoch</th>' +
      '<th scope="col" class="num hide-sm">Step</th><th scope="col" class="num">Loss</th>' +
      '<th scope="col" class="hide-md">Metrics</th><th scope="col" class="num">Size</th>' +
      '<th scope="col" class="num hide-sm" title="tensor bytes this upload added to the store">Added</th>' +
      '<th scope="col">Created</th><th scope="col">Download</th><th scope="col"><span class="sr">Actions</span></th>' +
      '</tr></thead><tbody></tbody></table></div>' +
      '<div class="pager" id="m-pager"></div></section>';
    var runSel = document.getElementById('m-run');
    var sortSel = document.getElementById('m-sort');
    sortSel.value = st.sort;
    runSel.addEventListener('change', function () { st.run = runSel.value; st.page = 0; renderTable(st); });
    sortSel.addEventListener('change', function () { st.sort = sortSel.value; st.page = 0; renderTable(st); });
    document.getElementById('m-log').addEventListener('change', function (e) {
      st.logScale = e.target.checked;
      drawChart(st);
    });
    document.getElementById('m-pager').addEventListener('click', function (e) {
      var b = e.target.closest('button[data-page]');
      if (!b) return;
      st.page = Number(b.getAttribute('data-page'));
      renderTable(st);
      var t = document.getElementById('ckpt-table');
      if (t && t.getBoundingClientRect().top < 0) t.scrollIntoView();
    });
    document.querySelector('#ckpt-table tbody').addEventListener('click', function (e) {
      var b = e.target.closest('button[data-act]');
      if (!b) return;
      var id = Number(b.getAttribute('data-id'));
      var c = st.all.filter(function (x) { return x.id === id; })[0];
      if (!c) return;
      if (b.getAttribute('data-act') === 'pin') togglePin(st.name, c, b).then(st.reload);
      else deleteCkpt(st.name, c, b).then(function (ok) { if (ok) st.reload(); });
    });
    document.getElementById('m-legend').addEventListener('click', function (e) {
      var b = e.target.closest('button[data-run]');
      if (!b) return;
      var r = b.getAttribute('data-run');
      st.hidden[r] = !st.hidden[r];
      renderRuns(st);
      drawChart(st);
    });
  }

  function renderSummary(st) {
    var all = st.all;
    var bytes = 0;
    var added = 0;
    var maxEpoch = null;
    all.forEach(function (c) {
      bytes += c.size || 0;
      added += (c.dedup && c.dedup.new_bytes) || 0;
      if (c.epoch != null && (maxEpoch == null || c.epoch > maxEpoch)) maxEpoch = c.epoch;
    });
    var latest = all.length ? all[all.length - 1] : null;
    document.getElementById('m-sub').innerHTML = fmtNum(all.length) + (all.length === 1 ? ' checkpoint' : ' checkpoints') +
      ' · ' + st.runs.length + (st.runs.length === 1 ? ' run' : ' runs') +
      (latest ? ' · last upload ' + timeHtml(latest.created_at) : '');
    document.getElementById('m-stats').innerHTML =
      stat('Best loss', st.best ? '<a href="' + esc(ckptHref(st.name, st.best.id)) + '">' + esc(fmtLoss(st.best.loss)) + '</a>' : '—',
        st.best ? (st.best.epoch != null ? 'epoch ' + st.best.epoch + ' · ' : '') + 'run ' + st.best.run : 'no checkpoint has a loss', 'best') +
      stat('Latest epoch', maxEpoch != null ? fmtNum(maxEpoch) : '—', latest ? 'checkpoint #' + latest.id : '', 'epoch') +
      stat('Checkpoints', fmtNum(all.length), st.runs.length + (st.runs.length === 1 ? ' run' : ' runs'), 'count') +
      stat('Uploaded', fmtBytes(bytes), fmtBytes(added) + ' added to the store', 'bytes');
  }

  function renderRuns(st) {
    var legend = document.getElementById('m-legend');
    legend.innerHTML = st.runs.map(function (r) {
      var off = !!st.hidden[r.name];
      return '<button type="button" class="legend-item' + (off ? ' off' : '') + '" data-run="' + esc(r.name) +
        '" aria-pressed="' + (!off) + '" title="Show or hide this run in the chart"><span class="swatch" style="background:' +
        st.colors[r.name] + '"></span>' + esc(r.name) + ' <span class="muted">' + fmtNum(r.count) + '</span></button>';
    }).join('');
    var sel = document.getElementById('m-run');
    sel.innerHTML = '<option value="">All runs</option>' + st.runs.map(function (r) {
      return '<option value="' + esc(r.name) + '">' + esc(r.name) + ' (' + fmtNum(r.count) + ')</option>';
    }).join('');
    sel.value = st.run;
  }

  /* ---------- chart ---------- */

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; }
    var span = hi - lo;
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    if (err >= 7.5) step *= 10;
    else if (err >= 3.5) step *= 5;
    else if (err >= 1.5) step *= 2;
    var ticks = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }

  function drawChart(st) {
    var box = document.getElementById('m-chart');
    var note = document.getElementById('m-chart-note');
    if (!box) return;
    var pts = st.all.filter(function (c) { return typeof c.loss === 'number' && isFinite(c.loss); });
    var noLoss = st.all.length - pts.length;
    if (!pts.length) {
      box.innerHTML = '<div class="chart-empty">No checkpoint of this model has a loss yet. Upload with <code>?loss=</code> or save a <code>loss</code> in the checkpoint.</div>';
      note.textContent = '';
      st.chart = null;
      return;
    }
    /* x: epoch when every point has one, else step, else upload order */
    var xMode = pts.every(function (c) { return c.epoch != null; }) ? 'epoch'
      : pts.every(function (c) { return c.step != null; }) ? 'step' : 'order';
    var order = {};
    st.all.forEach(function (c, i) { order[c.id] = i; });
    var xOf = xMode === 'epoch' ? function (c) { return c.epoch; }
      : xMode === 'step' ? function (c) { return c.step; } : function (c) { return order[c.id]; };
    var canLog = pts.every(function (c) { return c.loss > 0; });
    var logY = st.logScale && canLog;
    var logBox = document.getElementById('m-log');
    if (logBox) { logBox.disabled = !canLog; logBox.parentNode.title = canLog ? '' : 'Some losses are 0 or negative'; }

    var W = Math.max(box.clientWidth || 600, 280);
    var H = W < 560 ? 220 : 300;
    var m = { l: 56, r: 16, t: 14, b: 36 };
    var iw = W - m.l - m.r;
    var ih = H - m.t - m.b;

    var xmin = Infinity;
    var xmax = -Infinity;
    var ymin = Infinity;
    var ymax = -Infinity;
    pts.forEach(function (c) {
      var x = xOf(c);
      var y = logY ? Math.log10(c.loss) : c.loss;
      if (x < xmin) xmin = x;
      if (x > xmax) xmax = x;
      if (y < ymin) ymin = y;
      if (y > ymax) ymax = y;
    });
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    if (ymax === ymin) { var d = Math.abs(ymin) * 0.1 || 1; ymin -= d; ymax += d; }
    var pad = (ymax - ymin) * 0.06;
    ymin -= pad; ymax += pad;
    if (!logY && ymin < 0 && ymin + pad >= 0) ymin = 0;
    function X(v) { return m.l + (v - xmin) / (xmax - xmin) * iw; }
    function Y(v) { return m.t + (1 - (v - ymin) / (ymax - ymin)) * ih; }

    var parts = [];
    parts.push('<svg class="chart-svg" viewBox="0 0 ' + W + ' ' + H + '" width="' + W + '" height="' + H +
      '" role="img" tabindex="0" aria-label="Loss by ' + (xMode === 'order' ? 'upload order' : xMode) + ', ' + pts.length +
      ' points; use the arrow keys to step through them" data-points="' + pts.length + '">');
    /* grid and axes */
    var yt = logY ? niceTicks(Math.floor(ymin), Math.ceil(ymax), 4).filter(function (v) { return v >= ymin && v <= ymax && Number.isInteger(v); })
      : niceTicks(ymin, ymax, 5).filter(function (v) { return v >= ymin && v <= ymax; });
    if (logY && yt.length < 2) yt = niceTicks(ymin, ymax, 4).filter(function (v) { return v >= ymin && v <= ymax; });
    parts.push('<g class="grid">');
    yt.forEach(function (v) {
      var y = Y(v).toFixed(1);
      parts.push('<line x1="' + m.l + '" x2="' + (W - m.r) + '" y1="' + y + '" y2="' + y + '"/>');
    });
    parts.push('</g><g class="axis-labels">');
    yt.forEach(function (v) {
      parts.push('<text x="' + (m.l - 8) + '" y="' + (Y(v) + 4).toFixed(1) + '" text-anchor="end">' +
        esc(fmtLoss(logY ? Math.pow(10, v) : v)) + '</text>');
    });
    var xt = niceTicks(xmin, xmax, Math.max(2, Math.floor(iw / 90))).filter(function (v) {
      return v >= xmin && v <= xmax && (xMode !== 'epoch' || Number.isInteger(v));
    });
    xt.forEach(function (v) {
      parts.push('<text x="' + X(v).toFixed(1) + '" y="' + (H - m.b + 18) + '" text-anchor="middle">' + esc(fmtNum(v)) + '</text>');
    });
    parts.push('<text class="axis-title" x="' + (m.l + iw / 2) + '" y="' + (H - 4) + '" text-anchor="middle">' +
      (xMode === 'order' ? 'upload order' : xMode) + '</text>');
    parts.push('</g><line class="axis" x1="' + m.l + '" x2="' + (W - m.r) + '" y1="' + (m.t + ih) + '" y2="' + (m.t + ih) + '"/>');

    /* one line per run, through its points in x order */
    var byRun = {};
    pts.forEach(function (c) { (byRun[c.run] = byRun[c.run] || []).push(c); });
    var visible = [];
    var dense = pts.length > 400;
    st.runs.forEach(function (r) {
      var list = byRun[r.name];
      if (!list || st.hidden[r.name]) return;
      list.sort(function (a, b) { return xOf(a) - xOf(b) || a.id - b.id; });
      var color = st.colors[r.name];
      var dstr = '';
      for (var i = 0; i < list.length; i++) {
        dstr += (i ? 'L' : 'M') + X(xOf(list[i])).toFixed(1) + ' ' + Y(logY ? Math.log10(list[i].loss) : list[i].loss).toFixed(1);
      }
      parts.push('<path class="line" d="' + dstr + '" stroke="' + color + '" data-run="' + esc(r.name) + '"/>');
      /* Few points: one circle each, with the point's data. Many: one path
       * of round dots (cheap to build and lay out), the best as a circle. */
      var dots = '';
      var circles = [];
      for (var j = 0; j < list.length; j++) {
        var c = list[j];
        var px = X(xOf(c));
        var py = Y(logY ? Math.log10(c.loss) : c.loss);
        c._px = px;
        c._py = py;
        visible.push(c);
        var isBest = st.best && c.id === st.best.id;
        if (dense && !isBest) {
          dots += 'M' + px.toFixed(1) + ' ' + py.toFixed(1) + 'h0';
          continue;
        }
        circles.push('<circle class="pt' + (isBest ? ' best' : '') + '" cx="' + px.toFixed(1) + '" cy="' + py.toFixed(1) +
          '" r="' + (isBest ? 5 : 3) + '" data-id="' + c.id + '" data-run="' + esc(c.run) + '" data-epoch="' +
          (c.epoch == null ? '' : c.epoch) + '" data-step="' + (c.step == null ? '' : c.step) + '" data-loss="' + c.loss +
          '" data-best="' + (isBest ? 'true' : 'false') + '"/>');
      }
      if (dots && list.length <= 2000) parts.push('<path class="dots" d="' + dots + '" stroke="' + color + '" data-run="' + esc(r.name) + '"/>');
      parts.push('<g class="points" fill="' + color + '">' + circles.join('') + '</g>');
    });
    /* best marker drawn last, on top */
    if (st.best && !st.hidden[st.best.run] && st.best._px != null) {
      var bx = st.best._px;
      var by = st.best._py;
      var lx = bx > W - 90 ? bx - 10 : bx + 10;
      parts.push('<g class="best-mark" aria-hidden="true"><circle cx="' + bx.toFixed(1) + '" cy="' + by.toFixed(1) +
        '" r="9"/><text x="' + lx.toFixed(1) + '" y="' + (by > m.t + 24 ? by - 12 : by + 20).toFixed(1) + '" text-anchor="' +
        (bx > W - 90 ? 'end' : 'start') + '">best ' + esc(fmtLoss(st.best.loss)) + '</text></g>');
    }
    parts.push('<g class="hover" aria-hidden="true" style="display:none"><line class="hover-line" y1="' + m.t + '" y2="' + (m.t + ih) +
      '"/><circle class="hover-dot" r="5"/></g>');
    parts.push('</svg><div class="tip" role="status" aria-live="polite" hidden></div>');
    box.innerHTML = parts.join('');
    var notes = [];
    if (xMode === 'step') notes.push('x is the step: some checkpoints have no epoch.');
    if (xMode === 'order') notes.push('x is the upload order: some checkpoints have neither epoch nor step.');
    if (noLoss) notes.push(fmtNum(noLoss) + (noLoss === 1 ? ' checkpoint has' : ' checkpoints have') + ' no loss and ' + (noLoss === 1 ? 'is' : 'are') + ' not drawn.');
    note.textContent = notes.join(' ');

    visible.sort(function (a, b) { return a._px - b._px || a._py - b._py; });
    st.chart = { pts: visible, W: W, H: H, xMode: xMode, focus: -1 };
    wireChart(st, box);
  }

  function wireChart(st, box) {
    var svg = box.querySelector('svg');
    var tip = box.querySelector('.tip');
    var hover = svg.querySelector('.hover');
    var hline = svg.querySelector('.hover-line');
    var hdot = svg.querySelector('.hover-dot');
    var ch = st.chart;

    function nearest(px, py) {
      var a = ch.pts;
      var lo = 0;
      var hi = a.length - 1;
      while (lo < hi) {
        var mid = (lo + hi) >> 1;
        if (a[mid]._px < px) lo = mid + 1; else hi = mid;
      }
      /* look around the x position for the closest point in 2-D */
      var best = -1;
      var bd = Infinity;
      for (var i = Math.max(0, lo - 40); i < Math.min(a.length, lo + 40); i++) {
        var dx = a[i]._px - px;
        var dy = (a[i]._py - py) * 0.35;
        var d = dx * dx + dy * dy;
        if (d < bd) { bd = d; best = i; }
      }
      return best;
    }

    function show(i) {
      if (i < 0 || i >= ch.pts.length) return;
      ch.focus = i;
      var c = ch.pts[i];
      hover.style.display = '';
      hline.setAttribute('x1', c._px.toFixed(1));
      hline.setAttribute('x2', c._px.toFixed(1));
      hdot.setAttribute('cx', c._px.toFixed(1));
      hdot.setAttribute('cy', c._py.toFixed(1));
      hdot.setAttribute('fill', st.colors[c.run]);
      var isBest = st.best && c.id === st.best.id;
      tip.innerHTML = '<div class="tip-head"><span class="swatch" style="background:' + st.colors[c.run] + '"></span>' +
        esc(c.run) + ' · #' + c.id + (isBest ? ' <span class="badge best">best</span>' : '') + '</div>' +
        '<dl><dt>epoch</dt><dd>' + (c.epoch == null ? '—' : fmtNum(c.epoch)) + '</dd>' +
        (c.step != null ? '<dt>step</dt><dd>' + fmtNum(c.step) + '</dd>' : '') +
        '<dt>loss</dt><dd>' + esc(fmtLoss(c.loss)) + '</dd><dt>time</dt><dd>' + esc(fmtRel(c.created_at)) +
        '</dd></dl><div class="tip-time">' + esc(fmtExact(c.created_at).replace(/ \(.*\)$/, '')) + '</div>';
      tip.hidden = false;
      var sw = svg.clientWidth || ch.W;
      var scale = sw / ch.W;
      var x = c._px * scale;
      var y = c._py * scale;
      var tw = tip.offsetWidth;
      var left = x + 14;
      if (left + tw > sw) left = x - tw - 14;
      tip.style.left = Math.max(0, left) + 'px';
      tip.style.top = Math.max(0, y - 20) + 'px';
    }

    function hide() {
      hover.style.display = 'none';
      tip.hidden = true;
    }

    svg.addEventListener('mousemove', function (e) {
      var r = svg.getBoundingClientRect();
      var k = ch.W / r.width;
      show(nearest((e.clientX - r.left) * k, (e.clientY - r.top) * k));
    });
    svg.addEventListener('mouseleave', function () { if (document.activeElement !== svg) hide(); });
    svg.addEventListener('click', function (e) {
      var r = svg.getBoundingClientRect();
      var k = ch.W / r.width;
      var i = nearest((e.clientX - r.left) * k, (e.clientY - r.top) * k);
      var c = ch.pts[i];
      if (!c) return;
      var dx = c._px - (e.clientX - r.left) * k;
      var dy = c._py - (e.clientY - r.top) * k;
      if (dx * dx + dy * dy < 100) navigate(ckptHref(st.name, c.id));
    });
    svg.addEventListener('focus', function () {
      if (ch.focus < 0) {
        var bi = st.best ? ch.pts.indexOf(st.best) : -1;
        show(bi >= 0 ? bi : ch.pts.length - 1);
      } else show(ch.focus);
    });
    svg.addEventListener('blur', hide);
    svg.addEventListener('keydown', function (e) {
      var i = ch.focus;
      var step = e.shiftKey ? 10 : 1;
      if (e.key === 'ArrowRight' || e.key === 'ArrowUp') i = Math.min(ch.pts.length - 1, i + step);
      else if (e.key === 'ArrowLeft' || e.key === 'ArrowDown') i = Math.max(0, i - step);
      else if (e.key === 'Home') i = 0;
      else if (e.key === 'End') i = ch.pts.length - 1;
      else if (e.key === 'Enter' && ch.pts[i]) { navigate(ckptHref(st.name, ch.pts[i].id)); return; }
      else if (e.key === 'Escape') { hide(); return; }
      else return;
      e.preventDefault();
      show(i);
    });
  }

  /* ---------- checkpoint table ---------- */

  function sortList(list, key) {
    var desc = key.charAt(0) === '-';
    var k = desc ? key.slice(1) : key;
    var a = list.slice();
    function nullsLast(x, y) { return (x == null) - (y == null); }
    a.sort(function (p, q) {
      if (k === 'created') return desc ? q.id - p.id : p.id - q.id;
      var n = nullsLast(p[k], q[k]);
      if (n) return n;
      var d = p[k] == null ? 0 : (desc ? q[k] - p[k] : p[k] - q[k]);
      return d || (desc ? q.id - p.id : p.id - q.id);
    });
    return a;
  }

  function downloadLinks(name, c) {
    var base = apiCkpt(name, c.id);
    return '<div class="dl"><a href="' + esc(base + '/file') + '" download data-dl="file" title="The uploaded file, byte for byte (' +
      esc(fmtBytes(c.size)) + ')">file</a><a href="' + esc(base + '/state_dict') + '" download data-dl="state_dict" ' +
      'title="A state_dict .pth of the model weights">state_dict</a><a href="' + esc(base + '/state_dict?format=safetensors') +
      '" download data-dl="safetensors" title="The model weights as safetensors">safetensors</a></div>';
  }

  function renderTable(st) {
    var tbody = document.querySelector('#ckpt-table tbody');
    if (!tbody) return;
    var table = document.getElementById('ckpt-table');
    table.classList.toggle('one-run', st.runs.length <= 1);
    var list = st.run ? st.all.filter(function (c) { return c.run === st.run; }) : st.all;
    list = sortList(list, st.sort);
    var pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
    if (st.page >= pages) st.page = pages - 1;
    var rows = list.slice(st.page * PAGE_SIZE, st.page * PAGE_SIZE + PAGE_SIZE);
    if (!rows.length) {
      tbody.innerHTML = '<tr><td colspan="11" class="empty-row">No checkpoints' + (st.run ? ' in run ' + esc(st.run) : '') + '.</td></tr>';
    } else {
      tbody.innerHTML = rows.map(function (c) {
        var isBest = st.best && c.id === st.best.id;
        var added = c.dedup ? c.dedup.new_bytes : null;
        return '<tr data-id="' + c.id + '"' + (isBest ? ' class="is-best"' : '') + '><td><a class="strong" href="' +
          esc(ckptHref(st.name, c.id)) + '">#' + c.id + '</a>' + (c.pinned ? ' <span class="badge pin" title="Pinned: retention never removes it">pinned</span>' : '') +
          (c.tags && c.tags.length ? ' ' + c.tags.map(function (t) { return '<span class="chip">' + esc(t) + '</span>'; }).join(' ') : '') + '</td>' +
          '<td class="col-run"><span class="swatch" style="background:' + (st.colors[c.run] || '#999') + '"></span>' + esc(c.run) + '</td>' +
          '<td class="num">' + (c.epoch == null ? '—' : fmtNum(c.epoch)) + '</td>' +
          '<td class="num hide-sm">' + (c.step == null ? '—' : fmtNum(c.step)) + '</td>' +
          '<td class="num">' + esc(fmtLoss(c.loss)) + (isBest ? ' <span class="badge best">best</span>' : '') + '</td>' +
          '<td class="hide-md metrics">' + fmtMetrics(c.metrics) + '</td>' +
          '<td class="num" title="' + esc(fmtNum(c.size)) + ' bytes">' + fmtBytes(c.size) + '</td>' +
          '<td class="num hide-sm" title="' + (c.dedup ? esc(fmtNum(c.dedup.new_tensors) + ' of ' + fmtNum(c.dedup.tensors) + ' tensors were new') : '') + '">' +
          (added == null ? '—' : added === 0 ? '<span class="muted">0 B</span>' : fmtBytes(added)) + '</td>' +
          '<td class="nowrap">' + timeHtml(c.created_at) + '</td>' +
          '<td>' + downloadLinks(st.name, c) + '</td>' +
          '<td class="actions"><button type="button" class="btn btn-sm" data-act="pin" data-id="' + c.id + '" aria-pressed="' + !!c.pinned +
          '">' + (c.pinned ? 'Unpin' : 'Pin') + '</button><button type="button" class="btn btn-sm btn-danger" data-act="delete" data-id="' +
          c.id + '" aria-label="Delete checkpoint ' + c.id + '">Delete</button></td></tr>';
      }).join('');
    }
    var pager = document.getElementById('m-pager');
    if (pages <= 1) {
      pager.innerHTML = list.length ? '<span class="muted">' + fmtNum(list.length) + (list.length === 1 ? ' checkpoint' : ' checkpoints') + '</span>' : '';
    } else {
      var p = st.page;
      var btn = function (to, label, aria) {
        return '<button type="button" class="btn btn-sm" data-page="' + to + '"' + (to < 0 || to >= pages || to === p ? ' disabled' : '') +
          ' aria-label="' + esc(aria) + '">' + label + '</button>';
      };
      pager.innerHTML = '<span class="muted">' + fmtNum(p * PAGE_SIZE + 1) + '–' + fmtNum(Math.min(list.length, (p + 1) * PAGE_SIZE)) +
        ' of ' + fmtNum(list.length) + '</span><div class="pager-btns">' + btn(0, '«', 'First page') + btn(p - 1, '‹ Prev', 'Previous page') +
        '<span class="page-no">Page ' + (p + 1) + ' of ' + fmtNum(pages) + '</span>' + btn(p + 1, 'Next ›', 'Next page') +
        btn(pages - 1, '»', 'Last page') + '</div>';
    }
  }

  function togglePin(name, c, btn) {
    if (btn) btn.disabled = true;
    return api(apiCkpt(name, c.id), { method: 'PATCH', body: { pinned: !c.pinned } }).then(function () {
      toast((c.pinned ? 'Unpinned' : 'Pinned') + ' checkpoint #' + c.id, 'ok');
    }, function (err) {
      toast('Could not ' + (c.pinned ? 'unpin' : 'pin') + ' #' + c.id + ': ' + err.message, 'error');
      if (btn) btn.disabled = false;
    });
  }

  function deleteCkpt(name, c, btn) {
    var what = '#' + c.id + (c.epoch != null ? ' (epoch ' + c.epoch + ')' : '');
    if (!window.confirm('Delete checkpoint ' + what + ' of ' + name + '? Its file can no longer be downloaded.')) {
      return Promise.resolve(false);
    }
    if (btn) btn.disabled = true;
    return api(apiCkpt(name, c.id), { method: 'DELETE' }).then(function () {
      toast('Deleted checkpoint ' + what, 'ok');
      return true;
    }, function (err) {
      toast('Could not delete ' + what + ': ' + err.message, 'error');
      if (btn) btn.disabled = false;
      return false;
    });
  }

  /* ---------- checkpoint page ---------- */

  /* The checkpoint this one is compared with: the same run's checkpoint at
   * the highest epoch below this one's (else the run's previous upload). */
  function findPrevious(name, c) {
    var base = API + '/models/' + enc(name) + '/checkpoints?run=' + enc(c.run);
    if (c.epoch != null) {
      return api(base + '&epoch=' + (c.epoch - 1) + '&order=-created&limit=1').then(function (d) {
        if (d && d.checkpoints && d.checkpoints.length) return d.checkpoints[0];
        return api(base + '&order=-epoch&limit=100000').then(function (all) {
          var list = (all && all.checkpoints) || [];
          for (var i = 0; i < list.length; i++) {
            if (list[i].epoch != null && list[i].epoch < c.epoch) return list[i];
          }
          return null;
        });
      });
    }
    return api(base + '&order=-created&limit=100000').then(function (all) {
      var list = (all && all.checkpoints) || [];
      for (var i = 0; i < list.length; i++) if (list[i].id < c.id) return list[i];
      return null;
    });
  }

  function pageCheckpoint(alive, name, id) {
    setNav('models');
    setTitle(name + ' #' + id);
    loading('checkpoint ' + id);
    var st = { name: name, filter: '', page: 0, tensors: [], diff: null };
    view = { destroy: function () { st.dead = true; } };
    api(apiCkpt(name, id)).then(function (c) {
      if (!alive()) return;
      st.c = c;
      st.tensors = c.tensors || [];
      var canonical = String(c.id);
      if (canonical !== String(id)) setTitle(name + ' #' + canonical + ' (' + id + ')');
      var base = apiCkpt(name, c.id);
      var tensorBytes = st.tensors.reduce(function (a, t) { return a + (t.nbytes || 0); }, 0);
      var html = '<nav class="crumbs" aria-label="Breadcrumb"><a href="/ui/">Models</a><span aria-hidden="true">/</span><a href="' +
        esc(modelHref(name)) + '">' + esc(name) + '</a><span aria-hidden="true">/</span><span>#' + esc(c.id) + '</span></nav>';
      html += '<div class="page-head"><div><h1>Checkpoint #' + esc(c.id) + (c.pinned ? ' <span class="badge pin">pinned</span>' : '') +
        '</h1><p class="sub">' + esc(name) + ' · run ' + esc(c.run) + (c.epoch != null ? ' · epoch ' + fmtNum(c.epoch) : '') +
        ' · uploaded ' + timeHtml(c.created_at) + '</p></div><div class="head-actions">' +
        '<a class="btn btn-primary" href="' + esc(base + '/file') + '" download data-dl="file">Download file</a>' +
        '<a class="btn" href="' + esc(base + '/state_dict') + '" download data-dl="state_dict">state_dict</a>' +
        '<a class="btn" href="' + esc(base + '/state_dict?format=safetensors') + '" download data-dl="safetensors">safetensors</a>' +
        '<button type="button" class="btn" id="c-pin">' + (c.pinned ? 'Unpin' : 'Pin') + '</button>' +
        '<button type="button" class="btn btn-danger" id="c-del">Delete</button></div></div>';
      html += '<div class="stats">' +
        stat('Loss', esc(fmtLoss(c.loss)), c.step != null ? 'step ' + fmtNum(c.step) : '', 'loss') +
        stat('Epoch', c.epoch != null ? fmtNum(c.epoch) : '—', 'run ' + c.run, 'epoch') +
        stat('Size', fmtBytes(c.size), fmtNum(c.size) + ' bytes · ' + (c.format || ''), 'size') +
        stat('Tensors', fmtNum(c.tensor_count != null ? c.tensor_count : st.tensors.length), fmtBytes(tensorBytes) + ' of tensor data', 'tensors') +
        stat('Added to store', c.dedup ? fmtBytes(c.dedup.new_bytes) : '—',
          c.dedup ? fmtNum(c.dedup.new_tensors) + ' of ' + fmtNum(c.dedup.tensors) + ' tensors new' : '', 'added') +
        '</div>';
      html += '<section class="card pad details"><dl class="props">' +
        '<dt>SHA-256</dt><dd class="mono break" id="c-sha">' + esc(c.sha256) + '</dd>' +
        '<dt>Created</dt><dd>' + esc(fmtExact(c.created_at)) + '</dd>' +
        '<dt>Metrics</dt><dd>' + fmtMetrics(c.metrics) + '</dd>' +
        '<dt>Tags</dt><dd>' + (c.tags && c.tags.length ? c.tags.map(function (t) { return '<span class="chip">' + esc(t) + '</span>'; }).join(' ') : '<span class="muted">—</span>') + '</dd>' +
        '<dt>curl</dt><dd><code class="break">curl -OJ ' + esc(location.origin + base + '/file') + '</code></dd>' +
        '</dl></section>';
      html += '<section class="card table-card" id="c-diff"><div class="card-head pad-h"><h2>Changes since the previous epoch</h2></div>' +
        '<div class="pad-h diff-body"><p class="muted">Looking for the previous checkpoint…</p></div></section>';
      html += '<section class="card table-card"><div class="card-head pad-h"><h2>Tensors <span class="muted count">' +
        fmtNum(st.tensors.length) + '</span></h2><div class="table-tools"><input type="search" id="t-filter" placeholder="Filter by path" aria-label="Filter tensors by path"></div></div>' +
        '<div class="table-wrap"><table class="table" id="tensor-table"><thead><tr><th scope="col">Path</th><th scope="col">dtype</th>' +
        '<th scope="col">Shape</th><th scope="col" class="num">Size</th><th scope="col" class="num" title="Other references to the same bytes across the store">Shared with</th>' +
        '<th scope="col" class="hide-md">Blob</th></tr></thead><tbody></tbody></table></div><div class="pager" id="t-pager"></div></section>';
      main.innerHTML = html;
      renderTensors(st);
      document.getElementById('t-filter').addEventListener('input', function (e) {
        st.filter = e.target.value.trim().toLowerCase();
        st.page = 0;
        renderTensors(st);
      });
      document.getElementById('t-pager').addEventListener('click', function (e) {
        var b = e.target.closest('button[data-page]');
        if (!b) return;
        st.page = Number(b.getAttribute('data-page'));
        renderTensors(st);
      });
      document.getElementById('c-pin').addEventListener('click', function (e) {
        togglePin(name, c, e.currentTarget).then(function () { if (alive()) render(); });
      });
      document.getElementById('c-del').addEventListener('click', function (e) {
        deleteCkpt(name, c, e.currentTarget).then(function (ok) { if (ok && alive()) navigate(modelHref(name), true); });
      });
      ready();
      return loadDiff(alive, st);
    }).catch(function (err) {
      if (!alive()) return;
      main.innerHTML = errorBox(err);
      ready();
    });
  }

  function renderTensors(st) {
    var tbody = document.querySelector('#tensor-table tbody');
    if (!tbody) return;
    var list = st.filter ? st.tensors.filter(function (t) { return String(t.path).toLowerCase().indexOf(st.filter) >= 0; }) : st.tensors;
    var size = 200;
    var pages = Math.max(1, Math.ceil(list.length / size));
    if (st.page >= pages) st.page = pages - 1;
    var rows = list.slice(st.page * size, st.page * size + size);
    var status = st.diff ? st.diffStatus : null;
    tbody.innerHTML = rows.length ? rows.map(function (t) {
      var refs = t.refs == null ? null : t.refs - 1;
      var ds = status ? status[t.path] : null;
      return '<tr data-path="' + esc(t.path) + '"><td class="mono path">' + esc(t.path) +
        (ds && ds !== 'same' ? ' <span class="badge d-' + esc(ds) + '">' + esc(ds) + '</span>' : '') + '</td><td class="mono">' + esc(t.dtype) +
        '</td><td class="mono" data-shape="' + esc(JSON.stringify(t.shape || [])) + '">' + esc(fmtShape(t.shape)) + '</td><td class="num" title="' +
        esc(fmtNum(t.nbytes)) + ' bytes">' + fmtBytes(t.nbytes) + '</td><td class="num" title="The blob has ' + esc(t.refs) +
        ' references across the store">' + (refs == null ? '—' : refs <= 0 ? '<span class="muted">—</span>' : fmtNum(refs)) +
        '</td><td class="mono hide-md muted" title="' + esc(t.blob) + '">' + esc(String(t.blob || '').slice(0, 12)) + '</td></tr>';
    }).join('') : '<tr><td colspan="6" class="empty-row">' + (st.tensors.length ? 'No tensor matches.' : 'This checkpoint has no tensors.') + '</td></tr>';
    var pager = document.getElementById('t-pager');
    if (pages <= 1) {
      pager.innerHTML = '';
    } else {
      var p = st.page;
      pager.innerHTML = '<span class="muted">' + fmtNum(p * size + 1) + '–' + fmtNum(Math.min(list.length, (p + 1) * size)) + ' of ' +
        fmtNum(list.length) + '</span><div class="pager-btns"><button type="button" class="btn btn-sm" data-page="' + (p - 1) + '"' +
        (p === 0 ? ' disabled' : '') + '>‹ Prev</button><span class="page-no">Page ' + (p + 1) + ' of ' + pages +
        '</span><button type="button" class="btn btn-sm" data-page="' + (p + 1) + '"' + (p + 1 >= pages ? ' disabled' : '') + '>Next ›</button></div>';
    }
  }

  function loadDiff(alive, st) {
    var c = st.c;
    var name = st.name;
    var body = function () { return document.querySelector('#c-diff .diff-body'); };
    return findPrevious(name, c).then(function (prev) {
      if (!alive() || !body()) return;
      if (!prev) {
        body().innerHTML = '<p class="muted">This is the first checkpoint of run ' + esc(c.run) + ': nothing to compare with.</p>';
        return;
      }
      var head = document.querySelector('#c-diff h2');
      head.innerHTML = 'Changes since <a href="' + esc(ckptHref(name, prev.id)) + '">#' + esc(prev.id) + '</a>' +
        (prev.epoch != null ? ' <span class="muted">(epoch ' + fmtNum(prev.epoch) + ')</span>' : '');
      return api(apiCkpt(name, prev.id) + '/diff/' + enc(c.id)).then(function (d) {
        if (!alive() || !body()) return;
        renderDiff(st, prev, d);
      }, function (err) {
        if (!alive() || !body()) return;
        body().innerHTML = '<p class="muted">Diff unavailable' + (err && err.status && err.status !== 404 ? ': ' + esc(err.message) : '') + '.</p>';
      });
    }).catch(function () {
      if (body()) body().innerHTML = '<p class="muted">Diff unavailable.</p>';
    });
  }

  function renderDiff(st, prev, d) {
    var body = document.querySelector('#c-diff .diff-body');
    var tensors = d && Array.isArray(d.tensors) ? d.tensors : [];
    var sum = (d && d.summary) || {};
    var count = function (s) { return tensors.filter(function (t) { return t && t.status === s; }).length; };
    var n = {
      same: sum.same != null ? sum.same : count('same'),
      changed: sum.changed != null ? sum.changed : count('changed'),
      added: sum.added != null ? sum.added : count('added'),
      removed: sum.removed != null ? sum.removed : count('removed')
    };
    st.diff = d;
    st.diffStatus = {};
    tensors.forEach(function (t) { if (t && t.path != null) st.diffStatus[t.path] = t.status; });
    var changedBytes = sum.changed_bytes;
    if (changedBytes == null) {
      changedBytes = tensors.reduce(function (a, t) { return a + (t && t.status !== 'same' && typeof t.bytes === 'number' ? t.bytes : 0); }, 0);
    }
    var html = '<div class="diff-summary">' +
      '<span class="badge d-changed">' + fmtNum(n.changed) + ' changed</span>' +
      '<span class="badge d-added">' + fmtNum(n.added) + ' added</span>' +
      '<span class="badge d-removed">' + fmtNum(n.removed) + ' removed</span>' +
      '<span class="badge d-same">' + fmtNum(n.same) + ' same</span>' +
      '<span class="muted">' + fmtBytes(changedBytes) + ' changed</span></div>';
    var rows = tensors.filter(function (t) { return t && t.status !== 'same'; });
    if (rows.length) {
      var shown = rows.slice(0, 500);
      html += '<div class="table-wrap"><table class="table compact" id="diff-table"><thead><tr><th scope="col">Path</th><th scope="col">Status</th>' +
        '<th scope="col" class="num">Bytes</th></tr></thead><tbody>' + shown.map(function (t) {
          return '<tr data-status="' + esc(t.status) + '"><td class="mono path">' + esc(t.path) + '</td><td><span class="badge d-' + esc(t.status) + '">' +
            esc(t.status) + '</span></td><td class="num">' + fmtBytes(t.bytes) + '</td></tr>';
        }).join('') + '</tbody></table></div>' +
        (rows.length > shown.length ? '<p class="muted">and ' + fmtNum(rows.length - shown.length) + ' more</p>' : '');
    } else if (tensors.length) {
      html += '<p class="muted">Every tensor is the same as in #' + esc(prev.id) + '.</p>';
    }
    body.innerHTML = html;
    renderTensors(st);
  }

  /* ---------- token ---------- */

  function initToken() {
    var toggle = document.getElementById('token-toggle');
    var panel = document.getElementById('token-panel');
    var input = document.getElementById('token-input');
    var dot = document.getElementById('token-dot');
    function sync() { dot.classList.toggle('on', !!token()); toggle.title = token() ? 'A token is set' : 'No token set'; }
    function open(on) {
      panel.hidden = !on;
      toggle.setAttribute('aria-expanded', String(on));
      if (on) { input.value = token(); input.focus(); }
    }
    toggle.addEventListener('click', function () { open(panel.hidden); });
    panel.addEventListener('submit', function (e) {
      e.preventDefault();
      try { localStorage.setItem(TOKEN_KEY, input.value.trim()); } catch (err) { /* private mode */ }
      sync();
      open(false);
      toast(input.value.trim() ? 'Token saved in this browser' : 'Token cleared', 'ok');
      toggle.focus();
    });
    document.getElementById('token-clear').addEventListener('click', function () {
      try { localStorage.removeItem(TOKEN_KEY); } catch (err) { /* private mode */ }
      input.value = '';
      sync();
      open(false);
      toast('Token cleared', 'ok');
      toggle.focus();
    });
    document.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && !panel.hidden) { open(false); toggle.focus(); }
    });
    document.addEventListener('click', function (e) {
      if (!panel.hidden && !panel.contains(e.target) && !toggle.contains(e.target)) open(false);
    });
    sync();
  }

  initToken();
  render();
})();
