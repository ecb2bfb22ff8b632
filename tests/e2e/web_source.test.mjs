// Checks of the dashboard's source (web/), run by tests/e2e/run.sh before the
// browser tests; needs no server and no browser.
//
// Markup reaches the page only through web/html.js: its render() is the one
// innerHTML assignment, html`` escapes every value, raw() marks string
// literals as markup. These checks keep it that way: no other file touches
// innerHTML/outerHTML/insertAdjacentHTML/document.write, raw() gets literals
// only, every module a file imports exists, and index.html loads app.js as a
// module with no inline script or handler. Each check is also run on a bad
// sample, so a check that can no longer fail is noticed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../web');
const HELPER = 'html.js';

const RAW_MARKUP = /\.(?:innerHTML|outerHTML)\b|\binsertAdjacentHTML\b|\bdocument\.write(?:ln)?\b|\bcreateContextualFragment\b/g;
// raw( followed by anything but one string literal without interpolation and ")"
const RAW_CALL = /\braw\(/g;
const RAW_LITERAL = /^raw\(\s*(?:'[^'\\\n]*'|"[^"\\\n]*"|`[^`$\\]*`)\s*\)/;
const IMPORT = /\bfrom\s+['"](\.\/[^'"]+)['"]|\bimport\(\s*['"](\.\/[^'"]+)['"]\s*\)/g;

function lineOf(text, index) {
  return text.slice(0, index).split('\n').length;
}

// The text with its comments blanked out (newlines kept, so lines still count).
function stripComments(text) {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' '))
    .replace(/^\s*\/\/.*$/gm, '');
}

// Problems in one JavaScript file of web/: [{line, what}].
export function lintScript(name, source) {
  const text = stripComments(source);
  const problems = [];
  for (const m of text.matchAll(RAW_MARKUP)) {
    if (name === HELPER && m[0] === '.innerHTML') continue;
    problems.push({ line: lineOf(text, m.index), what: `${m[0]} outside ${HELPER}: build markup with html\`\` and render()` });
  }
  for (const m of text.matchAll(RAW_CALL)) {
    if (name === HELPER) break;
    if (!RAW_LITERAL.test(text.slice(m.index))) {
      problems.push({ line: lineOf(text, m.index), what: 'raw() is given something other than a string literal' });
    }
  }
  for (const m of text.matchAll(/^\s*var\s/gm)) {
    problems.push({ line: lineOf(text, m.index), what: 'var: use const or let' });
  }
  for (const m of text.matchAll(IMPORT)) {
    const target = m[1] || m[2];
    if (!existsSync(path.join(WEB, target))) problems.push({ line: lineOf(text, m.index), what: `imports ${target}, which is not in web/` });
  }
  return problems;
}

// Problems in index.html.
export function lintPage(text) {
  const problems = [];
  for (const m of text.matchAll(/<script\b[^>]*>/g)) {
    if (!/\btype="module"/.test(m[0]) || !/\bsrc="\/ui\/[^"]+\.js"/.test(m[0])) {
      problems.push({ line: lineOf(text, m.index), what: `${m[0]}: scripts are modules loaded from /ui/` });
    }
  }
  for (const m of text.matchAll(/<script\b[^>]*>([^<]+)<\/script>/g)) {
    problems.push({ line: lineOf(text, m.index), what: 'an inline script' });
  }
  for (const m of text.matchAll(/\son[a-z]+\s*=/g)) problems.push({ line: lineOf(text, m.index), what: `an event handler attribute${m[0]}` });
  for (const m of text.matchAll(/\b(?:src|href)="(?:https?:)?\/\//g)) {
    problems.push({ line: lineOf(text, m.index), what: 'a file from another host: the dashboard works offline' });
  }
  return problems;
}

function format(problems, name) {
  return problems.map((p) => `web/${name}:${p.line}: ${p.what}`).join('\n');
}

describe('the dashboard source', () => {
  const scripts = readdirSync(WEB).filter((f) => f.endsWith('.js'));

  it('has its modules in web/', () => {
    assert.ok(scripts.includes('app.js') && scripts.includes(HELPER), scripts.join(' '));
  });

  it('assigns innerHTML only in the html helper and gives raw() only literals', () => {
    const all = scripts.map((f) => format(lintScript(f, readFileSync(path.join(WEB, f), 'utf8')), f)).filter(Boolean);
    assert.equal(all.join('\n'), '');
  });

  it('has exactly one innerHTML assignment in the helper', () => {
    const text = readFileSync(path.join(WEB, HELPER), 'utf8');
    assert.equal([...text.matchAll(/\.innerHTML\s*=/g)].length, 1);
  });

  it('loads app.js as a module, with no inline script, handler or remote file', () => {
    const problems = lintPage(readFileSync(path.join(WEB, 'index.html'), 'utf8'));
    assert.equal(format(problems, 'index.html'), '');
  });

  it('flags the mistakes it looks for (the checks can fail)', () => {
    const bad = [
      "el.innerHTML = '<b>' + name + '</b>';",
      'el.outerHTML = x;',
      "el.insertAdjacentHTML('beforeend', x);",
      'document.write(x);',
      'render(el, raw(name));',
      'render(el, raw(`<b>${name}</b>`));',
      'var x = 1;',
      "import { nope } from './missing.js';",
    ];
    for (const line of bad) assert.equal(lintScript('page.js', line).length, 1, `not flagged: ${line}`);
    assert.equal(lintScript('page.js', "render(el, raw('&nbsp;'));").length, 0, 'a literal is fine');
    assert.equal(lintScript(HELPER, 'element.innerHTML = x;').length, 0, 'the helper may');
    assert.equal(lintScript('page.js', '/* el.innerHTML = x */\n// raw(x)\n').length, 0, 'comments are not code');
    assert.equal(lintPage('<script src="/ui/app.js" defer></script>').length, 1);
    assert.equal(lintPage('<script type="module">alert(1)</script>').length, 2);
    assert.equal(lintPage('<body onload="x()">').length, 1);
    assert.equal(lintPage('<link href="https://cdn.example/x.css">').length, 1);
  });
});
