// Small helpers shared by the e2e harness: bounded waiting, free ports, child processes that
// are always stopped (by PID) when the run ends, however it ends.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Resolves after ms milliseconds. Only for pacing (publisher rate, poll interval), never as a
 * stand-in for waiting on an event: use waitFor for that. */
export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls cond() (sync or async) every `interval` ms until it returns a truthy value, which is
 * returned. Throws after `timeout` ms, naming `what` and the last value or error seen.
 */
export async function waitFor(cond, { timeout = 10000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await delay(interval);
  }
}

/** Rejects if p has not settled within ms. */
export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.setTimeout(1000);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
    c.once('timeout', () => { c.destroy(); resolve(false); });
  });
}

// --- run directory -------------------------------------------------------------------------

let runDir = null;

/** The directory of this run (logs, configs, binaries): created once, kept for inspection. */
export function getRunDir() {
  if (!runDir) {
    runDir = process.env.E2E_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-'));
    fs.mkdirSync(runDir, { recursive: true });
  }
  return runDir;
}

/** A fresh directory for one scenario (or one component) inside the run directory. */
export function scenarioDir(name) {
  const d = path.join(getRunDir(), name.replace(/[^A-Za-z0-9_.-]+/g, '_'));
  fs.rmSync(d, { recursive: true, force: true });
  fs.mkdirSync(d, { recursive: true });
  return d;
}

// --- child processes -----------------------------------------------------------------------

const children = new Map(); // pid -> {name}

/**
 * Starts a child process with stdout and stderr appended to logFile, in its own process
 * group, registered so that it (and its group) is killed when this process exits for any
 * reason.
 * Returns {pid, name, exited (promise of {code, signal}), running()}.
 */
export function startProcess(name, cmd, args, { logFile, env, cwd } = {}) {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', out, out],
    // Its own process group (group id = its pid), so that an emergency stop also takes the
    // processes it started itself (nginx workers).
    detached: true,
  });
  fs.closeSync(out);
  let status = null;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal };
      children.delete(child.pid);
      resolve(status);
    });
    child.once('error', (err) => {
      status = { code: -1, signal: null, error: err };
      children.delete(child.pid);
      resolve(status);
    });
  });
  if (child.pid) children.set(child.pid, { name });
  return {
    pid: child.pid,
    name,
    logFile,
    exited,
    running: () => status === null,
    status: () => status,
  };
}

/**
 * Stops a child started by startProcess: sends `signal` to its PID, waits up to `timeout` ms
 * for it to exit, then SIGKILLs it. Resolves with its exit status.
 */
export async function stopProcess(p, { signal = 'SIGTERM', timeout = 15000 } = {}) {
  if (!p || !p.pid || !p.running()) return p?.status?.() ?? null;
  try { process.kill(p.pid, signal); } catch {}
  let t;
  const killed = new Promise((resolve) => {
    t = setTimeout(() => {
      try { process.kill(-p.pid, 'SIGKILL'); } catch {}
      try { process.kill(p.pid, 'SIGKILL'); } catch {}
      resolve();
    }, timeout);
  });
  await Promise.race([p.exited, killed]);
  clearTimeout(t);
  return p.exited;
}

/** Sends a signal to a running child (e.g. SIGHUP to reload nginx). */
export function signalProcess(p, signal) {
  if (!p.running()) throw new Error(`${p.name} (pid ${p.pid}) is not running`);
  process.kill(p.pid, signal);
}

function killAllNow() {
  for (const pid of children.keys()) {
    try { process.kill(-pid, 'SIGKILL'); } catch {}
    try { process.kill(pid, 'SIGKILL'); } catch {}
  }
  children.clear();
}

let hooked = false;
/** Installs the exit handlers that kill every child still registered. Idempotent. */
export function installExitHandlers() {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      console.error(`\ne2e: ${sig}, stopping everything started`);
      killAllNow();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (e) => {
    console.error('e2e: uncaught exception:', e);
    killAllNow();
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    console.error('e2e: unhandled rejection:', e);
    killAllNow();
    process.exit(1);
  });
}
installExitHandlers();

/** Last n lines of a log file, for failure messages. */
export function tail(file, n = 20) {
  try {
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    return lines.slice(-n).join('\n');
  } catch {
    return '';
  }
}

/** Runs a command to completion (bounded), resolving {code, stdout, stderr}. */
export function runCommand(cmd, args, { cwd, env, timeout = 300000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env } });
    children.set(child.pid, { name: cmd });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => {
      try { process.kill(child.pid, 'SIGKILL'); } catch {}
    }, timeout);
    child.on('error', (e) => { clearTimeout(t); children.delete(child.pid); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(t);
      children.delete(child.pid);
      resolve({ code: code ?? -1, signal, stdout, stderr });
    });
  });
}
