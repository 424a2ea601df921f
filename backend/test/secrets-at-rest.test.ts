/**
 * No secret is stored in the clear: after secrets are created (every auth type of connection,
 * secret variables), changed, and used by runs that send them to a local server which echoes them
 * back, no text, varchar, char, json, jsonb or bytea column of any table of the public schema holds
 * a secret, nor its base64, URL-encoded, JSON-escaped or hex form. The columns are listed from the
 * catalog when the test runs, so a table added later is searched too. The file has a database of
 * its own: the search reads every row of every table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Sql } from '../src/db/client.js';
import type { Engine } from '../src/engine/engine.js';
import { buildTestApp, logsOf, signUp, type SignedInUser } from './helpers.js';
import { createWorkflow, runWorkflow, startEngine, stepsOf, waitForStatus } from './engine-helpers.js';
import { connectionOfEveryAuthType, createConnection, createVariable, recognisableSecret, secretVariable, startEchoServer, type EchoServer, type StoredSecret } from './secret-fixtures.js';

/** A column that can hold text; `bytea` ones are searched as bytes. */
interface TextualColumn {
  readonly table: string;
  readonly column: string;
  readonly dataType: string;
}

/**
 * Every column of every table (not view) of the public schema whose values can carry text:
 * text, varchar, char, json, jsonb, bytea, and arrays of them, read from pg_attribute, so that
 * columns of tables added after this test was written are included.
 */
async function textualColumns(sql: Sql): Promise<TextualColumn[]> {
  return sql<TextualColumn[]>`
    select c.relname as table, a.attname as column, format_type(a.atttypid, a.atttypmod) as "dataType"
    from pg_attribute a
    join pg_class c on c.oid = a.attrelid
    join pg_namespace n on n.oid = c.relnamespace
    join pg_type t on t.oid = a.atttypid
    left join pg_type element on element.oid = t.typelem and t.typcategory = 'A'
    where n.nspname = 'public' and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
      and coalesce(element.typname, t.typname) in ('text', 'varchar', 'bpchar', 'json', 'jsonb', 'bytea', 'name', 'citext')
    order by c.relname, a.attnum`;
}

/** The part of a base64 text that depends only on `bytes`, whatever bytes precede them (at each of the 3 alignments). */
function base64Cores(bytes: Buffer): string[] {
  const cores: string[] = [];
  for (let prefix = 0; prefix < 3; prefix += 1) {
    const encoded = Buffer.concat([Buffer.alloc(prefix, 0), bytes]).toString('base64');
    // Character i carries bits 6i..6i+5: it is the secret's alone once it starts at or after the
    // secret's first bit and ends by its last one.
    const core = encoded.slice(Math.ceil((8 * prefix) / 6), Math.floor((8 * (prefix + bytes.length)) / 6));
    cores.push(core, core.replaceAll('+', '-').replaceAll('/', '_'));
  }
  return cores;
}

/** The texts a secret would read as in the database if anything stored it, however encoded. */
function storedForms(secret: string): { form: string; text: string }[] {
  const bytes = Buffer.from(secret, 'utf8');
  const forms = [
    { form: 'as is', text: secret },
    { form: 'JSON-escaped', text: JSON.stringify(secret).slice(1, -1) },
    { form: 'encodeURIComponent', text: encodeURIComponent(secret) },
    { form: 'encodeURI', text: encodeURI(secret) },
    { form: 'form-encoded', text: new URLSearchParams([['', secret]]).toString().slice(1) },
    { form: 'hex', text: bytes.toString('hex') },
    ...base64Cores(bytes).map((text) => ({ form: 'base64', text })),
  ];
  return forms.filter((entry, index) => forms.findIndex((other) => other.text === entry.text) === index);
}

interface Finding {
  readonly table: string;
  readonly column: string;
  readonly label: string;
  readonly form: string;
}

/**
 * Where any of `secrets` (labelled) is found, in any form, in any textual column. One query per
 * column, searched by PostgreSQL: text by strpos on its text form, bytea by position in its bytes.
 */
