/**
 * Secrets stored the way a user stores them (POST /api/v1/connections, POST /api/v1/variables),
 * with recognisable random values, for the at-rest and rotation tests.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { App } from '../src/app.js';
import type { Sql } from '../src/db/client.js';
import type { SealedSecretTable } from '../src/secrets/rotate.js';
import type { SignedInUser } from './helpers.js';

/** A stored secret: where it is sealed (its binding) and its value, which must never be found elsewhere. */
export interface StoredSecret {
  readonly table: SealedSecretTable;
  readonly rowId: string;
  readonly userId: string;
  readonly value: string;
}

/**
 * A value nobody else stores, holding characters that change under base64, URL and form encoding
 * (`+`, `/`, `=`, `%`, `&`, space), so each encoded form is its own search.
 */
export function recognisableSecret(label: string): string {
  return `${label}-${randomBytes(12).toString('hex')}+/= %&~${randomBytes(4).toString('hex')}`;
}

export type ConnectionAuth =
  | { type: 'none' }
  | { type: 'bearer'; secret: string }
  | { type: 'basic'; username: string; secret: string }
  | { type: 'header'; name: string; secret: string }
  | { type: 'query'; name: string; secret: string };

export interface CreatedConnection {
  readonly id: string;
  readonly name: string;
  readonly auth: { readonly type: string; readonly secretSet: boolean };
}

export async function createConnection(
  app: App,
  user: SignedInUser,
  fields: { name: string; baseUrl: string; auth: ConnectionAuth; description?: string; headers?: Record<string, string> },
  headers: Record<string, string> = {},
): Promise<CreatedConnection> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/connections', headers: { cookie: user.cookie, ...headers }, payload: fields });
  if (response.statusCode !== 201) throw new Error(`connection refused: ${response.statusCode} ${response.body}`);
  return response.json<CreatedConnection>();
}

export async function createVariable(app: App, user: SignedInUser, fields: { key: string; value: unknown; secret?: boolean }): Promise<{ id: string }> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: fields });
  if (response.statusCode !== 201) throw new Error(`variable refused: ${response.statusCode} ${response.body}`);
  return response.json<{ id: string }>();
}

/** One connection of each auth type that has a secret, each with its own secret, and one without. */
export async function connectionOfEveryAuthType(app: App, user: SignedInUser, baseUrl: string, prefix: string): Promise<StoredSecret[]> {
  const secrets = {
    bearer: recognisableSecret(`${prefix}-bearer`),
    basic: recognisableSecret(`${prefix}-basic`),
    header: recognisableSecret(`${prefix}-header`),
    query: recognisableSecret(`${prefix}-query`),
  };
  const auths: Exclude<ConnectionAuth, { type: 'none' }>[] = [
    { type: 'bearer', secret: secrets.bearer },
    { type: 'basic', username: `${prefix}-user`, secret: secrets.basic },
    { type: 'header', name: 'x-api-key', secret: secrets.header },
    { type: 'query', name: 'api_key', secret: secrets.query },
  ];
  const stored: StoredSecret[] = [];
  for (const auth of auths) {
    const connection = await createConnection(app, user, { name: `${prefix}-${auth.type}`, baseUrl, auth });
    stored.push({ table: 'connections', rowId: connection.id, userId: user.id, value: auth.secret });
  }
  await createConnection(app, user, { name: `${prefix}-none`, baseUrl, auth: { type: 'none' } });
  return stored;
}

export async function secretVariable(app: App, user: SignedInUser, key: string, value: string): Promise<StoredSecret> {
  const variable = await createVariable(app, user, { key, value, secret: true });
  return { table: 'variables', rowId: variable.id, userId: user.id, value };
}

export interface SealedRow {
  readonly id: string;
  readonly user_id: string;
  /** A connection's base URL, whose origin its secret is bound to; null for a variable. */
  readonly base_url: string | null;
  readonly secret_key_id: string | null;
  readonly secret_ciphertext: string | null;
  readonly version: number;
  readonly updated_at: Date;
  readonly payload_bytes: number;
}

/** The stored row of a secret, as the database holds it. */
export async function sealedRow(sql: Sql, secret: Pick<StoredSecret, 'table' | 'rowId'>): Promise<SealedRow> {
  const [row] = await sql<SealedRow[]>`
    select id, user_id, ${secret.table === 'connections' ? sql`base_url` : sql`null::text as base_url`}, secret_key_id, secret_ciphertext, version, updated_at, payload_bytes
    from ${sql(secret.table)} where id = ${secret.rowId}`;
  if (!row) throw new Error(`no ${secret.table} row ${secret.rowId}`);
  return row;
}

export interface EchoedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

export interface EchoServer {
  readonly url: string;
  readonly requests: EchoedRequest[];
  close(): Promise<void>;
}

/** A local server that answers every request with all of it (method, url, headers, body), as httpbin does. */
export async function startEchoServer(): Promise<EchoServer> {
  const requests: EchoedRequest[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const echoed = { method: request.method ?? 'GET', url: request.url ?? '/', headers: request.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(echoed);
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(echoed));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
