/*
 * html.js: the one way the dashboard turns data into markup.
 *
 *   html`<a href="${url}">${name}</a>`   every interpolated value is escaped
 *   raw('&nbsp;')                        the only way to mark a string as markup
 *   render(element, html`...`)           the only innerHTML assignment in web/
 *
 * html`` returns an Html object; interpolating one Html into another keeps
 * it as markup, and an array is its items one after another, so templates
 * nest without raw(). null, undefined and false interpolate as nothing.
 * Anything else becomes a string with & < > " ' escaped, which is safe
 * between tags and inside a quoted attribute value. Inside a tag, three
 * contexts are checked as well: a value that starts a URL attribute (href,
 * src, action, xlink:href) with a scheme other than http, https or mailto
 * becomes "about:invalid"; a value in an event handler attribute (on...) or
 * right after "=" (an unquoted attribute value) throws, since no escaping
 * makes those safe.
 *
 * tests/e2e/web_source.test.mjs checks that no other file in web/ assigns
 * innerHTML or outerHTML, and that raw() is given only string literals.
 */

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const SPECIAL = /[&<>"']/g;
const URL_ATTR = /\s(?:href|src|action|formaction|xlink:href)\s*=\s*["']$/i;
const EVENT_ATTR = /\son[a-z]+\s*=\s*["']?$/i;
const UNQUOTED = /=\s*$/;
const SAFE_URL = /^(?:[^:/?#]*(?:[/?#]|$)|(?:https?|mailto):)/i;

/* Markup the dashboard built: only html`` and raw() make one. */
export class Html {
  constructor(markup) {
    this.markup = markup;
  }

  toString() {
    return this.markup;
  }
}

/* The text with the five HTML special characters replaced by entities. */
export function escapeHtml(s) {
  return String(s).replace(SPECIAL, (c) => ESCAPES[c]);
}

function piece(v) {
  if (v instanceof Html) return v.markup;
  if (Array.isArray(v)) return v.map(piece).join('');
  if (v == null || v === false) return '';
  return escapeHtml(v);
}

/* The tagged template: markup from the literal parts, text from the values. */
export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) {
    let v = values[i];
    if (out.lastIndexOf('<') > out.lastIndexOf('>')) {
      /* inside a tag: the value is (part of) an attribute */
      const before = out.slice(-60);
      if (EVENT_ATTR.test(before)) throw new TypeError(`html: a value in an event handler attribute: ${before}`);
      if (UNQUOTED.test(before)) throw new TypeError(`html: an unquoted attribute value: ${before}`);
      if (URL_ATTR.test(before) && !(v instanceof Html) && !SAFE_URL.test(String(v ?? ''))) v = 'about:invalid';
    }
    out += piece(v) + strings[i + 1];
  }
  return new Html(out);
}

/* Marks a string the page wrote itself as markup. Give it string literals
 * only (checked by the source test); never data from the API or the URL. */
export function raw(markup) {
  return new Html(String(markup));
}

/* Joins Html items with a separator that is itself escaped text. */
export function join(items, separator) {
  return new Html(items.map(piece).join(escapeHtml(separator)));
}

/* Replaces the element's content. An Html is markup; anything else is text. */
export function render(element, content) {
  element.innerHTML = content instanceof Html ? content.markup : escapeHtml(content ?? '');
}
