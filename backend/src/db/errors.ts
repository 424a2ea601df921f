/**
 * Errors that mean "the database cannot be reached right now" rather than "this query is wrong":
 * the caller should retry later (503), and nothing about the failure is the caller's fault.
 */
const unavailableErrnoCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);
// postgres.js's own connection errors.
const unavailableDriverCodes = new Set(['CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED']);
// SQLSTATE classes 08 (connection exception) and 57P0x (operator intervention: shutdown, crash recovery), 53300 too many connections.
const unavailableSqlStates = /^(08|57P0[1-4]|53300)/;

export function isDatabaseUnavailable(error: unknown): boolean {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && (unavailableErrnoCodes.has(code) || unavailableDriverCodes.has(code) || unavailableSqlStates.test(code))) {
      return true;
    }
    // drizzle wraps driver errors ("Failed query: ...") with the original as `cause`.
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** The SQLSTATE of a PostgreSQL error, looked up through drizzle's wrapping (`cause`). */
function sqlState(error: unknown): string | undefined {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** SQLSTATE class 22, data exception (bad encoding, out-of-range value), anywhere in the cause chain. */
export function isDataException(error: unknown): boolean {
  return sqlState(error)?.startsWith('22') ?? false;
}

/** 23505 on the named unique index: the value is taken (a name already in use, say). */
export function isUniqueViolation(error: unknown, indexName: string): boolean {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    const fields = current as { code?: unknown; constraint_name?: unknown };
    if (fields.code === '23505') return fields.constraint_name === indexName;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * 40P01 (deadlock detected: PostgreSQL aborted this transaction to break a cycle of waits) or
 * 40001 (serialization failure): nothing of the transaction was stored, and running it again
 * normally succeeds, since the transaction it collided with has moved on.
 */
export function isTransientConflict(error: unknown): boolean {
  const state = sqlState(error);
  return state === '40P01' || state === '40001';
}

/** A relation or schema that does not exist (42P01, 3F000): a database not migrated (that far) yet. */
export function isMissingRelation(error: unknown): boolean {
  const state = sqlState(error);
  return state === '42P01' || state === '3F000';
}

/** 23503: a row refers to one that is not (or no longer) there. */
export function isForeignKeyViolation(error: unknown): boolean {
  return sqlState(error) === '23503';
}

/**
 * The database refused a value, not the statement's shape or its connection: SQLSTATE class 22
 * (data exception: 22P05 a NUL in JSON, 22P02 an unpaired surrogate, 22023 a NOTIFY payload too
 * long, 22021 bad encoding) or 54 (program limit exceeded: 54000 a value too large, 54001 nesting
 * too deep). Writing the same value again fails the same way, so it must not be retried.
 */
export function isRefusedValue(error: unknown): boolean {
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^(22|54)[0-9A-Z]{3}$/.test(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** An error raised by PostgreSQL or its driver: its message is the database's, never shown to a user. */
export function isDatabaseError(error: unknown): boolean {
  if (isDatabaseUnavailable(error)) return true;
  for (let current: unknown = error, depth = 0; current && depth < 5; depth++) {
    const fields = current as { name?: unknown; severity?: unknown; code?: unknown };
    if (fields.name === 'PostgresError' || (typeof fields.severity === 'string' && typeof fields.code === 'string')) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * One line for a process that failed to start or a script that failed: the driver's reason (the
 * innermost cause: "database x does not exist", "connect ECONNREFUSED ...") and, for a query that
 * drizzle wrapped ("Failed query: <sql>\nparams: <values>"), that query's text cut short, never its
 * parameter values (they may hold data).
 */
export function describeFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  let innermost: Error = error;
  for (let depth = 0; innermost.cause instanceof Error && depth < 5; depth++) innermost = innermost.cause;
  if (innermost === error) return error.message.trim();
  const query = /^Failed query: (.*)$/m.exec(error.message)?.[1]?.trim();
  const reason = innermost.message.trim();
  if (query === undefined) return `${error.message.trim()}: ${reason}`;
  return `${reason} (in the query ${query.length > 160 ? `${query.slice(0, 160)}…` : query})`;
}
