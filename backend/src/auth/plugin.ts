import { stripSecureCookiePrefix } from 'better-auth/cookies';
import { fromNodeHeaders } from 'better-auth/node';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { sha256 } from '../lib/http.js';
import { notFound, ProblemError, unauthorized } from '../lib/problem.js';
import { hashApiKey, presentedApiKey, verifyApiKey } from './api-keys.js';
import { CLIENT_IP_HEADER, type Auth } from './auth.js';
import { CallerCache } from './caller-cache.js';
import { sendProblem } from '../plugins/errors.js';
import { problemFromAuthAnswer } from './problem-answers.js';
import type { RequestCaller, RequestUser } from './caller.js';

declare module 'fastify' {
  interface FastifyInstance {
    auth: Auth;
    callerCache: CallerCache;
    /** Drops a user's cached callers here and on every replica (after a sign-out or a revocation). */
    forgetCallers(userId: string): Promise<void>;
    authFailures: FailureCounter;
    /** The exact name of the cookie Better Auth reads the session from (with `__Secure-` in production). */
    sessionCookieName: string;
  }
  interface FastifyRequest {
    /** The caller and how it proved itself; set by `requireUser` on protected routes only. */
    caller: RequestCaller;
    /** The calling user (`caller.user`); set by `requireUser` on protected routes only. */
    user: RequestUser;
  }
}

/**
 * The request's headers as Fetch Headers, with the client address Better Auth may trust: `set`
 * replaces whatever the client sent under CLIENT_IP_HEADER.
 */
function toFetchHeaders(request: FastifyRequest): Headers {
  const headers = fromNodeHeaders(request.headers);
  headers.set(CLIENT_IP_HEADER, request.ip);
  return headers;
}

// Hop-by-hop or length headers describe the Fetch response's framing, not ours.
const skippedResponseHeaders = new Set(['content-length', 'transfer-encoding', 'connection', 'content-encoding', 'set-cookie']);

export interface AuthPluginOptions {
  readonly auth: Auth;
  /** Public API root (…/api): the origin of the URLs handed to Better Auth. */
  readonly apiBaseUrl: string;
  /** How long a verified caller is reused without a query (0: never). */
  readonly callerCacheTtlMs: number;
  /** The most memory the verified callers may hold together. */
  readonly callerCacheMaxBytes: number;
  /** Bad or missing credentials allowed per client address per minute before 429. */
  readonly failureLimitPerMinute: number;
}

/**
 * The Better Auth endpoints the product uses; every other one (social sign-in, account linking,
 * password reset and email verification without a mailer, list-sessions, delete-user, ...) is 404,
 * and so is any endpoint a later Better Auth adds, until it is listed here on purpose.
 */
const enabledAuthEndpoints: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  Object.entries({
    '/api/auth/sign-up/email': ['POST'],
    '/api/auth/sign-in/email': ['POST'],
    '/api/auth/sign-out': ['POST'],
    '/api/auth/get-session': ['GET'],
    '/api/auth/update-user': ['POST'],
    '/api/auth/change-password': ['POST'],
    '/api/auth/revoke-sessions': ['POST'],
    '/api/auth/revoke-other-sessions': ['POST'],
  }).map(([path, methods]) => [path, new Set(methods)]),
);

/**
 * A session token in a response body would hand JavaScript what the HttpOnly cookie keeps from it
 * (one XSS, every session): Better Auth's sign-in, sign-up and get-session answers carry it, so
 * every `token` field of an answer is left out. The cookie is the session.
 */
function withoutTokens(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutTokens);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).filter(([key]) => key !== 'token').map(([key, field]) => [key, withoutTokens(field)]));
}

/** Auth endpoints that only create sessions: nothing cached can be invalidated by them. */
const sessionCreatingPaths = new Set(['/api/auth/sign-in/email', '/api/auth/sign-up/email']);

