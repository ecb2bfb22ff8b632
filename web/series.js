/*
 * series.js: which values of a checkpoint a chart can plot, and on what axis.
 *
 * A "value key" names one number of a checkpoint the way the list API's
 * `order` field does: "loss" or "metric.NAME". A chart's y is a list of
 * value keys (the URL's y=loss,metric.val_loss); its x is "epoch", "step" or
 * "time" (created_at).
 */

export const X_MODES = ['epoch', 'step', 'time'];

export function valueOf(c, key) {
  const v = key === 'loss' ? c.loss : key.startsWith('metric.') ? c.metrics?.[key.slice(7)] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function keyLabel(key) {
  return key.startsWith('metric.') ? key.slice(7) : key;
}

/* Every value key some checkpoint has: "loss" first, then metrics by name. */
export function valueKeys(checkpoints) {
  const names = new Set();
  let loss = false;
  for (const c of checkpoints) {
    if (typeof c.loss === 'number') loss = true;
    if (c.metrics) for (const k of Object.keys(c.metrics)) names.add(k);
  }
  const keys = [...names].sort().map((n) => `metric.${n}`);
  return loss ? ['loss', ...keys] : keys;
}

const LOSS_LIKE = /loss$/i;
const HIGHER_IS_BETTER = /acc|accuracy|f1|auc|precision|recall|score|bleu|rouge|map|iou|dice|top\d|r2|psnr|ssim/i;

export function isLossLike(key) {
  return LOSS_LIKE.test(keyLabel(key));
}

/* "max" when a higher value is better (accuracy and the like), else "min":
 * the direction a chart's best point is picked in. */
export function direction(key) {
  const name = keyLabel(key);
  return !LOSS_LIKE.test(name) && HIGHER_IS_BETTER.test(name) ? 'max' : 'min';
}

/* The choices of the y selector: [{value: "loss,metric.val_loss", label}].
 * Every loss-like key together comes first when there are two or more (train
 * and validation loss on one chart), then each key alone. */
export function yChoices(keys) {
  const choices = [];
  const losses = keys.filter(isLossLike);
  if (losses.length > 1) choices.push({ value: losses.join(','), label: losses.map(keyLabel).join(' + ') });
  for (const k of keys) choices.push({ value: k, label: keyLabel(k) });
  return choices;
}

export function parseY(value, keys) {
  const want = String(value || '').split(',').filter((k) => keys.includes(k));
  return want.length ? [...new Set(want)] : null;
}

/* The default y: the losses together, else loss, else the first key. */
export function defaultY(keys) {
  const choices = yChoices(keys);
  return choices.length ? choices[0].value.split(',') : [];
}

export function xOf(c, mode) {
  if (mode === 'epoch') return c.epoch ?? null;
  if (mode === 'step') return c.step ?? null;
  const t = Date.parse(c.created_at);
  return Number.isNaN(t) ? null : t;
}

/* The x modes these checkpoints have values for. */
export function xModes(checkpoints) {
  return X_MODES.filter((m) => checkpoints.some((c) => xOf(c, m) != null));
}

/* Epoch when every checkpoint has one, else step when every one has one,
 * else time. */
export function defaultX(checkpoints) {
  if (checkpoints.length && checkpoints.every((c) => c.epoch != null)) return 'epoch';
  if (checkpoints.length && checkpoints.every((c) => c.step != null)) return 'step';
  return 'time';
}

/* The best checkpoint of a list by a key: the lowest (or highest) value,
 * the newest on a tie, as the server's `best` picks. */
export function bestOf(checkpoints, key = 'loss', mode = direction(key)) {
  let best = null;
  let bv = null;
  for (const c of checkpoints) {
    const v = valueOf(c, key);
    if (v == null) continue;
    if (!best || (mode === 'max' ? v > bv : v < bv) || (v === bv && c.id > best.id)) {
      best = c;
      bv = v;
    }
  }
  return best;
}

/* Dash patterns for the 1st, 2nd, ... key on one chart. */
export const DASHES = ['', '6 4', '2 3', '10 3 2 3'];
