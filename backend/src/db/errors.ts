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

/** 23503: a row refers to one that is not (or no longer) there. */
export function isForeignKeyViolation(error: unknown): boolean {
  return sqlState(error) === '23503';
}
