import type { Logger } from 'pino';
import postgres from 'postgres';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import type { Config } from '../config.js';
import * as schema from './schema/index.js';

export type Schema = typeof schema;
/** The drizzle database every repository, Better Auth and the engine use; `db.$client` is the postgres.js pool. */
export type Db = PostgresJsDatabase<Schema>;
/** The root database, whose `$client` is the postgres.js pool (a transaction is a Db but not a PooledDb). */
export type PooledDb = Db & { $client: postgres.Sql };
export type Sql = postgres.Sql;
/** A piece of a statement built with the pool's tag, to be nested in another statement. */
export type Fragment = postgres.Fragment;

export interface DbClient {
  readonly db: PooledDb;
  readonly sql: Sql;
  /** What the service is talking to, for logs and for code that must respect the embedded one-connection limit. */
  readonly kind: 'external' | 'embedded';
  /** The pool size actually in use (always 1 on the embedded database). */
  readonly poolSize: number;
  /** Ends the pool (waiting for running queries) and stops the embedded server if there is one. Idempotent. */
  close(): Promise<void>;
}

export interface DbClientOptions {
  readonly url: string;
  readonly poolSize: number;
  readonly idleTimeoutSeconds: number;
  readonly connectTimeoutSeconds: number;
  readonly statementTimeoutMs: number;
  readonly applicationName?: string;
  readonly logger?: Logger;
  /** Sees every statement sent (text and parameters); for diagnostics such as the index tests. */
  readonly onQuery?: (query: string, parameters: readonly unknown[]) => void;
}

/**
 * Creates THE postgres.js pool and its drizzle wrapper. Called once per process, at the entry
 * (server, worker, scripts, test helpers), and injected everywhere else.
 */
export function createDbClient(options: DbClientOptions, kind: DbClient['kind'] = 'external', onClose?: () => Promise<void>): DbClient {
  const sql = postgres(options.url, {
    max: options.poolSize,
    idle_timeout: options.idleTimeoutSeconds,
    connect_timeout: options.connectTimeoutSeconds,
    // Sent in the startup packet, so every pooled connection gets it without an extra round trip.
    connection: {
      application_name: options.applicationName ?? 'autonode',
      ...(options.statementTimeoutMs > 0 ? { statement_timeout: options.statementTimeoutMs } : {}),
    },
    onnotice: (notice) => options.logger?.debug({ notice: notice.message }, 'postgres notice'),
    ...(options.onQuery ? { debug: (_connection: number, query: string, parameters: unknown[]) => options.onQuery?.(query, parameters) } : {}),
  });
  const db = drizzle(sql, { schema });
  let closing: Promise<void> | undefined;
  return {
    db,
    sql,
    kind,
    poolSize: options.poolSize,
    close() {
      closing ??= (async () => {
        await sql.end({ timeout: 5 });
        await onClose?.();
      })();
      return closing;
    },
  };
}

/** Opens the database the config names: the external server, or the embedded one (started here). */
export async function openDatabase(config: Config, logger: Logger, applicationName = 'autonode'): Promise<DbClient> {
  const shared = {
    idleTimeoutSeconds: config.db.idleTimeoutSeconds,
    connectTimeoutSeconds: config.db.connectTimeoutSeconds,
    statementTimeoutMs: config.db.statementTimeoutMs,
    applicationName,
    logger,
  };
  if (config.database.kind === 'external') {
    logger.info({ database: redactUrl(config.database.url), poolSize: config.db.poolSize }, 'database: external PostgreSQL');
    return createDbClient({ ...shared, url: config.database.url, poolSize: config.db.poolSize }, 'external');
  }
  const started = Date.now();
  // Loaded only here: a service on a real PostgreSQL never pays for PGlite's code and memory.
  const { startEmbeddedPostgres } = await import('./embedded.js');
  const embedded = await startEmbeddedPostgres(config.database.dataDir, { seedFromImage: true });
  logger.warn(
    { dataDir: embedded.dataDir, startedInMs: Date.now() - started },
    'database: EMBEDDED PostgreSQL (PGlite, one connection; for development only, set DATABASE_URL for a real server)',
  );
  // PGlite serves one connection correctly; a larger pool interleaves queries (ARCHITECTURE.md).
  return createDbClient({ ...shared, url: embedded.url, poolSize: 1 }, 'embedded', () => embedded.stop());
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '[unparseable url]';
  }
}
