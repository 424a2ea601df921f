import { randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { canonicalJson, sha256 } from '../src/lib/http.js';
import { variableSecretBinding } from '../src/secrets/bindings.js';
import { buildTestApp, expectProblem, logsOf, signUp, type SignedInUser } from './helpers.js';

interface StoredVariable {
  key: string;
  value_type: string | null;
  value_text: string | null;
  secret: boolean;
  secret_key_id: string | null;
  secret_ciphertext: string | null;
  version: number;
}

/** A value nested `depth` arrays deep. */
const nested = (depth: number): unknown => {
  let value: unknown = 'bottom';
  for (let level = 0; level < depth; level++) value = [value];
  return value;
};

describe('variables', () => {
  let app: App;
  let alice: SignedInUser;
  const as = (user: SignedInUser) => ({ cookie: user.cookie });

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const uniqueKey = (prefix = 'VAR') => `${prefix}_${randomUUID().replaceAll('-', '')}`;
  const create = (payload: Record<string, unknown>, user = alice, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/api/v1/variables', headers: { ...as(user), ...headers }, payload });
  const read = (id: string, user = alice) => app.inject({ url: `/api/v1/variables/${id}`, headers: as(user) });
  const patch = (id: string, payload: Record<string, unknown>, headers: Record<string, string> = {}, user = alice) =>
    app.inject({ method: 'PATCH', url: `/api/v1/variables/${id}`, headers: { ...as(user), ...headers }, payload });
  const listAll = async (user = alice, query = '') => {
    const items: Record<string, unknown>[] = [];
    let cursor: string | null = null;
    do {
      const response: LightMyRequestResponse = await app.inject({
        url: `/api/v1/variables?pageSize=100${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
        headers: as(user),
      });
      expect(response.statusCode).toBe(200);
      const page = response.json<{ items: Record<string, unknown>[]; nextCursor: string | null }>();
      items.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    return items;
  };
  const storedRow = async (id: string): Promise<StoredVariable | undefined> => {
    const [row] = await app.database.sql<StoredVariable[]>`
      select key, jsonb_typeof(value) as value_type, value::text as value_text, secret, secret_key_id, secret_ciphertext, version
        from variables where id = ${id}`;
    return row;
  };

  describe('plain values round-trip exactly', () => {
    it.each<[string, unknown, string]>([
      ['a string', 'hello', 'string'],
      ['an empty string', '', 'string'],
      ['a string that looks like an object', '{"a":1}', 'string'],
      ['a string that looks like a number', '42', 'string'],
      ['a string that looks like a quoted string', '"quoted"', 'string'],
      ['a string that looks like null', 'null', 'string'],
      ['a string that looks like true', 'true', 'string'],
      ['a string outside the BMP', 'emoji 😀 and ünïcode', 'string'],
      ['an integer', 42, 'number'],
      ['a negative fraction', -12.5, 'number'],
      ['zero', 0, 'number'],
      ['true', true, 'boolean'],
      ['false', false, 'boolean'],
      ['null', null, 'null'],
      ['an empty array', [], 'array'],
      ['an array of every type', [1, 'two', null, false, { three: [3] }], 'array'],
      ['an empty object', {}, 'object'],
      ['a nested object', { b: { c: [1, { d: 'e' }] }, a: null, 'key with spaces': '"x"' }, 'object'],
    ])('%s', async (_name, value, jsonType) => {
      const created = await create({ key: uniqueKey(), value });
      expect(created.statusCode).toBe(201);
      const body = created.json();
      expect(body).toHaveProperty('value');
      expect(body.value).toStrictEqual(value);
      expect(body.secret).toBe(false);

      expect((await read(body.id)).json().value).toStrictEqual(value);
      expect((await listAll()).find((item) => item.id === body.id)?.value).toStrictEqual(value);

      // Stored as the JSON value itself (a string stays a jsonb string; null is jsonb null, not SQL NULL).
      const row = await storedRow(body.id);
      expect(row).toMatchObject({ value_type: jsonType, secret: false, secret_key_id: null, secret_ciphertext: null });
      expect(JSON.parse(row?.value_text ?? 'undefined')).toStrictEqual(value);

      // Written again through PATCH, and a PATCH of the key alone keeps it.
      const rewritten = await patch(body.id, { value });
      expect(rewritten.statusCode).toBe(200);
      expect(rewritten.json().value).toStrictEqual(value);
      const rekeyed = await patch(body.id, { key: uniqueKey() });
      expect(rekeyed.json().value).toStrictEqual(value);
      expect((await storedRow(body.id))?.value_type).toBe(jsonType);
    });

    it('a value nested as deep as a body may be round-trips; deeper bodies are refused (400 JSON_TOO_DEEP)', async () => {
      const deep = nested(60);
      const created = await create({ key: uniqueKey(), value: deep });
      expect(created.statusCode).toBe(201);
      expect((await read(created.json().id)).json().value).toStrictEqual(deep);
      expect(expectProblem(await create({ key: uniqueKey(), value: nested(70) }), 400).code).toBe('JSON_TOO_DEEP');
    });

    it('refuses a value PostgreSQL cannot store (a NUL character) with 400, not 500', async () => {
      expect(expectProblem(await create({ key: uniqueKey(), value: 'nul \u0000 here' }), 400).code).toBe('UNSTORABLE_VALUE');
    });
  });

  describe('secrets', () => {
    it('never show their value: not in the answer, GET, the list, a PATCH, a replay, the logs or the row', async () => {
      const secretValue = `s3cr3t-${randomUUID()}`;
      const key = uniqueKey('TOKEN');
      const idempotencyKey = randomUUID();
      const responses: LightMyRequestResponse[] = [];

      const created = await create({ key, value: secretValue, secret: true }, alice, { 'idempotency-key': idempotencyKey });
      responses.push(created);
      expect(created.statusCode).toBe(201);
      const body = created.json();
      expect(body).toMatchObject({ key, secret: true });
      expect(body).not.toHaveProperty('value');
      expect(created.headers.location).toBe(`/api/v1/variables/${body.id}`);
      expect(created.headers.etag).toBe('"1"');

      const fetched = await read(body.id);
      responses.push(fetched);
      expect(fetched.json()).not.toHaveProperty('value');
      expect(fetched.json()).toMatchObject({ id: body.id, key, secret: true });
      const listed = (await listAll()).find((item) => item.id === body.id);
      expect(listed).toMatchObject({ key, secret: true });
      expect(listed).not.toHaveProperty('value');

      const replayed = await create({ key, value: secretValue, secret: true }, alice, { 'idempotency-key': idempotencyKey });
      responses.push(replayed);
      expect(replayed.statusCode).toBe(201);
      expect(replayed.json()).toEqual(body);
      expect(replayed.json()).not.toHaveProperty('value');
      expect(replayed.headers.etag).toBe('"1"');
      // Another value under the same key is another request.
      expect(expectProblem(await create({ key, value: `${secretValue}-2`, secret: true }, alice, { 'idempotency-key': idempotencyKey }), 409).code).toBe(
        'IDEMPOTENCY_KEY_REUSED',
      );

      const renamed = await patch(body.id, { key: `${key}_RENAMED` });
      responses.push(renamed);
      expect(renamed.statusCode).toBe(200);
      expect(renamed.json()).toMatchObject({ key: `${key}_RENAMED`, secret: true });
      expect(renamed.json()).not.toHaveProperty('value');

      // A key taken by a secret: the 409 does not carry the value sent either.
      const taken = await create({ key: `${key}_RENAMED`, value: secretValue, secret: true });
      responses.push(taken);
      expect(expectProblem(taken, 409).code).toBe('NAME_TAKEN');

      // The row: sealed to itself and its owner, the value column null, the ciphertext not the value.
      const row = await storedRow(body.id);
      expect(row).toMatchObject({ value_type: null, value_text: null, secret: true, secret_key_id: app.keyring.primaryKeyId });
      expect(row?.secret_ciphertext).toBeTruthy();
      expect(row?.secret_ciphertext).not.toContain(secretValue);
      expect(Buffer.from(row?.secret_ciphertext ?? '', 'base64url').includes(Buffer.from(secretValue))).toBe(false);
      const sealed = { keyId: row?.secret_key_id ?? '', ciphertext: row?.secret_ciphertext ?? '' };
      expect(app.keyring.open(sealed, variableSecretBinding({ id: body.id, userId: alice.id }))).toBe(secretValue);

      // The idempotency record keeps neither the value nor a plain hash of a body that contains it.
      const [kept] = await app.database.sql<{ request_hash: string; response: string }[]>`
        select request_hash, response_body::text as response from idempotency_keys where user_id = ${alice.id} and key = ${idempotencyKey}`;
      expect(kept?.response).not.toContain(secretValue);
      expect(kept?.request_hash).not.toBe(sha256(canonicalJson({ body: { key, value: secretValue, secret: true }, query: {} })));
      expect(kept?.request_hash).not.toBe(sha256(canonicalJson({ body: { key, value: secretValue, secret: true }, query: null })));
      // The value is stood for by the keyring's fingerprint of it (HMAC under a key derived from SECRETS_KEYS' first key).
      const fingerprinted = { key, value: { keyedDigest: app.keyring.fingerprint(secretValue) }, secret: true };
      expect(kept?.request_hash).toBe(sha256(canonicalJson({ body: fingerprinted, query: {} })));

      for (const response of responses) expect(response.body).not.toContain(secretValue);
      expect(logsOf(app)).not.toContain(secretValue);
      expect(logsOf(app)).not.toContain(row?.secret_ciphertext);
    });

    it('a new value for a secret is sealed in its place: the variable stays secret', async () => {
      const created = (await create({ key: uniqueKey(), value: 'first-secret-value', secret: true })).json();
      const before = await storedRow(created.id);
      const secondValue = `second-${randomUUID()}`;
      const changed = await patch(created.id, { value: secondValue });
      expect(changed.statusCode).toBe(200);
      expect(changed.json()).toMatchObject({ secret: true });
      expect(changed.json()).not.toHaveProperty('value');
      expect(changed.body).not.toContain(secondValue);
      const after = await storedRow(created.id);
      expect(after).toMatchObject({ value_text: null, secret: true, version: 2 });
      expect(after?.secret_ciphertext).not.toBe(before?.secret_ciphertext);
      expect(app.keyring.open({ keyId: after?.secret_key_id ?? '', ciphertext: after?.secret_ciphertext ?? '' }, variableSecretBinding({ id: created.id, userId: alice.id }))).toBe(
        secondValue,
      );
      expect(logsOf(app)).not.toContain(secondValue);

      // A value sent for a secret is checked as a secret: a number is not one.
      const refused = expectProblem(await patch(created.id, { value: 42 }), 400);
      expect(refused.errors).toEqual([expect.objectContaining({ path: 'value', message: expect.stringMatching(/must be a string/) })]);
      // Restating the current kind is not a change of it.
      expect((await patch(created.id, { secret: true })).statusCode).toBe(200);
    });

    it('`secret` changes only with a new value: plain to secret drops the plain value, secret to plain takes the new one', async () => {
      const plainValue = `plain-${randomUUID()}`;
      const created = (await create({ key: uniqueKey(), value: plainValue })).json();

      const without = expectProblem(await patch(created.id, { secret: true }), 400);
      expect(without.errors).toEqual([expect.objectContaining({ path: 'secret' })]);
      expect(await storedRow(created.id)).toMatchObject({ secret: false, value_text: JSON.stringify(plainValue), version: 1 });

      // The new value must be one a secret can have.
      expect(expectProblem(await patch(created.id, { secret: true, value: { not: 'a string' } }), 400).errors).toEqual([
        expect.objectContaining({ path: 'value' }),
      ]);

      const secretValue = `now-secret-${randomUUID()}`;
      const sealed = await patch(created.id, { secret: true, value: secretValue });
      expect(sealed.statusCode).toBe(200);
      expect(sealed.json()).toMatchObject({ secret: true });
      expect(sealed.json()).not.toHaveProperty('value');
      const row = await storedRow(created.id);
      expect(row).toMatchObject({ secret: true, value_text: null });
      expect(JSON.stringify(row)).not.toContain(plainValue);
      expect(JSON.stringify(row)).not.toContain(secretValue);

      const stillSecret = expectProblem(await patch(created.id, { secret: false }), 400);
      expect(stillSecret.errors).toEqual([expect.objectContaining({ path: 'secret' })]);
      expect((await read(created.id)).json()).not.toHaveProperty('value');

      const unsealed = await patch(created.id, { secret: false, value: ['plain', 'again'] });
      expect(unsealed.statusCode).toBe(200);
      expect(unsealed.json()).toMatchObject({ secret: false, value: ['plain', 'again'] });
      expect(await storedRow(created.id)).toMatchObject({ secret: false, value_type: 'array', secret_key_id: null, secret_ciphertext: null });
    });
  });

  describe('bounds', () => {
    it('a plain value may take 64 KiB as UTF-8 JSON text, not one byte more', async () => {
      // A string of n one-byte characters is n + 2 bytes as JSON (its quotes).
      const justFits = 'a'.repeat(65_536 - 2);
      const fits = await create({ key: uniqueKey(), value: justFits });
      expect(fits.statusCode).toBe(201);
      expect((await read(fits.json().id)).json().value).toBe(justFits);

      const tooBig = expectProblem(await create({ key: uniqueKey(), value: `${justFits}a` }), 400);
      expect(tooBig.errors).toEqual([{ path: 'value', message: 'the value is 65537 bytes as JSON text; at most 65536 (64 KiB) are allowed' }]);

      // Measured in UTF-8 bytes, not characters: 'é' takes two.
      const twoByteCharacters = 'é'.repeat(32_767);
      expect((await create({ key: uniqueKey(), value: twoByteCharacters })).statusCode).toBe(201);
      expect(expectProblem(await create({ key: uniqueKey(), value: `${twoByteCharacters}é` }), 400).errors).toEqual([
        expect.objectContaining({ path: 'value', message: expect.stringContaining('65538 bytes') }),
      ]);

      // The same bound on PATCH.
      expect(expectProblem(await patch(fits.json().id, { value: { big: justFits } }), 400).errors).toEqual([expect.objectContaining({ path: 'value' })]);
    });

    it('a secret is a non-empty string of valid Unicode, at most 8192 bytes as UTF-8', async () => {
      // 8192 bytes, however many characters: one, two or four bytes each.
      for (const value of ['x'.repeat(8192), 'é'.repeat(4096), '😀'.repeat(2048)]) {
        const created = await create({ key: uniqueKey(), value, secret: true });
        expect(created.statusCode, created.body).toBe(201);
        const row = await storedRow(created.json().id);
        const sealed = { keyId: row?.secret_key_id ?? '', ciphertext: row?.secret_ciphertext ?? '' };
        expect(app.keyring.open(sealed, variableSecretBinding({ id: created.json().id, userId: alice.id }))).toBe(value);
      }
      const refusals: [unknown, RegExp][] = [
        ['x'.repeat(8193), /^a secret variable’s value is 8193 bytes as UTF-8; at most 8192 \(8 KiB\) are allowed$/],
        ['é'.repeat(4097), /is 8194 bytes as UTF-8; at most 8192/],
        [`${'😀'.repeat(2048)}x`, /is 8193 bytes as UTF-8; at most 8192/],
        ['', /must not be empty/],
        [12345, /must be a string/],
        [null, /must be a string/],
        [{ token: 'x' }, /must be a string/],
        ['lone \uD800 surrogate', /unpaired surrogate/],
      ];
      for (const [value, message] of refusals) {
        const problem = expectProblem(await create({ key: uniqueKey(), value, secret: true }), 400);
        expect(problem.errors).toEqual([expect.objectContaining({ path: 'value', message: expect.stringMatching(message) })]);
      }
      // The same rule for a value sent to a secret variable, with and without `secret`.
      const secret = (await create({ key: uniqueKey(), value: 'short', secret: true })).json();
      for (const body of [{ value: 'é'.repeat(4097) }, { value: 'é'.repeat(4097), secret: true }, { value: 'lone \uDC00' }]) {
        expect(expectProblem(await patch(secret.id, body), 400).errors).toEqual([expect.objectContaining({ path: 'value' })]);
      }
      expect((await storedRow(secret.id))?.version).toBe(1);
    });

    it.each(['1abc', 'a-b', '', 'a b', 'é', 'a'.repeat(65), 'dotted.key', '$vars'])('refuses the key %j', async (key) => {
      const problem = expectProblem(await create({ key, value: 1 }), 400);
      expect(problem.errors).toEqual([expect.objectContaining({ path: 'key' })]);
    });

    it('accepts keys of letters, digits and _ up to 64 characters', async () => {
      for (const key of [`_${randomUUID().slice(0, 8)}`, `A${'b'.repeat(63)}`, `x1_${randomUUID().slice(0, 8)}`]) {
        expect((await create({ key, value: key })).statusCode).toBe(201);
      }
    });

    it('bodies are strict: unknown fields, a missing value and an empty PATCH are 400', async () => {
      for (const field of ['userId', 'id', 'createdAt', 'version', 'secretCiphertext', 'vaule']) {
        const problem = expectProblem(await create({ key: uniqueKey(), value: 1, [field]: 'x' }), 400);
        expect(problem.errors).toEqual([expect.objectContaining({ path: field })]);
      }
      const missing = expectProblem(await create({ key: uniqueKey() }), 400);
      expect(missing.errors).toEqual([expect.objectContaining({ path: 'value', message: expect.stringMatching(/required/) })]);

      const id = (await create({ key: uniqueKey(), value: 1 })).json().id;
      expect(expectProblem(await patch(id, { id: randomUUID() }), 400).errors).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'id' })]));
      expectProblem(await patch(id, {}), 400);
      expect((await read(id)).headers.etag).toBe('"1"');
    });
  });

  it('keys are unique per user: 409 NAME_TAKEN on create and on a re-key; another user may use the same key', async () => {
    const key = uniqueKey('SHARED');
    const first = (await create({ key, value: 'first' })).json();
    const again = expectProblem(await create({ key, value: 'second' }), 409);
    expect(again).toMatchObject({ code: 'NAME_TAKEN', detail: expect.stringContaining(key) });

    const other = (await create({ key: uniqueKey(), value: 'other' })).json();
    expect(expectProblem(await patch(other.id, { key }), 409).code).toBe('NAME_TAKEN');
    expect((await read(other.id)).json()).toMatchObject({ key: other.key, value: 'other' });
    expect((await read(first.id)).json()).toMatchObject({ key, value: 'first' });
    // Re-keying to its own key is no conflict.
    expect((await patch(first.id, { key })).statusCode).toBe(200);

    const bob = await signUp(app);
    expect((await create({ key, value: 'bob’s' }, bob)).statusCode).toBe(201);
  });

  it('sends ETags; a PATCH or DELETE with a stale If-Match is 412 and changes nothing', async () => {
    const created = await create({ key: uniqueKey(), value: 'v1' });
    const id = created.json().id;
    expect(created.headers.etag).toBe('"1"');
    expect((await read(id)).headers.etag).toBe('"1"');

    const changed = await patch(id, { value: 'v2' }, { 'if-match': '"1"' });
    expect(changed.statusCode).toBe(200);
    expect(changed.headers.etag).toBe('"2"');
    expect(changed.json()).not.toHaveProperty('version');

    expect(expectProblem(await patch(id, { value: 'v3' }, { 'if-match': '"1"' }), 412).code).toBe('PRECONDITION_FAILED');
    expect((await read(id)).json().value).toBe('v2');
    expectProblem(await app.inject({ method: 'DELETE', url: `/api/v1/variables/${id}`, headers: { ...as(alice), 'if-match': '"1"' } }), 412);
    expect((await read(id)).statusCode).toBe(200);

    expect((await app.inject({ method: 'DELETE', url: `/api/v1/variables/${id}`, headers: { ...as(alice), 'if-match': '"2"' } })).statusCode).toBe(204);
    expectProblem(await read(id), 404);
    expectProblem(await app.inject({ method: 'DELETE', url: `/api/v1/variables/${id}`, headers: as(alice) }), 404);
  });

  it('honours Idempotency-Key: the same body returns the first variable, another body is 409', async () => {
    const idempotencyKey = randomUUID();
    const key = uniqueKey();
    const first = await create({ key, value: { n: 1 } }, alice, { 'idempotency-key': idempotencyKey });
    expect(first.statusCode).toBe(201);
    const again = await create({ value: { n: 1 }, key }, alice, { 'idempotency-key': idempotencyKey });
    expect(again.statusCode).toBe(201);
    expect(again.json()).toEqual(first.json());
    expect(again.headers.location).toBe(first.headers.location);
    expect(again.headers.etag).toBe('"1"');
    expect((await listAll(alice, `&searchQuery=${key}`)).map((item) => item.id)).toEqual([first.json().id]);

    expect(expectProblem(await create({ key, value: { n: 2 } }, alice, { 'idempotency-key': idempotencyKey }), 409).code).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  it('lists with the common contract: pages, cursors, sorting by key, dates, search on the key', async () => {
    const owner = await signUp(app);
    const keys = ['beta_one', 'Alpha_two', 'gamma_THREE', 'delta_four', 'AB_C', 'ABXC'];
    const created: { id: string; key: string }[] = [];
    for (const key of keys) created.push((await create({ key, value: key }, owner)).json());

    const byKeyAsc = await listAll(owner, '&sortBy=key&sortDirection=asc');
    const expectedOrder = (await app.database.sql<{ key: string }[]>`select key from variables where user_id = ${owner.id} order by key asc, id asc`).map((row) => row.key);
    expect(byKeyAsc.map((item) => item.key)).toEqual(expectedOrder);

    // Two at a time, newest first by default, walks every row once.
    const walked: string[] = [];
    let cursor: string | null = null;
    do {
      const response: LightMyRequestResponse = await app.inject({ url: `/api/v1/variables?pageSize=2${cursor ? `&cursor=${cursor}` : ''}`, headers: as(owner) });
      const page = response.json<{ items: { key: string }[]; hasNext: boolean; nextCursor: string | null }>();
      expect(page.items.length).toBeLessThanOrEqual(2);
      walked.push(...page.items.map((item) => item.key));
      cursor = page.nextCursor;
      expect(page.hasNext).toBe(cursor !== null);
    } while (cursor);
    const newestFirst = (await app.database.sql<{ key: string }[]>`select key from variables where user_id = ${owner.id} order by created_at desc, id desc`).map((row) => row.key);
    expect(walked).toEqual(newestFirst);
    expect([...walked].sort()).toEqual([...keys].sort());

    // Page numbers, and sorting by key descending.
    const second = (await app.inject({ url: '/api/v1/variables?pageSize=2&page=2&sortBy=key&sortDirection=desc', headers: as(owner) })).json();
    expect(second.items.map((item: { key: string }) => item.key)).toEqual([...expectedOrder].reverse().slice(2, 4));

    // The most recently updated first.
    await patch(created[0]?.id ?? '', { value: 'touched' }, {}, owner);
    expect((await listAll(owner, '&sortBy=updatedAt'))[0]?.key).toBe('beta_one');

    // Search: a case-insensitive substring of the key, `_` a character and not a wildcard.
    expect((await listAll(owner, '&searchQuery=THREE')).map((item) => item.key)).toEqual(['gamma_THREE']);
    expect((await listAll(owner, '&searchQuery=alpha')).map((item) => item.key)).toEqual(['Alpha_two']);
    expect((await listAll(owner, '&searchQuery=b_c')).map((item) => item.key)).toEqual(['AB_C']);
    // The value is not searched.
    expect(await listAll(owner, '&searchQuery=touched')).toEqual([]);

    for (const query of ['sortBy=name', 'pageSize=0', 'pageSize=101', 'page=1&cursor=abc', 'cursor=not-a-cursor', 'unknown=1']) {
      expectProblem(await app.inject({ url: `/api/v1/variables?${query}`, headers: as(owner) }), 400);
    }
  });

  it('another user’s variable is a 404 on GET, PATCH and DELETE and absent from their list', async () => {
    const mine = (await create({ key: uniqueKey(), value: 'alice’s' })).json();
    const bob = await signUp(app);
    expect(expectProblem(await read(mine.id, bob), 404).code).toBe('NOT_FOUND');
    expectProblem(await patch(mine.id, { value: 'bob was here' }, {}, bob), 404);
    expectProblem(await patch(mine.id, { value: 'bob was here' }, { 'if-match': '"1"' }, bob), 404);
    expectProblem(await app.inject({ method: 'DELETE', url: `/api/v1/variables/${mine.id}`, headers: as(bob) }), 404);
    expect(await listAll(bob)).toEqual([]);
    expect(await listAll(bob, `&searchQuery=${mine.key}`)).toEqual([]);

    const unchanged = await read(mine.id);
    expect(unchanged.json()).toMatchObject({ value: 'alice’s' });
    expect(unchanged.headers.etag).toBe('"1"');
  });

  it('GET /usage counts the caller’s variables as they come and go', async () => {
    const owner = await signUp(app);
    const usage = async () => (await app.inject({ url: '/api/v1/usage', headers: as(owner) })).json<{ variables: number; payloadBytes: number }>();
    expect(await usage()).toMatchObject({ variables: 0, payloadBytes: 0 });

    const plain = (await create({ key: 'PLAIN', value: 'x'.repeat(100) }, owner)).json();
    await create({ key: 'SECRET', value: 'y'.repeat(100), secret: true }, owner);
    const withTwo = await usage();
    expect(withTwo.variables).toBe(2);
    // Keys and the plain value's text, plus the sealed secret.
    expect(withTwo.payloadBytes).toBeGreaterThan('PLAINSECRET'.length + 102 + 100);

    await patch(plain.id, { value: 'x' }, {}, owner);
    const shrunk = await usage();
    expect(shrunk.variables).toBe(2);
    expect(shrunk.payloadBytes).toBe(withTwo.payloadBytes - 99);

    expect((await app.inject({ method: 'DELETE', url: `/api/v1/variables/${plain.id}`, headers: as(owner) })).statusCode).toBe(204);
    expect((await usage()).variables).toBe(1);
  });
});

describe('variable limits', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp({ VARIABLES_PER_USER: '2', USER_STORAGE_MAX_BYTES: '1024' });
  });
  afterAll(async () => {
    await app.close();
  });

  const creator = (user: SignedInUser) => (payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload });

  it('refuses a variable beyond VARIABLES_PER_USER with 409 VARIABLE_LIMIT_REACHED, even when asked all at once', async () => {
    const user = await signUp(app);
    const create = creator(user);
    const answers = await Promise.all(Array.from({ length: 5 }, (_, index) => create({ key: `K${index}`, value: index })));
    expect(answers.map((answer) => answer.statusCode).sort()).toEqual([201, 201, 409, 409, 409]);
    const refused = answers.find((answer) => answer.statusCode === 409);
    expect(expectProblem(refused as LightMyRequestResponse, 409).code).toBe('VARIABLE_LIMIT_REACHED');
    const page = (await app.inject({ url: '/api/v1/variables', headers: { cookie: user.cookie } })).json();
    expect(page.items).toHaveLength(2);

    // Another user has a limit of their own; a deleted variable makes room.
    expect((await creator(await signUp(app))({ key: 'K0', value: 0 })).statusCode).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/variables/${page.items[0].id}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
    expect((await create({ key: 'K9', value: 9 })).statusCode).toBe(201);
  });

  it('refuses a creation once the caller’s storage is at its quota (409 STORAGE_QUOTA_EXCEEDED)', async () => {
    const create = creator(await signUp(app));
    expect((await create({ key: 'BIG', value: 'x'.repeat(2_000) })).statusCode).toBe(201);
    expect(expectProblem(await create({ key: 'SMALL', value: 1 }), 409).code).toBe('STORAGE_QUOTA_EXCEEDED');
  });

  it('refuses a change once the caller’s storage is at its quota (409 STORAGE_QUOTA_EXCEEDED); another user’s variable stays a 404', async () => {
    const owner = await signUp(app);
    const small = (await creator(owner)({ key: 'SMALL', value: 1 })).json();
    const patchAs = (user: SignedInUser, id: string, value: unknown) =>
      app.inject({ method: 'PATCH', url: `/api/v1/variables/${id}`, headers: { cookie: user.cookie }, payload: { value } });
    // Under the quota, a change may take it past: what is stored is checked before, as for a creation.
    expect((await patchAs(owner, small.id, 'x'.repeat(2_000))).statusCode).toBe(200);
    expect(expectProblem(await patchAs(owner, small.id, 'y'.repeat(2_000)), 409).code).toBe('STORAGE_QUOTA_EXCEEDED');
    const stored = (await app.inject({ url: `/api/v1/variables/${small.id}`, headers: { cookie: owner.cookie } })).json();
    expect(stored.value).toBe('x'.repeat(2_000));

    // A user at the quota changing someone else's variable: not theirs, so 404, not 409.
    const theirs = (await creator(await signUp(app))({ key: 'THEIRS', value: 1 })).json();
    expect(expectProblem(await patchAs(owner, theirs.id, 2), 404).code).toBe('NOT_FOUND');
  });
});
