// Ferry server nodes for the scenarios: the binary is built once per run from this checkout
// (or taken from FERRY_BIN), every node listens on a free loopback port and is stopped by PID.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  freePort, getRunDir, runCommand, startProcess, stopProcess, tail, waitFor,
} from './util.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const API_KEY = 'e2e-api-key';
export const SECRET = 'e2e-secret-0123456789abcdef0123456789';

let built = null;

/** Builds ./cmd/ferry once per run; resolves the binary path. */
export function buildFerry() {
  if (process.env.FERRY_BIN) return Promise.resolve(process.env.FERRY_BIN);
  if (!built) {
    built = (async () => {
      const bin = path.join(getRunDir(), 'bin', 'ferry');
      fs.mkdirSync(path.dirname(bin), { recursive: true });
      const r = await runCommand('go', ['build', '-o', bin, './cmd/ferry'], { cwd: REPO });
      if (r.code !== 0) throw new Error(`go build ./cmd/ferry failed:\n${r.stderr}${r.stdout}`);
      return bin;
    })();
  }
  return built;
}

/** Flags of the ferry binary, read from --help, to check that a scenario's flags exist. */
let flagsPromise = null;
export function ferryFlags() {
  if (!flagsPromise) {
    flagsPromise = (async () => {
      const bin = await buildFerry();
      const r = await runCommand(bin, ['--help'], { timeout: 10000 });
      return new Set([...(r.stdout + r.stderr).matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]));
    })();
  }
  return flagsPromise;
}

/** Throws a clear error when the binary lacks one of the flags (a scenario then fails). */
export async function requireFlags(...names) {
  const have = await ferryFlags();
  const missing = names.filter((n) => !have.has(n));
  if (missing.length) {
    throw new Error(`the ferry binary has no ${missing.map((n) => '--' + n).join(', ')} flag (see ferry --help)`);
  }
}

/** Turns {heartbeat: '2s', demo: false} into ['--heartbeat=2s', '--demo=false']. */
function toArgs(flags) {
  const out = [];
  for (const [k, v] of Object.entries(flags)) {
    if (v === undefined || v === null) continue;
    out.push(`--${k}=${v}`);
  }
  return out;
}

/**
 * One Ferry node. start() listens on a free port (or the given one), waits for /healthz;
 * stop() sends SIGTERM (graceful drain) and waits; restart() stops and starts again on the
 * same port with the same flags.
 */
export class FerryNode {
  constructor({ dir, name = 'ferry', port = 0, flags = {}, env = {} }) {
    this.dir = dir;
    this.name = name;
    this.port = port;
    this.flags = {
      'api-key': API_KEY,
      secret: SECRET,
      demo: false,
      'log-level': 'debug',
      // Its own data directory (the stored secret, the in-memory broker's state), kept
      // across restart(): never the user's default one, never another node's.
      'data-dir': path.join(dir, `${name}-data`),
      ...flags,
    };
    this.env = env;
    this.proc = null;
    this.starts = 0;
    this.logFile = path.join(dir, `${name}.log`);
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get addr() { return `127.0.0.1:${this.port}`; }

  async start({ timeout = 15000 } = {}) {
    const bin = await buildFerry();
    if (!this.port) this.port = await freePort();
    this.starts++;
    fs.appendFileSync(this.logFile, `\n=== e2e: start #${this.starts} ${new Date().toISOString()}\n`);
    const args = [`--addr=${this.addr}`, ...toArgs(this.flags)];
    this.proc = startProcess(this.name, bin, args, { logFile: this.logFile, env: this.env });
    try {
      await waitFor(async () => {
        if (!this.proc.running()) throw new Error(`exited: ${JSON.stringify(this.proc.status())}`);
        const r = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(1000) });
        return r.ok;
      }, { timeout, interval: 50, what: `${this.name} /healthz on ${this.addr}` });
    } catch (e) {
      e.message += `\n--- ${this.logFile} (tail) ---\n${tail(this.logFile)}`;
      throw e;
    }
    return this;
  }

  /** Graceful stop (SIGTERM); SIGKILL after `timeout`. Resolves with the exit status. */
  async stop({ signal = 'SIGTERM', timeout = 20000 } = {}) {
    if (!this.proc) return null;
    const st = await stopProcess(this.proc, { signal, timeout });
    fs.appendFileSync(this.logFile, `=== e2e: stopped ${JSON.stringify(st)} ${new Date().toISOString()}\n`);
    return st;
  }

  async restart(opts = {}) {
    const st = await this.stop(opts);
    await this.start(opts);
    return st;
  }

  running() { return !!this.proc && this.proc.running(); }

  /** Lines of this node's log that match re (for diagnosis). */
  grepLog(re) {
    try { return fs.readFileSync(this.logFile, 'utf8').split('\n').filter((l) => re.test(l)); } catch { return []; }
  }
}

/** Starts n nodes with the same flags (same secret: any node verifies any session). */
export async function startNodes(n, { dir, flags = {}, env = {}, name = 'ferry' } = {}) {
  const nodes = [];
  for (let i = 0; i < n; i++) nodes.push(new FerryNode({ dir, name: n === 1 ? name : `${name}${i + 1}`, flags, env }));
  try {
    await Promise.all(nodes.map((x) => x.start()));
  } catch (e) {
    await Promise.all(nodes.map((x) => x.stop({ signal: 'SIGKILL' })));
    throw e;
  }
  return nodes;
}
