import type { Sql } from '../db/client.js';
import { connectionSecretBinding, eventSubscriptionSecretBinding, variableSecretBinding } from './bindings.js';
import { SecretUnreadableError, type Keyring, type SecretBinding } from './keyring.js';

/**
 * Every table whose rows hold a sealed secret (the columns of src/db/schema/secrets.ts). A table
 * that gains those columns belongs here, or its secrets never leave an old key
 * (test/secrets-rotation.test.ts compares this list with the database's tables).
 */
export const sealedSecretTables = ['connections', 'variables', 'event_subscriptions'] as const satisfies readonly SecretBinding['table'][];
export type SealedSecretTable = (typeof sealedSecretTables)[number];

/** A column of sealed envelopes; its key ids are in the column of the same prefix ending in `_key_id`. */
export type SealedSecretColumn = 'secret_ciphertext' | 'previous_secret_ciphertext';

/**
 * Every place a sealed secret is stored: a table, and one of its ciphertext columns. An event
 * subscription holds two secrets after a rotation, both sealed with its binding; the previous one
 * is re-wrapped like the current one, expired or not (an expired one is never opened again, but
 * left under an old key it would keep that key needed). The test compares this list with the
 * database's columns too.
 */
export const sealedSecretColumns: readonly { readonly table: SealedSecretTable; readonly column: SealedSecretColumn }[] = [
  { table: 'connections', column: 'secret_ciphertext' },
  { table: 'variables', column: 'secret_ciphertext' },
  { table: 'event_subscriptions', column: 'secret_ciphertext' },
  { table: 'event_subscriptions', column: 'previous_secret_ciphertext' },
];

/** The column of key ids beside a ciphertext column. */
const keyIdColumnOf = (column: SealedSecretColumn): string => column.replace(/_ciphertext$/, '_key_id');

/** A secret the rotation could not open, named by its row (never by its value or ciphertext). */
export interface UnreadableSecret {
  readonly rowId: string;
  /** SecretUnreadableError's message: which check failed, without key material. */
  readonly reason: string;
}

export interface TableRotation {
  readonly table: SealedSecretTable;
  /** Which of the table's secrets (sealedSecretColumns). */
  readonly column: SealedSecretColumn;
  /** Re-wrapped under the first key by this run. */
  readonly rewrapped: number;
  /** Under the first key already when the run began (not opened: the rotation does not need them). */
  readonly alreadyCurrent: number;
  /** Under another key and not opened by any configured key: left as they are. */
  readonly unreadable: readonly UnreadableSecret[];
  /**
   * Readable, yet still under another key when the run ended: locked by a change in progress
   * through every pass, or sealed meanwhile by a process whose first key is still an old one.
   */
  readonly notReached: number;
}

export interface RotationReport {
  /** The key every secret is wrapped by once the rotation is complete. */
  readonly primaryKeyId: string;
  readonly tables: readonly TableRotation[];
}

export interface RotationOptions {
  /** Rows per transaction: the most row locks the rotation holds at once. */
  readonly batchSize?: number;
  /** Passes over a table while rows are left that a pass skipped (SKIP LOCKED); at least 1. */
  readonly maxPasses?: number;
  readonly pauseBetweenPassesMs?: number;
}

/** A row's secret as one column pair reads (its own column names are aliased to these). */
interface SealedRow {
  readonly id: string;
  readonly user_id: string;
  /** A connection's base URL (its origin is bound into the secret); null for the other tables. */
  readonly base_url: string | null;
  readonly secret_key_id: string | null;
  readonly secret_ciphertext: string;
}

/** The binding a row's secret was sealed with, as the service seals it (src/secrets/bindings.ts). */
function bindingOf(table: SealedSecretTable, row: SealedRow): SecretBinding {
  const owner = { id: row.id, userId: row.user_id };
  switch (table) {
    case 'variables':
      return variableSecretBinding(owner);
    case 'event_subscriptions':
      return eventSubscriptionSecretBinding(owner);
    case 'connections':
      if (row.base_url === null) throw new SecretUnreadableError('it has no base URL');
      return connectionSecretBinding({ ...owner, baseUrl: row.base_url });
  }
}

const DEFAULT_BATCH_SIZE = 100;
const DEFAULT_MAX_PASSES = 5;
const DEFAULT_PAUSE_BETWEEN_PASSES_MS = 500;