async function authPlugin(app: FastifyInstance, { auth, apiBaseUrl, callerCacheTtlMs, callerCacheMaxBytes, failureLimitPerMinute }: AuthPluginOptions) {
  const { bus } = app;
  const cache = new CallerCache(callerCacheTtlMs, callerCacheMaxBytes);
  app.addHook('onClose', async () => cache.stop());
  // The name Better Auth itself derived from the options (prefix, cookiePrefix, a custom name).
  const { authCookies } = await auth.$context;
  app.decorate('sessionCookieName', authCookies.sessionToken.name);
  app.decorate('auth', auth);
  app.decorate('callerCache', cache);
  app.decorate('authFailures', new FailureCounter(failureLimitPerMinute, 60_000));
  app.decorate('forgetCallers', async (userId: string) => {
    cache.forgetUser(userId);
    await bus.publish({ kind: 'callers-changed', userId });
  });
  const unsubscribe = bus.subscribe((message) => {
    if (message.kind === 'callers-changed') cache.forgetUser(message.userId);
    // The bus reconnected: a sign-out or revocation announced meanwhile was missed.
    else if (message.kind === 'resync') cache.forgetAll();
  });
  app.addHook('onClose', async () => unsubscribe());
  // Fastify needs an initial value; outside the protected scope these stay null and are never read.
  app.decorateRequest<RequestCaller>('caller', null as unknown as RequestCaller);
  app.decorateRequest('user', null as unknown as RequestUser);

  const origin = new URL(apiBaseUrl).origin;

  // Better Auth is a Fetch handler: hand it a Request, copy its Response back. Its endpoints and
  // bodies are its own (API.md: "unchanged"), so the route is hidden from our OpenAPI document;
  // its error answers alone are rewritten, into the problem+json every error has (problem-answers.ts).
  app.route({
    method: ['GET', 'POST'],
    url: '/api/auth/*',
    schema: { hide: true },
    // The auth endpoints use the database.
    onRequest: app.admit,
    async handler(request: FastifyRequest, reply: FastifyReply) {
      const path = (request.url.split('?')[0] ?? '').replace(/\/+$/, '');
      if (!enabledAuthEndpoints.get(path)?.has(request.method)) throw notFound('endpoint');
      // Any other state-changing auth call (sign-out, revoke sessions, change password, delete user)
      // may end sessions: whose they are is known before, and the caches are told after.
      const invalidates = request.method === 'POST' && !sessionCreatingPaths.has(path);
      const userBefore = invalidates ? (await resolveCaller(request))?.user.id : undefined;
      const hasBody = request.method !== 'GET' && request.body !== undefined && request.body !== null;
      const response = await auth.handler(
        new Request(new URL(request.url, origin), {
          method: request.method,
          headers: toFetchHeaders(request),
          ...(hasBody ? { body: JSON.stringify(request.body) } : {}),
        }),
      );
      reply.code(response.status);
      response.headers.forEach((value, name) => {
        if (!skippedResponseHeaders.has(name)) reply.header(name, value);
      });
      const cookies = response.headers.getSetCookie();
      if (cookies.length > 0) reply.header('set-cookie', cookies);
      if (userBefore && response.ok) await app.forgetCallers(userBefore);
      if (response.status >= 400) {
        const answer = problemFromAuthAnswer(request, response.status, response.body ? await response.text() : '', response.headers);
        return sendProblem(reply, answer.body, answer.headers);
      }
      const text = response.body ? await response.text() : '';
      if (!response.headers.get('content-type')?.includes('json') || text === '') return reply.send(text || null);
      let answer: unknown;
      try {
        answer = JSON.parse(text);
      } catch {
        // Better Auth said JSON and sent something else: nothing of it can be vouched for.
        request.log.warn({ path }, 'Better Auth answered with a body that is not the JSON it declared');
        throw new ProblemError(502, 'BAD_GATEWAY', 'The authentication service gave an answer that could not be read.');
      }
      return reply.send(JSON.stringify(withoutTokens(answer)));
    },
  });
}

/**
 * A credential the request presents, with the key its verified caller is cached under; a session
 * cookie that is not the only one of its kind has no key (Better Auth decides, every time).
 */
type PresentedCredential =
  | { readonly via: 'apiKey'; readonly secret: string; readonly cacheKey: string }
  | { readonly via: 'session'; readonly cacheKey: string | undefined };

/**
 * The request's credential: an API key when it presents one (a bad key is refused, never passed
 * over for a cookie), else the Better Auth session cookie.
 */
function presentedCredential(request: FastifyRequest): PresentedCredential | null {
  const apiKey = presentedApiKey(request.headers);
  if (apiKey !== undefined) return { via: 'apiKey', secret: apiKey, cacheKey: `key:${hashApiKey(apiKey)}` };
  const cookie = sessionCookieOf(request.headers.cookie, request.server.sessionCookieName);
  if (cookie === undefined) return null;
  return { via: 'session', cacheKey: cookie === AMBIGUOUS ? undefined : `session:${sha256(cookie)}` };
}

