// A real Redis Cluster for the scenarios: three masters and three replicas of redis-server on
// loopback (as scripts/redis-cluster.sh starts for the Go tests), each in the foreground on a
// free port whose cluster bus port (port + 10000) is free too, no persistence, joined with
// `redis-cli --cluster create`, stopped by PID. It can say which master owns a key's slot,
// kill that master with SIGKILL and wait until a replica serves the slot.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { redisBinary } from './redis.js';
import {
  freePort, portOpen, runCommand, startProcess, stopProcess, tail, waitFor,
} from './util.js';

export function redisCli() {
  for (const p of [process.env.REDIS_CLI, '/usr/bin/redis-cli', '/usr/local/bin/redis-cli']) {
    if (p && fs.existsSync(p)) return p;
  }
  throw new Error('redis-cli is not installed (apt-get install redis-tools; scripts/test.sh does it)');
}

/** True when 127.0.0.1:port can be listened on right now. */
function canListen(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A free port whose cluster bus port (+10000) is free as well; none of `taken`. */
async function freeClusterPort(taken) {
  for (let i = 0; i < 200; i++) {
    const p = await freePort();
    if (p + 10000 > 65535 || taken.has(p) || taken.has(p + 10000)) continue;
    if (await canListen(p + 10000)) return p;
  }
  throw new Error('no free port with a free cluster bus port (port + 10000) after 200 tries');
}

/**
 * new RedisCluster({dir}); start(); url (redis+cluster://…); masterOf(key) → {port, id};
 * kill(port) (SIGKILL); killInSync(port) (SIGKILL once its replicas are in sync); waitServed(key, notPort) waits until another node is master of the
 * key's slot and every live node agrees the cluster is ok; stop().
 */
export class RedisCluster {
  constructor({ dir, name = 'redis-cluster', masters = 3, replicas = 1 }) {
    this.dir = path.join(dir, name);
    this.name = name;
    this.size = masters * (1 + replicas);
    this.replicas = replicas;
    this.nodes = []; // {port, proc, log}
  }

  get addrs() { return this.nodes.map((n) => `127.0.0.1:${n.port}`); }
  get url() { return `redis+cluster://${this.addrs.join(',')}`; }
  live() { return this.nodes.filter((n) => n.proc.running()); }

  /** Runs redis-cli against port; resolves stdout, throws on a non-zero exit. */
  async cli(port, ...args) {
    const r = await runCommand(redisCli(), ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 30000 });
    if (r.code !== 0) throw new Error(`redis-cli -p ${port} ${args.join(' ')}: exit ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    const taken = new Set();
    for (let i = 0; i < this.size; i++) {
      const port = await freeClusterPort(taken);
      taken.add(port).add(port + 10000);
      const d = path.join(this.dir, String(port));
      fs.mkdirSync(d, { recursive: true });
      const log = path.join(d, 'redis.log');
      const proc = startProcess(`redis-${port}`, redisBinary(), [
        '--bind', '127.0.0.1', '--port', String(port), '--cluster-enabled', 'yes',
        '--cluster-config-file', path.join(d, 'nodes.conf'), '--cluster-node-timeout', '2000',
        '--save', '', '--appendonly', 'no', '--dir', d, '--protected-mode', 'yes',
      ], { logFile: log });
      this.nodes.push({ port, proc, log });
    }
    for (const n of this.nodes) {
      try {
        await waitFor(async () => {
          if (!n.proc.running()) throw new Error(`exited: ${JSON.stringify(n.proc.status())}`);
          return portOpen(n.port);
        }, { timeout: 10000, interval: 50, what: `redis-server on port ${n.port}` });
      } catch (e) {
        e.message += `\n--- ${n.log} (tail) ---\n${tail(n.log)}`;
        throw e;
      }
    }
    const r = await runCommand(redisCli(), ['--cluster', 'create', ...this.addrs, '--cluster-replicas',
      String(this.replicas), '--cluster-yes'], { timeout: 60000 });
    fs.writeFileSync(path.join(this.dir, 'create.log'), r.stdout + r.stderr);
    if (r.code !== 0) throw new Error(`redis-cli --cluster create failed: ${r.stderr}${r.stdout}`);
    await this.waitOk();
    // Every replica attached and in sync, so that a master killed later has a replica to
    // take over.
    await waitFor(async () => {
      const ns = await this.clusterNodes(this.nodes[0].port);
      return ns.filter((x) => x.flags.includes('slave') && x.link === 'connected').length === this.size - this.size / (1 + this.replicas);
    }, { timeout: 20000, interval: 100, what: 'every replica to join its master' });
    return this;
  }

  /** Waits until every live node reports cluster_state:ok. */
  async waitOk({ timeout = 20000 } = {}) {
    await waitFor(async () => {
      for (const n of this.live()) {
        if (!/cluster_state:ok/.test(await this.cli(n.port, 'cluster', 'info'))) return false;
      }
      return true;
    }, { timeout, interval: 100, what: 'cluster_state:ok on every live node' });
  }

  /** CLUSTER NODES as seen by port: [{id, port, flags, master, link, slots: [[lo, hi]]}]. */
  async clusterNodes(port) {
    const out = await this.cli(port, 'cluster', 'nodes');
    return out.trim().split('\n').filter(Boolean).map((l) => {
      const f = l.split(' ');
      const slots = f.slice(8).filter((s) => /^\d+(-\d+)?$/.test(s)).map((s) => {
        const [lo, hi = lo] = s.split('-').map(Number);
        return [lo, hi];
      });
      return { id: f[0], port: Number(/:(\d+)@/.exec(f[1])?.[1]), flags: f[2].split(','), master: f[3], link: f[7], slots };
    });
  }

  async keyslot(key) { return Number((await this.cli(this.live()[0].port, 'cluster', 'keyslot', key)).trim()); }

  /** The master serving `key`'s slot, as the live node `via` (default: the first) sees it. */
  async masterOf(key, via) {
    const slot = await this.keyslot(key);
    const ns = await this.clusterNodes(via ?? this.live()[0].port);
    const m = ns.find((x) => x.flags.includes('master') && !x.flags.includes('fail')
      && x.slots.some(([lo, hi]) => slot >= lo && slot <= hi));
    if (!m) throw new Error(`no master serves slot ${slot} (key ${key})`);
    return { port: m.port, id: m.id, slot };
  }

  /** SIGKILLs the node on `port`; resolves its exit status. */
  kill(port) {
    const n = this.nodes.find((x) => x.port === port);
    if (!n) throw new Error(`no cluster node on port ${port}`);
    return stopProcess(n.proc, { signal: 'SIGKILL', timeout: 5000 });
  }

  /**
   * SIGKILLs the master on `port` once its replicas hold everything it acknowledged: its
   * writes are paused (CLIENT PAUSE WRITE, which holds scripts and PUBLISH too) and the kill
   * comes when every replica's offset has reached the master's. A master that dies with
   * acknowledged writes its replicas never got is a different failure, one the broker does
   * not yet turn into a reset (docs/OPERATIONS.md); this kill leaves that out.
   */
  async killInSync(port) {
    await this.cli(port, 'client', 'pause', '10000', 'write');
    await waitFor(async () => {
      const info = await this.cli(port, 'info', 'replication');
      const own = Number(/master_repl_offset:(\d+)/.exec(info)?.[1]);
      const replicas = [...info.matchAll(/slave\d+:[^\n]*offset=(\d+)/g)].map((m) => Number(m[1]));
      return replicas.length > 0 && replicas.every((o) => o >= own);
    }, { timeout: 8000, interval: 20, what: `the replicas of ${port} to catch up before its kill` });
    return this.kill(port);
  }

  /** Waits until a node other than `oldPort` is master of key's slot on every live node. */
  async waitServed(key, oldPort, { timeout = 30000 } = {}) {
    let m = null;
    await waitFor(async () => {
      const views = [];
      for (const n of this.live()) views.push(await this.masterOf(key, n.port).catch(() => null));
      if (views.some((v) => !v || v.port === oldPort)) return false;
      if (new Set(views.map((v) => v.port)).size !== 1) return false;
      m = views[0];
      return true;
    }, { timeout, interval: 100, what: `a replica to take over ${key}'s slot from port ${oldPort}` });
    await this.waitOk({ timeout });
    return m;
  }

  async stop() {
    await Promise.all(this.nodes.map((n) => stopProcess(n.proc, { signal: 'SIGTERM', timeout: 5000 })));
  }
}