async function findStored(sql: Sql, columns: readonly TextualColumn[], secrets: ReadonlyMap<string, string>): Promise<Finding[]> {
  const labels: string[] = [];
  const forms: string[] = [];
  const texts: string[] = [];
  for (const [label, secret] of secrets) {
    for (const { form, text } of storedForms(secret)) {
      labels.push(label);
      forms.push(form);
      texts.push(text);
    }
  }
  const findings: Finding[] = [];
  for (const { table, column, dataType } of columns) {
    const matches =
      dataType === 'bytea'
        ? sql`position(convert_to(pattern.text, 'UTF8') in ${sql(column)}) > 0`
        : sql`strpos(${sql(column)}::text, pattern.text) > 0`;
    const rows = await sql<{ label: string; form: string }[]>`
      select pattern.label, pattern.form
      from unnest(${sql.array(labels)}::text[], ${sql.array(forms)}::text[], ${sql.array(texts)}::text[]) as pattern(label, form, text)
      where exists (select 1 from ${sql(table)} where ${matches})`;
    for (const row of rows) findings.push({ table, column, label: row.label, form: row.form });
  }
  return findings;
}

describe('secrets at rest', () => {
  let app: App;
  let engine: Engine;
  let echo: EchoServer;

  beforeAll(async () => {
    echo = await startEchoServer();
    app = await buildTestApp({ ENGINE_HTTP_ALLOW: '127.0.0.1' });
    engine = startEngine(app);
  });
  afterAll(async () => {
    await engine?.stop(5_000);
    await app?.close();
    await echo?.close();
  });

  it('the search finds a value in any textual column of any table, in each form it looks for', async () => {
    const sql = app.database.sql;
    const probe = recognisableSecret('probe');
    // A table made for the test, in a transaction on one connection that is rolled back: columns of
    // every searched type, each holding the probe in one form. Found, they show that a table added
    // later is searched, and every form.
    const connection = await sql.reserve();
    let findings: Finding[];
    let columns: TextualColumn[];
    try {
      await connection`begin`;
      await connection`create table at_rest_probe (plain text, short varchar(200), fixed char(200), document json, binary_document jsonb, raw bytea, list text[])`;
      const forms = storedForms(probe);
      const formText = (name: string) => forms.find((entry) => entry.form === name)?.text ?? '';
      const firstBase64 = base64Cores(Buffer.from(probe, 'utf8'))[0] ?? '';
      await connection`insert into at_rest_probe (plain) values (${`prefix ${probe} suffix`})`;
      await connection`insert into at_rest_probe (short) values (${formText('encodeURIComponent')})`;
      await connection`insert into at_rest_probe (fixed) values (${formText('form-encoded')})`;
      await connection`insert into at_rest_probe (document) values (${JSON.stringify({ nested: [{ value: probe }] })}::json)`;
      await connection`insert into at_rest_probe (binary_document) values (${JSON.stringify({ credential: `Basic ${Buffer.from(`someone:${probe}`).toString('base64')}` })}::jsonb)`;
      await connection`insert into at_rest_probe (raw) values (${Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from(probe, 'utf8')])})`;
      await connection`insert into at_rest_probe (list) values (${connection.array(['x', `y${firstBase64}z`])}::text[])`;
      columns = await textualColumns(connection);
      findings = await findStored(connection, columns, new Map([['probe', probe]]));
    } finally {
      await connection`rollback`;
      connection.release();
    }

    const probeColumns = columns.filter((column) => column.table === 'at_rest_probe').map((column) => column.column);
    expect(probeColumns).toEqual(['plain', 'short', 'fixed', 'document', 'binary_document', 'raw', 'list']);
    const foundIn = (column: string) => findings.filter((finding) => finding.table === 'at_rest_probe' && finding.column === column).map((finding) => finding.form);
    expect(foundIn('plain')).toContain('as is');
    expect(foundIn('short')).toContain('encodeURIComponent');
    expect(foundIn('fixed')).toContain('form-encoded');
    expect(foundIn('document')).toContain('as is');
    expect(foundIn('binary_document')).toContain('base64');
    expect(foundIn('raw')).toContain('as is');
    expect(foundIn('list')).toContain('base64');
    // The application's tables are searched too, the sealed secrets' and the JSON ones among them.
    const searched = columns.map((column) => `${column.table}.${column.column}`);
    expect(searched).toEqual(
      expect.arrayContaining([
        'connections.secret_ciphertext',
        'connections.headers',
        'variables.value',
        'event_subscriptions.secret_ciphertext',
        'event_subscriptions.previous_secret_ciphertext',
        'execution_steps.output',
        'execution_steps.error',
        'idempotency_keys.response_body',
      ]),
    );
  });

  it('no column of any table holds a secret, however encoded, after secrets are stored, changed and used by runs', async () => {
    const owner: SignedInUser = await signUp(app);
    const other: SignedInUser = await signUp(app);
    const secrets: StoredSecret[] = [];

    // Every auth type, and one created with an Idempotency-Key (its request and answer are kept 24 h).
    secrets.push(...(await connectionOfEveryAuthType(app, owner, echo.url, 'rest')));
    const keyedSecret = recognisableSecret('rest-idempotent');
    const keyed = await createConnection(
      app,
      owner,
      { name: 'rest-idempotent', baseUrl: echo.url, auth: { type: 'bearer', secret: keyedSecret } },
      { 'idempotency-key': `at-rest-${keyedSecret.slice(-8)}` },
    );
    secrets.push({ table: 'connections', rowId: keyed.id, userId: owner.id, value: keyedSecret });
    secrets.push(await secretVariable(app, owner, 'REST_TOKEN', recognisableSecret('rest-variable')));
    secrets.push(await secretVariable(app, other, 'REST_TOKEN', `ünïcödé ✓ ${recognisableSecret('rest-other')}`));
    const badHost = await secretVariable(app, owner, 'REST_BAD_HOST', recognisableSecret('rest-host'));
    secrets.push(badHost);
    // A canary stored in plain fields: the search must find it where it was put.
    const canary = recognisableSecret('canary');
    await createConnection(app, owner, { name: 'rest-canary', baseUrl: echo.url, description: canary, headers: { 'x-canary': canary }, auth: { type: 'none' } });
    await createVariable(app, owner, { key: 'REST_CANARY', value: { canary } });

    // Event subscriptions' signing secrets, which the service makes: one created with an
    // Idempotency-Key (its answer is kept 24 h), and one rotated, whose first secret is kept as the previous one.
    const signingSecrets: string[] = [];
    const subscribe = async (headers: Record<string, string>) => {
      const response = await app.inject({
        method: 'POST',
        url: '/api/v1/event-subscriptions',
        headers: { cookie: owner.cookie, ...headers },
        payload: { url: 'https://hooks.example.invalid/at-rest', events: ['execution.completed', 'step.failed'] },
      });
      expect(response.statusCode, response.body).toBe(201);
      const created = response.json<{ id: string; secret: string }>();
      signingSecrets.push(created.secret);
      return created.id;
    };
    await subscribe({ 'idempotency-key': `at-rest-subscription-${canary.slice(-8)}` });
    const rotatedSubscription = await subscribe({});
    const rotation = await app.inject({ method: 'POST', url: `/api/v1/event-subscriptions/${rotatedSubscription}/rotate-secret`, headers: { cookie: owner.cookie } });
    expect(rotation.statusCode, rotation.body).toBe(200);
    signingSecrets.push(rotation.json<{ secret: string }>().secret);

    // Secrets replaced by new ones: the old values must not linger anywhere either.
    const replaced: string[] = [];
    const bearer = secrets.find((secret) => secret.value.startsWith('rest-bearer'));
    if (!bearer) throw new Error('no bearer connection');
    const newBearer = recognisableSecret('rest-bearer-new');
    const patched = await app.inject({ method: 'PATCH', url: `/api/v1/connections/${bearer.rowId}`, headers: { cookie: owner.cookie }, payload: { auth: { type: 'bearer', secret: newBearer } } });
    expect(patched.statusCode, patched.body).toBe(200);
    replaced.push(bearer.value);
    const variable = secrets.find((secret) => secret.table === 'variables' && secret.userId === owner.id && secret.value.startsWith('rest-variable'));
    if (!variable) throw new Error('no secret variable');
    const newVariableValue = recognisableSecret('rest-variable-new');
    const patchedVariable = await app.inject({ method: 'PATCH', url: `/api/v1/variables/${variable.rowId}`, headers: { cookie: owner.cookie }, payload: { value: newVariableValue } });
    expect(patchedVariable.statusCode, patchedVariable.body).toBe(200);
    replaced.push(variable.value);

    // Runs that send every secret to the echo server, which answers with all it received.
    const connectionSteps = ['bearer', 'basic', 'header', 'query'].map((type) => ({
      id: `via_${type}`,
      type: 'http.request',
      params: { method: 'POST', url: `/${type}?plain=1`, connection: `rest-${type}`, body: { note: 'through a connection' } },
    }));
    const workflowId = await createWorkflow(app, owner, {
      nodes: [
        { id: 'start', type: 'trigger.manual', params: {} },
        ...connectionSteps,
        { id: 'via_idempotent', type: 'http.request', params: { method: 'GET', url: '/idempotent', connection: 'rest-idempotent' } },
        {
          id: 'templated',
          type: 'http.request',
          params: {
            method: 'POST',
            url: `${echo.url}/templated?token={{ $secrets.REST_TOKEN }}`,
            headers: { 'x-token': '{{ $secrets.REST_TOKEN }}' },
            body: { token: '{{ $secrets.REST_TOKEN }}', nested: ['{{ $secrets.REST_TOKEN }}'] },
          },
        },
      ],
      edges: [...connectionSteps.map((step) => ({ source: 'start', target: step.id })), { source: 'start', target: 'via_idempotent' }, { source: 'start', target: 'templated' }],
    });
    const run = await runWorkflow(app, owner, workflowId, { note: 'no secret in the input' });
    const finished = await waitForStatus(app, owner, run.id, ['completed', 'failed'], 30_000);
    expect(finished.status, JSON.stringify(await stepsOf(app, owner, run.id))).toBe('completed');
    // A run whose step fails with the secret in its url (a host that never resolves): the error is recorded too.
    // (A secret may stand in a url's path or query only, never in its host: a workflow saving that is refused.)
    const failingId = await createWorkflow(app, owner, {
      nodes: [
        { id: 'start', type: 'trigger.manual', params: {} },
        { id: 'bad_host', type: 'http.request', params: { method: 'GET', url: 'http://unresolvable.invalid/{{ $secrets.REST_BAD_HOST }}?token={{ $secrets.REST_BAD_HOST }}' } },
      ],
      edges: [{ source: 'start', target: 'bad_host' }],
    });
    const failing = await runWorkflow(app, owner, failingId);
    expect((await waitForStatus(app, owner, failing.id, ['completed', 'failed'], 30_000)).status).toBe('failed');

    // The secrets did travel: the echo server received each, as its auth type sends it.
    const received = JSON.stringify(echo.requests);
    const currentValue = (prefix: string) => secrets.find((secret) => secret.value.startsWith(prefix))?.value ?? `missing ${prefix}`;
    const basicSecret = currentValue('rest-basic');
    expect(echo.requests.find((request) => request.url.startsWith('/bearer'))?.headers.authorization).toBe(`Bearer ${newBearer}`);
    expect(echo.requests.find((request) => request.url.startsWith('/basic'))?.headers.authorization).toBe(
      `Basic ${Buffer.from(`rest-user:${basicSecret}`).toString('base64')}`,
    );
    expect(echo.requests.find((request) => request.url.startsWith('/header'))?.headers['x-api-key']).toBe(currentValue('rest-header'));
    expect(new URL(echo.requests.find((request) => request.url.startsWith('/query'))?.url ?? '/', echo.url).searchParams.get('api_key')).toBe(currentValue('rest-query'));
    expect(echo.requests.find((request) => request.url.startsWith('/idempotent'))?.headers.authorization).toBe(`Bearer ${keyedSecret}`);
    const templated = echo.requests.find((request) => request.url.startsWith('/templated'));
    expect(templated?.headers['x-token']).toBe(newVariableValue);
    expect(JSON.parse(templated?.body ?? '{}')).toEqual({ token: newVariableValue, nested: [newVariableValue] });
    expect(received).toContain(newVariableValue);

    const everySecret = new Map<string, string>();
    for (const secret of secrets) everySecret.set(`${secret.table} ${secret.rowId} (${secret.value.split('-').slice(0, 2).join('-')})`, secret.value);
    everySecret.set('the new bearer token', newBearer);
    everySecret.set('the new variable value', newVariableValue);
    for (const [index, value] of replaced.entries()) everySecret.set(`replaced secret ${index + 1}`, value);
    for (const [index, value] of signingSecrets.entries()) {
      // The whole whsec_ text, and its key (the base64 of 32 bytes) however re-encoded.
      const key = value.slice('whsec_'.length);
      const bytes = Buffer.from(key, 'base64');
      everySecret.set(`signing secret ${index + 1}`, value);
      everySecret.set(`signing secret ${index + 1} key`, key);
      everySecret.set(`signing secret ${index + 1} key (base64url)`, bytes.toString('base64url'));
      everySecret.set(`signing secret ${index + 1} key (hex)`, bytes.toString('hex'));
    }

    const sql = app.database.sql;
    const columns = await textualColumns(sql);
    expect(await findStored(sql, columns, everySecret)).toEqual([]);
    // The same search finds the canary where it was stored in plain fields.
    const canaryColumns = (await findStored(sql, columns, new Map([['canary', canary]]))).map((finding) => `${finding.table}.${finding.column}`);
    expect(canaryColumns).toEqual(expect.arrayContaining(['connections.description', 'connections.headers', 'variables.value']));
    // Nor the logs (the suite scans them for API keys and passwords; these are this test's own).
    const logs = logsOf(app);
    for (const [label, value] of everySecret) {
      for (const { form, text } of storedForms(value)) expect(logs.includes(text), `${label} (${form}) in the logs`).toBe(false);
    }
  });
});
