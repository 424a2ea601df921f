/**
 * Key rotation (src/secrets/rotate.ts, npm run secrets:rotate): secrets sealed under one key are
 * read while a new key comes first, re-wrapped under it, and then need only it; a secret that
 * cannot be opened is named and never stops the run; a ciphertext moved to another row, table or
 * owner does not open. The rotation covers whole tables, so this file has a database of its own.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Sql } from '../src/db/client.js';
import { connectionSecretBinding, eventSubscriptionSecretBinding, variableSecretBinding } from '../src/secrets/bindings.js';
import { generateKeyEntry, Keyring, parseKeyEntries, SecretUnreadableError, type SealedSecret } from '../src/secrets/keyring.js';
import { describeRotation, rotateSecrets, rotationComplete, sealedSecretColumns, sealedSecretTables, type RotationReport } from '../src/secrets/rotate.js';
import { buildTestApp, lacksConcurrentConnections, signUp, type SignedInUser } from './helpers.js';
import { createWorkflow, runWorkflow, startEngine, stepsOf, waitForStatus } from './engine-helpers.js';
import { runScript, startServerProcess } from './process.js';
import {
  connectionOfEveryAuthType,
  createConnection,
  recognisableSecret,
  sealedRow,
  secretVariable,
  startEchoServer,
  type EchoServer,
  type SealedRow,
  type StoredSecret,
} from './secret-fixtures.js';

const keyA = generateKeyEntry('a');
const keyB = generateKeyEntry('b');
const keyC = generateKeyEntry('c');
const keyringOf = (...specs: string[]) => new Keyring(parseKeyEntries(specs.join(',')));
const BASE_URL = 'https://api.example.test';

/**
 * Opens a stored secret as the service does: the row's key id and ciphertext, bound to the row's
 * table, id and owner, and for a connection its base URL's origin.
 */
function openRow(keyring: Keyring, table: StoredSecret['table'], row: SealedRow): string {
  if (row.secret_key_id === null || row.secret_ciphertext === null) throw new Error(`${table} row ${row.id} holds no secret`);
  const sealed: SealedSecret = { keyId: row.secret_key_id, ciphertext: row.secret_ciphertext };
  const owner = { id: row.id, userId: row.user_id };
  return keyring.open(sealed, table === 'connections' ? connectionSecretBinding({ ...owner, baseUrl: row.base_url ?? '' }) : variableSecretBinding(owner));
}

function expectUnreadable(read: () => unknown): void {
  expect(read).toThrow(SecretUnreadableError);
}

/** The database URL the file's apps use, for the script run as a process. */
function databaseUrlOf(app: App): string {
  if (app.config.database.kind !== 'external') throw new Error('test apps run on a URL');
  return app.config.database.url;
}

/** The built command run as an operator runs it (npm run secrets:rotate, or in the image); `lines` is its report, without the log lines (JSON) it may write too. */
async function rotateScript(env: Record<string, string>): Promise<{ code: number | string; output: string; lines: string[] }> {
  const run = runScript('dist/rotate-secrets.js', [], { NODE_ENV: 'development', LOG_LEVEL: 'warn', ...env });
  const code = await run.exited;
  const output = run.output();
  return { code, output, lines: output.split('\n').filter((line) => line !== '' && !line.startsWith('{')) };
}

/**
 * A run of one http.request step with `params`, carried out by an engine on `service` (so with its
 * SECRETS_KEYS): how it ended, and the step's error.
 */
async function runRequest(service: App, user: SignedInUser, params: Record<string, unknown>): Promise<{ status: string; error: unknown }> {
  const engine = startEngine(service);
  try {
    const workflowId = await createWorkflow(
      service,
      user,
      { nodes: [{ id: 'start', type: 'trigger.manual', params: {} }, { id: 'call', type: 'http.request', params }], edges: [{ source: 'start', target: 'call' }] },
      `rotation ${randomUUID()}`,
    );
    const run = await runWorkflow(service, user, workflowId);
    const finished = await waitForStatus(service, user, run.id, ['completed', 'failed'], 30_000);
    return { status: finished.status, error: (await stepsOf(service, user, run.id)).call?.error ?? null };
  } finally {
    await engine.stop(5_000);
  }
}

const tableReport = (report: RotationReport, table: string) => report.tables.find((entry) => entry.table === table);

