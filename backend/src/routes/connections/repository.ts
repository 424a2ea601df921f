import { randomUUID } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { connections, workflows } from '../../db/schema/index.js';
import { removeIfMatch, updateIfMatch } from '../../lib/conditional-update.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { columnSortKeys, getOwned, isOwned, listOwned, type ListParams, type Page } from '../../lib/pagination.js';
import { createWithinLimit, nameTakenOr, type UniqueName } from '../../lib/per-user-limit.js';
import { invalidBody, ProblemError } from '../../lib/problem.js';
import { connectionSecretBinding, connectionSecretScope } from '../../secrets/bindings.js';
import { SecretUnreadableError, type Keyring } from '../../secrets/keyring.js';
import {
  secretRules,
  type ConnectionAuthDto,
  type ConnectionDto,
  type CreateAuthInput,
  type CreateConnectionInput,
  type UpdateAuthInput,
  type UpdateConnectionInput,
} from './schemas.js';

export type ConnectionRow = typeof connections.$inferSelect;

/** The bounds a connection's creation enforces (config.connectionsPerUser). */
export interface ConnectionLimits {
  readonly maxPerUser: number;
}

const sortKeys = columnSortKeys(connections, { createdAt: 'timestamp', updatedAt: 'timestamp', name: 'text' });

/** How many of the workflows using a connection a CONNECTION_IN_USE problem names. */
const LISTED_WORKFLOWS = 20;

function presentAuth(row: ConnectionRow): ConnectionAuthDto {
  const secretSet = row.secretCiphertext !== null;
  switch (row.authType) {
    case 'basic':
      return { type: row.authType, username: row.authUsername ?? '', secretSet };
    case 'header':
    case 'query':
      return { type: row.authType, name: row.authName ?? '', secretSet };
    default:
      return { type: row.authType, secretSet };
  }
}

