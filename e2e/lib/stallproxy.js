// A proxy we control, for "the path starts buffering in the middle of a session": unlike an
// nginx reload (whose old workers keep serving live connections with the old config), it can
// change what happens to connections that are already open.
//
// Modes:
//   pass    forward everything, WebSocket included.
//   buffer  hold every byte from the server on live streams (SSE, WebSocket) from now on, and
//           answer new responses only when they end (headers included), like nginx with
//           gzip+buffering; new WebSocket handshakes are refused as a proxy that strips
//           Upgrade would (400). Complete responses (long-polls) still pass, late by nothing.
//   clump   like buffer for live streams, but releases what it holds every `clumpMs`: a
//           stream that still moves, in lumps (nginx flushing a full buffer).
// Switching back to pass releases everything held and forwards again.
// Independently of the mode, `corrupt` spoils WebSocket text frames that hold a given string.
import http from 'node:http';
import net from 'node:net';
import { freePort } from './util.js';

export class StallProxy {
  constructor({ upstream, clumpMs = 5000 }) {
    const [host, port] = upstream.split(':');
    this.up = { host, port: Number(port) };
    this.mode = 'pass';
    this.clumpMs = clumpMs;
    this.streams = new Set(); // {hold(chunk), flush()} of every live response or socket
    this.sockets = new Set();
    this.log = [];
    // When set (a string), every server-to-client WebSocket text frame that holds it gets one
    // byte of it replaced by 0xFF: a message that a browser must refuse (RFC 6455 §8.1), at
    // each delivery and each replay, as if the server sent bytes that aren't UTF-8.
    this.corrupt = null;
    this.corrupted = 0;
    this.server = http.createServer((req, res) => this._http(req, res));
    this.server.on('upgrade', (req, sock, head) => this._upgrade(req, sock, head));
    this.server.on('connection', (s) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    this._timer = null;
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  async start() {
    this.port = await freePort();
    await new Promise((r, j) => this.server.listen(this.port, '127.0.0.1', r).once('error', j));
    return this;
  }

  setMode(mode) {
    this.log.push({ t: Date.now(), mode });
    this.mode = mode;
    clearTimeout(this._timer);
    clearInterval(this._timer);
    this._timer = null;
    if (mode === 'pass') for (const s of this.streams) s.flush();
    if (mode === 'clump') {
      // The first lump comes after half a period, so that no gap between arrivals exceeds
      // one period plus what was already quiet before the switch: the stream must not look
      // late (that is mid-stall), only lumpy.
      const flush = () => { for (const s of this.streams) s.flush(); };
      this._timer = setTimeout(() => {
        flush();
        this._timer = setInterval(flush, this.clumpMs);
      }, this.clumpMs / 2);
    }
  }

  async stop() {
    clearTimeout(this._timer);
    clearInterval(this._timer);
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  /** A sink that passes or holds chunks according to the current mode. */
  _sink(write) {
    const held = [];
    const s = {
      hold: (chunk) => {
        if (this.mode === 'pass' && held.length === 0) return write(chunk);
        held.push(chunk);
      },
      flush: () => { while (held.length) write(held.shift()); },
    };
    this.streams.add(s);
    return s;
  }

  _http(req, res) {
    const bufferedFromStart = this.mode !== 'pass';
    const preq = http.request({ ...this.up, method: req.method, path: req.url, headers: req.headers }, (pres) => {
      if (bufferedFromStart && this.mode !== 'pass') {
        // Answer only when the response has ended, like a buffering proxy.
        const chunks = [];
        pres.on('data', (c) => chunks.push(c));
        pres.on('end', () => {
          const body = Buffer.concat(chunks);
          const h = { ...pres.headers, 'content-length': String(body.length) };
          delete h['transfer-encoding'];
          res.writeHead(pres.statusCode, h);
          res.end(body);
        });
        pres.on('error', () => res.destroy());
        return;
      }
      res.writeHead(pres.statusCode, pres.headers);
      res.flushHeaders();
      const sink = this._sink((c) => res.write(c));
      pres.on('data', (c) => sink.hold(c));
      pres.on('end', () => {
        if (this.mode === 'pass') { sink.flush(); res.end(); }
        else {
          // Buffered: the end goes out with the rest, when the path clears or the next clump.
          const flush = sink.flush;
          sink.flush = () => { flush(); res.end(); this.streams.delete(sink); };
        }
        if (this.mode === 'pass') this.streams.delete(sink);
      });
      pres.on('error', () => res.destroy());
    });
    preq.on('error', () => { if (!res.headersSent) res.writeHead(502).end(); else res.destroy(); });
    res.on('close', () => preq.destroy());
    req.pipe(preq);
  }

  _upgrade(req, sock, head) {
    if (this.mode !== 'pass') {
      sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const up = net.connect(this.up, () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(raw + '\r\n');
      if (head?.length) up.write(head);
      sock.pipe(up); // client to server always flows
      const sink = this._sink((c) => sock.write(c));
      const frames = wsFrames((frame, op, payload) => {
        const at = this.corrupt && op === 1 ? payload.indexOf(this.corrupt) : -1;
        if (at >= 0) {
          payload[at] = 0xff; // never valid in UTF-8; server frames are unmasked, nothing to recompute
          this.corrupted++;
          this.log.push({ t: Date.now(), corrupted: this.corrupt });
        }
        sink.hold(frame);
      }, (head) => sink.hold(head));
      up.on('data', (c) => frames(c));
      const done = () => { this.streams.delete(sink); sock.destroy(); up.destroy(); };
      up.on('close', done);
      sock.on('close', done);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  }
}

/**
 * Splits the server side of an upgraded connection into the HTTP response head and whole
 * WebSocket frames: onFrame(frame, opcode, payload) gets each frame (payload is a view into
 * it, so changing it changes the frame), onHead the response head.
 */
function wsFrames(onFrame, onHead) {
  let buf = Buffer.alloc(0);
  let head = true;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (head) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      onHead(buf.subarray(0, end + 4));
      buf = buf.subarray(end + 4);
      head = false;
    }
    for (;;) {
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      if (buf[1] & 0x80) off += 4; // a mask key (servers send none)
      if (buf.length < off + len) return;
      const frame = Buffer.from(buf.subarray(0, off + len));
      buf = buf.subarray(off + len);
      onFrame(frame, frame[0] & 0x0f, frame.subarray(off));
    }
  };
}