/** What the rotation reports of the event subscriptions' two secret columns in a test that stores none. */
const untouchedSubscriptions = (['secret_ciphertext', 'previous_secret_ciphertext'] as const).map((column) => ({
  table: 'event_subscriptions',
  column,
  rewrapped: 0,
  alreadyCurrent: 0,
  unreadable: [],
  notReached: 0,
}));
const NO_SUBSCRIPTION_LINES = [
  'event_subscriptions: 0 rewrapped, 0 already current, 0 unreadable',
  'event_subscriptions.previous_secret_ciphertext: 0 rewrapped, 0 already current, 0 unreadable',
];

describe('secret key rotation', () => {
  let echo: EchoServer;
  beforeAll(async () => {
    echo = await startEchoServer();
  });
  afterAll(async () => {
    await echo?.close();
  });
  const apps: App[] = [];
  /** Apps are closed by the test that built them (the script must find the embedded database's one connection free) or here. */
  const app = async (secretsKeys: string): Promise<App> => {
    const built = await buildTestApp({ SECRETS_KEYS: secretsKeys });
    apps.push(built);
    return built;
  };
  const closeApps = async () => {
    for (const open of apps.splice(0)) await open.close();
  };

  beforeEach(async () => {
    // Each test counts what the rotation finds in whole tables, so it starts with no stored secret:
    // the file's own database (on the embedded suite, the shared one, which no other file uses meanwhile).
    const cleaner = await app(keyA);
    await cleaner.database.sql`delete from connections`;
    await cleaner.database.sql`delete from variables`;
    await cleaner.database.sql`delete from event_subscriptions`;
    await closeApps();
    return closeApps;
  });

  it('covers every table, and every column, that stores a sealed secret', async () => {
    const sql = (await app(keyA)).database.sql;
    const tables = await sql<{ table_name: string }[]>`
      select table_name from information_schema.columns
      where table_schema = 'public' and column_name = 'secret_ciphertext' order by table_name`;
    expect(tables.map((row) => row.table_name)).toEqual([...sealedSecretTables].sort());
    // Any column of sealed envelopes, each with its key ids beside it.
    const columns = await sql<{ table_name: string; column_name: string; key_id_column: string | null }[]>`
      select c.table_name, c.column_name, k.column_name as key_id_column
      from information_schema.columns c
      left join information_schema.columns k
        on k.table_schema = c.table_schema and k.table_name = c.table_name and k.column_name = regexp_replace(c.column_name, '_ciphertext$', '_key_id')
      where c.table_schema = 'public' and c.column_name like '%secret_ciphertext' order by c.table_name, c.column_name`;
    const listed = sealedSecretColumns.map(({ table, column }) => ({ table_name: table, column_name: column, key_id_column: column.replace(/_ciphertext$/, '_key_id') }));
    const byName = (a: { table_name: string; column_name: string }, b: { table_name: string; column_name: string }) =>
      `${a.table_name}.${a.column_name}` < `${b.table_name}.${b.column_name}` ? -1 : 1;
    expect([...columns].sort(byName)).toEqual([...listed].sort(byName));
  });

  it('reads secrets sealed under A with B first, moves them all to B (twice changes nothing), then needs B alone', async () => {
    const appA = await app(keyA);
    const owner = await signUp(appA);
    const other = await signUp(appA);
    const secrets: StoredSecret[] = [
      ...(await connectionOfEveryAuthType(appA, owner, echo.url, 'rot')),
      await secretVariable(appA, owner, 'ROT_TOKEN', recognisableSecret('rot-variable')),
      // Same key, another owner: a row of its own, bound to its own owner.
      await secretVariable(appA, other, 'ROT_TOKEN', `ünïcödé ✓ ${recognisableSecret('rot-other')}`),
    ];
    const sqlA = appA.database.sql;
    const beforeRotation = new Map<string, SealedRow>();
    for (const secret of secrets) beforeRotation.set(secret.rowId, await sealedRow(sqlA, secret));
    expect([...beforeRotation.values()].map((row) => row.secret_key_id)).toEqual(secrets.map(() => 'a'));
    await closeApps();
    // What a run sends: a basic connection's credential, and a secret variable in a header.
    const basic = secrets.find((secret) => secret.value.startsWith('rot-basic'));
    const token = secrets.find((secret) => secret.userId === owner.id && secret.table === 'variables');
    const expectedRead = { status: 'completed', authorization: `Basic ${Buffer.from(`rot-user:${basic?.value}`).toString('base64')}`, token: token?.value };
    const readThroughRun = async (service: App, user: SignedInUser, path: string) => {
      const run = await runRequest(service, user, { method: 'GET', url: path, connection: 'rot-basic', headers: { 'x-token': '{{ $secrets.ROT_TOKEN }}' } });
      const received = echo.requests.find((request) => request.url === path);
      return { status: run.status, authorization: received?.headers.authorization, token: received?.headers['x-token'] };
    };

    // The new key first, the old one after it: what A sealed is still read, what is new is sealed under B.
    const appBA = await app(`${keyB},${keyA}`);
    const sql = appBA.database.sql;
    for (const secret of secrets) expect(openRow(appBA.keyring, secret.table, await sealedRow(sql, secret))).toBe(secret.value);
    expect(await readThroughRun(appBA, owner, '/read-with-b-first')).toEqual(expectedRead);
    const newer = await secretVariable(appBA, owner, 'ROT_NEWER', recognisableSecret('rot-newer'));
    expect((await sealedRow(sql, newer)).secret_key_id).toBe('b');

    // Batches of two: several transactions per table, each resuming after the last row taken.
    const report = await rotateSecrets(sql, appBA.keyring, { batchSize: 2 });
    expect(report).toEqual({
      primaryKeyId: 'b',
      tables: [
        { table: 'connections', column: 'secret_ciphertext', rewrapped: 4, alreadyCurrent: 0, unreadable: [], notReached: 0 },
        { table: 'variables', column: 'secret_ciphertext', rewrapped: 2, alreadyCurrent: 1, unreadable: [], notReached: 0 },
        ...untouchedSubscriptions,
      ],
    });
    expect(rotationComplete(report)).toBe(true);
    expect(describeRotation(report)).toEqual([
      'connections: 4 rewrapped, 0 already current, 0 unreadable',
      'variables: 2 rewrapped, 1 already current, 0 unreadable',
      ...NO_SUBSCRIPTION_LINES,
      "done: every secret is under key 'b'; the other keys may now leave SECRETS_KEYS",
    ]);
    const afterRotation = new Map<string, SealedRow>();
    for (const secret of secrets) {
      const before = beforeRotation.get(secret.rowId);
      const after = await sealedRow(sql, secret);
      afterRotation.set(secret.rowId, after);
      expect(after.secret_key_id).toBe('b');
      expect(after.secret_ciphertext).not.toBe(before?.secret_ciphertext);
      // Not a change of the resource: its ETag, its updated time and its stored size stay.
      expect({ version: after.version, updatedAt: after.updated_at, bytes: after.payload_bytes }).toEqual({
        version: before?.version,
        updatedAt: before?.updated_at,
        bytes: before?.payload_bytes,
      });
    }
    await closeApps();

    // The second run, as an operator runs it: a process, the service's config; it changes nothing and says so.
    const second = await rotateScript({ DATABASE_URL: databaseUrlOf(appBA), SECRETS_KEYS: `${keyB},${keyA}` });
    expect(second.lines).toEqual([
      'connections: 0 rewrapped, 4 already current, 0 unreadable',
      'variables: 0 rewrapped, 3 already current, 0 unreadable',
      ...NO_SUBSCRIPTION_LINES,
      "nothing to do: every secret is already under key 'b'",
    ]);
    expect(second.code).toBe(0);

    // A leaves SECRETS_KEYS: everything still opens with B alone, and nothing any more with A alone.
    const appB = await app(keyB);
    for (const secret of [...secrets, newer]) {
      const row = await sealedRow(appB.database.sql, secret);
      if (secret !== newer) expect(row.secret_ciphertext).toBe(afterRotation.get(secret.rowId)?.secret_ciphertext);
      expect(openRow(appB.keyring, secret.table, row)).toBe(secret.value);
      expectUnreadable(() => openRow(keyringOf(keyA), secret.table, row));
    }
    expect(await readThroughRun(appB, owner, '/read-with-b-alone')).toEqual(expectedRead);
  });

  it('moves both secrets of an event subscription (the current one and the one a rotation kept) to B, leaving the resource as it was', async () => {
    const appA = await app(keyA);
    const owner = await signUp(appA);
    const post = await appA.inject({
      method: 'POST',
      url: '/api/v1/event-subscriptions',
      headers: { cookie: owner.cookie },
      payload: { url: 'https://hooks.example.invalid/rotation', events: ['execution.failed'] },
    });
    expect(post.statusCode, post.body).toBe(201);
    const { id, secret: first } = post.json<{ id: string; secret: string }>();
    const rotated = await appA.inject({ method: 'POST', url: `/api/v1/event-subscriptions/${id}/rotate-secret`, headers: { cookie: owner.cookie } });
    expect(rotated.statusCode, rotated.body).toBe(200);
    const current = rotated.json<{ secret: string }>().secret;
    interface SubscriptionSecrets {
      secret_key_id: string;
      secret_ciphertext: string;
      previous_secret_key_id: string;
      previous_secret_ciphertext: string;
      previous_secret_expires_at: string;
      version: number;
      updated_at: string;
    }
    const read = async (sql: Sql): Promise<SubscriptionSecrets> => {
      const [row] = await sql<SubscriptionSecrets[]>`
        select secret_key_id, secret_ciphertext, previous_secret_key_id, previous_secret_ciphertext,
          previous_secret_expires_at::text, version, updated_at::text
        from event_subscriptions where id = ${id}`;
      if (!row) throw new Error('subscription missing');
      return row;
    };
    const binding = eventSubscriptionSecretBinding({ id, userId: owner.id });
    const open = (keyring: Keyring, row: SubscriptionSecrets) => [
      keyring.open({ keyId: row.secret_key_id, ciphertext: row.secret_ciphertext }, binding),
      keyring.open({ keyId: row.previous_secret_key_id, ciphertext: row.previous_secret_ciphertext }, binding),
    ];
    const before = await read(appA.database.sql);
    expect([before.secret_key_id, before.previous_secret_key_id]).toEqual(['a', 'a']);
    await closeApps();

    const appBA = await app(`${keyB},${keyA}`);
    const sql = appBA.database.sql;
    const report = await rotateSecrets(sql, appBA.keyring, { batchSize: 1 });
    expect(report.tables.filter((entry) => entry.table === 'event_subscriptions')).toEqual([
      { table: 'event_subscriptions', column: 'secret_ciphertext', rewrapped: 1, alreadyCurrent: 0, unreadable: [], notReached: 0 },
      { table: 'event_subscriptions', column: 'previous_secret_ciphertext', rewrapped: 1, alreadyCurrent: 0, unreadable: [], notReached: 0 },
    ]);
    expect(describeRotation(report)).toEqual(
      expect.arrayContaining([
        'event_subscriptions: 1 rewrapped, 0 already current, 0 unreadable',
        'event_subscriptions.previous_secret_ciphertext: 1 rewrapped, 0 already current, 0 unreadable',
      ]),
    );
    const after = await read(sql);
    expect([after.secret_key_id, after.previous_secret_key_id]).toEqual(['b', 'b']);
    // Not a change of the resource: its ETag, its updated time and the previous secret's expiry stay.
    expect({ version: after.version, updatedAt: after.updated_at, expiresAt: after.previous_secret_expires_at }).toEqual({
      version: before.version,
      updatedAt: before.updated_at,
      expiresAt: before.previous_secret_expires_at,
    });
    expect(open(keyringOf(keyB), after)).toEqual([current, first]);
    expect(() => open(keyringOf(keyA), after)).toThrow(SecretUnreadableError);
    // A second run finds both current.
    const again = await rotateSecrets(sql, appBA.keyring);
    expect(again.tables.filter((entry) => entry.table === 'event_subscriptions').map((entry) => [entry.rewrapped, entry.alreadyCurrent])).toEqual([
      [0, 1],
      [0, 1],
    ]);
  });

  it('a ciphertext copied to another row, another table or another owner does not open', async () => {
    const service = await app(`${keyB},${keyA}`);
    const sql = service.database.sql;
    const owner = await signUp(service);
    const attacker = await signUp(service);
    const [victimBearer, victimBasic] = await connectionOfEveryAuthType(service, owner, BASE_URL, 'moved');
    const attackerConnection = await createConnection(service, attacker, { name: 'mine', baseUrl: BASE_URL, auth: { type: 'bearer', secret: recognisableSecret('attacker') } });
    const attackerVariable = await secretVariable(service, attacker, 'MINE', recognisableSecret('attacker-variable'));
    if (!victimBearer || !victimBasic) throw new Error('connections missing');
    for (const secret of [victimBearer, victimBasic]) expect(openRow(service.keyring, 'connections', await sealedRow(sql, secret))).toBe(secret.value);

    // Someone who can write the database copies the victim's sealed secret into rows they can use.
    const victimRow = await sealedRow(sql, victimBearer);
    const copyVictimSecretTo = async (table: StoredSecret['table'], rowId: string): Promise<SealedRow> => {
      await sql`update ${sql(table)} set secret_key_id = ${victimRow.secret_key_id}, secret_ciphertext = ${victimRow.secret_ciphertext} where id = ${rowId}`;
      const copied = await sealedRow(sql, { table, rowId });
      expect(copied.secret_ciphertext).toBe(victimRow.secret_ciphertext);
      return copied;
    };
    // Another row of the same owner, a row of another user, a row of another table.
    const sameOwnerRow = await copyVictimSecretTo('connections', victimBasic.rowId);
    expectUnreadable(() => openRow(service.keyring, 'connections', sameOwnerRow));
    const attackerRow = await copyVictimSecretTo('connections', attackerConnection.id);
    expectUnreadable(() => openRow(service.keyring, 'connections', attackerRow));
    const variableRow = await copyVictimSecretTo('variables', attackerVariable.rowId);
    expectUnreadable(() => openRow(service.keyring, 'variables', variableRow));
    // The same row, id and all, moved to another user.
    await sql`update connections set user_id = ${attacker.id} where id = ${victimBearer.rowId}`;
    const movedRow = await sealedRow(sql, victimBearer);
    expect(movedRow.secret_ciphertext).toBe(victimRow.secret_ciphertext);
    expectUnreadable(() => openRow(service.keyring, 'connections', movedRow));
    // Put back where it belongs, it opens again: the failures came from the moves.
    await sql`update connections set user_id = ${owner.id} where id = ${victimBearer.rowId}`;
    expect(openRow(service.keyring, 'connections', await sealedRow(sql, victimBearer))).toBe(victimBearer.value);
  });

  // A second app with other settings beside the first: the embedded database serves one connection.
  it.skipIf(lacksConcurrentConnections())('a connection whose base_url is rewritten in the database to another origin does not open: its run fails SECRET_UNREADABLE and sends nothing', async () => {
    // Sealed under A, so that the rotation below (B first) opens it to re-wrap it.
    const sealer = await app(keyA);
    const owner = await signUp(sealer);
    const secret = recognisableSecret('origin-bound');
    const connection = await createConnection(sealer, owner, { name: 'origin-bound', baseUrl: `${echo.url}/api/`, auth: { type: 'bearer', secret } });
    const service = await app(`${keyB},${keyA}`);
    const sql = service.database.sql;
    const stored: StoredSecret = { table: 'connections', rowId: connection.id, userId: owner.id, value: secret };
    const through = (path: string) => runRequest(service, owner, { method: 'GET', url: path, connection: 'origin-bound' });
    expect(await through('before-rewrite')).toMatchObject({ status: 'completed' });
    expect(echo.requests.find((request) => request.url === '/api/before-rewrite')?.headers.authorization).toBe(`Bearer ${secret}`);

    // Another path of the same origin: the secret still opens (its origin is what it is bound to).
    await sql`update connections set base_url = ${`${echo.url}/other/`} where id = ${connection.id}`;
    expect(await through('same-origin')).toMatchObject({ status: 'completed' });
    expect(echo.requests.find((request) => request.url === '/other/same-origin')?.headers.authorization).toBe(`Bearer ${secret}`);

    // Someone who can write the database, not SECRETS_KEYS, points it at a server of theirs.
    const attacker = await startEchoServer();
    try {
      await sql`update connections set base_url = ${`${attacker.url}/`} where id = ${connection.id}`;
      expect(await through('stolen')).toMatchObject({ status: 'failed', error: { code: 'SECRET_UNREADABLE' } });
      expect(attacker.requests).toEqual([]);
      const rewritten = await sealedRow(sql, stored);
      expectUnreadable(() => openRow(service.keyring, 'connections', rewritten));
    } finally {
      await attacker.close();
    }
    // The rotation cannot open it either: it names the row and leaves it.
    const report = await rotateSecrets(sql, service.keyring);
    expect(tableReport(report, 'connections')?.unreadable).toEqual([{ rowId: connection.id, reason: 'the secret cannot be decrypted (it does not belong to this row, or it was altered)' }]);

    expect((await sealedRow(sql, stored)).secret_key_id).toBe('a');

    // Put back on its origin, it opens again (the failures came from the rewrite), and rotates.
    await sql`update connections set base_url = ${`${echo.url}/api/`} where id = ${connection.id}`;
    expect(openRow(service.keyring, 'connections', await sealedRow(sql, stored))).toBe(secret);
    expect(await through('restored')).toMatchObject({ status: 'completed' });
    expect(tableReport(await rotateSecrets(sql, service.keyring), 'connections')).toMatchObject({ rewrapped: 1, unreadable: [] });
    expect(openRow(keyringOf(keyB), 'connections', await sealedRow(sql, stored))).toBe(secret);
  });

  it('names each secret it cannot open (moved, altered, or under a key no longer configured), leaves it, and goes on', async () => {
    const appA = await app(keyA);
    const owner = await signUp(appA);
    const underA = await connectionOfEveryAuthType(appA, owner, echo.url, 'partly');
    const [source, damaged, altered] = underA;
    if (!source || !damaged || !altered) throw new Error('connections missing');
    // A sealed secret copied over another row's: that row's secret cannot be opened any more.
    const sourceRow = await sealedRow(appA.database.sql, source);
    await appA.database.sql`update connections set secret_ciphertext = ${sourceRow.secret_ciphertext} where id = ${damaged.rowId}`;
    // The last byte of a value's ciphertext changed, its wrapped data key intact.
    const alteredBytes = Buffer.from((await sealedRow(appA.database.sql, altered)).secret_ciphertext ?? '', 'base64url');
    alteredBytes[alteredBytes.length - 1] = (alteredBytes[alteredBytes.length - 1] ?? 0) ^ 0x01;
    await appA.database.sql`update connections set secret_ciphertext = ${alteredBytes.toString('base64url')} where id = ${altered.rowId}`;
    await closeApps();
    // Sealed under C, which the rotation is not given.
    const appC = await app(keyC);
    const lost = await secretVariable(appC, owner, 'LOST', recognisableSecret('lost'));
    const untouched = {
      damaged: await sealedRow(appC.database.sql, damaged),
      altered: await sealedRow(appC.database.sql, altered),
      lost: await sealedRow(appC.database.sql, lost),
    };
    await closeApps();

    const first = await rotateScript({ DATABASE_URL: databaseUrlOf(appA), SECRETS_KEYS: `${keyB},${keyA}` });
    const damagedReason = 'the secret cannot be decrypted (it does not belong to this row, or it was altered)';
    const lostReason = "the secret cannot be decrypted (its key 'c' is not in SECRETS_KEYS)";
    // Rows are taken in id order.
    const [firstDamaged, secondDamaged] = [damaged.rowId, altered.rowId].sort();
    expect(first.lines).toEqual([
      'connections: 2 rewrapped, 0 already current, 2 unreadable',
      'variables: 0 rewrapped, 0 already current, 1 unreadable',
      ...NO_SUBSCRIPTION_LINES,
      `unreadable: connections row ${firstDamaged}: ${damagedReason}`,
      `unreadable: connections row ${secondDamaged}: ${damagedReason}`,
      `unreadable: variables row ${lost.rowId}: ${lostReason}`,
      'not complete: keep the old keys in SECRETS_KEYS until a run reports 0 unreadable and 0 not reached',
    ]);
    // Non-zero, so that an operator (or a deployment script) does not remove the old keys.
    expect(first.code).toBe(2);
    for (const secret of [...underA, lost]) expect(first.output).not.toContain(secret.value);
    expect(first.output).not.toContain(untouched.lost.secret_ciphertext);

    const appBA = await app(`${keyB},${keyA}`);
    const sql = appBA.database.sql;
    for (const secret of underA.filter((candidate) => candidate !== damaged && candidate !== altered)) {
      const row = await sealedRow(sql, secret);
      expect(row.secret_key_id).toBe('b');
      expect(openRow(keyringOf(keyB), 'connections', row)).toBe(secret.value);
    }
    expect(await sealedRow(sql, damaged)).toEqual(untouched.damaged);
    expect(await sealedRow(sql, altered)).toEqual(untouched.altered);
    expect(await sealedRow(sql, lost)).toEqual(untouched.lost);
    // What the service makes of them: the steps that need them fail SECRET_UNREADABLE, and send nothing.
    for (const params of [
      { method: 'GET', url: '/with-lost-secret', headers: { 'x-token': '{{ $secrets.LOST }}' } },
      { method: 'GET', url: '/through-damaged', connection: 'partly-basic' },
      { method: 'GET', url: '/through-altered', connection: 'partly-header' },
    ]) {
      const run = await runRequest(appBA, owner, { ...params, url: params.connection ? params.url : `${echo.url}${params.url}` });
      expect(run).toMatchObject({ status: 'failed', error: { code: 'SECRET_UNREADABLE' } });
      expect(echo.requests.some((request) => request.url === params.url)).toBe(false);
    }
    // A readable one goes through as before.
    expect((await runRequest(appBA, owner, { method: 'GET', url: '/through-bearer', connection: 'partly-bearer' })).status).toBe('completed');

    // Run again, it finds the same two and nothing else to do.
    const second = await rotateSecrets(sql, appBA.keyring);
    expect(second.tables).toEqual([
      {
        table: 'connections',
        column: 'secret_ciphertext',
        rewrapped: 0,
        alreadyCurrent: 2,
        unreadable: [firstDamaged, secondDamaged].map((rowId) => ({ rowId, reason: damagedReason })),
        notReached: 0,
      },
      { table: 'variables', column: 'secret_ciphertext', rewrapped: 0, alreadyCurrent: 0, unreadable: [{ rowId: lost.rowId, reason: lostReason }], notReached: 0 },
      ...untouchedSubscriptions,
    ]);
    expect(rotationComplete(second)).toBe(false);

    // With C given back (after B, so B still seals), the lost secret is rotated too; the damaged one stays unreadable.
    const withC = await rotateSecrets(sql, keyringOf(keyB, keyA, keyC));
    expect(tableReport(withC, 'variables')).toEqual({ table: 'variables', column: 'secret_ciphertext', rewrapped: 1, alreadyCurrent: 0, unreadable: [], notReached: 0 });
    expect(openRow(keyringOf(keyB), 'variables', await sealedRow(sql, lost))).toBe(lost.value);
    expect(tableReport(withC, 'connections')?.unreadable).toHaveLength(2);
  });

  it.skipIf(lacksConcurrentConnections())('does not wait for a row a running change holds: it takes it in a later pass, or reports it not reached', async () => {
    const appA = await app(keyA);
    const owner = await signUp(appA);
    const variables = [
      await secretVariable(appA, owner, 'HELD_ONE', recognisableSecret('held-1')),
      await secretVariable(appA, owner, 'HELD_TWO', recognisableSecret('held-2')),
      await secretVariable(appA, owner, 'HELD_THREE', recognisableSecret('held-3')),
    ];
    const held = variables[1];
    if (!held) throw new Error('variables missing');
    await closeApps();
    const service = await app(`${keyB},${keyA}`);
    const sql: Sql = service.database.sql;

    // A PATCH in progress holds its row until it commits.
    const holder = await sql.reserve();
    try {
      await holder`begin`;
      await holder`select id from variables where id = ${held.rowId} for update`;
      const report = await rotateSecrets(sql, service.keyring, { maxPasses: 2, pauseBetweenPassesMs: 50 });
      expect(tableReport(report, 'variables')).toEqual({ table: 'variables', column: 'secret_ciphertext', rewrapped: 2, alreadyCurrent: 0, unreadable: [], notReached: 1 });
      expect(rotationComplete(report)).toBe(false);
      expect(describeRotation(report)).toContain('variables: 2 rewrapped, 0 already current, 0 unreadable, 1 not reached (changed during the run: run again)');
      expect((await sealedRow(sql, held)).secret_key_id).toBe('a');
    } finally {
      await holder`rollback`;
      holder.release();
    }
    const rerun = await rotateSecrets(sql, service.keyring);
    expect(tableReport(rerun, 'variables')).toEqual({ table: 'variables', column: 'secret_ciphertext', rewrapped: 1, alreadyCurrent: 2, unreadable: [], notReached: 0 });

    // Held through the first pass and released during the pause: the second pass takes it.
    const another = await secretVariable(await app(keyA), owner, 'HELD_FOUR', recognisableSecret('held-4'));
    const pauseMs = 1_500;
    const secondHolder = await sql.reserve();
    let released: Promise<void> | undefined;
    try {
      await secondHolder`begin`;
      await secondHolder`select id from variables where id = ${another.rowId} for update`;
      const started = Date.now();
      const rotation = rotateSecrets(sql, service.keyring, { maxPasses: 3, pauseBetweenPassesMs: pauseMs });
      released = new Promise<void>((resolve) => setTimeout(resolve, pauseMs / 3)).then(async () => {
        await secondHolder`rollback`;
      });
      const report = await rotation;
      expect(tableReport(report, 'variables')).toEqual({ table: 'variables', column: 'secret_ciphertext', rewrapped: 1, alreadyCurrent: 3, unreadable: [], notReached: 0 });
      // It took the pause: the first pass had left the row to a later one.
      expect(Date.now() - started).toBeGreaterThanOrEqual(pauseMs);
    } finally {
      await released;
      secondHolder.release();
    }
    expect(openRow(keyringOf(keyB), 'variables', await sealedRow(sql, another))).toBe(another.value);
  });

  it('refuses to run without SECRETS_KEYS or with a malformed one, in one line, before opening a database', async () => {
    const parent = await mkdtemp(path.join(tmpdir(), 'autonode-rotate-refused-'));
    try {
      const dataDir = path.join(parent, 'data');
      const refused = await rotateScript({ EMBEDDED_DATA_DIR: dataDir });
      expect(refused.output).toBe(
        `secrets:rotate refused: SECRETS_KEYS is not set; list the new key first and the old ones after it (the development key is in ${path.join(dataDir, 'secrets-key')})\n`,
      );
      expect(refused.code).toBe(1);
      await expect(stat(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });

      const material = 'c2hvcnQta2V5LW1hdGVyaWFs';
      const malformed = await rotateScript({ EMBEDDED_DATA_DIR: dataDir, SECRETS_KEYS: `k1:${material}` });
      expect(malformed.output).toMatch(/^Invalid configuration: SECRETS_KEYS: key 'k1' must be 32 random bytes in base64[^\n]*\n$/);
      expect(malformed.output).not.toContain(material);
      expect(malformed.code).toBe(1);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('runs on the embedded database once the service has stopped', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-rotate-embedded-'));
    try {
      const server = await startServerProcess({ NODE_ENV: 'development', EMBEDDED_DATA_DIR: dataDir, SECRETS_KEYS: keyA, ENGINE_ENABLED: 'false' }, 60_000);
      let secret: string;
      try {
        // A trusted origin (CORS_ORIGINS' default): cookie-carrying writes from others are refused.
        const origin = 'http://localhost:8100';
        const signUpResponse = await fetch(`${server.baseUrl}/api/auth/sign-up/email`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin },
          body: JSON.stringify({ name: 'Embedded', email: `embedded-${Date.now()}@example.test`, password: 'correct-horse-battery' }),
        });
        expect(signUpResponse.status).toBe(200);
        const cookie = signUpResponse.headers.getSetCookie().map((header) => header.split(';')[0]).join('; ');
        secret = recognisableSecret('embedded');
        const created = await fetch(`${server.baseUrl}/api/v1/connections`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin, cookie },
          body: JSON.stringify({ name: 'embedded', baseUrl: BASE_URL, auth: { type: 'bearer', secret } }),
        });
        expect(created.status).toBe(201);
      } finally {
        server.child.kill('SIGTERM');
        await server.exited;
      }

      const rotated = await rotateScript({ EMBEDDED_DATA_DIR: dataDir, SECRETS_KEYS: `${keyB},${keyA}` });
      expect(rotated.lines).toEqual([
        'connections: 1 rewrapped, 0 already current, 0 unreadable',
        'variables: 0 rewrapped, 0 already current, 0 unreadable',
        ...NO_SUBSCRIPTION_LINES,
        "done: every secret is under key 'b'; the other keys may now leave SECRETS_KEYS",
      ]);
      expect(rotated.code).toBe(0);
      expect(rotated.output).not.toContain(secret);
      // Kept: B alone finds it under B.
      const again = await rotateScript({ EMBEDDED_DATA_DIR: dataDir, SECRETS_KEYS: keyB });
      expect(again.lines[0]).toBe('connections: 0 rewrapped, 1 already current, 0 unreadable');
      expect(again.code).toBe(0);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