/**
 * Verifies a credential that is not cached (one query, or Better Auth's session lookup), and caches
 * the caller. A session Better Auth finds due for refresh is extended in the database and its
 * cookie renewed: with `reply`, that cookie is sent, as Better Auth's own routes would send it
 * (without it, an active user's browser would drop the cookie at its first Max-Age, whatever the
 * database says).
 */
async function verifyCredential(request: FastifyRequest, credential: PresentedCredential, reply?: FastifyReply): Promise<RequestCaller | null> {
  const { callerCache } = request.server;
  const verifiedFrom = callerCache.mark();
  if (credential.via === 'apiKey') {
    const owner = await verifyApiKey(request.server.database.db, credential.secret);
    if (!owner) return null;
    const caller: RequestCaller = {
      user: { id: owner.id, name: owner.name, email: owner.email },
      via: 'apiKey',
      keyId: owner.keyId,
      expiresAt: owner.expiresAt,
    };
    callerCache.set(credential.cacheKey, caller, owner.expiresAt, verifiedFrom);
    return caller;
  }
  const { headers, response: session } = await request.server.auth.api.getSession({ headers: toFetchHeaders(request), returnHeaders: true });
  const cookies = headers.getSetCookie();
  if (reply && cookies.length > 0) reply.header('set-cookie', cookies);
  if (!session) return null;
  const { id, name, email } = session.user;
  const caller: RequestCaller = { user: { id, name, email }, via: 'session', expiresAt: new Date(session.session.expiresAt) };
  if (credential.cacheKey !== undefined) callerCache.set(credential.cacheKey, caller, caller.expiresAt, verifiedFrom);
  return caller;
}

/** The caller the request's credential proves, or null (no credential, or one that does not verify). */
export async function resolveCaller(request: FastifyRequest): Promise<RequestCaller | null> {
  const credential = presentedCredential(request);
  if (!credential) return null;
  return cachedCaller(request, credential) ?? verifyCredential(request, credential);
}

/**
 * The caller the request's credential proves now, verified again whatever the cache holds: for a
 * long-lived request (an event stream) told that its user's credentials changed.
 */
export async function reverifyCaller(request: FastifyRequest): Promise<RequestCaller | null> {
  const credential = presentedCredential(request);
  return credential ? verifyCredential(request, credential) : null;
}

function cachedCaller(request: FastifyRequest, credential: PresentedCredential): RequestCaller | undefined {
  return credential.cacheKey === undefined ? undefined : request.server.callerCache.get(credential.cacheKey);
}

/** A session cookie that is not the only one of its kind: Better Auth's verdict, never cached. */
const AMBIGUOUS = Symbol('ambiguous session cookie');

/**
 * The value of the cookie named exactly `name` (Better Auth's session cookie), as the cache key's
 * source; undefined when there is none (Better Auth reads no other name, so there is no session).
 *
 * The cache must only ever hold a caller under the credential Better Auth verified. Better Auth
 * (better-call) splits the header at `;`, trims each name and takes the FIRST cookie of the exact
 * name; this walks the header the same way. Anything that makes "the session cookie" depend on the
 * parser is AMBIGUOUS: the name twice (a planted cookie with a longer Path comes first), or beside
 * the exact name any other session-like name (`x.better-auth.session_token`, the name with or
 * without `__Secure-`, anything with `session_token`), which a looser parser (ours before, or
 * better-auth's getSessionCookie: it prefers `__Secure-` whatever the config, and keeps the LAST
 * duplicate) would take instead. Such a request is still answered, by Better Auth, as if there were
 * no cache; refusing it would let anyone who can plant a cookie lock its owner out.
 */
