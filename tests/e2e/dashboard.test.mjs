// Browser tests of the ckptd dashboard (SPEC 5), run by tests/e2e/run.sh.
//
// Three real torch training jobs upload a checkpoint per epoch at the same
// time (epoch, step, the training loss, metric.val_loss and metric.acc); the
// tests then drive Debian's chromium through playwright-core and check what a
// user sees against what was uploaded: the models page; the model page's chart
// (train and validation loss together, any metric picked in the selector,
// epoch, step or time on the x axis, one line per run with a legend, the best
// points marked) and table; byte-exact downloads; live updates; the compare
// page (runs of two models on one chart); the checkpoint page; the storage
// page and its growth chart; the html helper; hostile names rendered as text;
// no console errors. Screenshots go to SCREENSHOT_DIR. The last test uploads
// 5,000 checkpoints four at a time and prints how long the model and storage
// pages take (printed, never asserted).
//
// Environment: CKPTD_URL (a running ckptd), E2E_TMP (a scratch directory),
// SCREENSHOT_DIR, CHROMIUM, TORCH_PY.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = process.env.CKPTD_URL || 'http://127.0.0.1:8080';
const TMP = process.env.E2E_TMP || '/tmp';
const SHOTS = process.env.SCREENSHOT_DIR || path.join(HERE, '../../build/screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TORCH_PY = process.env.TORCH_PY || '/usr/bin/python3';
const MODEL = 'mnist-mlp';
const OTHER = 'digits-cnn';
const EPOCHS = 8;
const SCALE_MODEL = 'scale-5k';
const SCALE_N = 5000;
// Uploads at once in the scale test, as a training job with a few writers
// would send them. Every one must answer 201: nothing is retried.
const SCALE_CONCURRENCY = 4;

let browser;
let context;
let page;
let trained; // the training jobs' reports: uploads of MODEL's runs "default" and "lr-high", OTHER's "default"
const consoleErrors = [];

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function request(method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(BASE + urlPath, { method, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (body) req.end(body);
    else req.end();
  });
}

async function getJSON(urlPath) {
  const res = await request('GET', urlPath);
  assert.equal(res.status, 200, `GET ${urlPath}: ${res.body}`);
  return JSON.parse(res.body.toString());
}

async function upload(model, body, query) {
  const res = await request('POST', `/api/v1/models/${model}/checkpoints?${query}`, body, {
    'Content-Type': 'application/octet-stream',
    'Content-Length': body.length,
  });
  assert.equal(res.status, 201, `upload: ${res.status} ${res.body}`);
  return JSON.parse(res.body.toString());
}

async function train(model, epochs, run, lr) {
  const args = [path.join(HERE, 'train_upload.py'), BASE, model, String(epochs), TMP, run, String(lr)];
  const { stdout } = await promisify(execFile)(TORCH_PY, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
  return JSON.parse(stdout.trim().split('\n').pop());
}

async function shot(name, p = page) {
  mkdirSync(SHOTS, { recursive: true });
  await p.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

async function open(urlPath, p = page) {
  await p.goto(BASE + urlPath);
  await p.waitForSelector('main[data-ready]');
}

// Collects the page's console errors and uncaught exceptions. With allow404,
// the browser's own "Failed to load resource ... 404" lines are left out (a
// page that asks for something missing on purpose).
function watchConsole(p, { allow404 = false } = {}) {
  p.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (allow404 && /^Failed to load resource: .* 404 \(Not Found\)$/.test(msg.text())) return;
    consoleErrors.push(`${msg.text()} (${msg.location().url || p.url()})`);
  });
  p.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
}

// The chart's point circles as plain objects.
function chartPoints(p, sel = '#m-chart') {
  return p.$$eval(`${sel} circle.pt`, (els) => els.map((e) => ({
    series: e.dataset.series, run: e.dataset.run, metric: e.dataset.metric, id: Number(e.dataset.id),
    x: Number(e.dataset.x), y: Number(e.dataset.y), best: e.dataset.best === 'true',
    cx: Number(e.getAttribute('cx')), cy: Number(e.getAttribute('cy')),
  })));
}

const close = (a, b) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));

// Asserts that a larger value is drawn higher (smaller cy) or a larger x
// further right: the coordinates, not only the data attributes, follow the
// data. Values closer than 1% of the range may share a (0.1 px) coordinate.
function assertMonotone(points, key, coord, sign) {
  const sorted = [...points].sort((a, b) => a[key] - b[key]);
  const range = sorted[sorted.length - 1][key] - sorted[0][key];
  for (let i = 1; i < sorted.length; i++) {
    const dv = sorted[i][key] - sorted[i - 1][key];
    const dc = sign * (sorted[i][coord] - sorted[i - 1][coord]);
    assert.ok(dv > range * 0.01 ? dc > 0 : dc >= 0,
      `${coord} follows ${key}: ${JSON.stringify(sorted[i - 1])} then ${JSON.stringify(sorted[i])}`);
  }
}

