import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isTerminal, shouldReconnect } from '../src/index.js';
import { CloseCodes } from '../src/codes.js';

const read = (p) => readFileSync(new URL(p, import.meta.url), 'utf8');

test('codes.js keeps one plain entry per line, the form the Go test parses', () => {
  const entry = /^ {2}(\d{4}): \{ name: '([^'\\]+)', reconnect: (true|false) \},$/;
  const lines = read('../src/codes.js').split('\n').filter((l) => /^ {2}\d/.test(l));
  assert.equal(lines.length, Object.keys(CloseCodes).length);
  for (const l of lines) {
    const m = entry.exec(l);
    assert.ok(m, `not in the parsed form: ${l}`);
    assert.deepEqual(CloseCodes[m[1]], { name: m[2], reconnect: m[3] === 'true' });
  }
});

test('the table has the rows of PROTOCOL.md §7, with the same client action', () => {
  const doc = read('../../docs/PROTOCOL.md');
  const section = doc.slice(doc.indexOf('## 7. Close codes'));
  const rows = [...section.matchAll(/^\| (\d{4}) \| ([^|]+) \| ([^|]+) \|$/gm)];
  assert.ok(rows.length >= 18);
  assert.deepEqual(rows.map((r) => r[1]).sort(), Object.keys(CloseCodes).sort());
  for (const [, code, , action] of rows) {
    const reconnect = /reconnect|negotiate|retry/.test(action) && !/do not/.test(action);
    assert.equal(CloseCodes[code].reconnect, reconnect, `${code}: ${action.trim()}`);
  }
});

test('codes outside the table follow the ranges', () => {
  for (const c of [4000, 4050, 4099, 4500, 4749]) assert.ok(shouldReconnect(c), c);
  for (const c of [4100, 4150, 4199, 4200, 4499, 4750, 4999]) assert.ok(isTerminal(c), c);
  // Codes below 4000 that Ferry never sends come from proxies or the platform: a dropped line.
  for (const c of [1005, 1012, 1013]) assert.ok(shouldReconnect(c), c);
});

test('the table decides: terminal codes stop, the rest reconnect', () => {
  for (const c of [1000, 1007, 1008, 1009, 4001, 4100, 4101, 4103, 4104]) assert.ok(isTerminal(c), c);
  for (const c of [1001, 1006, 1011, 4000, 4002, 4003, 4004, 4005, 4029]) assert.ok(shouldReconnect(c), c);
});

test("the base client's reconnect rule (reconnect.js) agrees with every row of the table", () => {
  for (const [code, { reconnect }] of Object.entries(CloseCodes)) {
    assert.equal(shouldReconnect(Number(code)), reconnect, code);
    assert.equal(isTerminal(Number(code)), !reconnect, code);
  }
});
