import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('..', import.meta.url));
const tsc = fileURLToPath(new URL('../../node_modules/.bin/tsc', import.meta.url));

for (const project of ['tsconfig.json', 'tsconfig.src.json']) {
  test(`tsc --noEmit -p ${project}`, async () => {
    const r = await promisify(execFile)(tsc, ['--noEmit', '-p', project], { cwd: dir }).catch((e) => e);
    assert.equal(r.code ?? 0, 0, `${r.stdout}${r.stderr}`);
  });
}
