/*
 * plot.js: the checkpoint chart with its controls, shared by the model page
 * (one group per run) and the compare page (one group per model and run).
 *
 * The controls: what to plot (a <select> of value keys: loss, each metric,
 * and every loss-like key together, such as train and validation loss), the
 * x axis (epoch, step or upload time), a log scale, and a legend whose group
 * buttons hide and show a group. The choice lives in the URL's query string
 * (y=loss,metric.val_loss&x=step&log=1) so a chart can be linked to.
 *
 * Element ids are the given prefix plus -y, -x, -log, -legend, -chart, -note.
 */
import { html, render } from './html.js';
import { fmtLocal, fmtNum, fmtRel, fmtValue, plural } from './format.js';
import { drawChart } from './chart.js';
import { setQuery } from './ui.js';
import {
  DASHES, bestOf, defaultX, defaultY, direction, keyLabel, parseY, valueKeys, valueOf, xModes, xOf, yChoices,
} from './series.js';

const X_LABELS = { epoch: 'Epoch', step: 'Step', time: 'Time' };

/* The controls and the chart's box, to put in a card. */
export function plotMarkup(prefix, title) {
  return html`<div class="card-head"><h2 id="${prefix}-title">${title}</h2><div class="chart-tools">
      <label class="field">Plot <select id="${prefix}-y"></select></label>
      <div class="seg" role="group" aria-label="x axis" id="${prefix}-x">
        ${Object.entries(X_LABELS).map(([k, label]) => html`<button type="button" data-x="${k}" aria-pressed="false">${label}</button>`)}
      </div>
      <label class="check"><input type="checkbox" id="${prefix}-log"> Log scale</label>
    </div></div>
    <div class="legend" id="${prefix}-legend"></div>
    <div class="chart" id="${prefix}-chart"></div><p class="chart-note muted" id="${prefix}-note"></p>`;
}

export class Plot {
  /* prefix: the ids' prefix; open(group, checkpoint): a point was picked;
   * chartLabel: what the chart is of, for its accessible name; noGroups:
   * what the empty chart says when there is no group. */
  constructor(prefix, { open, chartLabel = 'Checkpoints', noGroups = 'Nothing to plot.' } = {}) {
    this.prefix = prefix;
    this.open = open;
    this.noGroups = noGroups;
    this.chartLabel = chartLabel;
    this.groups = [];
    this.hidden = new Set();
    const q = new URLSearchParams(location.search);
    this.wantY = q.get('y');
    this.wantX = q.get('x');
    this.log = q.get('log') === '1';
    this.y = null;
    this.x = null;
    this.drawn = null;
  }

  el(name) {
    return document.getElementById(`${this.prefix}-${name}`);
  }

