// A TCP proxy on 127.0.0.1 that the test controls: it pipes every connection to the server,
// and cut() destroys all of them at once, as a network failure would (no FIN from the
// server, no close frame). It also notes every HTTP request it sees going to the server,
// with its Last-Event-ID header, to show what a browser sent when it reconnected.
import net from 'node:net';

export class CutProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.requests = []; // {t, method, path, lastEventId}
    this.cuts = [];
    this.server = null;
    this.port = 0;
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  start() {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.sockets.delete(s);
          // One side gone: the other goes too.
          client.destroy();
          upstream.destroy();
        });
      }
      let head = '';
      client.on('data', (chunk) => {
        // Request heads are ASCII; bodies of the few POSTs are small JSON. Parse complete heads.
        head += chunk.toString('latin1');
        for (;;) {
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) break;
          const block = head.slice(0, end);
          head = head.slice(end + 4);
          const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]/.exec(block);
          if (!m) continue;
          const lei = /\r\nLast-Event-ID:\s*([^\r\n]*)/i.exec(block);
          this.requests.push({ t: Date.now(), method: m[1], path: m[2], lastEventId: lei ? lei[1].trim() : null });
          const len = /\r\nContent-Length:\s*(\d+)/i.exec(block);
          if (len) head = head.slice(Math.min(head.length, Number(len[1])));
        }
        if (head.length > 65536) head = '';
      });
      client.pipe(upstream);
      upstream.pipe(client);
    });
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  /** Destroys every connection through the proxy; new ones are still accepted. */
  cut() {
    const n = this.sockets.size;
    for (const s of [...this.sockets]) s.destroy();
    this.cuts.push({ t: Date.now(), sockets: n });
    return n;
  }

  close() {
    this.cut();
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
