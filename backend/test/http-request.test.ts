import dns, { type LookupAddress } from 'node:dns';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { StepError } from '../src/engine/errors.js';
import { isBlockedAddress, performHttpRequest, type HttpGuard, type HttpRequestParams } from '../src/engine/http-request.js';

const loopbackAllowed: HttpGuard = { allow: ['127.0.0.1'], maxResponseBytes: 1000, defaultTimeoutMs: 5000 };
const nothingAllowed: HttpGuard = { ...loopbackAllowed, allow: [] };

const never = new AbortController().signal;

/** The StepError a call fails with; fails the test if it succeeds or throws something else. */
async function failureOf(call: Promise<unknown>): Promise<StepError> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(StepError);
  return error as StepError;
}

describe('performHttpRequest against a local server', () => {
  let server: http.Server;
  let baseUrl: string;
  /** Resolves when the server sees the slow request's connection close. */
  let slowRequestClosed: Promise<number> | undefined;

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      const path = new URL(request.url ?? '/', 'http://local').pathname;
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        switch (path) {
          case '/json':
            response.setHeader('content-type', 'application/json; charset=utf-8');
            response.setHeader('set-cookie', ['a=1', 'b=2']);
            response.end(JSON.stringify({ hello: 'world', count: 2 }));
            return;
          case '/problem':
            response.writeHead(200, { 'content-type': 'application/problem+json' });
            response.end('{"title":"fine"}');
            return;
          case '/broken-json':
            response.writeHead(200, { 'content-type': 'application/json' });
            response.end('{not json');
            return;
          case '/text':
            response.writeHead(200, { 'content-type': 'text/plain', 'X-Custom': 'Yes' });
            response.end('plain words');
            return;
          case '/echo':
            response.writeHead(200, { 'content-type': 'application/json' });
            response.end(JSON.stringify({ method: request.method, headers: request.headers, body: Buffer.concat(chunks).toString('utf8') }));
            return;
          case '/not-found':
            response.writeHead(404, { 'content-type': 'application/json' });
            response.end('{"error":"no such thing"}');
            return;
          case '/unavailable':
            response.writeHead(503);
            response.end('try later');
            return;
          case '/redirect':
            response.writeHead(302, { location: '/json' });
            response.end();
            return;
          case '/big':
            response.writeHead(200, { 'content-type': 'application/json' });
            // Sent in pieces, so the client sees the limit crossed mid-stream.
            for (let i = 0; i < 50; i++) response.write(`"${'é'.repeat(100)}"`);
            response.end();
            return;
          case '/slow': {
            const started = Date.now();
            slowRequestClosed = new Promise((resolve) => request.socket.on('close', () => resolve(Date.now() - started)));
            const timer = setTimeout(() => response.end('too late'), 5000);
            response.on('close', () => clearTimeout(timer));
            return;
          }
          default:
            response.writeHead(500);
            response.end(`unexpected path ${path}`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const call = (params: Omit<HttpRequestParams, 'url'> & { path: string }, signal = never, guard = loopbackAllowed) => {
    const { path, ...rest } = params;
    return performHttpRequest({ ...rest, url: `${baseUrl}${path}` }, guard, signal);
  };

  it('parses a JSON response and flattens headers to lower-case names', async () => {
    const result = await call({ method: 'GET', path: '/json' });
    expect(result.status).toBe(200);
    expect(result.body).toEqual({ hello: 'world', count: 2 });
    expect(result.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(result.headers['set-cookie']).toBe('a=1, b=2');
  });

  it('parses +json media types, and falls back to text when JSON does not parse', async () => {
    expect((await call({ method: 'GET', path: '/problem' })).body).toEqual({ title: 'fine' });
    expect((await call({ method: 'GET', path: '/broken-json' })).body).toBe('{not json');
  });

  it('returns other responses as text', async () => {
    const result = await call({ method: 'GET', path: '/text' });
    expect(result.body).toBe('plain words');
    expect(result.headers['x-custom']).toBe('Yes');
  });

  it('sends a JSON body with content-type and user-agent, and a string body as is', async () => {
    const json = await call({ method: 'POST', path: '/echo', body: { name: 'Ada', tags: ['x'] } });
    const echoed = json.body as { method: string; headers: Record<string, string>; body: string };
    expect(echoed.method).toBe('POST');
    expect(JSON.parse(echoed.body)).toEqual({ name: 'Ada', tags: ['x'] });
    expect(echoed.headers['content-type']).toBe('application/json');
    expect(echoed.headers['user-agent']).toBe('autonode-engine');

    const text = await call({ method: 'PUT', path: '/echo', body: 'a=1&b=2', headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'User-Agent': 'mine' } });
    const echoedText = text.body as { headers: Record<string, string>; body: string };
    expect(echoedText.body).toBe('a=1&b=2');
    expect(echoedText.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(echoedText.headers['user-agent']).toBe('mine');
  });

  it('sends a body on DELETE too (Node would otherwise send it without a length)', async () => {
    const result = await call({ method: 'DELETE', path: '/echo', body: { id: 7 } });
    expect((result.body as { body: string }).body).toBe('{"id":7}');
  });

  it('fails on a non-2xx status, naming it, with the response in details', async () => {
    const notFound = await failureOf(call({ method: 'GET', path: '/not-found' }));
    expect(notFound.message).toContain('404');
    expect(notFound.retryable).toBe(false);
    expect(notFound.details).toMatchObject({ status: 404, body: { error: 'no such thing' } });

    const unavailable = await failureOf(call({ method: 'GET', path: '/unavailable' }));
    expect(unavailable.message).toContain('503');
    expect(unavailable.retryable).toBe(true);
  });

  it('does not follow redirects', async () => {
    const redirect = await failureOf(call({ method: 'GET', path: '/redirect' }));
    expect(redirect.message).toContain('302');
    expect(redirect.message).toContain('location: /json');
    expect(redirect.details).toMatchObject({ status: 302 });
  });

  it('cuts a body over maxResponseBytes and marks it, without parsing it', async () => {
    const result = await call({ method: 'GET', path: '/big' });
    const body = result.body as string;
    expect(typeof body).toBe('string');
    expect(body.endsWith('…[truncated: response exceeded 1000 bytes]')).toBe(true);
    const kept = body.slice(0, -'…[truncated: response exceeded 1000 bytes]'.length);
    expect(Buffer.byteLength(kept)).toBeLessThanOrEqual(1000);
    expect(Buffer.byteLength(kept)).toBeGreaterThan(990);
    // The cut fell inside the two-byte "é" or between them; no replacement character either way.
    expect(kept).not.toContain('\uFFFD');
  });

  it('times out after timeoutMs', async () => {
    const started = Date.now();
    const timedOut = await failureOf(call({ method: 'GET', path: '/slow', timeoutMs: 100 }));
    expect(timedOut.message).toBe('request timed out after 100 ms');
    expect(timedOut.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('aborts the in-flight request promptly when the signal aborts', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const pending = call({ method: 'GET', path: '/slow' }, controller.signal);
    setTimeout(() => controller.abort(), 50);
    const cancelled = await failureOf(pending);
    expect(cancelled.message).toBe('cancelled');
    expect(cancelled.retryable).toBe(false);
    expect(Date.now() - started).toBeLessThan(300);
    // The socket itself is gone, not just the promise: the server sees the connection close.
    expect(await slowRequestClosed).toBeLessThan(300);
  });

  it('fails at once when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    expect((await failureOf(call({ method: 'GET', path: '/json' }, controller.signal))).message).toBe('cancelled');
  });

  it('reports a refused connection as a retryable network error', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const error = await failureOf(performHttpRequest({ method: 'GET', url: `http://127.0.0.1:${port}/` }, loopbackAllowed, never));
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.retryable).toBe(true);
  });

  it('refuses bad URLs and other schemes', async () => {
    for (const url of ['not a url', 'ftp://127.0.0.1/x', 'file:///etc/passwd']) {
      const error = await failureOf(performHttpRequest({ method: 'GET', url }, loopbackAllowed, never));
      expect(error.retryable).toBe(false);
    }
  });

  it('allows a host name listed in the allow list', async () => {
    const port = new URL(baseUrl).port;
    const result = await performHttpRequest({ method: 'GET', url: `http://localhost:${port}/text` }, { ...nothingAllowed, allow: ['localhost'] }, never);
    expect(result.body).toBe('plain words');
  });

  describe('with DNS under the test\u2019s control', () => {
    afterEach(() => {
      vi.restoreAllMocks();
    });

    it('connects to the address it vetted and never resolves again (no rebinding gap)', async () => {
      const vetting = vi.spyOn(dns.promises, 'lookup').mockImplementation((async () => [{ address: '127.0.0.1', family: 4 }]) as unknown as typeof dns.promises.lookup);
      // A second resolution at connect time (Node's default) would go through dns.lookup and land on another address.
      const rebound = vi.spyOn(dns, 'lookup').mockImplementation(((_host: string, _options: unknown, callback: (error: Error | null, address: LookupAddress[]) => void) =>
        callback(null, [{ address: '127.0.0.2', family: 4 }])) as unknown as typeof dns.lookup);

      const port = new URL(baseUrl).port;
      const result = await performHttpRequest({ method: 'GET', url: `http://rebind.example:${port}/echo` }, loopbackAllowed, never);
      expect(vetting).toHaveBeenCalledTimes(1);
      expect(rebound).not.toHaveBeenCalled();
      // The Host header still names the host, not the address.
      expect((result.body as { headers: Record<string, string> }).headers.host).toBe(`rebind.example:${port}`);
    });

    it('refuses when any one resolved address is blocked', async () => {
      vi.spyOn(dns.promises, 'lookup').mockImplementation((async () => [
        { address: '127.0.0.1', family: 4 },
        { address: '10.0.0.1', family: 4 },
      ]) as unknown as typeof dns.promises.lookup);
      const connect = vi.spyOn(net.Socket.prototype, 'connect').mockImplementation(() => {
        throw new Error('no connection may be attempted');
      });
      const error = await failureOf(performHttpRequest({ method: 'GET', url: 'http://mixed.example/' }, loopbackAllowed, never));
      // The address a name resolves to is not told to the workflow's owner.
      expect(error.message).toBe('refused to connect to mixed.example (it resolves to a private address); add it to ENGINE_HTTP_ALLOW to allow it');
      expect(connect).not.toHaveBeenCalled();
    });
  });
});

describe('refused targets', () => {
  // Any connection attempt would fail the test here, so nothing can reach the network even if the guard broke.
  let connect: ReturnType<typeof vi.spyOn>;
  beforeAll(() => {
    connect = vi.spyOn(net.Socket.prototype, 'connect').mockImplementation(() => {
      throw new Error('no connection may be attempted');
    });
  });
  afterAll(() => {
    connect.mockRestore();
  });

  it.each([
    ['http://10.0.0.1/', nothingAllowed, 'refused to connect to 10.0.0.1 (private address); add it to ENGINE_HTTP_ALLOW to allow it'],
    ['http://169.254.169.254/latest/meta-data/', loopbackAllowed, 'refused to connect to 169.254.169.254 (cloud metadata address)'],
    ['http://127.0.0.1:1/', nothingAllowed, 'refused to connect to 127.0.0.1 (loopback address)'],
    ['http://localhost:1/', nothingAllowed, 'refused to connect to localhost ('],
    ['http://[::1]:1/', loopbackAllowed, 'refused to connect to ::1 (loopback address)'],
    ['http://[::ffff:127.0.0.1]:1/', nothingAllowed, 'refused to connect to ::ffff:7f00:1 (loopback address)'],
    ['http://2130706433:1/', nothingAllowed, 'refused to connect to 127.0.0.1 (loopback address)'],
    ['http://0x7f.1:1/', nothingAllowed, 'refused to connect to 127.0.0.1 (loopback address)'],
    ['https://[fd00:ec2::254]/', loopbackAllowed, 'refused to connect to fd00:ec2::254 (cloud metadata address)'],
    ['http://0.0.0.0:1/', loopbackAllowed, 'refused to connect to 0.0.0.0 (unspecified address)'],
    ['http://[64:ff9b::a00:1]/', nothingAllowed, 'refused to connect to 64:ff9b::a00:1 (private address)'],
    ['http://[2002:a9fe:a9fe::]/', loopbackAllowed, 'refused to connect to 2002:a9fe:a9fe:: (cloud metadata address)'],
    ['http://[::8.8.8.8]/', nothingAllowed, 'refused to connect to ::808:808 (reserved address)'],
    ['http://[64:ff9b:1::808:808]/', nothingAllowed, 'refused to connect to 64:ff9b:1::808:808 (reserved address)'],
    ['http://[fec0::1]/', nothingAllowed, 'refused to connect to fec0::1 (site-local address)'],
    ['http://[::ffff:127.0.0.1]:1/', { ...nothingAllowed, allow: ['::1', '10.0.0.0/8', 'fe80::/10'] }, 'refused to connect to ::ffff:7f00:1 (loopback address)'],
  ])('refuses %s before connecting', async (url, guard, message) => {
    const started = Date.now();
    const error = await failureOf(performHttpRequest({ method: 'GET', url }, guard, never));
    expect(error.message.startsWith(message)).toBe(true);
    expect(error.message).toContain('ENGINE_HTTP_ALLOW');
    expect(error.retryable).toBe(false);
    expect(connect).not.toHaveBeenCalled();
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('lets an allowed CIDR through the guard (and only then tries to connect)', async () => {
    const error = await failureOf(performHttpRequest({ method: 'GET', url: 'http://127.0.0.9:1/' }, { ...nothingAllowed, allow: ['127.0.0.0/8'] }, never));
    expect(error.message).toContain('no connection may be attempted');
    expect(connect).toHaveBeenCalledTimes(1);
    connect.mockClear();
  });

  it.each([
    ['http://[::ffff:127.0.0.9]:1/', ['127.0.0.0/8']],
    ['http://[::ffff:127.0.0.1]:1/', ['127.0.0.1']],
    ['http://[64:ff9b::7f00:1]:1/', ['127.0.0.1']],
    ['http://[fe80::1]:1/', ['fe80::/10']],
    ['http://[fe80::1]:1/', ['fe80::1%eth0']],
    ['http://[::1]:1/', ['[::1]']],
    ['http://[fd12::1]:1/', ['10.0.0.0/8', 'fd00::/8']],
  ])('lets %s through the guard when the allow list is %j', async (url, allow) => {
    const error = await failureOf(performHttpRequest({ method: 'GET', url }, { ...nothingAllowed, allow }, never));
    expect(error.message).toContain('no connection may be attempted');
    expect(connect).toHaveBeenCalledTimes(1);
    connect.mockClear();
  });

  it('accepts a resolved address with a zone id, judged and allowed like the address itself', async () => {
    const lookup = vi.spyOn(dns.promises, 'lookup').mockImplementation((async () => [{ address: 'fe80::1%eth0', family: 6 }]) as unknown as typeof dns.promises.lookup);
    try {
      const refused = await failureOf(performHttpRequest({ method: 'GET', url: 'http://zoned.example/' }, nothingAllowed, never));
      expect(refused.message).toBe('refused to connect to zoned.example (it resolves to a link-local address); add it to ENGINE_HTTP_ALLOW to allow it');
      expect(connect).not.toHaveBeenCalled();
      const error = await failureOf(performHttpRequest({ method: 'GET', url: 'http://zoned.example/' }, { ...nothingAllowed, allow: ['fe80::/64'] }, never));
      expect(error.message).toContain('no connection may be attempted');
      expect(connect).toHaveBeenCalledTimes(1);
      connect.mockClear();
    } finally {
      lookup.mockRestore();
    }
  });
});

describe('isBlockedAddress', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.255.254', true],
    ['10.0.0.1', true],
    ['172.15.255.255', false],
    ['172.16.0.0', true],
    ['172.31.255.255', true],
    ['172.32.0.0', false],
    ['192.168.1.1', true],
    ['169.254.169.254', true],
    ['169.254.1.1', true],
    ['100.63.255.255', false],
    ['100.64.0.1', true],
    ['100.127.255.255', true],
    ['100.128.0.0', false],
    ['0.0.0.0', true],
    ['0.1.2.3', true],
    ['224.0.0.1', true],
    ['239.255.255.250', true],
    ['240.0.0.1', true],
    ['255.255.255.255', true],
    ['192.0.2.1', true],
    ['198.18.0.1', true],
    ['8.8.8.8', false],
    ['1.1.1.1', false],
    ['93.184.216.34', false],
    ['::', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::ffff:127.0.0.1', true],
    ['::ffff:7f00:1', true],
    ['::ffff:10.0.0.1', true],
    ['::ffff:169.254.169.254', true],
    ['::ffff:8.8.8.8', false],
    ['::127.0.0.1', true],
    ['::8.8.8.8', true],
    ['::808:808', true],
    ['::ffff:100.64.0.1', true],
    ['::ffff:0.0.0.0', true],
    ['64:ff9b::169.254.169.254', true],
    ['64:ff9b:1::808:808', true],
    ['2002:a9fe:a9fe::1', true],
    ['2002:c0a8:101::', true],
    ['100::1', true],
    ['100:0:0:1::1', false],
    ['2001::1', true],
    ['2001:1ff::1', true],
    ['2001:200::1', false],
    ['fec0::1', true],
    ['feff::1', true],
    ['fd00:ec2::254%eth0', true],
    ['fe80::1%1', true],
    ['2606:4700:4700::1111%eth0', false],
    ['010.0.0.1', true],
    ['0x7f.0.0.1', true],
    ['2130706433', true],
    ['127.1', true],
    ['8.8.8.8/32', true],
    ['1::2::3', true],
    ['[::1]', true],
    ['64:ff9b::a00:1', true],
    ['64:ff9b::8.8.8.8', false],
    ['2002:7f00:1::', true],
    ['2002:808:808::', false],
    ['fe80::1', true],
    ['FE80::1', true],
    ['fe80::1%eth0', true],
    ['fc00::1', true],
    ['fd12:3456:789a::1', true],
    ['fd00:ec2::254', true],
    ['ff02::1', true],
    ['2001:db8::1', true],
    ['2606:4700:4700::1111', false],
    ['2a00:1450:4001:80b::200e', false],
    ['localhost', true],
    ['not an address', true],
    ['', true],
  ])('%s → %s', (address, expected) => {
    expect(isBlockedAddress(address)).toBe(expected);
  });
});
