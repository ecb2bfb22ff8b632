// Browser tests of the ckptd dashboard (SPEC 5), run by tests/e2e/run.sh.
//
// A real torch training script uploads a checkpoint per epoch; the tests then
// drive Debian's chromium through playwright-core and check what a user sees:
// the models page, the model page's chart and table (one point per
// checkpoint, the best one marked), byte-exact downloads, live updates,
// the checkpoint page's tensors, the storage page, and no console errors.
// The last test uploads 5,000 checkpoints and prints how long the model page
// takes to become interactive (printed, never asserted).
//
// Environment: CKPTD_URL (a running ckptd), E2E_TMP (a scratch directory),
// SCREENSHOT_DIR, CHROMIUM, TORCH_PY.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = process.env.CKPTD_URL || 'http://127.0.0.1:8080';
const TMP = process.env.E2E_TMP || '/tmp';
const SHOTS = process.env.SCREENSHOT_DIR || path.join(HERE, '../../build/screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TORCH_PY = process.env.TORCH_PY || '/usr/bin/python3';
const MODEL = 'mnist-mlp';
const EPOCHS = 8;
const SCALE_MODEL = 'scale-5k';
const SCALE_N = 5000;
// Uploads at once in the scale test. 1 by default: sequential keep-alive
// uploads are the fastest here, and concurrent uploads currently hit a server
// bug (500 "database is locked"); set 4 to exercise concurrency.
const SCALE_CONCURRENCY = Number(process.env.E2E_UPLOAD_CONCURRENCY || 4);

let browser;
let context;
let page;
let trained; // the python script's report: uploads of run "default" and "lr-high"
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

// Uploads answered 500 "database is locked" (a server bug seen with
// concurrent uploads): retried, and from the first one on the scale test's
// uploads go one at a time (so the timing is still measured) and a warning
// is printed.
let lockedRetries = 0;
let serial = Promise.resolve();

async function uploadOnce(model, body, query) {
  return request('POST', `/api/v1/models/${model}/checkpoints?${query}`, body, {
    'Content-Type': 'application/octet-stream',
    'Content-Length': body.length,
  });
}

async function upload(model, body, query) {
  for (let attempt = 0; ; attempt++) {
    let res;
    if (lockedRetries) {
      const turn = serial.then(() => uploadOnce(model, body, query));
      serial = turn.catch(() => {});
      res = await turn;
    } else {
      res = await uploadOnce(model, body, query);
    }
    if (res.status === 500 && /database is locked/.test(res.body) && attempt < 20) {
      lockedRetries++;
      await new Promise((r) => setTimeout(r, 10));
      continue;
    }
    assert.equal(res.status, 201, `upload: ${res.body}`);
    return JSON.parse(res.body.toString());
  }
}

function train(model, epochs, run, lr) {
  const args = [path.join(HERE, 'train_upload.py'), BASE, model, String(epochs), TMP, run, String(lr)];
  const out = execFileSync(TORCH_PY, args, {
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop());
}

async function shot(name, p = page) {
  mkdirSync(SHOTS, { recursive: true });
  await p.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

async function open(urlPath, p = page) {
  await p.goto(BASE + urlPath);
  await p.waitForSelector('main[data-ready]');
}

function watchConsole(p) {
  p.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(`${msg.text()} (${msg.location().url || p.url()})`);
  });
  p.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
}

describe('dashboard', { timeout: 600_000 }, () => {
  before(async () => {
    trained = train(MODEL, EPOCHS, 'default', 0.01);
    const second = train(MODEL, 6, 'lr-high', 0.03);
    trained.all = trained.uploads.concat(second.uploads);
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

  it('lists the model on the models page', async () => {
    await open('/');
    const row = page.locator(`#models-table tr[data-model="${MODEL}"]`);
    await row.waitFor();
    const text = await row.innerText();
    assert.match(text, new RegExp(String(trained.all.length)), 'the checkpoint count is shown');
    const best = Math.min(...trained.all.map((u) => u.loss));
    const models = await getJSON('/api/v1/models');
    const m = models.models.find((x) => x.name === MODEL);
    assert.ok(Math.abs(m.best_loss - best) < 1e-6, 'the server and the script agree on the best loss');
    await shot('models.png');
    // the model link is a client-side route
    await row.locator('a').first().click();
    await page.waitForSelector('main[data-page="model"][data-ready]');
    assert.equal(new URL(page.url()).pathname, `/ui/models/${MODEL}`);
  });

  it('draws one chart point per checkpoint and marks the lowest loss as best', async () => {
    await open(`/ui/models/${MODEL}`);
    const points = await page.$$eval('#m-chart circle.pt', (els) =>
      els.map((e) => ({ id: Number(e.dataset.id), epoch: e.dataset.epoch, loss: Number(e.dataset.loss), best: e.dataset.best })));
    assert.equal(points.length, trained.all.length);
    for (const u of trained.all) {
      const p = points.find((x) => x.id === u.id);
      assert.ok(p, `checkpoint ${u.id} has a point`);
      assert.equal(p.epoch, String(u.epoch));
      assert.ok(Math.abs(p.loss - u.loss) < 1e-6 * Math.max(1, Math.abs(u.loss)));
    }
    const bestUpload = trained.all.reduce((a, b) => (b.loss < a.loss || (b.loss === a.loss && b.id > a.id) ? b : a));
    const marked = points.filter((p) => p.best === 'true');
    assert.equal(marked.length, 1, 'exactly one point is the best');
    assert.equal(marked[0].id, bestUpload.id);
    // one line per run
    assert.equal(await page.locator('#m-chart path.line').count(), 2);
    // the table lists them (newest first), with links to download
    const rows = await page.$$eval('#ckpt-table tbody tr[data-id]', (trs) => trs.map((tr) => Number(tr.dataset.id)));
    assert.deepEqual(rows, trained.all.map((u) => u.id).sort((a, b) => b - a));
    assert.equal(await page.locator(`#ckpt-table tr[data-id="${bestUpload.id}"] .badge.best`).count(), 1);
    // hovering a point shows its epoch and loss
    await page.locator('#m-chart svg').focus();
    await page.keyboard.press('Home');
    const tip = await page.locator('#m-chart .tip').innerText();
    assert.match(tip, /epoch/);
    assert.match(tip, /loss/);
    await page.keyboard.press('Escape');
    await page.locator('#m-chart svg').blur();
    await shot('model.png');
  });

  it('serves the upload byte for byte through the table\'s download link', async () => {
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
    const ck = await upload(MODEL, body, `epoch=${EPOCHS}&loss=0.0123&run=default`);
    await page.waitForSelector(`#ckpt-table tr[data-id="${ck.id}"]`, { timeout: 15_000 });
    await page.waitForSelector(`#m-chart circle.pt[data-id="${ck.id}"][data-best="true"]`, { timeout: 15_000 });
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    assert.equal(await page.locator('#m-chart circle.pt').count(), trained.all.length + 1);
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
    const victim = trained.all.find((u) => u.epoch === 0 && u !== trained.uploads[0]); // lr-high, epoch 0
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
    // the diff names the previous epoch's checkpoint, or says it is unavailable
    await page.waitForFunction(() => !/Looking for/.test(document.querySelector('#c-diff').innerText));
    const diff = await page.locator('#c-diff').innerText();
    assert.match(diff, new RegExp(`#${trained.uploads[2].id}|unavailable`, 'i'));
    if (!/unavailable/i.test(diff)) assert.match(diff, /changed/);
    await shot('checkpoint.png');
  });

  it('shows logical and stored bytes on the storage page', async () => {
    await page.click('nav.nav a[data-section="storage"]');
    await page.waitForSelector('main[data-page="storage"][data-ready]');
    const stats = await getJSON('/api/v1/stats');
    const dedup = await page.locator('[data-stat="dedup"] .stat-value').innerText();
    assert.equal(dedup, `${stats.dedup_ratio.toFixed(2)}×`);
    assert.equal(await page.locator('.bar-row').count(), 3);
    await shot('storage.png');
  });

  it('fits a phone screen', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    watchConsole(p);
    await open(`/ui/models/${MODEL}`, p);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 1, `the page does not scroll sideways (${overflow}px)`);
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
        await upload(SCALE_MODEL, body, `epoch=${epoch}&loss=${loss}`);
      }
    }
    await Promise.all(Array.from({ length: SCALE_CONCURRENCY }, worker));
    console.log(`# uploaded ${SCALE_N} checkpoints in ${Date.now() - t0} ms (${SCALE_CONCURRENCY} at once${lockedRetries ? ', then one at a time after a lock error' : ''})`);
    if (lockedRetries) console.log(`# WARNING: ${lockedRetries} uploads answered 500 "database is locked" and were retried`);
    const p = await context.newPage();
    watchConsole(p);
    await p.goto(`${BASE}/ui/models/${SCALE_MODEL}`);
    await p.waitForSelector('main[data-page="model"][data-ready]', { timeout: 120_000 });
    const ms = await p.evaluate(() => {
      const m = performance.getEntriesByName('ckptd-ready');
      return m.length ? m[m.length - 1].startTime : performance.now();
    });
    console.log(`# model page with ${SCALE_N} checkpoints interactive in ${Math.round(ms)} ms`);
    // every point is on the run's line; only the best keeps a circle of its own
    assert.equal(await p.locator('#m-chart svg').getAttribute('data-points'), String(SCALE_N));
    assert.equal(await p.locator('#m-chart circle.pt[data-best="true"]').count(), 1);
    assert.equal(await p.locator('#ckpt-table tbody tr[data-id]').count(), 50);
    // paging works
    await p.click('#m-pager button[aria-label="Next page"]');
    await p.waitForFunction(() => /51–100/.test(document.querySelector('#m-pager').innerText));
    await p.evaluate(() => window.scrollTo(0, 0));
    await shot('model-5000.png', p);
    await p.close();
    assert.deepEqual(consoleErrors, []);
  });
});
