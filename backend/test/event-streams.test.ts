import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createWorkflow, runWorkflow } from './engine-helpers.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';

const trustedOrigin = 'http://localhost:8100';
/**
 * A run that stays open: no engine of this file runs it, and if another test file's engine (same
 * database) claims it, it pauses at the delay for ten minutes instead of ending its streams.
 */
const waitingGraph = {
  nodes: [
    { id: 'start', type: 'trigger.manual' },
    { id: 'wait', type: 'delay', params: { ms: 600_000 } },
  ],
  edges: [{ source: 'start', target: 'wait' }],
};

/** An open event stream: resolves `ended` with the text it received once the server ends it. */
interface OpenedStream {
  readonly status: number;
  readonly ended: Promise<string>;
}

/**
 * No engine runs in these apps, so an execution stays `pending` and its stream stays open until
 * something else ends it: what these tests are about.
 */
async function openStream(app: App, executionId: string, headers: Record<string, string>): Promise<OpenedStream> {
  const response = await app.inject({ url: `/api/v1/executions/${executionId}/events`, headers, payloadAsStream: true });
  if (response.statusCode !== 200) return { status: response.statusCode, ended: Promise.resolve(response.body) };
  const body = response.stream() as Readable;
  const ended = (async () => {
    let text = '';
    for await (const chunk of body) text += String(chunk);
    return text;
  })();
  return { status: 200, ended };
}

/** Resolves with how long `promise` took, or rejects after `limitMs`. */
async function msUntil(promise: Promise<unknown>, limitMs: number): Promise<number> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise,
    new Promise((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs))),
  ]).finally(() => clearTimeout(timer));
  return Date.now() - started;
}

describe('event streams', () => {
  let app: App;
  let alice: SignedInUser;
  let bob: SignedInUser;

  beforeAll(async () => {
    // A cache lifetime far past the test's limits: only the revocation itself can end the streams in time.
    app = await buildTestApp({ EVENT_STREAMS_PER_USER: '2', AUTH_CACHE_TTL_MS: '60000' });
    alice = await signUp(app);
    bob = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  it('caps the streams one user holds open (429 with Retry-After), without touching another user', async () => {
    const execution = await runWorkflow(app, alice, await createWorkflow(app, alice, waitingGraph));
    const first = await openStream(app, execution.id, { cookie: alice.cookie });
    const second = await openStream(app, execution.id, { cookie: alice.cookie });
    expect([first.status, second.status]).toEqual([200, 200]);

    const refused = await app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: alice.cookie } });
    expect(expectProblem(refused, 429).code).toBe('TOO_MANY_STREAMS');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);

    const bobsExecution = await runWorkflow(app, bob, await createWorkflow(app, bob, waitingGraph));
    const bobs = await openStream(app, bobsExecution.id, { cookie: bob.cookie });
    expect(bobs.status).toBe(200);

    // Streams that end give their places back.
    const cancel = await app.inject({ method: 'POST', url: `/api/v1/executions/${execution.id}/cancel`, headers: { cookie: alice.cookie } });
    expect(cancel.statusCode).toBe(200);
    await Promise.all([first.ended, second.ended]);
    const another = await runWorkflow(app, alice, await createWorkflow(app, alice, waitingGraph));
    const again = await openStream(app, another.id, { cookie: alice.cookie });
    expect(again.status).toBe(200);
    await app.inject({ method: 'POST', url: `/api/v1/executions/${another.id}/cancel`, headers: { cookie: alice.cookie } });
    await app.inject({ method: 'POST', url: `/api/v1/executions/${bobsExecution.id}/cancel`, headers: { cookie: bob.cookie } });
    await Promise.all([again.ended, bobs.ended]);
  });

  it('ends a stream as soon as its API key is revoked or its session signed out, long before the cache would forget them', async () => {
    const execution = await runWorkflow(app, alice, await createWorkflow(app, alice, waitingGraph));
    const key = (
      await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: alice.cookie }, payload: { name: 'streaming' } })
    ).json<{ id: string; key: string }>();
    const byKey = await openStream(app, execution.id, { 'x-api-key': key.key });
    const bySession = await openStream(app, execution.id, { cookie: alice.cookie });
    expect([byKey.status, bySession.status]).toEqual([200, 200]);

    const revoke = await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: { cookie: alice.cookie } });
    expect(revoke.statusCode).toBe(204);
    expect(await msUntil(byKey.ended, 2_000)).toBeLessThan(2_000);

    const signOut = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-out',
      headers: { cookie: alice.cookie, origin: trustedOrigin, 'content-type': 'application/json' },
      payload: {},
    });
    expect(signOut.statusCode).toBe(200);
    expect(await msUntil(bySession.ended, 2_000)).toBeLessThan(2_000);
    // What the stream sent before it ended was the opening state only.
    expect(await byKey.ended).toContain('event: execution');
  });

  it('ends every stream of a revoked API key, which share one verification of it', async () => {
    const execution = await runWorkflow(app, bob, await createWorkflow(app, bob, waitingGraph));
    const key = (
      await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: bob.cookie }, payload: { name: 'shared' } })
    ).json<{ id: string; key: string }>();
    const streams = [await openStream(app, execution.id, { 'x-api-key': key.key }), await openStream(app, execution.id, { 'x-api-key': key.key })];
    expect(streams.map((stream) => stream.status)).toEqual([200, 200]);

    const revoke = await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: { cookie: bob.cookie } });
    expect(revoke.statusCode).toBe(204);
    for (const stream of streams) expect(await msUntil(stream.ended, 2_000)).toBeLessThan(2_000);
  });

  it('ends a stream when its API key expires', async () => {
    const execution = await runWorkflow(app, bob, await createWorkflow(app, bob, waitingGraph));
    const expiresAt = new Date(Date.now() + 1_500).toISOString();
    const key = (
      await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: bob.cookie }, payload: { name: 'short', expiresAt } })
    ).json<{ key: string }>();
    const stream = await openStream(app, execution.id, { 'x-api-key': key.key });
    expect(stream.status).toBe(200);
    await msUntil(stream.ended, 5_000);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(expiresAt));
  });
});
