/*
 * format.js: numbers, sizes and times as people read them.
 *
 * Every function takes what the JSON API gives (a number, null, an RFC 3339
 * string) and returns text; none returns markup. A missing value is "—".
 */

const DASH = '—';
const BYTE_UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

/* 1536 -> "1.50 KB" (binary multiples, three significant digits). */
export function fmtBytes(n) {
  if (n == null || Number.isNaN(Number(n))) return DASH;
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const s = i === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${n < 0 ? '-' : ''}${s} ${BYTE_UNITS[i]}`;
}

/* 12345 -> "12,345". */
export function fmtNum(n) {
  if (n == null) return DASH;
  return Number(n).toLocaleString('en-US');
}

/* A loss or metric: five significant digits, exponent notation when tiny or huge. */
export function fmtValue(x) {
  if (x == null) return DASH;
  if (typeof x !== 'number' || !Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-4) return x.toExponential(3);
  return String(Number(x.toPrecision(5)));
}

/* 2.345 -> "2.35" */
export function fmtRatio(x, digits = 2) {
  if (x == null || !Number.isFinite(x)) return DASH;
  return x.toFixed(digits);
}

/* 0.4567 -> "46%" (one decimal under 10%). */
export function pct(x) {
  if (x == null || !Number.isFinite(x)) return DASH;
  return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
}

export function fmtShape(shape) {
  if (!Array.isArray(shape)) return DASH;
  if (shape.length === 0) return 'scalar';
  return `[${shape.join(', ')}]`;
}

/* Milliseconds since the epoch, or null. */
export function parseTime(s) {
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
}

/* "just now", "5 min ago", "3 d ago", then the date. */
export function fmtRel(s, now = Date.now()) {
  const t = parseTime(s);
  if (t == null) return DASH;
  const d = Math.max(0, (now - t) / 1000);
  if (d < 10) return 'just now';
  if (d < 60) return `${Math.floor(d)} s ago`;
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
  if (d < 86400 * 30) return `${Math.floor(d / 86400)} d ago`;
  return new Date(t).toISOString().slice(0, 10);
}

let exactFormat = null;

/* The local time to the second with its zone, for a title. */
export function fmtLocal(s) {
  const t = typeof s === 'number' ? s : parseTime(s);
  if (t == null) return s || '';
  exactFormat ??= new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    second: '2-digit', timeZoneName: 'short',
  });
  return exactFormat.format(new Date(t));
}

/* The local time and the server's UTC string: what a hover shows. */
export function fmtExact(s) {
  const t = parseTime(s);
  if (t == null) return s || '';
  return `${fmtLocal(t)} (${s})`;
}

export function plural(n, one, many = `${one}s`) {
  return `${fmtNum(n)} ${n === 1 ? one : many}`;
}
