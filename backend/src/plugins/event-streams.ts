import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

/** A comment line this often keeps proxies from closing a quiet stream. */
const KEEPALIVE_MS = 15_000;

/** One open text/event-stream response. */
export interface EventStream {
  /**
   * Writes one event: `event: <name>`, `id: <id>` when given (the id a reconnecting client sends
   * back as Last-Event-ID), `data: <JSON>`. Ignored once ended.
   */
  send(event: string, id: number | undefined, data: unknown): void;
  /** Ends the response; the stream's `onEnd` runs once, however it ends. */
  end(): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Turns the reply into an event stream. It holds no database permit, has no request deadline,
     * and ends when the client goes away or the server closes; `onEnd` runs once in every case.
     */
    openEventStream(request: FastifyRequest, reply: FastifyReply, onEnd: () => void): EventStream;
  }
}

/**
 * Server-sent events, framed here (three fields and a keep-alive comment). @fastify/sse 0.6 was
 * weighed: it would need the request deadline disarmed by hand, ends nothing on server close, and
 * its send() never settles for a client that left mid-write; the framing it saves is these lines.
 */
async function eventStreamsPlugin(app: FastifyInstance) {
  const open = new Set<() => void>();
  // Streams would hold the server open: they end as closing starts, before in-flight requests drain.
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
  });

  app.decorate('openEventStream', (request: FastifyRequest, reply: FastifyReply, onEnd: () => void): EventStream => {
    app.releaseAdmission(request);
    // Hijacked: Fastify's hooks no longer run for this reply, so the headers they set so far go along.
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      ...inheritedHeaders(reply),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-request-id': String(request.id),
    });
    let ended = false;
    const keepalive = setInterval(() => raw.write(': keep-alive\n\n'), KEEPALIVE_MS);
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(keepalive);
      open.delete(end);
      raw.end();
      onEnd();
    };
    open.add(end);
    raw.on('close', end);
    // Gone already (between the caller's checks and here): 'close' will not fire again.
    if (raw.closed || request.raw.destroyed) end();
    return {
      send(event, id, data) {
        if (!ended) raw.write(`event: ${event}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`);
      },
      end,
    };
  });
}

/** The CORS and security headers hooks already put on the reply (a hijacked reply skips the rest). */
function inheritedHeaders(reply: FastifyReply): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return headers;
}

export default fp(eventStreamsPlugin, { name: 'autonode-event-streams', fastify: '5.x', dependencies: ['autonode-admission'] });
