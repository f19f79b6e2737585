#!/usr/bin/env node
// Ferry end-to-end suite: real server binary, real Chromium, real nginx. Runs every scenario
// (or those named on the command line, by name or prefix: `node e2e/run.js idle-cut`),
// prints a table of what each one measured and exits non-zero if any failed. A scenario that
// cannot run (a component missing) fails; nothing is skipped.
//
// Environment: E2E_JOBS (scenarios run at once, default 3), E2E_DIR (where logs go, default
// a new /tmp/ferry-e2e-*), FERRY_BIN (use this server binary instead of building one).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFerry } from './lib/ferry.js';
import { getRunDir, scenarioDir, withTimeout } from './lib/util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

async function loadScenarios() {
  const dir = path.join(HERE, 'scenarios');
  const all = [];
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.js')).sort()) {
    const m = await import(path.join(dir, f));
    for (const c of m.cases) all.push({ ...c, file: f });
  }
  return all;
}

function select(all, args) {
  if (!args.length) return all;
  const match = (c, a) => c.name === a || c.name.startsWith(a + ':');
  const out = all.filter((c) => args.some((a) => match(c, a)));
  const unknown = args.filter((a) => !all.some((c) => match(c, a)));
  if (unknown.length) {
    console.error(`unknown scenario ${unknown.join(', ')}; known:\n  ${all.map((c) => c.name).join('\n  ')}`);
    process.exit(2);
  }
  return out;
}

/** Runs one scenario with its context; never throws. */
async function runCase(c) {
  const ctx = {
    name: c.name,
    dir: scenarioDir(c.name),
    result: {},
    failures: [],
    notes: [],
    cleanups: [],
    defer(fn, what = 'cleanup') { this.cleanups.push({ fn, what }); },
    fail(msg) { this.failures.push(msg); },
    note(msg) { this.notes.push(msg); },
    check(ok, msg) { if (!ok) this.fail(msg); return ok; },
  };
  const t0 = Date.now();
  try {
    await withTimeout(Promise.resolve().then(() => c.run(ctx)), c.timeout ?? 180000, `scenario ${c.name}`);
  } catch (e) {
    ctx.fail(`error: ${e.stack || e.message}`);
  }
  for (const { fn, what } of ctx.cleanups.reverse()) {
    try {
      await withTimeout(Promise.resolve().then(fn), 30000, what);
    } catch (e) {
      ctx.notes.push(`${what} failed: ${e.message}`);
    }
  }
  ctx.seconds = (Date.now() - t0) / 1000;
  ctx.ok = ctx.failures.length === 0;
  fs.writeFileSync(path.join(ctx.dir, 'result.json'), JSON.stringify({
    name: c.name, ok: ctx.ok, seconds: ctx.seconds, result: ctx.result, failures: ctx.failures, notes: ctx.notes,
  }, null, 2));
  console.log(`${ctx.ok ? 'PASS' : 'FAIL'} ${c.name} (${ctx.seconds.toFixed(1)} s)`);
  for (const f of ctx.failures.slice(0, 15)) console.log(`     ✗ ${f.split('\n').join('\n       ')}`);
  if (ctx.failures.length > 15) console.log(`     … ${ctx.failures.length - 15} more in ${ctx.dir}/result.json`);
  return ctx;
}

async function pool(cases, jobs) {
  const results = new Array(cases.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(jobs, cases.length) }, async () => {
    while (next < cases.length) {
      const i = next++;
      results[i] = await runCase(cases[i]);
    }
  }));
  return results;
}

const COLS = [
  ['scenario', (r) => r.name],
  ['result', (r) => (r.ok ? 'PASS' : 'FAIL')],
  ['transport(s) connected', (r) => r.result.transport ?? '-'],
  ['land s', (r) => (r.result.land != null ? (r.result.land / 1000).toFixed(1) : '-')],
  ['1st msg s', (r) => (r.result.firstMsg != null ? (r.result.firstMsg / 1000).toFixed(2) : '-')],
  ['sent', (r) => r.result.sent ?? '-'],
  ['owed', (r) => r.result.expected ?? '-'],
  ['recv', (r) => r.result.received ?? '-'],
  ['dup', (r) => r.result.dup ?? '-'],
  ['gaps', (r) => r.result.missing ?? '-'],
  ['ooo', (r) => r.result.ooo ?? '-'],
  ['off err', (r) => r.result.offsetErrs ?? '-'],
  ['resets', (r) => r.result.resets ?? '-'],
  ['up echo/sent', (r) => r.result.up ?? '-'],
  ['extra', (r) => r.result.extra ?? ''],
  ['time s', (r) => r.seconds.toFixed(0)],
];

function table(results) {
  const rows = results.map((r) => COLS.map(([, f]) => String(f(r))));
  const w = COLS.map(([h], i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(w[i])).join(' | ');
  return [line(COLS.map(([h]) => h)), w.map((n) => '-'.repeat(n)).join('-|-'), ...rows.map(line)].join('\n');
}

async function main() {
  const t0 = Date.now();
  const all = await loadScenarios();
  const args = process.argv.slice(2);
  if (args[0] === '--list') {
    for (const c of all) console.log(c.name);
    return;
  }
  const cases = select(all, args);
  // Longest first, so that the slow ones overlap the rest.
  cases.sort((a, b) => (b.weight ?? 0) - (a.weight ?? 0));
  const jobs = Math.max(1, Number(process.env.E2E_JOBS) || 3);
  console.log(`e2e: ${cases.length} scenarios, ${jobs} at a time, logs in ${getRunDir()}`);
  // Build once up front; if it fails, every scenario that needs the server fails with it.
  try {
    await buildFerry();
  } catch (e) {
    console.error(`e2e: ${e.message}`);
  }
  const results = await pool(cases, jobs);
  const order = all.map((c) => c.name);
  results.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
  console.log('\n' + table(results));
  console.log('sent: accepted by the publish API; owed: accepted after the page subscribed; recv: owed and received;'
    + '\ngaps: owed, never received; ooo: out of order; off err: offset not previous+1 or not the one the API gave;'
    + '\nup echo/sent: upstream sends echoed back / sent; land: page start to connected on the expected transport.');
  const failed = results.filter((r) => !r.ok);
  const wall = ((Date.now() - t0) / 1000).toFixed(0);
  console.log(`\n${results.length - failed.length} passed, ${failed.length} failed, wall time ${wall} s; logs in ${getRunDir()}`);
  if (failed.length) {
    console.log(`failed: ${failed.map((r) => r.name).join(', ')}`);
    process.exitCode = 1;
  }
}

main().then(() => process.exit(process.exitCode ?? 0), (e) => {
  console.error(e);
  process.exit(1);
});
