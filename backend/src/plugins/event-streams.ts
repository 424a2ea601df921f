import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { RequestCaller } from '../auth/caller.js';
import { reverifyCaller } from '../auth/plugin.js';
import { ProblemError } from '../lib/problem.js';

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
     * Turns the reply into an event stream, or throws 429 when the caller has too many open. It
     * holds no database permit, has no request deadline, and ends when the client goes away, the
     * server closes or the caller's credential stops being valid; `onEnd` runs once in every case.
     */
    openEventStream(request: FastifyRequest, reply: FastifyReply, onEnd: () => void): EventStream;
  }
}

export interface EventStreamsOptions {
  /** Streams one user may hold open on this process (EVENT_STREAMS_PER_USER). */
  readonly maxPerUser: number;
}

/** setTimeout's longest delay; a credential expiring later is checked again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** When a refused stream may try again: streams usually end within seconds to minutes. */
const RETRY_AFTER_SECONDS = 5;

/** What the plugin keeps of an open stream: whose it is, and how to re-check its caller. */
interface OpenStream {
  readonly end: () => void;
  readonly recheck: () => void;
}

/**
 * Server-sent events, framed here (three fields and a keep-alive comment). @fastify/sse 0.6 was
 * weighed: it would need the request deadline disarmed by hand, ends nothing on server close, and
 * its send() never settles for a client that left mid-write; the framing it saves is these lines.
 *
 * A stream lives only as long as the credential that opened it: it is checked again when the
 * user's callers change on any replica (sign-out, revocation: the bus's `callers-changed`), when
 * the bus may have lost such a message (`resync`), and when the credential expires. So an idle
 * stream costs no query, and a revoked one ends within a round trip of the notification.
 *
 * Streams that present the same credential share one verification (a user's many tabs, or a
 * client watching many executions with one key): a notification costs a query or two per
 * credential, not per stream. Only a verification begun after the latest notification is shared,
 * so none can answer with what held before the change.
 */
async function eventStreamsPlugin(app: FastifyInstance, { maxPerUser }: EventStreamsOptions) {
  const openByUser = new Map<string, Set<OpenStream>>();
  /** Counts the notifications that may have changed credentials. */
  let credentialChanges = 0;
  /** Verifications in flight, by the credential headers they verify; an entry leaves once settled. */
  const verifying = new Map<string, { readonly after: number; readonly caller: Promise<RequestCaller | null> }>();
  const verifyShared = (request: FastifyRequest): Promise<RequestCaller | null> => {
    const key = credentialKeyOf(request);
    const inFlight = verifying.get(key);
    if (inFlight?.after === credentialChanges) return inFlight.caller;
    const entry = { after: credentialChanges, caller: reverifyCaller(request) };
    verifying.set(key, entry);
    const forget = () => {
      if (verifying.get(key) === entry) verifying.delete(key);
    };
    entry.caller.then(forget, forget);
    return entry.caller;
  };
  const unsubscribe = app.bus.subscribe((message) => {
    if (message.kind !== 'callers-changed' && message.kind !== 'resync') return;
    credentialChanges++;
    if (message.kind === 'callers-changed') for (const stream of openByUser.get(message.userId) ?? []) stream.recheck();
    else for (const streams of openByUser.values()) for (const stream of streams) stream.recheck();
  });
  // Streams would hold the server open: they end as closing starts, before in-flight requests drain.
  app.addHook('preClose', async () => {
    unsubscribe();
    for (const streams of [...openByUser.values()]) for (const stream of [...streams]) stream.end();
  });

  app.decorate('openEventStream', (request: FastifyRequest, reply: FastifyReply, onEnd: () => void): EventStream => {
    const { caller } = request;
    const userId = caller.user.id;
    let streams = openByUser.get(userId);
    if (streams && streams.size >= maxPerUser) {
      throw new ProblemError(429, 'TOO_MANY_STREAMS', `At most ${maxPerUser} event streams may be open at once; close one first.`, {
        headers: { 'retry-after': String(RETRY_AFTER_SECONDS) },
      });
    }
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
    let expiryTimer: NodeJS.Timeout | undefined;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(keepalive);
      clearTimeout(expiryTimer);
      streams?.delete(stream);
      if (streams?.size === 0) openByUser.delete(userId);
      raw.end();
      onEnd();
    };
    const checkAt = (expiresAt: Date | null) => {
      clearTimeout(expiryTimer);
      if (expiresAt === null) return;
      expiryTimer = setTimeout(recheck, Math.min(Math.max(0, expiresAt.getTime() - Date.now()), MAX_TIMER_MS));
      expiryTimer.unref();
    };
    /** Verifies the request's credential again (the caller cache was just told, or it expired). */
    let checking: Promise<void> | undefined;
    let checkAgain = false;
    function recheck() {
      if (ended) return;
      if (checking) {
        checkAgain = true;
        return;
      }
      checking = verifyShared(request)
        .then((current) => (current?.user.id === userId ? checkAt(current.expiresAt) : end()))
        // A database that cannot answer now revokes nothing: the next notification or expiry checks again.
        .catch((error: unknown) => request.log.warn({ err: error }, 'event stream could not re-check its caller'))
        .finally(() => {
          checking = undefined;
          if (checkAgain) {
            checkAgain = false;
            recheck();
          }
        });
    }
    const stream: OpenStream = { end, recheck };
    if (!streams) openByUser.set(userId, (streams = new Set()));
    streams.add(stream);
    checkAt(caller.expiresAt);
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

/**
 * What a verification of the request's caller reads (reverifyCaller: the API key headers, else the
 * session cookie): streams with equal values get the same answer, so they may share one.
 */
function credentialKeyOf(request: FastifyRequest): string {
  const { authorization, cookie } = request.headers;
  return JSON.stringify([authorization ?? null, request.headers['x-api-key'] ?? null, cookie ?? null]);
}

/** The CORS and security headers hooks already put on the reply (a hijacked reply skips the rest). */
function inheritedHeaders(reply: FastifyReply): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return headers;
}

export default fp(eventStreamsPlugin, {
  name: 'autonode-event-streams',
  fastify: '5.x',
  dependencies: ['autonode-admission', 'autonode-bus', 'autonode-auth'],
});