function bestBy(list, key, mode) {
  return list.reduce((a, b) => {
    if (!a) return b;
    const better = mode === 'max' ? b[key] > a[key] : b[key] < a[key];
    return better || (b[key] === a[key] && b.id > a.id) ? b : a;
  }, null);
}

describe('dashboard', { timeout: 600_000 }, () => {
  before(async () => {
    // three training jobs at once: their uploads reach the server concurrently
    const [a, b, c] = await Promise.all([
      train(MODEL, EPOCHS, 'default', 0.01),
      train(MODEL, 6, 'lr-high', 0.03),
      train(OTHER, 5, 'default', 0.02),
    ]);
    trained = a;
    trained.high = b.uploads;
    trained.other = c.uploads;
    trained.all = a.uploads.concat(b.uploads);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-gpu',
        '--no-first-run', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    page = await context.newPage();
    watchConsole(page);
  });

  after(async () => {
    if (browser) await browser.close();
    agent.destroy();
  });

  it('serves the dashboard\'s modules as JavaScript', async () => {
    for (const f of ['app.js', 'html.js', 'chart.js']) {
      const res = await request('GET', `/ui/${f}`);
      assert.equal(res.status, 200);
      assert.match(res.headers['content-type'], /^text\/javascript/, f);
    }
  });

  it('lists the model on the models page', async () => {
    await open('/');
    const row = page.locator(`#models-table tr[data-model="${MODEL}"]`);
    await row.waitFor();
    const text = await row.innerText();
    assert.match(text, new RegExp(String(trained.all.length)), 'the checkpoint count is shown');
    const best = Math.min(...trained.all.map((u) => u.loss));
    const models = await getJSON('/api/v1/models');
    const m = models.models.find((x) => x.name === MODEL);
    assert.ok(close(m.best_loss, best), 'the server and the script agree on the best loss');
    await shot('models.png');
    // the model link is a client-side route
    await row.locator('a').first().click();
    await page.waitForSelector('main[data-page="model"][data-ready]');
    assert.equal(new URL(page.url()).pathname, `/ui/models/${MODEL}`);
  });

  it('plots train and validation loss together, one line per run and loss, each loss\'s best marked', async () => {
    await open(`/ui/models/${MODEL}`);
    assert.equal(await page.locator('#m-y').inputValue(), 'loss,metric.val_loss', 'both losses are the default');
    const points = await chartPoints(page);
    assert.equal(points.length, trained.all.length * 2);
    for (const u of trained.all) {
      const run = trained.uploads.includes(u) ? 'default' : 'lr-high';
      const train = points.find((p) => p.id === u.id && p.metric === 'loss');
      const val = points.find((p) => p.id === u.id && p.metric === 'val_loss');
      assert.ok(train && val, `checkpoint ${u.id} has a train and a validation point`);
      assert.equal(train.run, run);
      assert.equal(train.x, u.epoch);
      assert.ok(close(train.y, u.loss), `loss of ${u.id}: ${train.y} vs ${u.loss}`);
      assert.ok(close(val.y, u.val_loss), `val_loss of ${u.id}: ${val.y} vs ${u.val_loss}`);
      assert.equal(val.cx, train.cx, 'the same epoch is at the same x');
    }
    assertMonotone(points, 'y', 'cy', -1);
    // one best per loss: the lowest training loss is the server's best
    const bests = points.filter((p) => p.best);
    assert.deepEqual(bests.map((p) => p.metric).sort(), ['loss', 'val_loss']);
    const bestLoss = bestBy(trained.all, 'loss', 'min');
    const bestVal = bestBy(trained.all, 'val_loss', 'min');
    assert.equal(bests.find((p) => p.metric === 'loss').id, bestLoss.id);
    assert.equal(bests.find((p) => p.metric === 'val_loss').id, bestVal.id);
    assert.equal((await getJSON(`/api/v1/models/${MODEL}/checkpoints/best`)).id, bestLoss.id);
    // two runs x two losses; the validation line is dashed
    const lines = await page.$$eval('#m-chart path.line', (els) => els.map((e) => ({
      run: e.dataset.run, metric: e.dataset.metric, dash: e.getAttribute('stroke-dasharray'), color: e.getAttribute('stroke'),
    })));
    assert.equal(lines.length, 4);
    for (const l of lines) assert.equal(l.dash === 'none', l.metric === 'loss', JSON.stringify(l));
    assert.deepEqual(await page.$$eval('#m-legend .legend-key', (els) => els.map((e) => e.dataset.metric)), ['loss', 'val_loss']);
    // the table lists them (newest first), with links to download
    const rows = await page.$$eval('#ckpt-table tbody tr[data-id]', (trs) => trs.map((tr) => Number(tr.dataset.id)));
    assert.deepEqual(rows, trained.all.map((u) => u.id).sort((a, b) => b - a));
    assert.equal(await page.locator(`#ckpt-table tr[data-id="${bestLoss.id}"] .badge.best`).count(), 1);
    // the keyboard steps through the points; the tooltip shows both losses
    await page.locator('#m-chart svg').focus();
    await page.keyboard.press('Home');
    const tip = await page.locator('#m-chart .tip').innerText();
    assert.match(tip, /epoch/);
    assert.match(tip, /val_loss/);
    await page.keyboard.press('Escape');
    await page.locator('#m-chart svg').blur();
    await shot('model.png');
  });

  it('plots the metric picked in the selector', async () => {
    await open(`/ui/models/${MODEL}`);
    const options = await page.$$eval('#m-y option', (els) => els.map((e) => e.value));
    assert.deepEqual(options, ['loss,metric.val_loss', 'loss', 'metric.acc', 'metric.val_loss']);
    await page.selectOption('#m-y', 'metric.acc');
    await page.waitForSelector('#m-chart svg[data-y="acc"]');
    const points = await chartPoints(page);
    assert.equal(points.length, trained.all.length);
    for (const u of trained.all) {
      const p = points.find((x) => x.id === u.id);
      assert.ok(p && p.metric === 'acc', `checkpoint ${u.id} is plotted by its accuracy`);
      assert.ok(close(p.y, u.acc), `acc of ${u.id}: ${p.y} vs ${u.acc}`);
    }
    assertMonotone(points, 'y', 'cy', -1);
    // a higher accuracy is better
    const best = points.filter((p) => p.best);
    assert.equal(best.length, 1);
    assert.ok(close(best[0].y, Math.max(...trained.all.map((u) => u.acc))));
    assert.match(await page.locator('#m-note').innerText(), /best acc is the highest/);
    assert.match(await page.locator('#m-title').innerText(), /^acc/);
    // the choice is in the URL and survives a reload
    assert.equal(new URL(page.url()).searchParams.get('y'), 'metric.acc');
    await page.reload();
    await page.waitForSelector('main[data-ready]');
    assert.equal(await page.locator('#m-y').inputValue(), 'metric.acc');
    await shot('model-acc.png');
    await page.selectOption('#m-y', 'loss');
    await page.waitForSelector('#m-chart svg[data-y="loss"]');
    const loss = await chartPoints(page);
    assert.ok(loss.every((p) => p.metric === 'loss') && loss.length === trained.all.length);
  });

  it('puts the step or the upload time on the x axis', async () => {
    await open(`/ui/models/${MODEL}?y=metric.val_loss`);
    assert.equal(await page.locator('#m-x button[aria-pressed="true"]').getAttribute('data-x'), 'epoch');
    await page.click('#m-x button[data-x="step"]');
    await page.waitForSelector('#m-chart svg[data-x="step"]');
    const points = await chartPoints(page);
    assert.equal(points.length, trained.all.length);
    for (const u of trained.all) {
      const p = points.find((x) => x.id === u.id);
      assert.equal(p.x, u.step, `checkpoint ${u.id} is at its step`);
      assert.ok(close(p.y, u.val_loss));
    }
    assertMonotone(points, 'x', 'cx', 1);
    assert.equal(await page.locator('#m-chart .axis-title').textContent(), 'step');
    assert.equal(new URL(page.url()).searchParams.get('x'), 'step');
    await shot('model-step.png');
    await page.click('#m-x button[data-x="time"]');
    await page.waitForSelector('#m-chart svg[data-x="upload time"]');
    const timed = await chartPoints(page);
    const list = (await getJSON(`/api/v1/models/${MODEL}/checkpoints`)).checkpoints;
    for (const c of list) assert.equal(timed.find((p) => p.id === c.id).x, Date.parse(c.created_at));
    assertMonotone(timed, 'x', 'cx', 1);
  });

  it('draws two runs on one chart with a legend that hides and shows them', async () => {
    await open(`/ui/models/${MODEL}?y=loss`);
    const legend = await page.$$eval('#m-legend button[data-run]', (els) => els.map((e) => ({
      run: e.dataset.run, text: e.innerText, color: e.querySelector('.swatch').style.background,
    })));
    assert.deepEqual(legend.map((l) => l.run), ['default', 'lr-high']);
    assert.match(legend[0].text, /default\s+8/);
    assert.match(legend[1].text, /lr-high\s+6/);
    const lines = await page.$$eval('#m-chart path.line', (els) => els.map((e) => ({ run: e.dataset.run, color: e.getAttribute('stroke') })));
    assert.deepEqual(lines.map((l) => l.run), ['default', 'lr-high']);
    assert.notEqual(lines[0].color, lines[1].color);
    const rgb = (hex) => `rgb(${[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(', ')})`;
    assert.deepEqual(legend.map((l) => l.color), lines.map((l) => rgb(l.color)), 'the legend has the lines\' colours');
    // each run's points are its own uploads
    const points = await chartPoints(page);
    assert.deepEqual(points.filter((p) => p.run === 'lr-high').map((p) => p.id).sort((a, b) => a - b),
      trained.high.map((u) => u.id).sort((a, b) => a - b));
    await page.click('#m-legend button[data-run="lr-high"]');
    assert.deepEqual(await page.$$eval('#m-chart path.line', (els) => els.map((e) => e.dataset.run)), ['default']);
    assert.equal(await page.locator('#m-legend button[data-run="lr-high"]').getAttribute('aria-pressed'), 'false');
    await page.click('#m-legend button[data-run="lr-high"]');
    assert.equal(await page.locator('#m-chart path.line').count(), 2);
  });

  it('compares runs of two models on one chart', async () => {
    await open(`/ui/models/${MODEL}`);
    await page.click('#m-compare');
    await page.waitForSelector('main[data-page="compare"][data-ready]');
    assert.deepEqual(new URL(page.url()).searchParams.getAll('run'), [`${MODEL}:default`, `${MODEL}:lr-high`]);
    // swap lr-high for the other model's run
    await page.uncheck(`#cmp-picker input[data-model="${MODEL}"][data-run="lr-high"]`);
    await page.check(`#cmp-picker input[data-model="${OTHER}"][data-run="default"]`);
    await page.waitForFunction((n) => document.querySelector('#cmp-chart svg')?.dataset.points === String(n),
      (EPOCHS + trained.other.length) * 2);
    const legend = await page.$$eval('#cmp-legend button[data-group]', (els) => els.map((e) => e.dataset.group));
    assert.deepEqual(legend, [`${MODEL}:default`, `${OTHER}:default`]);
    assert.match(await page.locator('#cmp-legend').innerText(), new RegExp(`${OTHER} / default`));
    const points = await chartPoints(page, '#cmp-chart');
    const ofOther = points.filter((p) => p.series.startsWith(`${OTHER}:`) && p.metric === 'val_loss');
    assert.deepEqual(ofOther.map((p) => p.id).sort((a, b) => a - b), trained.other.map((u) => u.id));
    for (const u of trained.other) assert.ok(close(ofOther.find((p) => p.id === u.id).y, u.val_loss));
    const colors = await page.$$eval('#cmp-chart path.line', (els) => [...new Set(els.map((e) => e.getAttribute('stroke')))]);
    assert.equal(colors.length, 2, 'one colour per compared run');
    assert.deepEqual(new URL(page.url()).searchParams.getAll('run'), [`${MODEL}:default`, `${OTHER}:default`]);
    await shot('compare.png');
    // the link reproduces the chart
    await page.reload();
    await page.waitForSelector('main[data-page="compare"][data-ready]');
    assert.equal(await page.locator('#cmp-chart svg').getAttribute('data-points'), String((EPOCHS + trained.other.length) * 2));
  });

  it('serves the upload byte for byte through the table\'s download link', async () => {
    await open(`/ui/models/${MODEL}`);
    const u = trained.uploads[2];
    const href = await page.locator(`#ckpt-table tr[data-id="${u.id}"] a[data-dl="file"]`).getAttribute('href');
    assert.ok(href);
    const sha = await page.evaluate(async (h) => {
      const res = await fetch(h);
      if (!res.ok) return `HTTP ${res.status}`;
      const d = await crypto.subtle.digest('SHA-256', await res.arrayBuffer());
      return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
    }, href);
    const onDisk = createHash('sha256').update(readFileSync(u.path)).digest('hex');
    assert.equal(sha, onDisk);
    const json = await getJSON(`/api/v1/models/${MODEL}/checkpoints/${u.id}`);
    assert.equal(json.sha256, onDisk);
    // the state_dict links point at the API
    const sd = await page.locator(`#ckpt-table tr[data-id="${u.id}"] a[data-dl="safetensors"]`).getAttribute('href');
    assert.equal(sd, `/api/v1/models/${MODEL}/checkpoints/${u.id}/state_dict?format=safetensors`);
  });

  it('picks up a new upload without a reload', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    const body = readFileSync(trained.uploads[0].path);
    const ck = await upload(MODEL, body, `epoch=${EPOCHS}&step=${(EPOCHS + 1) * 8}&loss=0.0123&run=default`);
    await page.waitForSelector(`#ckpt-table tr[data-id="${ck.id}"]`, { timeout: 15_000 });
    await page.waitForSelector(`#m-chart circle.pt[data-id="${ck.id}"][data-metric="loss"][data-best="true"]`, { timeout: 15_000 });
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    // no val_loss for this one: one more point, not two
    assert.equal(await page.locator('#m-chart circle.pt').count(), trained.all.length * 2 + 1);
    // the same bytes again: the upload added nothing to the store
    const row = await page.locator(`#ckpt-table tr[data-id="${ck.id}"]`).innerText();
    assert.match(row, /0 B/);
    trained.extra = ck;
  });

  it('pins a checkpoint from the table', async () => {
    const id = trained.uploads[1].id;
    const btn = page.locator(`#ckpt-table tr[data-id="${id}"] button[data-act="pin"]`);
    await btn.click();
    await page.waitForSelector(`#ckpt-table tr[data-id="${id}"] .badge.pin`, { timeout: 10_000 });
    const json = await getJSON(`/api/v1/models/${MODEL}/checkpoints/${id}`);
    assert.equal(json.pinned, true);
  });

  it('deletes a checkpoint from the table after a confirmation', async () => {
    const victim = trained.high[0];
    page.once('dialog', (d) => d.accept());
    await page.locator(`#ckpt-table tr[data-id="${victim.id}"] button[data-act="delete"]`).click();
    await page.waitForSelector(`#ckpt-table tr[data-id="${victim.id}"]`, { state: 'detached', timeout: 10_000 });
    assert.equal(await page.locator(`#m-chart circle.pt[data-id="${victim.id}"]`).count(), 0);
    const res = await request('GET', `/api/v1/models/${MODEL}/checkpoints/${victim.id}`);
    assert.equal(res.status, 404);
  });

  it('routes a model whose name has a dot through a hash route', async () => {
    await upload('resnet.v2', readFileSync(trained.tiny), 'epoch=1&loss=0.5');
    await open('/');
    await page.locator('#models-table tr[data-model="resnet.v2"] a').first().click();
    await page.waitForSelector('main[data-page="model"][data-ready]');
    assert.equal(new URL(page.url()).hash, '#/models/resnet.v2');
    await page.reload();
    await page.waitForSelector('main[data-page="model"][data-ready]');
    assert.equal(await page.locator('#m-chart circle.pt').count(), 1);
    assert.equal(await page.locator('h1').innerText(), 'resnet.v2');
  });

  it('lists a checkpoint\'s tensors with torch\'s shapes and diffs it with the previous epoch', async () => {
    const u = trained.uploads[3];
    await open(`/ui/models/${MODEL}/checkpoints/${u.id}`);
    const rows = await page.$$eval('#tensor-table tbody tr[data-path]', (trs) =>
      trs.map((tr) => ({ path: tr.dataset.path, shape: JSON.parse(tr.querySelector('[data-shape]').dataset.shape) })));
    const json = await getJSON(`/api/v1/models/${MODEL}/checkpoints/${u.id}`);
    assert.equal(rows.length, json.tensors.length);
    for (const [p, shape] of Object.entries(u.shapes)) {
      const r = rows.find((x) => x.path === p);
      assert.ok(r, `tensor ${p} is listed`);
      assert.deepEqual(r.shape, shape, `shape of ${p}`);
    }
    assert.equal(await page.locator('#c-sha').innerText(), u.sha256);
    assert.match(await page.locator('#c-metrics').innerText(), /acc/);
    // the diff names the previous epoch's checkpoint, or says it is unavailable
    await page.waitForFunction(() => !/Looking for/.test(document.querySelector('#c-diff').innerText));
    const diff = await page.locator('#c-diff').innerText();
    assert.match(diff, new RegExp(`#${trained.uploads[2].id}|unavailable`, 'i'));
    if (!/unavailable/i.test(diff)) assert.match(diff, /changed/);
    await shot('checkpoint.png');
  });

  it('shows a checkpoint of several files with its files and ranks, and downloads them as a tar', async () => {
    const model = 'dcp-job';
    const res = await request('POST', `/api/v1/models/${model}/checkpoints?staged=1&epoch=1&loss=0.5`);
    assert.equal(res.status, 201, String(res.body));
    const id = JSON.parse(res.body.toString()).id;
    // a directory torch 1.13 wrote from 2 ranks (tests/data/dcp/make.py)
    const dir = path.join(HERE, '..', 'data', 'dcp', 'small');
    const files = Object.fromEntries(['.metadata', '__0_0.distcp', '__0_1.distcp', '__0_2.distcp',
      '__1_0.distcp'].map((n) => [n, readFileSync(path.join(dir, n))]));
    for (const [name, body] of Object.entries(files)) {
      const r = await request('PUT', `/api/v1/models/${model}/checkpoints/${id}/files/${name}`, body,
        { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
      assert.equal(r.status, 201, `${name}: ${r.body}`);
    }
    const c = await request('POST', `/api/v1/models/${model}/checkpoints/${id}/commit`);
    assert.equal(c.status, 200, String(c.body));
    await open(`/ui/models/${model}/checkpoints/${id}`);
    const rows = await page.$$eval('#file-table tbody tr[data-file]', (trs) =>
      trs.map((tr) => ({ name: tr.dataset.file, rank: tr.querySelector('[data-rank]').dataset.rank })));
    assert.deepEqual(rows.map((r) => r.name), Object.keys(files).sort());
    assert.deepEqual(Object.fromEntries(rows.map((r) => [r.name, r.rank])),
      { '.metadata': '', '__0_0.distcp': '0', '__0_1.distcp': '0', '__0_2.distcp': '0', '__1_0.distcp': '1' });
    assert.match(await page.locator('#c-files h2').innerText(), /written by 2 ranks/);
    const dl = await page.locator('a[data-dl="archive"]').getAttribute('href');
    assert.equal(dl, `/api/v1/models/${model}/checkpoints/${id}/archive`);
    const tar = await request('GET', dl);
    assert.equal(tar.status, 200);
    assert.equal(tar.headers['content-type'], 'application/x-tar');
    // the first member's name and bytes, as ustar lays them out
    assert.equal(tar.body.subarray(0, 9).toString(), '.metadata');
    assert.deepEqual(tar.body.subarray(512, 512 + files['.metadata'].length), files['.metadata']);
    // its tensors are the full ones, assembled from both ranks
    const shapes = await page.$$eval('#tensor-table tbody tr[data-path]', (trs) =>
      trs.map((tr) => [tr.dataset.path, tr.querySelector('[data-shape]').dataset.shape]));
    assert.deepEqual(Object.fromEntries(shapes), { '/w': '[4,6]', '/b': '[3]' });
    await shot('checkpoint-files.png');
    await request('DELETE', `/api/v1/models/${model}`);
  });

  it('shows logical and stored bytes on the storage page', async () => {
    await page.click('nav.nav a[data-section="storage"]');
    await page.waitForSelector('main[data-page="storage"][data-ready]');
    const stats = await getJSON('/api/v1/stats');
    const dedup = await page.locator('[data-stat="dedup"] .stat-value').innerText();
    assert.equal(dedup, `${stats.dedup_ratio.toFixed(2)}×`);
    assert.equal(await page.locator('.bar-row').count(), 3);
  });

  it('draws the store\'s growth over time from every model\'s checkpoints', async () => {
    await open('/ui/storage');
    await page.waitForSelector('#s-growth[data-ready]');
    const all = [];
    for (const m of (await getJSON('/api/v1/models')).models) {
      all.push(...(await getJSON(`/api/v1/models/${m.name}/checkpoints?limit=100000`)).checkpoints);
    }
    all.sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at) || a.id - b.id);
    const points = await chartPoints(page, '#s-growth-chart');
    for (const [series, field] of [['uploaded', (c) => c.size], ['added', (c) => c.dedup.new_bytes]]) {
      const mine = points.filter((p) => p.series === series).sort((a, b) => a.x - b.x || a.id - b.id);
      assert.equal(mine.length, all.length, `${series}: one point per checkpoint`);
      let sum = 0;
      all.forEach((c, i) => {
        sum += field(c);
        assert.equal(mine[i].id, c.id);
        assert.equal(mine[i].x, Date.parse(c.created_at));
        assert.equal(mine[i].y, sum, `${series} after #${c.id}`);
      });
      assertMonotone(mine, 'y', 'cy', -1);
    }
    const note = await page.locator('#s-growth-note').innerText();
    assert.match(note, new RegExp(`${all.length} checkpoints`));
    // the y axis is in bytes
    assert.match(await page.locator('#s-growth-chart .axis-labels').textContent(), /KB/);
    await shot('storage.png');
  });

  it('escapes every interpolated value in the html helper', async () => {
    const r = await page.evaluate(async () => {
      const { html, raw, join, render } = await import('/ui/html.js');
      const evil = '<img src=x onerror="window.__xss=1">\'&';
      const out = {};
      out.text = html`<p>${evil}</p>`.markup;
      out.attr = html`<p title="${evil}">x</p>`.markup;
      out.nested = html`<ul>${[1, 2].map((i) => html`<li>${i}${evil}</li>`)}</ul>`.markup;
      out.raw = html`<b>${raw('&nbsp;')}</b>`.markup;
      out.join = join([html`<i>a</i>`, 'b<'], ', <').markup;
      out.url = html`<a href="${'javascript:window.__xss=1'}">x</a>`.markup;
      out.relUrl = html`<a href="${'/ui/models/a'}">x</a>`.markup;
      out.empty = html`<p>${null}${undefined}${false}${0}</p>`.markup;
      out.text2 = html`a=${'b'}`.markup;
      for (const [k, f] of Object.entries({
        handler: () => html`<p onclick="${'x'}">`,
        unquoted: () => html`<p title=${'x'}>`,
      })) {
        try {
          f();
          out[k] = 'no error';
        } catch (e) {
          out[k] = e.constructor.name;
        }
      }
      const div = document.createElement('div');
      render(div, evil);
      out.renderText = div.textContent;
      out.renderChildren = div.children.length;
      return out;
    });
    assert.equal(r.text, '<p>&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;&#39;&amp;</p>');
    assert.equal(r.attr, '<p title="&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;&#39;&amp;">x</p>');
    assert.equal(r.nested, '<ul><li>1&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;&#39;&amp;</li><li>2&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;&#39;&amp;</li></ul>');
    assert.equal(r.raw, '<b>&nbsp;</b>');
    assert.equal(r.join, '<i>a</i>, &lt;b&lt;');
    assert.equal(r.url, '<a href="about:invalid">x</a>');
    assert.equal(r.relUrl, '<a href="/ui/models/a">x</a>');
    assert.equal(r.empty, '<p>0</p>');
    assert.equal(r.text2, 'a=b', 'an "=" in text is not an attribute');
    assert.equal(r.handler, 'TypeError');
    assert.equal(r.unquoted, 'TypeError');
    assert.equal(r.renderText, '<img src=x onerror="window.__xss=1">\'&');
    assert.equal(r.renderChildren, 0);
  });

  it('renders hostile model, run, tag and metric names as text', async () => {
    const evil = (what) => `${what}<img src=x onerror="window.__xss='${what}'"><b>bold</b>"'&amp;`;
    // a real upload: tags may hold any printable text
    const tag = evil('tag');
    const ck = await upload(MODEL, readFileSync(trained.tiny), `epoch=99&loss=3&tag=${encodeURIComponent(tag)}`);
    await open(`/ui/models/${MODEL}/checkpoints/${ck.id}`);
    assert.equal(await page.locator('#c-tags .chip').innerText(), tag);
    await open(`/ui/models/${MODEL}?y=loss`);
    assert.equal(await page.locator(`#ckpt-table tr[data-id="${ck.id}"] .chip`).innerText(), tag);
    assert.equal(await page.evaluate(() => document.querySelectorAll('main img, main b, main [onerror]').length), 0);
    await request('DELETE', `/api/v1/models/${MODEL}/checkpoints/${ck.id}`);

    // The server refuses such model, run and metric names (docs/API.md,
    // Names), so a second context answers the API itself: the page must not
    // depend on the server's rules for its safety.
    const model = evil('model');
    const run = evil('run');
    const metric = evil('metric');
    const now = new Date().toISOString();
    const ckpt = (id, epoch) => ({
      id, model, run, epoch, step: epoch * 10, loss: 1 / (epoch + 1), metrics: { [metric]: epoch / 10 }, tags: [evil('tag')],
      pinned: false, created_at: now, format: 'torch-zip', size: 1000, sha256: evil('sha'), tensor_count: 1,
      dedup: { tensors: 1, new_tensors: 1, bytes: 100, new_bytes: 100 },
    });
    const list = [ckpt(1, 0), ckpt(2, 1), ckpt(3, 2)];
    const hostile = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await hostile.route('**/api/v1/**', (route) => {
      const url = new URL(route.request().url());
      const p = decodeURIComponent(url.pathname);
      const json = (status, body) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(body) });
      if (p === '/api/v1/models') {
        return json(200, { models: [{ name: model, runs: [run], checkpoints: 3, best: 3, best_loss: 1 / 3, latest: 3,
          latest_epoch: 2, max_epoch: 2, bytes: 3000, bytes_added: 300, created_at: now, updated_at: now }] });
      }
      if (p === '/api/v1/stats') {
        return json(200, { models: 1, checkpoints: 3, blobs: 3, logical_bytes: 3000, unique_bytes: 300, stored_bytes: 200,
          dedup_ratio: 10, compression_ratio: 0.66, overall_ratio: 0.066 });
      }
      if (p === `/api/v1/models/${model}/checkpoints`) return json(200, { checkpoints: list, total: list.length });
      if (p === `/api/v1/models/${model}/checkpoints/2`) {
        return json(200, { ...list[1], tensors: [{ path: evil('/tensor'), dtype: evil('dtype'), shape: [2], nbytes: 8, refs: 1, blob: evil('blob') }] });
      }
      return json(404, { error: 'not_found', message: evil('message') });
    });
    const p = await hostile.newPage();
    watchConsole(p, { allow404: true }); // the diff and the "missing" model answer 404 on purpose
    const injected = () => p.evaluate(() => ({
      elements: document.querySelectorAll('main img, main b, main [onerror], main script, select b').length,
      xss: window.__xss ?? null,
    }));
    await open('/', p);
    assert.equal(await p.locator('#models-table tbody tr a.strong').innerText(), model);
    assert.deepEqual(await injected(), { elements: 0, xss: null });
    await p.locator('#models-table tbody tr a.strong').click();
    await p.waitForSelector('main[data-page="model"][data-ready]');
    assert.equal(await p.locator('h1').innerText(), model);
    assert.equal(await p.locator('#m-legend button[data-group]').getAttribute('data-run'), run);
    assert.match(await p.locator('#m-legend').innerText(), new RegExp(run.slice(0, 10)));
    const options = await p.$$eval('#m-y option', (els) => els.map((e) => [e.value, e.textContent]));
    assert.deepEqual(options, [['loss', 'loss'], [`metric.${metric}`, metric]]);
    await p.selectOption('#m-y', `metric.${metric}`);
    const pts = await chartPoints(p);
    assert.deepEqual(pts.map((x) => x.metric), [metric, metric, metric]);
    assert.deepEqual(pts.map((x) => x.y), [0, 0.1, 0.2]);
    await p.locator('#m-chart svg').focus();
    await p.keyboard.press('End');
    assert.match(await p.locator('#m-chart .tip').innerText(), /metric<img/);
    assert.equal(await p.locator('#ckpt-table tbody tr').first().locator('.chip').innerText(), evil('tag'));
    assert.deepEqual(await injected(), { elements: 0, xss: null });
    await shot('hostile-model.png', p);
    await p.locator('#ckpt-table tbody tr[data-id="2"] a.strong').click();
    await p.waitForSelector('main[data-page="checkpoint"][data-ready]');
    assert.equal(await p.locator('#tensor-table tbody tr').first().getAttribute('data-path'), evil('/tensor'));
    await p.waitForFunction(() => /Diff unavailable/.test(document.querySelector('#c-diff').innerText));
    assert.deepEqual(await injected(), { elements: 0, xss: null });
    await open(`/ui/compare?run=${encodeURIComponent(`${model}:${run}`)}`, p);
    assert.equal(await p.locator('#cmp-legend button[data-group]').getAttribute('data-group'), `${model}:${run}`);
    assert.ok(await p.locator(`#cmp-picker input[data-run="${run.replace(/["\\]/g, '\\$&')}"]`).isChecked());
    assert.deepEqual(await injected(), { elements: 0, xss: null });
    // an error message from the server is text too
    await open(`/ui/models/${encodeURIComponent('missing')}`, p);
    assert.match(await p.locator('main .error p').innerText(), /^message<img/);
    assert.deepEqual(await injected(), { elements: 0, xss: null });
    await open('/ui/storage', p);
    await p.waitForSelector('#s-growth[data-ready]');
    assert.deepEqual(await injected(), { elements: 0, xss: null });
    await hostile.close();
  });

  it('fits a phone screen', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    watchConsole(p);
    for (const url of [`/ui/models/${MODEL}`, `/ui/compare?run=${MODEL}:default&run=${OTHER}:default`, '/ui/storage']) {
      await open(url, p);
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 1, `${url} does not scroll sideways (${overflow}px)`);
    }
    await open(`/ui/models/${MODEL}`, p);
    await shot('model-phone.png', p);
    await phone.close();
  });

  it('logs no console errors', () => {
    assert.deepEqual(consoleErrors, []);
  });

  it('stays fast with 5,000 checkpoints in one model', { timeout: 900_000 }, async () => {
    const body = readFileSync(trained.tiny);
    let next = 0;
    const t0 = Date.now();
    async function worker() {
      while (next < SCALE_N) {
        const epoch = next++;
        const loss = (2 / (1 + epoch / 300) + 0.05 * Math.sin(epoch / 7) + 0.1).toFixed(6);
        const val = (2.1 / (1 + epoch / 400) + 0.15).toFixed(6);
        await upload(SCALE_MODEL, body, `epoch=${epoch}&step=${epoch * 100}&loss=${loss}&metric.val_loss=${val}`);
      }
    }
    await Promise.all(Array.from({ length: SCALE_CONCURRENCY }, worker));
    console.log(`# uploaded ${SCALE_N} checkpoints in ${Date.now() - t0} ms (${SCALE_CONCURRENCY} at once, none retried)`);
    const p = await context.newPage();
    watchConsole(p);
    await p.goto(`${BASE}/ui/models/${SCALE_MODEL}`);
    await p.waitForSelector('main[data-page="model"][data-ready]', { timeout: 120_000 });
    const ms = await p.evaluate(() => {
      const m = performance.getEntriesByName('ckptd-ready');
      return m.length ? m[m.length - 1].startTime : performance.now();
    });
    console.log(`# model page with ${SCALE_N} checkpoints (loss and val_loss: ${SCALE_N * 2} points) interactive in ${Math.round(ms)} ms`);
    // every point is on its line; only the best of each loss keeps a circle
    assert.equal(await p.locator('#m-chart svg').getAttribute('data-points'), String(SCALE_N * 2));
    assert.equal(await p.locator('#m-chart circle.pt[data-best="true"]').count(), 2);
    assert.equal(await p.locator('#ckpt-table tbody tr[data-id]').count(), 50);
    // switching what is plotted stays quick
    let t = Date.now();
    await p.click('#m-x button[data-x="step"]');
    await p.waitForSelector('#m-chart svg[data-x="step"]');
    console.log(`# redrawn by step in ${Date.now() - t} ms`);
    // paging works
    await p.click('#m-pager button[aria-label="Next page"]');
    await p.waitForFunction(() => /51–100/.test(document.querySelector('#m-pager').innerText));
    await p.evaluate(() => window.scrollTo(0, 0));
    await shot('model-5000.png', p);
    t = Date.now();
    await p.goto(`${BASE}/ui/storage`);
    await p.waitForSelector('#s-growth[data-ready]', { timeout: 120_000 });
    const n = await p.locator('#s-growth-chart svg').getAttribute('data-points');
    console.log(`# storage page growth chart (${n} points) drawn ${Date.now() - t} ms after navigation`);
    await shot('storage-5000.png', p);
    await p.close();
    assert.deepEqual(consoleErrors, []);
  });
});
