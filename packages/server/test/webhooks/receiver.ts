/** A real HTTP webhook receiver on loopback that records every request and answers as told. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  at: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  /** Decides each answer: a status code, or 'hang' to never answer. */
  respond: (r: Received, n: number) => number | 'hang';
  close(): Promise<void>;
  /** Starts listening again on the same port after close(). */
  reopen(): Promise<void>;
}

export async function startReceiver(port = 0): Promise<Receiver> {
  const received: Received[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const rec: Receiver = {
    url: '',
    port: 0,
    received,
    respond: () => 200,
    close: async () => undefined,
    reopen: async () => undefined,
  };
  const make = () =>
    http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r = { at: Date.now(), headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
        received.push(r);
        const answer = rec.respond(r, received.length);
        if (answer === 'hang') return;
        res.writeHead(answer, { 'content-type': 'text/plain' }).end('ok');
      });
    });
  let server = make();
  const listen = (p: number) =>
    new Promise<void>((resolve) => {
      server.on('connection', (s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
      });
      server.listen(p, '127.0.0.1', () => resolve());
    });
  await listen(port);
  rec.port = (server.address() as AddressInfo).port;
  rec.url = `http://127.0.0.1:${rec.port}/hook`;
  rec.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  rec.reopen = async () => {
    server = make();
    await listen(rec.port);
  };
  return rec;
}
