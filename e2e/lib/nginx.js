// Real nginx as the proxy in front of Ferry: a template from e2e/nginx/ rendered into the
// scenario's directory, run in the foreground with its own pid, logs and temp paths, stopped
// by PID, and reloadable (SIGHUP) with another template while clients stay connected.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  freePort, portOpen, runCommand, signalProcess, startProcess, stopProcess, tail, waitFor,
} from './util.js';

const TEMPLATES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../nginx');

/** The nginx binary, or an error saying it is missing (the scenario then fails). */
export function nginxBinary() {
  for (const p of [process.env.NGINX_BIN, '/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx']) {
    if (p && fs.existsSync(p)) return p;
  }
  throw new Error('nginx is not installed (apt-get install nginx; scripts/test.sh does it)');
}

/**
 * Renders template `name` (file e2e/nginx/<name>.conf) for this prefix, port and upstreams;
 * port2 is a second listening port, for templates with two origins ({{PORT2}}).
 */
export function render(name, { prefix, port, port2 = 0, upstreams }) {
  const src = fs.readFileSync(path.join(TEMPLATES, `${name}.conf`), 'utf8');
  const main = [
    // Workers of a root master run as "nobody" by default and could not use the temp dirs.
    process.getuid?.() === 0 ? 'user root root;' : '',
    'worker_processes 1;',
    `pid ${prefix}/nginx.pid;`,
    `error_log ${prefix}/error.log info;`,
  ].filter(Boolean).join('\n');
  const http = [
    `    log_format e2e '$msec $remote_addr "$request" $status $body_bytes_sent rt=$request_time '`,
    `                   'up=$upstream_addr ust=$upstream_status urt=$upstream_response_time';`,
    `    access_log ${prefix}/access.log e2e;`,
    `    client_body_temp_path ${prefix}/tmp/client_body;`,
    `    proxy_temp_path ${prefix}/tmp/proxy;`,
    `    fastcgi_temp_path ${prefix}/tmp/fastcgi;`,
    `    uwsgi_temp_path ${prefix}/tmp/uwsgi;`,
    `    scgi_temp_path ${prefix}/tmp/scgi;`,
    `    default_type application/octet-stream;`,
  ].join('\n');
  const ups = upstreams.map((u) => `        server ${u};`).join('\n');
  const out = src
    .replaceAll('{{MAIN}}', main)
    .replaceAll('{{HTTP}}', http)
    .replaceAll('{{UPSTREAMS}}', ups)
    .replaceAll('{{PORT}}', String(port))
    .replaceAll('{{PORT2}}', String(port2))
    .replaceAll('{{NAME}}', name);
  const left = out.match(/\{\{[A-Z_]+\}\}/);
  if (left) throw new Error(`template ${name}.conf: unknown placeholder ${left[0]}`);
  return out;
}

/**
 * One nginx instance. `upstreams` are "127.0.0.1:PORT" strings.
 * start() renders `template`, checks it with `nginx -t`, runs nginx and waits until it serves
 * its /e2e-config page; reload(template) switches the config under running clients (SIGHUP)
 * and waits until new connections get the new one.
 */
export class Nginx {
  constructor({ dir, template, upstreams, name = 'nginx', port = 0, port2 = 0 }) {
    this.prefix = path.join(dir, name);
    this.template = template;
    this.upstreams = upstreams;
    this.name = name;
    this.port = port; // 0: a free one, chosen by start
    this.port2 = port2; // a second origin, for templates that have one
    this.proc = null;
    this.conf = path.join(this.prefix, 'nginx.conf');
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get url2() { return `http://127.0.0.1:${this.port2}`; }
  get errorLog() { return path.join(this.prefix, 'error.log'); }
  get accessLog() { return path.join(this.prefix, 'access.log'); }

  async _write(template) {
    fs.writeFileSync(this.conf, render(template, { prefix: this.prefix, port: this.port, port2: this.port2, upstreams: this.upstreams }));
    const r = await runCommand(nginxBinary(), ['-t', '-q', '-p', this.prefix, '-c', this.conf, '-g', 'daemon off;'], { timeout: 10000 });
    if (r.code !== 0) throw new Error(`nginx -t rejected ${template}.conf:\n${r.stderr}${r.stdout}`);
  }

  async _served() {
    const r = await fetch(`${this.url}/e2e-config`, { signal: AbortSignal.timeout(1000) });
    return (await r.text()).trim();
  }

  async start() {
    const bin = nginxBinary();
    for (const d of ['tmp/client_body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi', 'logs']) {
      fs.mkdirSync(path.join(this.prefix, d), { recursive: true });
    }
    this.port ||= await freePort();
    this.port2 ||= await freePort();
    await this._write(this.template);
    this.proc = startProcess(this.name, bin, ['-p', this.prefix, '-c', this.conf, '-g', 'daemon off;'], {
      logFile: path.join(this.prefix, 'stdout.log'),
    });
    try {
      await waitFor(async () => {
        if (!this.proc.running()) throw new Error(`nginx exited: ${JSON.stringify(this.proc.status())}`);
        return (await portOpen(this.port)) && (await this._served()) === this.template;
      }, { timeout: 10000, interval: 50, what: `nginx (${this.template}) on port ${this.port}` });
    } catch (e) {
      e.message += `\n--- ${this.errorLog} (tail) ---\n${tail(this.errorLog)}`;
      throw e;
    }
    return this;
  }

  /** Switches to another template with SIGHUP; resolves once new requests see it. */
  async reload(template) {
    await this._write(template);
    signalProcess(this.proc, 'SIGHUP');
    this.template = template;
    await waitFor(async () => (await this._served()) === template, {
      timeout: 10000, interval: 50, what: `nginx reload to ${template}`,
    });
  }

  async stop() {
    if (!this.proc) return null;
    // SIGTERM is nginx's fast shutdown: it closes every connection at once.
    return stopProcess(this.proc, { signal: 'SIGTERM', timeout: 5000 });
  }

  /** Lines of the error log that match re. */
  errors(re) {
    try { return fs.readFileSync(this.errorLog, 'utf8').split('\n').filter((l) => re.test(l)); } catch { return []; }
  }

  /** Parsed access log entries: {msec, request, status, up, ust}. */
  accessEntries() {
    let text = '';
    try { text = fs.readFileSync(this.accessLog, 'utf8'); } catch { return []; }
    const out = [];
    for (const l of text.split('\n')) {
      const m = l.match(/^(\S+) \S+ "([^"]*)" (\d+) (\d+) rt=(\S+) up=(\S*) ust=(\S*)/);
      if (m) out.push({ msec: +m[1], request: m[2], status: +m[3], bytes: +m[4], rt: m[5], up: m[6], ust: m[7] });
    }
    return out;
  }
}