function sessionCookieOf(header: string | string[] | undefined, name: string): string | typeof AMBIGUOUS | undefined {
  if (header === undefined) return undefined;
  // Node joins repeated Cookie headers with `; `; an array (injected) would reach Better Auth joined by `, `.
  if (Array.isArray(header)) return AMBIGUOUS;
  const bareName = stripSecureCookiePrefix(name).toLowerCase();
  let value: string | undefined;
  let ambiguous = false;
  for (const pair of header.split(';')) {
    const separator = pair.indexOf('=');
    if (separator === -1) continue;
    const pairName = pair.slice(0, separator).trim();
    if (pairName === name) {
      if (value !== undefined) ambiguous = true;
      else value = pair.slice(separator + 1).trim();
    } else {
      const lower = pairName.toLowerCase();
      if (lower.includes('session_token') || lower.endsWith(bareName)) ambiguous = true;
    }
  }
  if (value === undefined) return undefined;
  return ambiguous ? AMBIGUOUS : value;
}

/**
 * Sets `request.caller` and `request.user`, or ends with 401. A client address that keeps failing
 * (guessing keys or cookies) gets 429 for the rest of the minute, at no database cost, for every
 * credential except those already seen valid from that address: one client behind a shared address
 * (an office's NAT, a proxy) failing cannot lock out the others who were working there.
 * Callback-style: a cached caller, the common case, costs no promise.
 */
export function requireUser(request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void {
  const failures = request.server.authFailures;
  const tooManyFailures = () =>
    done(
      new ProblemError(429, 'RATE_LIMITED', 'Too many requests without valid credentials from this address.', {
        headers: { 'retry-after': String(failures.retryAfterSeconds(request.ip)) },
      }),
    );
  const credential = presentedCredential(request);
  const cached = credential ? cachedCaller(request, credential) : undefined;
  const accept = (caller: RequestCaller | null | undefined) => {
    if (!caller) {
      if (failures.isBlocked(request.ip)) return tooManyFailures();
      failures.record(request.ip);
      return done(unauthorized());
    }
    request.caller = caller;
    request.user = caller.user;
    done();
  };
  if (cached) return accept(cached);
  if (!credential) return accept(null);
  if (failures.isBlocked(request.ip) && !failures.seenValid(request.ip, credential.cacheKey)) return tooManyFailures();
  verifyCredential(request, credential, reply).then((caller) => {
    // Remembered when verified (a cached caller was, moments ago): the hot path adds nothing. A
    // credential that no longer verifies (revoked, signed out) is forgotten: it gets no lookups more.
    if (credential.cacheKey !== undefined) {
      if (caller) failures.rememberValid(request.ip, credential.cacheKey);
      else failures.forgetValid(request.ip, credential.cacheKey);
    }
    accept(caller);
  }, done);
}

/** How long a credential seen valid from an address is let through that address's failure block. */
const SEEN_VALID_MS = 60 * 60_000;
/** Past this many remembered pairs the memory is cleared (as the failure windows are): a bound, not an accounting. */
const MAX_REMEMBERED = 100_000;

/**
 * Failures per client address in fixed windows, in memory: a brake on guessing, not an accounting.
 * It also remembers which credentials (by their cache key: a hash) were valid from which address
 * lately, so a blocked address's known users still get through.
 */
class FailureCounter {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();
  private readonly validFrom = new Map<string, number>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  record(key: string): void {
    const now = Date.now();
    const window = this.windows.get(key);
    if (!window || window.resetAt <= now) {
      if (this.windows.size > MAX_REMEMBERED) this.windows.clear();
      this.windows.set(key, { count: 1, resetAt: now + this.windowMs });
    } else {
      window.count++;
    }
  }

  isBlocked(key: string): boolean {
    const window = this.windows.get(key);
    return window !== undefined && window.resetAt > Date.now() && window.count >= this.limit;
  }

  retryAfterSeconds(key: string): number {
    const window = this.windows.get(key);
    return window ? Math.max(1, Math.ceil((window.resetAt - Date.now()) / 1000)) : 1;
  }

  rememberValid(address: string, credentialKey: string): void {
    if (this.validFrom.size > MAX_REMEMBERED) this.validFrom.clear();
    this.validFrom.set(`${address} ${credentialKey}`, Date.now() + SEEN_VALID_MS);
  }

  forgetValid(address: string, credentialKey: string): void {
    this.validFrom.delete(`${address} ${credentialKey}`);
  }

  seenValid(address: string, credentialKey: string | undefined): boolean {
    if (credentialKey === undefined) return false;
    return (this.validFrom.get(`${address} ${credentialKey}`) ?? 0) > Date.now();
  }
}

export default fp(authPlugin, { name: 'autonode-auth', fastify: '5.x', dependencies: ['autonode-db', 'autonode-bus', 'autonode-admission'] });
