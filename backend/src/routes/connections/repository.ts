import { randomUUID } from 'node:crypto';
import { and, count, eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { isUniqueViolation } from '../../db/errors.js';
import { connections, workflows } from '../../db/schema/index.js';
import { removeIfMatch, updateIfMatch } from '../../lib/conditional-update.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { columnSortKeys, getOwned, listOwned, type ListParams, type Page } from '../../lib/pagination.js';
import { conflict, ProblemError } from '../../lib/problem.js';
import { SecretUnreadableError, type Keyring, type SealedSecret } from '../../secrets/keyring.js';
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
const LISTED_USERS = 20;

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

/** Seals a secret to its row and owner: a ciphertext copied to another row or user does not open. */
function sealedColumns(keyring: Keyring, secret: string, rowId: string, userId: string): SecretColumns {
  const sealed: SealedSecret = keyring.seal(secret, { table: 'connections', rowId, userId });
  return { secretKeyId: sealed.keyId, secretCiphertext: sealed.ciphertext };
}

const nameTaken = (name: string) => conflict(`You already have a connection named '${name}'.`, 'NAME_TAKEN');
const isNameTaken = (error: unknown) => isUniqueViolation(error, 'connections_user_name_idx');

/**
 * A plain header may not repeat the header that carries the secret: one of the two would be lost,
 * and which one would depend on the engine.
 */
function assertHeadersLeaveAuthHeader(headers: Record<string, string>, auth: Pick<ConnectionRow, 'authType' | 'authName'>): void {
  if (auth.authType === 'header' && auth.authName !== null && Object.hasOwn(headers, auth.authName)) {
    throw new ProblemError(400, 'VALIDATION_FAILED', 'The body is invalid.', {
      errors: [{ path: `headers.${auth.authName}`, message: 'is the header auth.name sends the secret in; set it in one place only' }],
    });
  }
}

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<ConnectionDto>> {
  return listOwned(db, connections, userId, params, { sortKeys, searchColumns: [connections.name, connections.description] }, present);
}

export async function get(db: Db, userId: string, id: string): Promise<ConnectionRow | null> {
  return getOwned(db, connections, userId, id);
}

/**
 * Creates a connection. Its id is chosen here because its secret is sealed to it. The count of the
 * user's connections and the insert happen under a lock per user (a transaction-scoped advisory
 * lock), so concurrent creations cannot pass the limit together; a taken name is the unique
 * index's verdict (409 NAME_TAKEN), so it holds against concurrent creations too.
 */
export async function create(db: Db, keyring: Keyring, userId: string, input: CreateConnectionInput, limits: ConnectionLimits): Promise<ConnectionRow> {
  const auth = authColumns(input.auth);
  assertHeadersLeaveAuthHeader(input.headers, auth);
  const id = randomUUID();
  const secret = input.auth.type === 'none' ? NO_SECRET : sealedColumns(keyring, input.auth.secret, id, userId);
  try {
    return await db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`connections-per-user:${userId}`}, 0))`);
      const [owned] = await tx.select({ connections: count() }).from(connections).where(eq(connections.userId, userId));
      if ((owned?.connections ?? 0) >= limits.maxPerUser) {
        throw conflict(`You have ${limits.maxPerUser} connections, the most allowed; delete one to create another.`, 'CONNECTION_LIMIT_REACHED');
      }
      const [row] = await tx
        .insert(connections)
        .values({ id, userId, name: input.name, description: input.description, baseUrl: input.baseUrl, headers: input.headers, ...auth, ...secret })
        .returning();
      if (!row) throw new Error('insert returned no row');
      return row;
    });
  } catch (error) {
    if (isNameTaken(error)) throw nameTaken(input.name);
    throw error;
  }
}

/**
 * Refuses (409 CONNECTION_IN_USE, naming them) to delete or rename a connection that the current
 * graph of one of its owner's workflows names in an `http.request` node: workflows refer to it by
 * name. Run with the connection's row locked FOR UPDATE: a workflow save that names a connection
 * takes a share lock on its row in the same transaction as the save, so no workflow can start
 * using it between this check and the delete or rename.
 */
async function assertNotInUse(tx: Db, userId: string, connectionName: string, action: 'delete' | 'rename'): Promise<void> {
  const usage = JSON.stringify([{ type: 'http.request', params: { connection: connectionName } }]);
  const users = await tx
    .select({ id: workflows.id, name: workflows.name, total: sql<number>`(count(*) over ())::int` })
    .from(workflows)
    .where(and(eq(workflows.userId, userId), sql`${workflows.nodes} @> ${usage}::jsonb`))
    .orderBy(workflows.name, workflows.id)
    .limit(LISTED_USERS);
  const [first] = users;
  if (!first) return;
  const total = first.total;
  const listed = users.map((workflow) => `${workflow.name} (${workflow.id})`);
  const more = total > users.length ? `, and ${total - users.length} more` : '';
  const [subject, owner] = total === 1 ? ['workflow uses', 'its'] : ['workflows use', 'their'];
  const remedy = action === 'delete' ? 'delete it' : 'rename it (workflows refer to it by name)';
  throw new ProblemError(
    409,
    'CONNECTION_IN_USE',
    `${total} ${subject} the connection '${connectionName}': ${listed.join(', ')}${more}. Remove it from ${owner} http.request nodes before you ${remedy}.`,
    { errors: users.map((workflow, index) => ({ path: `workflows[${index}]`, message: `${workflow.name} (${workflow.id})` })) },
  );
}

/**
 * The secret columns after a PATCH of `auth`: a new secret is sealed; none given keeps the stored
 * one, which must then meet the rule of the (possibly new) type; `none` clears it.
 */
function secretAfterPatch(keyring: Keyring, auth: UpdateAuthInput, current: ConnectionRow): SecretColumns {
  if (auth.type === 'none') return NO_SECRET;
  if (auth.secret !== undefined) return sealedColumns(keyring, auth.secret, current.id, current.userId);
  const refuse = (message: string) =>
    new ProblemError(400, 'VALIDATION_FAILED', 'The body is invalid.', { errors: [{ path: 'auth.secret', message }] });
  if (current.secretKeyId === null || current.secretCiphertext === null) throw refuse(`is required: a ${auth.type} connection needs one, and none is stored`);
  const kept: SecretColumns = { secretKeyId: current.secretKeyId, secretCiphertext: current.secretCiphertext };
  if (auth.type === current.authType) return kept;
  // The rules differ by type (a query value may hold a line break, a header value may not).
  let stored: string;
  try {
    stored = keyring.open({ keyId: current.secretKeyId, ciphertext: current.secretCiphertext }, { table: 'connections', rowId: current.id, userId: current.userId });
  } catch (error) {
    if (error instanceof SecretUnreadableError) throw refuse(`is required: the stored secret cannot be read any more, so it cannot be kept for ${auth.type}`);
    throw error;
  }
  if (!secretRules[auth.type].safeParse(stored).success) throw refuse(`is required: the stored secret cannot be used for ${auth.type} (for example it holds a line break)`);
  return kept;
}

/**
 * Changes a connection under a row lock (If-Match first). A rename is refused while a workflow
 * uses the old name, checked under that lock (see assertNotInUse); a taken new name is 409.
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
      if (input.name !== undefined && input.name !== current.name) await assertNotInUse(tx, userId, current.name, 'rename');
      const auth = input.auth ? authColumns(input.auth) : { authType: current.authType, authUsername: current.authUsername, authName: current.authName };
      const headers = input.headers ?? current.headers;
      assertHeadersLeaveAuthHeader(headers, auth);
      const secret = input.auth ? secretAfterPatch(keyring, input.auth, current) : {};
      return {
        name: input.name ?? current.name,
        description: input.description ?? current.description,
        baseUrl: input.baseUrl ?? current.baseUrl,
        headers,
        ...auth,
        ...secret,
      };
    });
  } catch (error) {
    if (input.name !== undefined && isNameTaken(error)) throw nameTaken(input.name);
    throw error;
  }
}

/** Deletes a connection unless a workflow uses it (checked under the row lock: see assertNotInUse). */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return removeIfMatch(db, connections, userId, id, ifMatch, (tx, current) => assertNotInUse(tx, userId, current.name, 'delete'));
}