/**
 * Re-wraps every stored secret that is not under the keyring's first key (Keyring.rewrap: the
 * data key is wrapped anew, the value's ciphertext stays) and reports, per table, what it did.
 * It runs beside the live service: each batch is one short transaction over rows taken with
 * FOR UPDATE SKIP LOCKED, so a request changing a row is never waited on (the row is retried in a
 * later pass). It never stops on a secret it cannot open: that row is counted and named, and left
 * as it is. Running it again changes nothing once every readable secret is under the first key.
 */
export async function rotateSecrets(sql: Sql, keyring: Keyring, options: RotationOptions = {}): Promise<RotationReport> {
  const tables: TableRotation[] = [];
  for (const { table, column } of sealedSecretColumns) tables.push(await rotateTable(sql, keyring, table, column, options));
  return { primaryKeyId: keyring.primaryKeyId, tables };
}

async function rotateTable(sql: Sql, keyring: Keyring, table: SealedSecretTable, column: SealedSecretColumn, options: RotationOptions): Promise<TableRotation> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  const maxPasses = Math.max(1, options.maxPasses ?? DEFAULT_MAX_PASSES);
  const primaryKeyId = keyring.primaryKeyId;

  const [current] = await sql<{ count: number }[]>`
    select count(*)::int as count from ${sql(table)}
    where ${sql(column)} is not null and ${sql(keyIdColumnOf(column))} = ${primaryKeyId}`;

  let rewrapped = 0;
  // By row id, so a row met again in a later pass is counted once.
  const unreadable = new Map<string, string>();
  let notReached = 0;
  for (let pass = 1; pass <= maxPasses; pass += 1) {
    let afterId: string | undefined;
    for (;;) {
      const batch = await rotateBatch(sql, keyring, table, column, afterId, batchSize);
      rewrapped += batch.rewrapped;
      for (const { rowId, reason } of batch.unreadable) unreadable.set(rowId, reason);
      if (batch.lastId === undefined) break;
      afterId = batch.lastId;
    }
    notReached = await countOldKeyRows(sql, table, column, primaryKeyId, [...unreadable.keys()]);
    if (notReached === 0) break;
    if (pass < maxPasses) await new Promise((resolve) => setTimeout(resolve, options.pauseBetweenPassesMs ?? DEFAULT_PAUSE_BETWEEN_PASSES_MS));
  }

  // A row found unreadable may have been given a new secret since (under the first key): it is no
  // longer a reason to keep an old key, so only rows still under another key are reported.
  const stillUnreadable = await stillUnderOldKey(sql, table, column, primaryKeyId, [...unreadable.keys()]);
  return {
    table,
    column,
    rewrapped,
    alreadyCurrent: current?.count ?? 0,
    unreadable: [...unreadable].filter(([rowId]) => stillUnreadable.has(rowId)).map(([rowId, reason]) => ({ rowId, reason })),
    notReached,
  };
}

/**
 * One transaction: up to `batchSize` rows after `afterId` (by id) whose secret in `column` is
 * under another key, locked, re-wrapped and written back. `lastId` is the last row taken
 * (undefined: none left after `afterId` this pass). Rows that another transaction holds are
 * skipped, not waited for.
 */
