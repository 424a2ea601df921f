/**
 * Guards for destructive operations. They refuse on names alone, before any connection, so a
 * mistyped URL can never reach a production database.
 */
const productionLookingUrl = /prod|\.com|rds\.amazonaws/i;

export function refusalToWipe(options: { nodeEnv: string | undefined; url: string | undefined; operation: string }): string | null {
  if (options.nodeEnv === 'production') {
    return `${options.operation} refused: NODE_ENV is production, and this deletes data.`;
  }
  if (options.url && productionLookingUrl.test(options.url)) {
    return `${options.operation} refused: the database URL looks like a production database (it contains 'prod', '.com' or 'rds.amazonaws').`;
  }
  return null;
}
