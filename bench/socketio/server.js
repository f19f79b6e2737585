// The Socket.IO 4 peer of docs/BENCHMARKS.md: every client joins the main namespace, and
// POST /publish re-broadcasts its JSON body to all of them as the event "msg", the way a
// Socket.IO app relays what a backend hands it. Both transports (WebSocket, polling) are
// on, with the library's defaults otherwise.
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const addr = process.argv[2] || '127.0.0.1:8091';
const [host, port] = addr.split(':');

const http = createServer((req, res) => {
  if (req.url !== '/publish') {
    res.writeHead(404).end();
    return;
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { Allow: 'POST' }).end();
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 64 * 1024) {
      res.writeHead(413).end();
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    let data;
    try {
      data = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400).end('bad JSON');
      return;
    }
    io.emit('msg', data);
    res.writeHead(204).end();
  });
});

const io = new Server(http, { serveClient: false, transports: ['polling', 'websocket'] });

http.listen(Number(port), host, () => {
  console.log(`socket.io ${process.env.npm_package_dependencies_socket_io || ''} peer listening on ${addr}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
