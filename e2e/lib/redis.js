// A real redis-server for multi-node scenarios (Ferry's --redis broker): foreground, its own
// port on loopback, no persistence, stopped by PID.
import fs from 'node:fs';
import path from 'node:path';
import { freePort, portOpen, startProcess, stopProcess, tail, waitFor } from './util.js';

export function redisBinary() {
  for (const p of [process.env.REDIS_BIN, '/usr/bin/redis-server', '/usr/local/bin/redis-server']) {
    if (p && fs.existsSync(p)) return p;
  }
  throw new Error('redis-server is not installed (apt-get install redis-server; scripts/test.sh does it)');
}

export class Redis {
  constructor({ dir, name = 'redis' }) {
    this.dir = path.join(dir, name);
    this.name = name;
    this.port = 0;
    this.proc = null;
  }

  get url() { return `redis://127.0.0.1:${this.port}/0`; }

  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    this.port = await freePort();
    const log = path.join(this.dir, 'redis.log');
    this.proc = startProcess(this.name, redisBinary(), [
      '--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--protected-mode', 'yes',
    ], { logFile: log });
    try {
      await waitFor(async () => {
        if (!this.proc.running()) throw new Error(`exited: ${JSON.stringify(this.proc.status())}`);
        return portOpen(this.port);
      }, { timeout: 10000, interval: 50, what: `redis-server on port ${this.port}` });
    } catch (e) {
      e.message += `\n--- ${log} (tail) ---\n${tail(log)}`;
      throw e;
    }
    return this;
  }

  stop() { return stopProcess(this.proc, { signal: 'SIGTERM', timeout: 5000 }); }
}