  /* Wires the controls plotMarkup made; call once after it is rendered. */
  wire() {
    this.el('y').addEventListener('change', (e) => {
      this.y = e.target.value.split(',');
      this.remember();
      this.draw();
    });
    this.el('x').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-x]');
      if (!b || b.disabled) return;
      this.x = b.dataset.x;
      this.remember();
      this.draw();
    });
    this.el('log').addEventListener('change', (e) => {
      this.log = e.target.checked;
      this.remember();
      this.draw();
    });
    this.el('legend').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-group]');
      if (!b) return;
      const g = b.dataset.group;
      if (this.hidden.has(g)) this.hidden.delete(g);
      else this.hidden.add(g);
      this.draw();
    });
    this.el('log').checked = this.log;
  }

  remember() {
    const q = new URLSearchParams(location.search);
    q.set('y', this.y.join(','));
    q.set('x', this.x);
    if (this.log) q.set('log', '1');
    else q.delete('log');
    setQuery(q);
  }

  /* groups: [{key, label, color, model, run, checkpoints}] */
  setData(groups) {
    this.groups = groups;
    const all = groups.flatMap((g) => g.checkpoints);
    this.keys = valueKeys(all);
    this.y = parseY(this.y ? this.y.join(',') : this.wantY, this.keys) || defaultY(this.keys);
    this.modes = xModes(all);
    if (!this.x || !this.modes.includes(this.x)) this.x = this.modes.includes(this.wantX) ? this.wantX : defaultX(all);
    for (const k of [...this.hidden]) if (!groups.some((g) => g.key === k)) this.hidden.delete(k);
    this.draw();
  }

  draw() {
    const box = this.el('chart');
    if (!box) return;
    this.renderControls();
    this.renderLegend();
    const { x, y } = this;
    const shown = this.groups.filter((g) => !this.hidden.has(g.key));
    const shownCkpts = shown.flatMap((g) => g.checkpoints);
    const canLog = y.length > 0 && shownCkpts.every((c) => y.every((k) => valueOf(c, k) == null || valueOf(c, k) > 0));
    const logBox = this.el('log');
    logBox.disabled = !canLog;
    logBox.parentNode.title = canLog ? '' : 'Some values are 0 or negative';
    const series = [];
    const bests = y.map((k) => bestOf(shownCkpts, k));
    let missing = 0;
    for (const g of shown) {
      y.forEach((k, ki) => {
        const points = [];
        for (const c of g.checkpoints) {
          const v = valueOf(c, k);
          if (v == null) continue;
          const xv = xOf(c, x);
          if (xv == null) {
            missing++;
            continue;
          }
          points.push({ x: xv, y: v, id: c.id, c });
        }
        points.sort((a, b) => a.x - b.x || a.id - b.id);
        const metric = keyLabel(k);
        series.push({
          key: `${g.key}|${k}`,
          label: y.length > 1 ? `${g.label} · ${metric}` : g.label,
          color: g.color,
          dash: DASHES[ki % DASHES.length],
          run: g.run,
          metric,
          metricLabel: y.length > 1 ? metric : '',
          group: g,
          valueKey: k,
          points,
          best: points.find((p) => p.c === bests[ki]) || null,
        });
      });
    }
    const yLabel = y.map(keyLabel).join(' + ');
    render(this.el('title'), html`${yLabel || 'Chart'} <span class="muted">by ${x === 'time' ? 'upload time' : x}</span>`);
    this.drawn = drawChart(box, {
      series,
      x: { kind: x === 'time' ? 'time' : 'integer', label: x === 'time' ? 'upload time' : x },
      y: { kind: 'number', label: yLabel, log: this.log && canLog },
      label: `${this.chartLabel}: ${yLabel} by ${x}`,
      empty: !this.groups.length ? this.noGroups : this.keys.length
        ? `No checkpoint here has both ${yLabel} and ${x === 'time' ? 'an upload time' : `a${x === 'epoch' ? 'n' : ''} ${x}`}.`
        : html`No checkpoint here has a loss or a metric yet. Upload with <code>?loss=</code> or <code>?metric.acc=</code>.`,
      tip: (s, p) => this.tip(s, p),
      open: this.open ? (s, p) => this.open(s.group, p.c) : null,
    });
    const notes = [];
    if (missing) {
      notes.push(`${plural(missing, 'value')} of checkpoints without ${x === 'time' ? 'a time' : `a${x === 'epoch' ? 'n' : ''} ${x}`} not drawn.`);
    }
    for (const k of y) if (k !== 'loss' && direction(k) === 'max') notes.push(`The best ${keyLabel(k)} is the highest.`);
    this.el('note').textContent = notes.join(' ');
  }

  tip(s, p) {
    const c = p.c;
    const isBest = p === s.best;
    const others = this.y.filter((k) => k !== s.valueKey && valueOf(c, k) != null);
    return html`<div class="tip-head"><span class="swatch" style="background:${s.color}"></span>${s.group.label} · #${c.id}
        ${isBest ? html` <span class="badge best">best ${s.metric}</span>` : ''}</div>
      <dl><dt>${s.metric}</dt><dd>${fmtValue(p.y)}</dd>
        ${others.map((k) => html`<dt>${keyLabel(k)}</dt><dd>${fmtValue(valueOf(c, k))}</dd>`)}
        <dt>epoch</dt><dd>${c.epoch == null ? '—' : fmtNum(c.epoch)}</dd>
        ${c.step != null ? html`<dt>step</dt><dd>${fmtNum(c.step)}</dd>` : ''}
        <dt>time</dt><dd>${fmtRel(c.created_at)}</dd></dl>
      <div class="tip-time">${fmtLocal(c.created_at)}</div>`;
  }

  renderControls() {
    const sel = this.el('y');
    const choices = yChoices(this.keys);
    const cur = this.y.join(',');
    if (cur && !choices.some((c) => c.value === cur)) choices.unshift({ value: cur, label: this.y.map(keyLabel).join(' + ') });
    render(sel, html`${choices.map((c) => html`<option value="${c.value}">${c.label}</option>`)}`);
    sel.value = cur;
    sel.disabled = !choices.length;
    for (const b of this.el('x').querySelectorAll('button[data-x]')) {
      const on = b.dataset.x === this.x;
      b.setAttribute('aria-pressed', String(on));
      b.disabled = !this.modes.includes(b.dataset.x);
      b.title = b.disabled ? `No checkpoint has a${b.dataset.x === 'epoch' ? 'n' : ''} ${b.dataset.x}` : '';
    }
  }

  renderLegend() {
    const groups = this.groups.map((g) => {
      const off = this.hidden.has(g.key);
      return html`<button type="button" class="legend-item${off ? ' off' : ''}" data-group="${g.key}" data-run="${g.run}"
        aria-pressed="${String(!off)}" title="Show or hide ${g.label} in the chart"><span class="swatch" style="background:${g.color}"></span>${g.label}
        <span class="muted">${fmtNum(g.checkpoints.length)}</span></button>`;
    });
    const keys = this.y.length > 1
      ? this.y.map((k, i) => html`<span class="legend-key" data-metric="${keyLabel(k)}"><svg width="26" height="8" aria-hidden="true">
          <line x1="1" x2="25" y1="4" y2="4" stroke-dasharray="${DASHES[i % DASHES.length] || 'none'}"/></svg>${keyLabel(k)}</span>`)
      : [];
    render(this.el('legend'), html`${groups}${keys.length ? html`<span class="legend-sep" aria-hidden="true"></span>` : ''}${keys}`);
  }
}