/** The API shape: everything but the owner and the sealed secret (only whether there is one). */
export function present(row: ConnectionRow): ConnectionDto {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    baseUrl: row.baseUrl,
    headers: row.headers,
    auth: presentAuth(row),
    version: row.version,
    lastUsedAt: isoOrNull(row.lastUsedAt),
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

/** The auth columns but the secret: what each type keeps beside it (the others are null). */
function authColumns(auth: CreateAuthInput | UpdateAuthInput): Pick<ConnectionRow, 'authType' | 'authUsername' | 'authName'> {
  return {
    authType: auth.type,
    authUsername: auth.type === 'basic' ? auth.username : null,
    authName: auth.type === 'header' || auth.type === 'query' ? auth.name : null,
  };
}

type SecretColumns = Pick<ConnectionRow, 'secretKeyId' | 'secretCiphertext'>;
const NO_SECRET: SecretColumns = { secretKeyId: null, secretCiphertext: null };

/**
 * Seals a secret to its row, owner and base URL's origin (connectionSecretBinding): a ciphertext
 * copied to another row or user, or left in a row whose origin was rewritten, does not open.
 */
function sealedColumns(keyring: Keyring, secret: string, connection: Pick<ConnectionRow, 'id' | 'userId' | 'baseUrl'>): SecretColumns {
  const sealed = keyring.seal(secret, connectionSecretBinding(connection));
  return { secretKeyId: sealed.keyId, secretCiphertext: sealed.ciphertext };
}

const uniqueName = (name: string): UniqueName => ({ index: 'connections_user_name_idx', detail: `You already have a connection named '${name}'.` });

/**
 * A plain header may not repeat the header that carries the secret: one of the two would be lost,
 * and which one would depend on the engine.
 */
function assertHeadersLeaveAuthHeader(headers: Record<string, string>, auth: Pick<ConnectionRow, 'authType' | 'authName'>): void {
  if (auth.authType === 'header' && auth.authName !== null && Object.hasOwn(headers, auth.authName)) {
    throw invalidBody(`headers.${auth.authName}`, 'is the header auth.name sends the secret in; set it in one place only');
  }
}

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<ConnectionDto>> {
  return listOwned(db, connections, userId, params, { sortKeys, searchColumns: [connections.name, connections.description] }, present);
}

export async function get(db: Db, userId: string, id: string): Promise<ConnectionRow | null> {
  return getOwned(db, connections, userId, id);
}

/** Whether the caller has this connection (reads its id alone). */
export async function owns(db: Db, userId: string, id: string): Promise<boolean> {
  return isOwned(db, connections, userId, id);
}

/**
 * Creates a connection, within the user's limit (createWithinLimit). Its id is chosen here because
 * its secret is sealed to it.
 */
export async function create(db: Db, keyring: Keyring, userId: string, input: CreateConnectionInput, limits: ConnectionLimits): Promise<ConnectionRow> {
  const auth = authColumns(input.auth);
  assertHeadersLeaveAuthHeader(input.headers, auth);
  const id = randomUUID();
  const secret = input.auth.type === 'none' ? NO_SECRET : sealedColumns(keyring, input.auth.secret, { id, userId, baseUrl: input.baseUrl });
  const values = { id, userId, name: input.name, description: input.description, baseUrl: input.baseUrl, headers: input.headers, ...auth, ...secret };
  return createWithinLimit(
    db,
    connections,
    userId,
    { maxPerUser: limits.maxPerUser, noun: 'connections', code: 'CONNECTION_LIMIT_REACHED' },
    async (tx) => (await tx.insert(connections).values(values).returning())[0],
    { uniqueName: uniqueName(input.name) },
  );
}

/** Why a change must not happen while a workflow uses the connection. */
type GuardedChange = 'delete' | 'rename' | 'move';
const remedies: Readonly<Record<GuardedChange, string>> = {
  delete: 'delete it',
  rename: 'rename it (workflows refer to it by name)',
  move: 'move its baseUrl to another origin (their steps may name absolute urls of the current one)',
};

/**
 * Refuses (409 CONNECTION_IN_USE, naming them) to delete, rename or move to another origin a
 * connection that the current graph of one of its owner's workflows names in an `http.request`
 * node: workflows refer to it by name, and may name absolute urls of its origin. Run with the
 * connection's row locked FOR UPDATE: a workflow save that names a connection takes a share lock
 * on its row in the same transaction as the save, so no workflow can start using it between this
 * check and the change.
 */
async function assertNotInUse(tx: Db, userId: string, connectionName: string, change: GuardedChange): Promise<void> {
  const usage = JSON.stringify([{ type: 'http.request', params: { connection: connectionName } }]);
  const users = await tx
    .select({ id: workflows.id, name: workflows.name, total: sql<number>`(count(*) over ())::int` })
    .from(workflows)
    .where(and(eq(workflows.userId, userId), sql`${workflows.nodes} @> ${usage}::jsonb`))
    .orderBy(workflows.name, workflows.id)
    .limit(LISTED_WORKFLOWS);
  const [first] = users;
  if (!first) return;
  const total = first.total;
  const listed = users.map((workflow) => `${workflow.name} (${workflow.id})`);
  const more = total > users.length ? `, and ${total - users.length} more` : '';
  const [subject, owner] = total === 1 ? ['workflow uses', 'its'] : ['workflows use', 'their'];
  throw new ProblemError(
    409,
    'CONNECTION_IN_USE',
    `${total} ${subject} the connection '${connectionName}': ${listed.join(', ')}${more}. Remove it from ${owner} http.request nodes before you ${remedies[change]}.`,
    { errors: users.map((workflow, index) => ({ path: `workflows[${index}]`, message: `${workflow.name} (${workflow.id})` })) },
  );
}

/**
 * Whether the PATCH keeps the stored secret as it is: it changes other fields, or names a type
 * that takes a secret without giving one. A new secret, or auth `none`, does not keep it.
 */
function keepsStoredSecret(auth: UpdateAuthInput | undefined, current: ConnectionRow): boolean {
  if (auth === undefined) return current.secretCiphertext !== null;
  return auth.type !== 'none' && auth.secret === undefined;
}

/**
 * The secret columns after a PATCH of `auth`, for a connection at `baseUrl` (same origin as the
 * current one when a secret is kept: see update): a new secret is sealed; none given keeps the
 * stored one, which must then meet the rule of the (possibly new) type; `none` clears it.
 */
function secretAfterPatch(keyring: Keyring, auth: UpdateAuthInput, current: ConnectionRow, baseUrl: string): SecretColumns {
  if (auth.type === 'none') return NO_SECRET;
  if (auth.secret !== undefined) return sealedColumns(keyring, auth.secret, { id: current.id, userId: current.userId, baseUrl });
  const refuse = (message: string) => invalidBody('auth.secret', message);
  if (current.secretKeyId === null || current.secretCiphertext === null) throw refuse(`is required: a ${auth.type} connection needs one, and none is stored`);
  const kept: SecretColumns = { secretKeyId: current.secretKeyId, secretCiphertext: current.secretCiphertext };
  if (auth.type === current.authType) return kept;
  // The rules differ by type (a query value may hold a line break, a header value may not).
  let stored: string;
  try {
    stored = keyring.open({ keyId: current.secretKeyId, ciphertext: current.secretCiphertext }, connectionSecretBinding(current));
  } catch (error) {
    if (error instanceof SecretUnreadableError) throw refuse(`is required: the stored secret cannot be read any more, so it cannot be kept for ${auth.type}`);
    throw error;
  }
  if (!secretRules[auth.type].safeParse(stored).success) throw refuse(`is required: the stored secret cannot be used for ${auth.type} (for example it holds a line break)`);
  return kept;
}

/**
 * Changes a connection under a row lock (If-Match first). A move of its baseUrl to another origin
 * (scheme, host or port) takes a new secret in the same PATCH, or auth `none`: a secret is given
 * for one origin and is never sent to another (400 naming auth.secret otherwise); the new one is
 * sealed to the new origin. A rename or a move is refused while a workflow uses the connection,
 * checked under that lock (see assertNotInUse); a taken new name is 409.
 */
export async function update(
  db: Db,
  keyring: Keyring,
  userId: string,
  id: string,
  input: UpdateConnectionInput,
  ifMatch: string | undefined,
): Promise<ConnectionRow | null> {
  try {
    return await updateIfMatch(db, connections, userId, id, ifMatch, async (tx, current) => {
      const baseUrl = input.baseUrl ?? current.baseUrl;
      const moved = connectionSecretScope(baseUrl) !== connectionSecretScope(current.baseUrl);
      if (moved && keepsStoredSecret(input.auth, current)) {
        throw invalidBody(
          'auth.secret',
          `is required when baseUrl moves to another origin (${connectionSecretScope(current.baseUrl)} to ${connectionSecretScope(baseUrl)}): ` +
            'the stored secret was given for the current origin and is never sent to another; send the secret for the new origin, or auth type none',
        );
      }
      const renamed = input.name !== undefined && input.name !== current.name;
      if (renamed || moved) await assertNotInUse(tx, userId, current.name, renamed ? 'rename' : 'move');
      const auth = input.auth ? authColumns(input.auth) : { authType: current.authType, authUsername: current.authUsername, authName: current.authName };
      const headers = input.headers ?? current.headers;
      assertHeadersLeaveAuthHeader(headers, auth);
      const secret = input.auth ? secretAfterPatch(keyring, input.auth, current, baseUrl) : {};
      return {
        name: input.name ?? current.name,
        description: input.description ?? current.description,
        baseUrl,
        headers,
        ...auth,
        ...secret,
      };
    });
  } catch (error) {
    throw input.name === undefined ? error : nameTakenOr(error, uniqueName(input.name));
  }
}

/** Deletes a connection unless a workflow uses it (checked under the row lock: see assertNotInUse). */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return removeIfMatch(db, connections, userId, id, ifMatch, (tx, current) => assertNotInUse(tx, userId, current.name, 'delete'));
}
