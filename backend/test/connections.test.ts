import { randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { App } from '../src/app.js';
import { canonicalJson, sha256 } from '../src/lib/http.js';
import { connectionSecretBinding } from '../src/secrets/bindings.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, logsOf, signUp, type SignedInUser } from './helpers.js';

interface ConnectionView {
  id: string;
  name: string;
  description: string;
  baseUrl: string;
  headers: Record<string, string>;
  auth: { type: string; username?: string; name?: string; secretSet: boolean };
  version: number;
  lastUsedAt: string | null;
  createdAt: string;
  updatedAt: string;
}

interface StoredSecret {
  secretKeyId: string | null;
  secretCiphertext: string | null;
}
/** The stored secret, and the base URL its origin is bound to. */
interface StoredConnection extends StoredSecret {
  baseUrl: string;
}

/** Every fresh secret any test sent: none may appear in any response body or log line. */
const sentSecrets: string[] = [];
/** A secret no response, log line or ciphertext can contain by chance. */
const freshSecret = (label = 'secret') => {
  const secret = `${label}-${randomUUID()}`;
  sentSecrets.push(secret);
  return secret;
};
/** A name unique in the whole run (names are unique per user; users are fresh per test anyway). */
const freshName = (prefix = 'conn') => `${prefix}-${randomUUID().slice(0, 8)}`;

describe('connections', () => {
  let app: App;
  let alice: SignedInUser;
  let bob: SignedInUser;
  /** Every response body any test received. */
  const responseBodies: string[] = [];

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
    bob = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const send = async (user: SignedInUser, options: { method?: 'GET' | 'POST' | 'PATCH' | 'DELETE'; url: string; payload?: unknown; headers?: Record<string, string> }) => {
    const response = await app.inject({
      method: options.method ?? 'GET',
      url: options.url,
      headers: { cookie: user.cookie, ...options.headers },
      ...(options.payload === undefined ? {} : { payload: options.payload as Record<string, unknown> }),
    });
    responseBodies.push(response.body);
    return response;
  };
  const create = (user: SignedInUser, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    send(user, { method: 'POST', url: '/api/v1/connections', payload: body, headers });
  const patch = (user: SignedInUser, id: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    send(user, { method: 'PATCH', url: `/api/v1/connections/${id}`, payload: body, headers });
  const read = (user: SignedInUser, id: string) => send(user, { url: `/api/v1/connections/${id}` });
  const remove = (user: SignedInUser, id: string, headers: Record<string, string> = {}) =>
    send(user, { method: 'DELETE', url: `/api/v1/connections/${id}`, headers });
  const listOf = async (user: SignedInUser, query = '') => {
    const response = await send(user, { url: `/api/v1/connections${query}` });
    expect(response.statusCode, response.body).toBe(200);
    return response.json<{ items: ConnectionView[]; hasNext: boolean; nextCursor: string | null }>();
  };
  const created = async (user: SignedInUser, body: Record<string, unknown>): Promise<ConnectionView> => {
    const response = await create(user, body);
    expect(response.statusCode, response.body).toBe(201);
    return response.json<ConnectionView>();
  };
  /** Resolves once a statement locking a connection row FOR UPDATE waits on another transaction's lock. */
  const waitForLockWaiter = async () => {
    for (let attempt = 0; attempt < 200; attempt++) {
      const [row] = await app.database.sql<{ waiting: number }[]>`
        select count(*)::int as waiting from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock' and query ilike '%from "connections"%for update%'`;
      if ((row?.waiting ?? 0) > 0) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error('no request waited on the connection row lock');
  };
  const storedConnectionOf = async (id: string): Promise<StoredConnection> => {
    const [row] = await app.database.sql<StoredConnection[]>`
      select secret_key_id as "secretKeyId", secret_ciphertext as "secretCiphertext", base_url as "baseUrl" from connections where id = ${id}`;
    if (!row) throw new Error(`no connection row ${id}`);
    return row;
  };
  const storedSecretOf = async (id: string): Promise<StoredSecret> => {
    const { secretKeyId, secretCiphertext } = await storedConnectionOf(id);
    return { secretKeyId, secretCiphertext };
  };
  /** Opens the connection's stored secret as the engine does: bound to its row, owner and stored base URL's origin. */
  const openStored = async (id: string, user: SignedInUser) => {
    const stored = await storedConnectionOf(id);
    return app.keyring.open(
      { keyId: stored.secretKeyId ?? '', ciphertext: stored.secretCiphertext ?? '' },
      connectionSecretBinding({ id, userId: user.id, baseUrl: stored.baseUrl }),
    );
  };

  const authCases = [
    { type: 'none', auth: () => ({ type: 'none' }), shown: { type: 'none', secretSet: false } },
    { type: 'bearer', auth: () => ({ type: 'bearer', secret: freshSecret('token') }), shown: { type: 'bearer', secretSet: true } },
    { type: 'basic', auth: () => ({ type: 'basic', username: 'robot', secret: freshSecret('password') }), shown: { type: 'basic', username: 'robot', secretSet: true } },
    { type: 'header', auth: () => ({ type: 'header', name: 'X-Api-Key', secret: freshSecret('key') }), shown: { type: 'header', name: 'x-api-key', secretSet: true } },
    { type: 'query', auth: () => ({ type: 'query', name: 'api_key', secret: freshSecret('query') }), shown: { type: 'query', name: 'api_key', secretSet: true } },
  ] as const;

  it.each(authCases)('creates, reads, lists, changes and deletes a connection with $type auth, never answering its secret', async ({ auth, shown }) => {
    const sentAuth: { type: string; secret?: string } = auth();
    const name = freshName('crud');
    const response = await create(alice, {
      name,
      description: 'the example API',
      baseUrl: 'https://api.example.com/v1/',
      headers: { Accept: 'application/json' },
      auth: sentAuth,
    });
    expect(response.statusCode, response.body).toBe(201);
    const connection = response.json<ConnectionView>();
    expect(response.headers.location).toBe(`/api/v1/connections/${connection.id}`);
    expect(response.headers.etag).toBe('"1"');
    expect(connection).toEqual({
      id: expect.any(String),
      name,
      description: 'the example API',
      baseUrl: 'https://api.example.com/v1/',
      headers: { accept: 'application/json' },
      auth: shown,
      version: 1,
      lastUsedAt: null,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });

    const fetched = await read(alice, connection.id);
    expect(fetched.statusCode).toBe(200);
    expect(fetched.headers.etag).toBe('"1"');
    expect(fetched.json()).toEqual(connection);
    expect((await listOf(alice, `?searchQuery=${name}`)).items).toEqual([connection]);

    const changed = await patch(alice, connection.id, { description: 'renamed API', baseUrl: 'https://api.example.com/v2' }, { 'if-match': '"1"' });
    expect(changed.statusCode, changed.body).toBe(200);
    expect(changed.headers.etag).toBe('"2"');
    expect(changed.json()).toMatchObject({ description: 'renamed API', baseUrl: 'https://api.example.com/v2', auth: shown, version: 2 });

    const stored = await storedSecretOf(connection.id);
    if (sentAuth.secret === undefined) {
      expect(stored).toEqual({ secretKeyId: null, secretCiphertext: null });
    } else {
      expect(stored.secretCiphertext).not.toContain(sentAuth.secret);
      expect(await openStored(connection.id, alice)).toBe(sentAuth.secret);
      for (const body of [response.body, fetched.body, changed.body]) expect(body).not.toContain(sentAuth.secret);
    }

    expect((await remove(alice, connection.id, { 'if-match': '"2"' })).statusCode).toBe(204);
    expectProblem(await read(alice, connection.id), 404);
  });

  it('normalises what it stores: the base URL as the URL parser writes it, header names lower-case', async () => {
    const connection = await created(alice, {
      name: freshName('normal'),
      baseUrl: 'HTTPS://API.Example.COM:443/a/../v1',
      headers: { 'X-Trace': 'on', 'User-Agent': 'autonode' },
    });
    expect(connection.baseUrl).toBe('https://api.example.com/v1');
    expect(connection.headers).toEqual({ 'x-trace': 'on', 'user-agent': 'autonode' });
    expect(connection.auth).toEqual({ type: 'none', secretSet: false });
    expect(connection.description).toBe('');
  });

  it('keeps the stored secret on a PATCH without one, replaces it with a new one, and clears it with auth none', async () => {
    const firstSecret = freshSecret('first');
    const connection = await created(alice, { name: freshName('rotate'), baseUrl: 'https://api.example.com', auth: { type: 'bearer', secret: firstSecret } });
    const first = await storedSecretOf(connection.id);
    expect(first.secretCiphertext).not.toBeNull();
    expect(first.secretCiphertext).not.toContain(firstSecret);
    expect(first.secretCiphertext).not.toContain(Buffer.from(firstSecret).toString('base64url'));
    expect(first.secretCiphertext).not.toContain(Buffer.from(firstSecret).toString('base64'));

    // Without a secret: other fields change, the ciphertext is the very same.
    const described = await patch(alice, connection.id, { description: 'no secret here' });
    expect(described.statusCode, described.body).toBe(200);
    expect(await storedSecretOf(connection.id)).toEqual(first);
    // The same type again without a secret keeps it too.
    const sameType = await patch(alice, connection.id, { auth: { type: 'bearer' } });
    expect(sameType.json().auth).toEqual({ type: 'bearer', secretSet: true });
    expect(await storedSecretOf(connection.id)).toEqual(first);
    // Another type without a secret keeps the stored one as that type's secret.
    const asHeader = await patch(alice, connection.id, { auth: { type: 'header', name: 'X-Token' } });
    expect(asHeader.statusCode, asHeader.body).toBe(200);
    expect(asHeader.json().auth).toEqual({ type: 'header', name: 'x-token', secretSet: true });
    expect(await storedSecretOf(connection.id)).toEqual(first);

    const secondSecret = freshSecret('second');
    const replaced = await patch(alice, connection.id, { auth: { type: 'header', name: 'x-token', secret: secondSecret } });
    expect(replaced.statusCode, replaced.body).toBe(200);
    expect(replaced.body).not.toContain(secondSecret);
    const second = await storedSecretOf(connection.id);
    expect(second.secretCiphertext).not.toBe(first.secretCiphertext);
    expect(second.secretCiphertext).not.toContain(secondSecret);
    expect(await openStored(connection.id, alice)).toBe(secondSecret);

    const cleared = await patch(alice, connection.id, { auth: { type: 'none' } });
    expect(cleared.json().auth).toEqual({ type: 'none', secretSet: false });
    expect(await storedSecretOf(connection.id)).toEqual({ secretKeyId: null, secretCiphertext: null });

    // Nothing stored to keep: a type that needs a secret must bring one.
    const problem = expectProblem(await patch(alice, connection.id, { auth: { type: 'basic', username: 'robot' } }), 400);
    expect(problem.errors).toEqual([expect.objectContaining({ path: 'auth.secret' })]);
    expect((await read(alice, connection.id)).json().auth).toEqual({ type: 'none', secretSet: false });
  });

  it('refuses to keep a stored secret for a type whose rule it breaks (a query value with a line break as a header)', async () => {
    const multiline = `${freshSecret('line')}\nsecond line`;
    const connection = await created(alice, { name: freshName('multiline'), baseUrl: 'https://api.example.com', auth: { type: 'query', name: 'key', secret: multiline } });
    const before = await storedSecretOf(connection.id);
    const problem = expectProblem(await patch(alice, connection.id, { auth: { type: 'bearer' } }), 400);
    expect(problem.errors).toEqual([expect.objectContaining({ path: 'auth.secret' })]);
    expect(JSON.stringify(problem)).not.toContain(multiline.slice(0, 20));
    expect(await storedSecretOf(connection.id)).toEqual(before);
    expect((await read(alice, connection.id)).json().auth).toEqual({ type: 'query', name: 'key', secretSet: true });
    // Basic allows neither; a query type change keeps it fine.
    expectProblem(await patch(alice, connection.id, { auth: { type: 'basic', username: 'robot' } }), 400);
    expect((await patch(alice, connection.id, { auth: { type: 'query', name: 'token' } })).statusCode).toBe(200);
    expect(await openStored(connection.id, alice)).toBe(multiline);
  });

  const validBody = () => ({ name: freshName('valid'), baseUrl: 'https://api.example.com' });

  it('keeps the secret when the baseUrl changes within its origin; another origin takes a new secret or auth none (400 naming auth.secret)', async () => {
    const firstSecret = freshSecret('origin');
    const connection = await created(alice, { name: freshName('origin'), baseUrl: 'https://api.example.com/v1', auth: { type: 'bearer', secret: firstSecret } });
    const first = await storedSecretOf(connection.id);

    // Another path, or the same origin spelt otherwise: the secret stays, sealed as it was, and opens.
    for (const baseUrl of ['https://api.example.com/v2/', 'HTTPS://API.example.com:443/v3']) {
      const moved = await patch(alice, connection.id, { baseUrl });
      expect(moved.statusCode, moved.body).toBe(200);
      expect(await storedSecretOf(connection.id)).toEqual(first);
      expect(await openStored(connection.id, alice)).toBe(firstSecret);
    }
    const beforeRefusals = (await read(alice, connection.id)).json<ConnectionView>();
    expect(beforeRefusals.baseUrl).toBe('https://api.example.com/v3');

    // Another host, scheme or port, alone or with an auth that keeps the stored secret: refused, nothing changes.
    for (const body of [
      { baseUrl: 'https://attacker.example.net/v3' },
      { baseUrl: 'http://api.example.com/v3' },
      { baseUrl: 'https://api.example.com:8443/v3' },
      { baseUrl: 'https://attacker.example.net', description: 'and a description' },
      { baseUrl: 'https://attacker.example.net', auth: { type: 'bearer' } },
      { baseUrl: 'https://attacker.example.net', auth: { type: 'header', name: 'x-token' } },
    ]) {
      const problem = expectProblem(await patch(alice, connection.id, body), 400);
      expect(problem.code).toBe('VALIDATION_FAILED');
      expect(problem.errors).toEqual([{ path: 'auth.secret', message: expect.stringMatching(/^is required when baseUrl moves to another origin \(https:\/\/api\.example\.com to /) }]);
    }
    expect((await read(alice, connection.id)).json()).toEqual(beforeRefusals);
    expect(await storedSecretOf(connection.id)).toEqual(first);

    // With a new secret: it is sealed to the new origin, and the old one is gone.
    const secondSecret = freshSecret('elsewhere');
    const moved = await patch(alice, connection.id, { baseUrl: 'https://other.example.org', auth: { type: 'bearer', secret: secondSecret } });
    expect(moved.statusCode, moved.body).toBe(200);
    expect(moved.json()).toMatchObject({ baseUrl: 'https://other.example.org/', auth: { type: 'bearer', secretSet: true } });
    expect((await storedSecretOf(connection.id)).secretCiphertext).not.toBe(first.secretCiphertext);
    expect(await openStored(connection.id, alice)).toBe(secondSecret);

    // With auth none: nothing is kept to send anywhere.
    const cleared = await patch(alice, connection.id, { baseUrl: 'https://third.example.org', auth: { type: 'none' } });
    expect(cleared.statusCode, cleared.body).toBe(200);
    expect(await storedSecretOf(connection.id)).toEqual({ secretKeyId: null, secretCiphertext: null });
    // Without a secret, the origin may change freely.
    expect((await patch(alice, connection.id, { baseUrl: 'https://fourth.example.org' })).statusCode).toBe(200);
  });

  const LONE = '\uD800';
  it.each([
    ['a basic password', { auth: { type: 'basic', username: 'robot', secret: `pass${LONE}word` } }, 'auth.secret'],
    ['a query secret', { auth: { type: 'query', name: 'key', secret: `value${LONE}` } }, 'auth.secret'],
    ['a bearer token', { auth: { type: 'bearer', secret: `token${LONE}` } }, 'auth.secret'],
    ['a basic username', { auth: { type: 'basic', username: `ro${LONE}bot`, secret: 'pw' } }, 'auth.username'],
    ['a query parameter name', { auth: { type: 'query', name: `ke${LONE}y`, secret: 's' } }, 'auth.name'],
    ['a plain header value', { headers: { 'x-trace': `on${LONE}` } }, 'headers.x-trace'],
  ])('refuses a lone surrogate in %s (UTF-8 would store U+FFFD instead), on create and on change', async (_case, fields, path) => {
    const before = (await listOf(alice, '?pageSize=100')).items.length;
    const refused = expectProblem(await create(alice, { ...validBody(), ...fields }), 400);
    expect(refused.errors).toEqual(expect.arrayContaining([{ path, message: 'must be valid Unicode text (it contains an unpaired surrogate)' }]));
    expect((await listOf(alice, '?pageSize=100')).items.length).toBe(before);

    const connection = await created(alice, validBody());
    const refusedChange = expectProblem(await patch(alice, connection.id, fields), 400);
    expect(refusedChange.errors).toEqual(expect.arrayContaining([{ path, message: expect.stringContaining('unpaired surrogate') }]));
    expect((await read(alice, connection.id)).json()).toEqual(connection);
  });

  it('takes a secret of up to 8192 bytes as UTF-8, whatever its length in characters', async () => {
    const fits = [
      'a'.repeat(8192),
      // Two bytes each.
      'é'.repeat(4096),
      // Four bytes each (two UTF-16 code units).
      '😀'.repeat(2048),
    ];
    for (const secret of fits) {
      const connection = await created(alice, { ...validBody(), auth: { type: 'query', name: 'key', secret } });
      expect(await openStored(connection.id, alice)).toBe(secret);
    }
    for (const [secret, bytes] of [['é'.repeat(4097), 8194], ['😀'.repeat(2048) + 'a', 8193], ['a'.repeat(8193), 8193]] as const) {
      const problem = expectProblem(await create(alice, { ...validBody(), auth: { type: 'query', name: 'key', secret } }), 400);
      expect(problem.errors).toEqual([{ path: 'auth.secret', message: `is ${bytes} bytes as UTF-8; at most 8192 (8 KiB) are allowed` }]);
    }
    const connection = await created(alice, validBody());
    expect(expectProblem(await patch(alice, connection.id, { auth: { type: 'basic', username: 'u', secret: 'é'.repeat(4097) } }), 400).errors).toEqual([
      expect.objectContaining({ path: 'auth.secret', message: expect.stringContaining('8194 bytes') }),
    ]);
  });

  it.each([
    ['an upper-case name', { name: 'GitHub' }, 'name'],
    ['a name starting with a digit', { name: '1api' }, 'name'],
    ['a name of 64 characters', { name: `a${'b'.repeat(63)}` }, 'name'],
    ['a base URL with credentials', { baseUrl: 'https://user:pass@api.example.com' }, 'baseUrl'],
    ['a base URL with a user only', { baseUrl: 'https://user@api.example.com' }, 'baseUrl'],
    ['a base URL with a query', { baseUrl: 'https://api.example.com/v1?key=1' }, 'baseUrl'],
    ['a base URL with an empty query', { baseUrl: 'https://api.example.com/v1?' }, 'baseUrl'],
    ['a base URL with a fragment', { baseUrl: 'https://api.example.com/v1#top' }, 'baseUrl'],
    ['an ftp base URL', { baseUrl: 'ftp://files.example.com' }, 'baseUrl'],
    ['a relative base URL', { baseUrl: '/v1' }, 'baseUrl'],
    ['a base URL with a tab', { baseUrl: 'https://api.exa\tmple.com' }, 'baseUrl'],
    ['a base URL longer than 2048', { baseUrl: `https://api.example.com/${'a'.repeat(2048)}` }, 'baseUrl'],
    ['a header value with CRLF', { headers: { 'x-trace': 'on\r\nx-injected: yes' } }, 'headers.x-trace'],
    ['a header value with LF', { headers: { 'x-trace': 'on\nmore' } }, 'headers.x-trace'],
    ['a header name with a space', { headers: { 'x trace': 'on' } }, 'headers.x trace'],
    ['a Host header', { headers: { Host: 'evil.example' } }, 'headers.Host'],
    ['a Content-Length header', { headers: { 'content-length': '5' } }, 'headers.content-length'],
    ['a Transfer-Encoding header', { headers: { 'transfer-encoding': 'chunked' } }, 'headers.transfer-encoding'],
    ['a Connection header', { headers: { connection: 'close' } }, 'headers.connection'],
    ['an Authorization plain header', { headers: { Authorization: 'Bearer abc' } }, 'headers.Authorization'],
    ['one header name in two spellings', { headers: { 'x-trace': 'a', 'X-Trace': 'b' } }, 'headers.X-Trace'],
    ['51 headers', { headers: Object.fromEntries(Array.from({ length: 51 }, (_, index) => [`x-h${index}`, 'v'])) }, 'headers'],
    ['an unknown field', { userId: 'someone' }, 'userId'],
    ['a description over 2000 characters', { description: 'd'.repeat(2001) }, 'description'],
    ['a description with a NUL', { description: 'a\u0000b' }, 'description'],
    ['an unknown auth type', { auth: { type: 'oauth', secret: 's' } }, 'auth.type'],
    ['basic without a username', { auth: { type: 'basic', secret: 'pw' } }, 'auth.username'],
    ['basic with a colon in the username', { auth: { type: 'basic', username: 'a:b', secret: 'pw' } }, 'auth.username'],
    ['bearer without a secret', { auth: { type: 'bearer' } }, 'auth.secret'],
    ['bearer with an empty secret', { auth: { type: 'bearer', secret: '' } }, 'auth.secret'],
    ['bearer with a CRLF in the secret', { auth: { type: 'bearer', secret: 'abc\r\nx-injected: yes' } }, 'auth.secret'],
    ['basic with a line break in the password', { auth: { type: 'basic', username: 'u', secret: 'pw\nx' } }, 'auth.secret'],
    ['header with a CR in the secret', { auth: { type: 'header', name: 'x-key', secret: 'abc\rdef' } }, 'auth.secret'],
    ['a secret over 8192 bytes', { auth: { type: 'query', name: 'key', secret: 's'.repeat(8193) } }, 'auth.secret'],
    ['bearer with a username', { auth: { type: 'bearer', username: 'u', secret: 's' } }, 'auth.username'],
    ['header auth without a name', { auth: { type: 'header', secret: 's' } }, 'auth.name'],
    ['header auth naming Host', { auth: { type: 'header', name: 'host', secret: 's' } }, 'auth.name'],
    ['header auth naming a non-token', { auth: { type: 'header', name: 'x:key', secret: 's' } }, 'auth.name'],
    ['query auth with a name over 128', { auth: { type: 'query', name: 'q'.repeat(129), secret: 's' } }, 'auth.name'],
    ['query auth with a line break in the name', { auth: { type: 'query', name: 'a\nb', secret: 's' } }, 'auth.name'],
    ['none with a secret', { auth: { type: 'none', secret: 's' } }, 'auth.secret'],
    ['a plain header repeating the auth header', { headers: { 'X-Key': 'plain' }, auth: { type: 'header', name: 'x-key', secret: 's' } }, 'headers.x-key'],
  ])('refuses %s with 400 naming the field', async (_case, fields, path) => {
    const before = (await listOf(alice, '?pageSize=100')).items.length;
    const response = await create(alice, { ...validBody(), ...fields });
    const problem = expectProblem(response, 400);
    expect(problem.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path })]));
    expect((await listOf(alice, '?pageSize=100')).items.length).toBe(before);
  });

  it('refuses an invalid change with 400 and changes nothing; refuses an empty PATCH', async () => {
    const connection = await created(alice, { name: freshName('patch400'), baseUrl: 'https://api.example.com' });
    for (const body of [{}, { baseUrl: 'http://u:p@api.example.com' }, { headers: { 'x-a': 'b\r\nc' } }, { id: randomUUID() }, { auth: { type: 'header', name: 'te' } }]) {
      expectProblem(await patch(alice, connection.id, body), 400);
    }
    expect((await read(alice, connection.id)).json()).toEqual(connection);
  });

  it('answers 409 NAME_TAKEN for a name the user already has, on create and on rename; another user may use it', async () => {
    const name = freshName('taken');
    const first = await created(alice, { name, baseUrl: 'https://one.example.com' });
    expect(expectProblem(await create(alice, { name, baseUrl: 'https://two.example.com' }), 409).code).toBe('NAME_TAKEN');
    expect((await listOf(alice, `?searchQuery=${name}`)).items).toHaveLength(1);

    const other = await created(alice, { name: freshName('other'), baseUrl: 'https://two.example.com' });
    expect(expectProblem(await patch(alice, other.id, { name }), 409).code).toBe('NAME_TAKEN');
    expect((await read(alice, other.id)).json()).toEqual(other);
    // Renaming to its own name is no conflict.
    expect((await patch(alice, first.id, { name })).statusCode).toBe(200);

    expect((await create(bob, { name, baseUrl: 'https://bob.example.com' })).statusCode).toBe(201);
  });

  it('honours If-Match: a stale ETag is 412 on PATCH and DELETE and changes nothing', async () => {
    const connection = await created(alice, { name: freshName('etag'), baseUrl: 'https://api.example.com', auth: { type: 'bearer', secret: freshSecret() } });
    const changed = await patch(alice, connection.id, { description: 'v2' }, { 'if-match': '"1"' });
    expect(changed.headers.etag).toBe('"2"');
    const stored = await storedSecretOf(connection.id);

    expect(expectProblem(await patch(alice, connection.id, { description: 'stale', auth: { type: 'bearer', secret: freshSecret() } }, { 'if-match': '"1"' }), 412).code).toBe(
      'PRECONDITION_FAILED',
    );
    expectProblem(await remove(alice, connection.id, { 'if-match': '"1"' }), 412);
    const current = await read(alice, connection.id);
    expect(current.json()).toMatchObject({ description: 'v2', version: 2 });
    expect(current.headers.etag).toBe('"2"');
    expect(await storedSecretOf(connection.id)).toEqual(stored);

    expect((await remove(alice, connection.id, { 'if-match': '"2"' })).statusCode).toBe(204);
  });

  it('replays a creation with the same Idempotency-Key and body, without the secret; another body (even only another secret) is 409', async () => {
    const user = await signUp(app);
    const key = `create-${randomUUID()}`;
    const secret = freshSecret('idem');
    const body = { name: freshName('idem'), description: '', baseUrl: 'https://api.example.com/', headers: {}, auth: { type: 'basic', username: 'robot', secret } };
    const first = await create(user, body, { 'idempotency-key': key });
    expect(first.statusCode, first.body).toBe(201);
    const replay = await create(user, body, { 'idempotency-key': key });
    expect(replay.statusCode).toBe(201);
    expect(replay.json()).toEqual(first.json());
    expect(replay.headers.location).toBe(first.headers.location);
    expect(replay.headers.etag).toBe('"1"');
    for (const response of [first, replay]) expect(response.body).not.toContain(secret);
    expect((await listOf(user)).items).toHaveLength(1);

    const otherSecret = await create(user, { ...body, auth: { ...body.auth, secret: freshSecret('other') } }, { 'idempotency-key': key });
    expect(expectProblem(otherSecret, 409).code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(expectProblem(await create(user, { ...body, description: 'other' }, { 'idempotency-key': key }), 409).code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect((await listOf(user)).items).toHaveLength(1);

    // What the key keeps for 24 h is no plain hash of the body: it could confirm a guessed password.
    const [stored] = await app.database.sql<{ requestHash: string; responseBody: unknown }[]>`
      select request_hash as "requestHash", response_body as "responseBody" from idempotency_keys where user_id = ${user.id} and key = ${key}`;
    expect(stored?.requestHash).toMatch(/^[0-9a-f]{64}$/);
    expect(stored?.requestHash).not.toBe(sha256(canonicalJson({ body, query: {} })));
    // The secret is stood for by the keyring's fingerprint of it (HMAC under a key derived from SECRETS_KEYS' first key).
    const fingerprinted = { ...body, auth: { ...body.auth, secret: { keyedDigest: app.keyring.fingerprint(secret) } } };
    expect(stored?.requestHash).toBe(sha256(canonicalJson({ body: fingerprinted, query: {} })));
    expect(JSON.stringify(stored?.responseBody)).not.toContain(secret);
  });

  it('lists with the common contract: pages by cursor and by number, sorts by name, searches name and description', async () => {
    const user = await signUp(app);
    const names = ['delta', 'alpha', 'echo', 'charlie', 'bravo'];
    for (const name of names) await created(user, { name, description: name === 'echo' ? 'The Billing API' : '', baseUrl: 'https://api.example.com' });

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await listOf(user, `?pageSize=2&sortBy=name&sortDirection=asc${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.items.map((item) => item.name));
      cursor = page.nextCursor;
      expect(page.hasNext).toBe(cursor !== null);
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual(['alpha', 'bravo', 'charlie', 'delta', 'echo']);

    const newestFirst = await listOf(user);
    expect(newestFirst.items.map((item) => item.name)).toEqual([...names].reverse());
    expect((await listOf(user, '?pageSize=2&page=2&sortBy=name&sortDirection=desc')).items.map((item) => item.name)).toEqual(['charlie', 'bravo']);
    expect((await listOf(user, '?searchQuery=billing')).items.map((item) => item.name)).toEqual(['echo']);
    expect((await listOf(user, '?searchQuery=RAV')).items.map((item) => item.name)).toEqual(['bravo']);
    expect((await listOf(user, '?searchQuery=%25')).items).toEqual([]);

    expectProblem(await send(user, { url: '/api/v1/connections?sortBy=baseUrl' }), 400);
    expectProblem(await send(user, { url: '/api/v1/connections?pageSize=101' }), 400);
    expectProblem(await send(user, { url: '/api/v1/connections?page=1&cursor=abc' }), 400);
  });

  it('treats another user’s connection as missing: 404 on GET, PATCH and DELETE, absent from their list', async () => {
    const secret = freshSecret('mine');
    const connection = await created(alice, { name: freshName('private'), baseUrl: 'https://api.example.com', auth: { type: 'bearer', secret } });
    const stored = await storedSecretOf(connection.id);
    expectProblem(await read(bob, connection.id), 404);
    expectProblem(await patch(bob, connection.id, { description: 'stolen', auth: { type: 'bearer', secret: freshSecret() } }), 404);
    expectProblem(await remove(bob, connection.id), 404);
    expect((await listOf(bob, '?pageSize=100')).items.map((item) => item.id)).not.toContain(connection.id);
    expect((await listOf(bob, `?searchQuery=${connection.name}`)).items).toEqual([]);
    expect((await read(alice, connection.id)).json()).toEqual(connection);
    expect(await storedSecretOf(connection.id)).toEqual(stored);
    expectProblem(await read(alice, randomUUID()), 404);
    expectProblem(await read(alice, 'not-a-uuid'), 400);
  });

  describe('in use by a workflow', () => {
    const workflowBody = (workflowName: string, connectionName: string | undefined) => ({
      name: workflowName,
      nodes: [
        { id: 'start', type: 'trigger.manual', params: {} },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: '/x', ...(connectionName === undefined ? {} : { connection: connectionName }) } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const createWorkflow = async (user: SignedInUser, workflowName: string, connectionName: string) => {
      const response = await send(user, { method: 'POST', url: '/api/v1/workflows', payload: workflowBody(workflowName, connectionName) });
      expect(response.statusCode, response.body).toBe(201);
      return response.json<{ id: string; name: string }>();
    };

    it('refuses to delete or rename it (409 CONNECTION_IN_USE, naming the workflows) until they stop using it', async () => {
      const user = await signUp(app);
      const connection = await created(user, { name: 'billing', baseUrl: 'https://billing.example.com', auth: { type: 'bearer', secret: freshSecret() } });
      const nightly = await createWorkflow(user, 'Nightly invoices', 'billing');
      const weekly = await createWorkflow(user, 'Weekly report', 'billing');

      const refusedDelete = expectProblem(await remove(user, connection.id), 409);
      expect(refusedDelete.code).toBe('CONNECTION_IN_USE');
      expect(refusedDelete.detail).toContain(`Nightly invoices (${nightly.id})`);
      expect(refusedDelete.detail).toContain(`Weekly report (${weekly.id})`);
      expect(refusedDelete.errors).toEqual([
        { path: 'workflows[0]', message: `Nightly invoices (${nightly.id})` },
        { path: 'workflows[1]', message: `Weekly report (${weekly.id})` },
      ]);

      const refusedRename = expectProblem(await patch(user, connection.id, { name: 'billing-v2' }), 409);
      expect(refusedRename.code).toBe('CONNECTION_IN_USE');
      expect(refusedRename.detail).toContain('Nightly invoices');
      expect((await read(user, connection.id)).json()).toMatchObject({ name: 'billing', version: 1 });
      // A change that keeps the name is no rename.
      expect((await patch(user, connection.id, { name: 'billing', description: 'still used' })).statusCode).toBe(200);

      // One workflow stops using it: the other still holds it.
      const nightlyChanged = await send(user, { method: 'PATCH', url: `/api/v1/workflows/${nightly.id}`, payload: { nodes: workflowBody('', undefined).nodes } });
      expect(nightlyChanged.statusCode, nightlyChanged.body).toBe(200);
      const stillUsed = expectProblem(await remove(user, connection.id), 409);
      expect(stillUsed.errors).toEqual([{ path: 'workflows[0]', message: `Weekly report (${weekly.id})` }]);

      expect((await send(user, { method: 'DELETE', url: `/api/v1/workflows/${weekly.id}` })).statusCode).toBe(204);
      expect((await patch(user, connection.id, { name: 'billing-v2' })).statusCode).toBe(200);
      expect((await remove(user, connection.id)).statusCode).toBe(204);
      expectProblem(await read(user, connection.id), 404);
    });

    it('refuses to move it to another origin (409 CONNECTION_IN_USE), even with a new secret; within its origin it may change', async () => {
      const user = await signUp(app);
      const secret = freshSecret('in-use');
      const connection = await created(user, { name: 'payments', baseUrl: 'https://pay.example.com/v1', auth: { type: 'bearer', secret } });
      const workflow = await createWorkflow(user, 'Charge cards', 'payments');

      for (const body of [
        { baseUrl: 'https://elsewhere.example.net/v1', auth: { type: 'bearer', secret: freshSecret('moved') } },
        { baseUrl: 'https://elsewhere.example.net/v1', auth: { type: 'none' } },
      ]) {
        const refused = expectProblem(await patch(user, connection.id, body), 409);
        expect(refused.code).toBe('CONNECTION_IN_USE');
        expect(refused.detail).toContain(`Charge cards (${workflow.id})`);
        expect(refused.detail).toContain('another origin');
        expect(refused.errors).toEqual([{ path: 'workflows[0]', message: `Charge cards (${workflow.id})` }]);
      }
      expect((await read(user, connection.id)).json()).toEqual(connection);
      expect(await openStored(connection.id, user)).toBe(secret);

      // The same origin: no workflow is affected.
      expect((await patch(user, connection.id, { baseUrl: 'https://pay.example.com/v2' })).statusCode).toBe(200);
      expect(await openStored(connection.id, user)).toBe(secret);
    });

    it.skipIf(lacksConcurrentConnections()).each(['delete', 'rename', 'move'] as const)(
      'checks usage under the row lock: a %s waits for a workflow save holding the connection, then sees the new workflow',
      async (action) => {
        const user = await signUp(app);
        const connection = await created(user, { name: `raced-${action}`, baseUrl: 'https://api.example.com' });
        const nodes = workflowBody('', connection.name).nodes;
        let attempt: Promise<LightMyRequestResponse> | undefined;
        const changes = {
          delete: () => remove(user, connection.id),
          rename: () => patch(user, connection.id, { name: `${connection.name}-renamed` }),
          move: () => patch(user, connection.id, { baseUrl: 'https://moved.example.com' }),
        };
        // What a workflow save does: share-lock the connection it names, then write the workflow.
        await app.database.sql.begin(async (save) => {
          await save`select id from connections where id = ${connection.id} for key share`;
          attempt = changes[action]();
          await waitForLockWaiter();
          await save`insert into workflows (user_id, name, nodes, edges) values (${user.id}, 'Raced save', ${JSON.stringify(nodes)}::jsonb, '[]'::jsonb)`;
        });
        const refused = expectProblem(await (attempt as Promise<LightMyRequestResponse>), 409);
        expect(refused.code).toBe('CONNECTION_IN_USE');
        expect(refused.detail).toContain('Raced save');
        expect((await read(user, connection.id)).json()).toEqual(connection);
      },
    );

    it('counts only the owner’s workflows: another user’s workflow naming a connection of the same name does not hold it', async () => {
      const owner = await signUp(app);
      const neighbour = await signUp(app);
      const mine = await created(owner, { name: 'shared-name', baseUrl: 'https://api.example.com' });
      await created(neighbour, { name: 'shared-name', baseUrl: 'https://other.example.com' });
      await createWorkflow(neighbour, 'Neighbour flow', 'shared-name');
      expect((await remove(owner, mine.id)).statusCode).toBe(204);
    });
  });

  it('deletes an unused connection, which then frees its name', async () => {
    const name = freshName('unused');
    const connection = await created(alice, { name, baseUrl: 'https://api.example.com' });
    expect((await remove(alice, connection.id)).statusCode).toBe(204);
    expect((await create(alice, { name, baseUrl: 'https://api.example.com' })).statusCode).toBe(201);
  });

  it('counts connections in GET /api/v1/usage, up on create and down on delete', async () => {
    const user = await signUp(app);
    const usage = async () => (await send(user, { url: '/api/v1/usage' })).json<{ connections: number; payloadBytes: number }>();
    expect((await usage()).connections).toBe(0);
    const first = await created(user, { name: 'one', baseUrl: 'https://api.example.com', auth: { type: 'bearer', secret: freshSecret() } });
    await created(user, { name: 'two', baseUrl: 'https://api.example.com' });
    const afterCreates = await usage();
    expect(afterCreates.connections).toBe(2);
    expect(afterCreates.payloadBytes).toBeGreaterThan(0);
    expect((await remove(user, first.id)).statusCode).toBe(204);
    expect((await usage()).connections).toBe(1);
  });

  it('never writes a secret to any response body or log line', async () => {
    // Exercise the paths most likely to echo a body: a refused one, a conflicting one, a replay.
    const user = await signUp(app);
    const secret = freshSecret('logged');
    const key = `log-${randomUUID()}`;
    const body = { name: 'logged', baseUrl: 'https://api.example.com', auth: { type: 'header', name: 'x-key', secret } };
    expect((await create(user, body, { 'idempotency-key': key })).statusCode).toBe(201);
    expect((await create(user, body, { 'idempotency-key': key })).statusCode).toBe(201);
    expectProblem(await create(user, body), 409);
    expectProblem(await create(user, { ...body, name: 'Bad Name' }), 400);
    expectProblem(await create(user, { ...body, name: 'logged-crlf', auth: { ...body.auth, secret: `${secret}\r\n` } }), 400);

    // The earlier tests of this file ran first (in order): their secrets are checked too.
    expect(sentSecrets).toContain(secret);
    const logs = logsOf(app);
    expect(logs.length).toBeGreaterThan(0);
    for (const sent of sentSecrets) {
      expect(logs).not.toContain(sent);
      for (const responseBody of responseBodies) expect(responseBody).not.toContain(sent);
    }
    // Nor the sealed form: it is for the database only.
    const sealed = await app.database.sql<{ ciphertext: string }[]>`select secret_ciphertext as ciphertext from connections where secret_ciphertext is not null`;
    expect(sealed.length).toBeGreaterThan(0);
    for (const { ciphertext } of sealed) {
      expect(logs).not.toContain(ciphertext);
      for (const responseBody of responseBodies) expect(responseBody).not.toContain(ciphertext);
    }
  });
});

describe('connection limits', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp({ CONNECTIONS_PER_USER: '2', USER_STORAGE_MAX_BYTES: '4096' });
  });
  afterAll(async () => {
    await app.close();
  });

  const create = (user: SignedInUser, name: string, fields: Record<string, unknown> = {}) =>
    app.inject({ method: 'POST', url: '/api/v1/connections', headers: { cookie: user.cookie }, payload: { name, baseUrl: 'https://api.example.com', ...fields } });
  const namesOf = async (user: SignedInUser) =>
    (await app.inject({ url: '/api/v1/connections', headers: { cookie: user.cookie } })).json<{ items: ConnectionView[] }>().items.map((item) => item.name);

  it('refuses a connection beyond CONNECTIONS_PER_USER with 409 CONNECTION_LIMIT_REACHED; deleting one makes room', async () => {
    const user = await signUp(app);
    const first = (await create(user, 'one')).json<ConnectionView>();
    expect((await create(user, 'two')).statusCode).toBe(201);
    expect(expectProblem(await create(user, 'three'), 409).code).toBe('CONNECTION_LIMIT_REACHED');
    expect((await namesOf(user)).sort()).toEqual(['one', 'two']);
    // The limit is per user.
    expect((await create(await signUp(app), 'three')).statusCode).toBe(201);

    expect((await app.inject({ method: 'DELETE', url: `/api/v1/connections/${first.id}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
    expect((await create(user, 'three')).statusCode).toBe(201);
  });

  it.skipIf(lacksConcurrentConnections())('holds the limit against concurrent creations', async () => {
    const user = await signUp(app);
    const responses: LightMyRequestResponse[] = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((name) => create(user, name)));
    const statuses = responses.map((response) => response.statusCode).sort();
    expect(statuses).toEqual([201, 201, 409, 409, 409]);
    expect(await namesOf(user)).toHaveLength(2);
  });

  it('refuses a creation once the user’s stored payloads reach the storage quota (409 STORAGE_QUOTA_EXCEEDED)', async () => {
    const user = await signUp(app);
    const big = await create(user, 'big', { headers: { 'x-padding': 'p'.repeat(4_100) } });
    expect(big.statusCode, big.body).toBe(201);
    expect(expectProblem(await create(user, 'small'), 409).code).toBe('STORAGE_QUOTA_EXCEEDED');
    expect(await namesOf(user)).toEqual(['big']);
  });

  it('refuses a change once the storage quota is reached (409 STORAGE_QUOTA_EXCEEDED); another user’s connection stays a 404', async () => {
    const owner = await signUp(app);
    const small = (await create(owner, 'small')).json<ConnectionView>();
    const patchAs = (user: SignedInUser, id: string) =>
      app.inject({ method: 'PATCH', url: `/api/v1/connections/${id}`, headers: { cookie: user.cookie }, payload: { headers: { 'x-padding': 'p'.repeat(4_100) } } });
    // Under the quota, a change may take it past: what is stored is checked before, as for a creation.
    expect((await patchAs(owner, small.id)).statusCode).toBe(200);
    const refused = expectProblem(await patchAs(owner, small.id), 409);
    expect(refused.code).toBe('STORAGE_QUOTA_EXCEEDED');
    const stored = (await app.inject({ url: `/api/v1/connections/${small.id}`, headers: { cookie: owner.cookie } })).json<ConnectionView>();
    expect(stored.version).toBe(2);

    // A user at the quota changing someone else's connection: not theirs, so 404, not 409.
    const neighbour = await signUp(app);
    const theirs = (await create(neighbour, 'theirs')).json<ConnectionView>();
    expect(expectProblem(await patchAs(owner, theirs.id), 404).code).toBe('NOT_FOUND');
  });
});

describe('connection creations replayed across a key rotation', () => {
  const apps: App[] = [];
  afterAll(async () => {
    for (const app of apps) await app.close();
  });

  // A second app with other settings beside the first: the embedded database serves one connection.
  it.skipIf(lacksConcurrentConnections())('answers 409 IDEMPOTENCY_KEY_REUSED to a replay of a secret-carrying creation once another key comes first; one without a secret replays', async () => {
    const before = await buildTestApp();
    const after = await buildTestApp({ SECRETS_KEYS: `${generateKeyEntry('next')},${inject('secretsKeys')}` });
    apps.push(before, after);
    const user = await signUp(before);
    const send = (app: App, key: string, body: Record<string, unknown>) =>
      app.inject({ method: 'POST', url: '/api/v1/connections', headers: { cookie: user.cookie, 'idempotency-key': key }, payload: body });

    const withSecret = { name: 'rotated-secret', baseUrl: 'https://api.example.com', auth: { type: 'bearer', secret: freshSecret('rotated') } };
    const withoutSecret = { name: 'rotated-none', baseUrl: 'https://api.example.com' };
    const first = await send(before, 'with-secret', withSecret);
    expect(first.statusCode, first.body).toBe(201);
    expect((await send(before, 'without-secret', withoutSecret)).statusCode).toBe(201);
    // Before the rotation, the replay matches.
    expect((await send(before, 'with-secret', withSecret)).json()).toEqual(first.json());

    expect(expectProblem(await send(after, 'with-secret', withSecret), 409).code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect((await send(after, 'without-secret', withoutSecret)).statusCode).toBe(201);
  });
});
