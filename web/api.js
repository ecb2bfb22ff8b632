/*
 * api.js: the JSON API (docs/API.md) as the dashboard calls it, and the
 * dashboard's own links.
 *
 * A model whose name has a dot is linked as "/ui/#/models/NAME" (a hash
 * route), so no dashboard path looks like an asset ("/ui/app.js").
 */

export const API = '/api/v1';
const TOKEN_KEY = 'ckptd.token';

/* The most checkpoints one list request returns (docs/API.md). */
export const LIST_MAX = 100000;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* private mode: the token lasts as long as the page */
  }
}

/* GET (or opts.method) a path; resolves to the parsed JSON or null (204),
 * rejects with an ApiError carrying the server's error code and message. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network', `cannot reach the server: ${err?.message || err}`);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const code = data?.error || `http_${res.status}`;
    let msg = data?.message || `${res.status} ${res.statusText}`;
    if (res.status === 401 && !t) msg += ' (set a token with the Token button at the top)';
    throw new ApiError(res.status, code, msg);
  }
  return data;
}

const enc = encodeURIComponent;

/* Every checkpoint of a model (oldest first), optionally of one run. */
export async function listCheckpoints(model, { run, order = 'created' } = {}) {
  const q = `order=${enc(order)}&limit=${LIST_MAX}${run != null ? `&run=${enc(run)}` : ''}`;
  const data = await api(`${API}/models/${enc(model)}/checkpoints?${q}`);
  return { checkpoints: data?.checkpoints || [], total: data?.total ?? 0 };
}

export function apiCkpt(model, id) {
  return `${API}/models/${enc(model)}/checkpoints/${enc(id)}`;
}

function uiPath(model, rest) {
  const p = `models/${enc(model)}${rest}`;
  return String(model).includes('.') ? `/ui/#/${p}` : `/ui/${p}`;
}

export function modelHref(model) {
  return uiPath(model, '');
}

export function ckptHref(model, id) {
  return uiPath(model, `/checkpoints/${enc(id)}`);
}

/* The compare page with these runs ([{model, run}]) selected. */
export function compareHref(runs) {
  const q = runs.map((r) => `run=${enc(`${r.model}:${r.run}`)}`).join('&');
  return `/ui/compare${q ? `?${q}` : ''}`;
}