async function rotateBatch(
  sql: Sql,
  keyring: Keyring,
  table: SealedSecretTable,
  column: SealedSecretColumn,
  afterId: string | undefined,
  batchSize: number,
): Promise<{ lastId: string | undefined; rewrapped: number; unreadable: UnreadableSecret[] }> {
  const keyIdColumn = keyIdColumnOf(column);
  return sql.begin(async (tx) => {
    const rows = await tx<SealedRow[]>`
      select id, user_id, ${table === 'connections' ? tx`base_url` : tx`null::text as base_url`},
        ${tx(keyIdColumn)} as secret_key_id, ${tx(column)} as secret_ciphertext
      from ${tx(table)}
      where ${tx(column)} is not null and ${tx(keyIdColumn)} is distinct from ${keyring.primaryKeyId}
        ${afterId === undefined ? tx`` : tx`and id > ${afterId}`}
      order by id
      limit ${batchSize}
      for update skip locked`;

    const unreadable: UnreadableSecret[] = [];
    const rewraps: { id: string; previous: string; keyId: string; ciphertext: string }[] = [];
    for (const row of rows) {
      try {
        if (row.secret_key_id === null) throw new SecretUnreadableError('it has no key id');
        const binding = bindingOf(table, row);
        const stored = { keyId: row.secret_key_id, ciphertext: row.secret_ciphertext };
        // Opened first, and the value dropped: rewrap alone checks the wrapped data key but not the
        // value's ciphertext, and a secret reported rewrapped must be one that reads.
        keyring.open(stored, binding);
        const sealed = keyring.rewrap(stored, binding);
        rewraps.push({ id: row.id, previous: row.secret_ciphertext, keyId: sealed.keyId, ciphertext: sealed.ciphertext });
      } catch (error) {
        if (!(error instanceof SecretUnreadableError)) throw error;
        unreadable.push({ rowId: row.id, reason: error.message });
      }
    }

    let rewrapped = 0;
    if (rewraps.length > 0) {
      // The row locks keep the secret as read until this transaction ends; the condition on the
      // previous ciphertext makes the write correct on its own too: a secret that changed since it
      // was read (a PATCH, sealed under the first key) is never overwritten with the old one.
      // version and updated_at stay: the secret's value, and so the resource, did not change.
      const updated = await tx<{ id: string }[]>`
        update ${tx(table)} as target
        set ${tx(keyIdColumn)} = source.key_id, ${tx(column)} = source.ciphertext
        from unnest(
          ${tx.array(rewraps.map((rewrap) => rewrap.id))}::uuid[],
          ${tx.array(rewraps.map((rewrap) => rewrap.previous))}::text[],
          ${tx.array(rewraps.map((rewrap) => rewrap.keyId))}::text[],
          ${tx.array(rewraps.map((rewrap) => rewrap.ciphertext))}::text[]
        ) as source(id, previous, key_id, ciphertext)
        where target.id = source.id and target.${tx(column)} = source.previous
        returning target.id`;
      rewrapped = updated.length;
    }
    return { lastId: rows.at(-1)?.id, rewrapped, unreadable };
  });
}

/** Rows of `table` whose secret in `column` is still under a key other than the first, apart from those in `exceptIds`. */
async function countOldKeyRows(sql: Sql, table: SealedSecretTable, column: SealedSecretColumn, primaryKeyId: string, exceptIds: readonly string[]): Promise<number> {
  const [row] = await sql<{ count: number }[]>`
    select count(*)::int as count from ${sql(table)}
    where ${sql(column)} is not null and ${sql(keyIdColumnOf(column))} is distinct from ${primaryKeyId}
      and not (id = any(${sql.array([...exceptIds])}::uuid[]))`;
  return row?.count ?? 0;
}

/** Which of `ids` still have their secret in `column` under a key other than the first. */
async function stillUnderOldKey(sql: Sql, table: SealedSecretTable, column: SealedSecretColumn, primaryKeyId: string, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await sql<{ id: string }[]>`
    select id from ${sql(table)}
    where ${sql(column)} is not null and ${sql(keyIdColumnOf(column))} is distinct from ${primaryKeyId}
      and id = any(${sql.array([...ids])}::uuid[])`;
  return new Set(rows.map((row) => row.id));
}

/** Whether the old keys may leave SECRETS_KEYS: every secret is under the first key, or is gone. */
export function rotationComplete(report: RotationReport): boolean {
  return report.tables.every((table) => table.unreadable.length === 0 && table.notReached === 0);
}

/** How a report names a table's secrets: the table for its (current) secret, `table.column` for another. */
const labelOf = (rotation: TableRotation): string => (rotation.column === 'secret_ciphertext' ? rotation.table : `${rotation.table}.${rotation.column}`);

/** The rotation's report as an operator reads it: one line per table (and other secret column), then each unreadable row, then the verdict. */
export function describeRotation(report: RotationReport): string[] {
  const lines = report.tables.map((table) => {
    const parts = [`${table.rewrapped} rewrapped`, `${table.alreadyCurrent} already current`, `${table.unreadable.length} unreadable`];
    if (table.notReached > 0) parts.push(`${table.notReached} not reached (changed during the run: run again)`);
    return `${labelOf(table)}: ${parts.join(', ')}`;
  });
  for (const table of report.tables) {
    for (const { rowId, reason } of table.unreadable) lines.push(`unreadable: ${labelOf(table)} row ${rowId}: ${reason}`);
  }
  const rewrapped = report.tables.reduce((sum, table) => sum + table.rewrapped, 0);
  const key = `'${report.primaryKeyId}'`;
  if (!rotationComplete(report)) {
    lines.push('not complete: keep the old keys in SECRETS_KEYS until a run reports 0 unreadable and 0 not reached');
  } else if (rewrapped === 0) {
    lines.push(`nothing to do: every secret is already under key ${key}`);
  } else {
    lines.push(`done: every secret is under key ${key}; the other keys may now leave SECRETS_KEYS`);
  }
  return lines;
}
