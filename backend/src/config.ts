import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import ipaddr from 'ipaddr.js';
import { allowEntryProblem } from './engine/http-request.js';
import { parseKeyEntries } from './secrets/keyring.js';

/** The repository root: `.data/` (the embedded database) lives here, whatever the working directory. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The secret used when BETTER_AUTH_SECRET is unset outside production. It is public (it is in this
 * file), so production refuses it: sessions signed with it could be forged by anyone.
 */
export const DEVELOPMENT_AUTH_SECRET = 'autonode-development-secret-do-not-use-in-production';

const booleanFromEnv = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'expected true or false' })
  .transform((value) => value === 'true' || value === '1' || value === 'yes');

const integerFromEnv = (min: number, max: number) =>
  z.coerce
    .number({ message: 'expected a whole number' })
    .int({ message: 'expected a whole number' })
    .min(min, { message: `expected a number >= ${min}` })
    .max(max, { message: `expected a number <= ${max}` });

const originList = z.string().transform((value, ctx) => {
  const origins: string[] = [];
  for (const entry of value.split(',').map((part) => part.trim()).filter(Boolean)) {
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      ctx.addIssue({ code: 'custom', message: `'${entry}' is not an origin (scheme://host[:port])` });
      return z.NEVER;
    }
    if (url.origin !== entry.replace(/\/$/, '')) {
      ctx.addIssue({ code: 'custom', message: `'${entry}' must be a bare origin such as ${url.origin}` });
      return z.NEVER;
    }
    origins.push(url.origin);
  }
  return origins;
});

/**
 * Fastify's `trustProxy`: false (ignore X-Forwarded-*), true (trust every hop), a hop count, or a
 * comma-separated list of proxy addresses/CIDRs. Only a trusted proxy may set the client address.
 */
const trustProxy = z.string().transform((value, ctx): boolean | number | string[] => {
  const trimmed = value.trim();
  if (trimmed === 'false' || trimmed === '') return false;
  if (trimmed === 'true') return true;
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const entries = trimmed.split(',').map((part) => part.trim()).filter(Boolean);
  if (entries.every((entry) => isAddressOrCidr(entry) || entry === 'loopback' || entry === 'linklocal' || entry === 'uniquelocal')) {
    return entries;
  }
  ctx.addIssue({ code: 'custom', message: 'expected false, true, a hop count, or a comma-separated list of addresses/CIDRs' });
  return z.NEVER;
});

/** An IP address or a CIDR that ipaddr.js (as proxy-addr, which Fastify's trustProxy uses) reads. */
function isAddressOrCidr(entry: string): boolean {
  // proxy-addr refuses a /0 range ("invalid range on address") when the server starts.
  return entry.includes('/') ? ipaddr.isValidCIDR(entry) && Number(entry.split('/')[1]) > 0 : ipaddr.isValid(entry);
}

const postgresUrl = z
  .string()
  .refine((value) => /^postgres(ql)?:\/\//.test(value), { message: 'expected a postgres:// or postgresql:// URL' });

const variablesSchema = z.object({
    NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
    HOST: z.string().min(1).default('127.0.0.1'),
    PORT: integerFromEnv(0, 65535).default(3000),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    DATABASE_URL: postgresUrl.optional(),
    EMBEDDED_DATA_DIR: z.string().min(1).default(path.join(repoRoot, '.data')),
    DB_POOL_SIZE: integerFromEnv(1, 1000).default(10),
    DB_IDLE_TIMEOUT: integerFromEnv(0, 86_400).default(20),
    DB_CONNECT_TIMEOUT: integerFromEnv(1, 600).default(10),
    DB_STATEMENT_TIMEOUT: integerFromEnv(0, 3_600_000).default(30_000),
    MIGRATE_ON_START: booleanFromEnv.default(false),
    AUTH_BASE_URL: z
      .url({ message: 'expected an absolute http(s) URL' })
      .default('http://localhost:3000/api')
      .refine((value) => /^https?:$/.test(new URL(value).protocol), { message: 'expected an http(s) URL' })
      .refine((value) => new URL(value).pathname.replace(/\/+$/, '') === '/api', {
        message: 'must be the public URL of the API root, ending in /api (for example http://localhost:3000/api)',
      })
      .transform((value) => value.replace(/\/+$/, '')),
    BETTER_AUTH_SECRET: z.string().min(32, { message: 'must be at least 32 characters' }).optional(),
    SECRETS_KEYS: z
      .string()
      .superRefine((value, ctx) => {
        try {
          parseKeyEntries(value);
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
        }
      })
      .optional(),
    CONNECTIONS_PER_USER: integerFromEnv(1, 100_000).default(100),
    VARIABLES_PER_USER: integerFromEnv(1, 100_000).default(500),
    EVENT_SUBSCRIPTIONS_PER_USER: integerFromEnv(1, 10_000).default(20),
    CORS_ORIGINS: originList.default(['http://localhost:8100']),
    AUTH_CACHE_TTL_MS: integerFromEnv(0, 60_000).default(5_000),
    API_KEYS_PER_USER: integerFromEnv(1, 100_000).default(100),
    USER_STORAGE_MAX_BYTES: integerFromEnv(1_024, Number.MAX_SAFE_INTEGER).default(1024 * 1024 * 1024),
    AUTH_CACHE_MAX_BYTES: integerFromEnv(65_536, 1024 * 1024 * 1024).default(16 * 1024 * 1024),
    AUTH_RATE_LIMIT_MAX: integerFromEnv(1, 1_000_000).default(10),
    AUTH_RATE_LIMIT_WINDOW_S: integerFromEnv(1, 86_400).default(60),
    RATE_LIMIT_MAX: integerFromEnv(1, 10_000_000).default(1_200),
    RATE_LIMIT_WINDOW_MS: integerFromEnv(1_000, 86_400_000).default(60_000),
    RATE_LIMIT_SYNC_MS: integerFromEnv(50, 60_000).default(1_000),
    WEBHOOK_RATE_LIMIT_MAX: integerFromEnv(1, 10_000_000).default(600),
    EVENT_STREAMS_PER_USER: integerFromEnv(1, 10_000).default(20),
    AUTH_FAILURE_LIMIT: integerFromEnv(1, 1_000_000).default(60),
    DB_ACQUIRE_TIMEOUT_MS: integerFromEnv(1, 60_000).default(3_000),
    HANDLER_TIMEOUT_MS: integerFromEnv(100, 600_000).default(30_000),
    TRUST_PROXY: trustProxy.default(false),
    SHUTDOWN_GRACE_MS: integerFromEnv(0, 600_000).default(10_000),
    JOBS_PER_USER_MAX: integerFromEnv(1, 1_000_000).default(100),
    SCHEDULE_MIN_INTERVAL_S: integerFromEnv(60, 86_400).default(60),
    ENABLE_TEST_ROUTES: booleanFromEnv.default(false),
    ENGINE_ENABLED: booleanFromEnv.default(true),
    ENGINE_CONCURRENCY: integerFromEnv(1, 1000).default(4),
    ENGINE_USER_CONCURRENCY: integerFromEnv(1, 10_000).default(2),
    ENGINE_USER_WAITING_MAX: integerFromEnv(1, 1_000_000).default(1_000),
    ENGINE_LEASE_MS: integerFromEnv(1_000, 3_600_000).default(30_000),
    ENGINE_POLL_MS: integerFromEnv(10, 60_000).default(500),
    ENGINE_HTTP_ALLOW: z
      .string()
      .default('')
      .transform((value, ctx) => {
        const entries = value.split(',').map((entry) => entry.trim()).filter(Boolean);
        for (const entry of entries) {
          const problem = allowEntryProblem(entry);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }
        return entries;
      }),
    ENGINE_HTTP_TIMEOUT_MS: integerFromEnv(1, 300_000).default(30_000),
    ENGINE_HTTP_MAX_RESPONSE_BYTES: integerFromEnv(1_024, 100 * 1024 * 1024).default(1024 * 1024),
    // 2 MiB: a webhook's 1 MiB body must fit in its run's input beside the method, headers and query.
    ENGINE_MAX_PAYLOAD_BYTES: integerFromEnv(1_024, 100 * 1024 * 1024).default(2 * 1024 * 1024),
    EVENT_DELIVERY_CONCURRENCY: integerFromEnv(1, 1000).default(8),
    EVENT_DELIVERY_PER_SUBSCRIPTION: integerFromEnv(1, 100).default(2),
    EVENT_DELIVERY_PER_USER: integerFromEnv(1, 1000).default(4),
    EVENT_RETRY_BASE_MS: integerFromEnv(10, 3_600_000).default(30_000),
    API_MAX_PAGE_DATA_BYTES: integerFromEnv(1_024, 256 * 1024 * 1024).default(8 * 1024 * 1024),
    EXPRESSION_TIMEOUT_MS: integerFromEnv(10, 60_000).default(1_000),
    EXPRESSION_WORKERS: integerFromEnv(1, 64).default(3),
    EXPRESSION_MAX_HEAP_MB: integerFromEnv(32, 4_096).default(128),
    EXPRESSION_MAX_TEMPLATES: integerFromEnv(1, 100_000).default(1_000),
    EXECUTION_RETENTION_DAYS: integerFromEnv(1, 3_650).default(30),
});

/** Every variable the service reads (the .env.example test checks each is documented). */
export const configVariables = Object.keys(variablesSchema.shape);

/**
 * The environment, checked (production refuses what is only safe in development) and shaped into the
 * service's config: nested, deeply frozen. `Config` is this schema's output type.
 */
const configSchema = variablesSchema
  .superRefine((env, ctx) => {
    if (env.NODE_ENV !== 'production') return;
    if (!env.DATABASE_URL) {
      ctx.addIssue({ code: 'custom', path: ['DATABASE_URL'], message: 'is required in production (the embedded database is for development only)' });
    }
    if (!env.BETTER_AUTH_SECRET || env.BETTER_AUTH_SECRET === DEVELOPMENT_AUTH_SECRET) {
      ctx.addIssue({ code: 'custom', path: ['BETTER_AUTH_SECRET'], message: 'must be set to a private random value in production (openssl rand -base64 32)' });
    }
    if (!env.SECRETS_KEYS) {
      ctx.addIssue({ code: 'custom', path: ['SECRETS_KEYS'], message: 'must be set in production: id:base64key, for example k1:<the output of openssl rand -base64 32>' });
    }
    if (env.ENABLE_TEST_ROUTES) {
      ctx.addIssue({ code: 'custom', path: ['ENABLE_TEST_ROUTES'], message: 'must not be enabled in production' });
    }
  })
  .transform((env) =>
    deepFreeze({
      env: env.NODE_ENV,
      isProduction: env.NODE_ENV === 'production',
      host: env.HOST,
      port: env.PORT,
      logLevel: env.LOG_LEVEL,
      /** An external server (DATABASE_URL), or the embedded one (development only) in its data directory. */
      database: env.DATABASE_URL
        ? { kind: 'external' as const, url: env.DATABASE_URL }
        : // A relative path is the user's, from where they ran the command: npm runs the workspace's
          // scripts in backend/, and says where it was started in INIT_CWD.
          { kind: 'embedded' as const, dataDir: path.resolve(commandDirectory(), env.EMBEDDED_DATA_DIR) },
      db: {
        poolSize: env.DB_POOL_SIZE,
        idleTimeoutSeconds: env.DB_IDLE_TIMEOUT,
        connectTimeoutSeconds: env.DB_CONNECT_TIMEOUT,
        /** 0 disables the server-side limit. */
        statementTimeoutMs: env.DB_STATEMENT_TIMEOUT,
        migrateOnStart: env.MIGRATE_ON_START,
        /** Longest a request waits for a free database connection before it is answered 503. */
        acquireTimeoutMs: env.DB_ACQUIRE_TIMEOUT_MS,
      },
      auth: {
        /** Public URL of the API root (…/api); Better Auth lives at `${apiBaseUrl}/auth`. */
        apiBaseUrl: env.AUTH_BASE_URL,
        secret: env.BETTER_AUTH_SECRET ?? DEVELOPMENT_AUTH_SECRET,
        trustedOrigins: [...env.CORS_ORIGINS],
        /** How long a verified session or API key is reused without a query (0: never). */
        callerCacheTtlMs: env.AUTH_CACHE_TTL_MS,
        /** The most memory verified callers may hold together (the oldest leave first). */
        callerCacheMaxBytes: env.AUTH_CACHE_MAX_BYTES,
        /** Better Auth's own limiter on sign-in/sign-up, per client address, stored in the database (all replicas). */
        rateLimit: { max: env.AUTH_RATE_LIMIT_MAX, windowSeconds: env.AUTH_RATE_LIMIT_WINDOW_S },
        /** Requests with a bad or missing credential allowed per client address per minute before 429. */
        failureLimitPerMinute: env.AUTH_FAILURE_LIMIT,
      },
      /** Requests per caller (user) per window on /api/v1, over all replicas; counts are exchanged every `syncMs`. */
      rateLimit: { max: env.RATE_LIMIT_MAX, windowMs: env.RATE_LIMIT_WINDOW_MS, syncMs: env.RATE_LIMIT_SYNC_MS },
      /** Deliveries per webhook per window (the same window), over all replicas: a flood at one hook stops there. */
      webhookRateLimit: { max: env.WEBHOOK_RATE_LIMIT_MAX, windowMs: env.RATE_LIMIT_WINDOW_MS, syncMs: env.RATE_LIMIT_SYNC_MS },
      /** Bytes of stored payloads (graphs, inputs, outputs, errors) past which a user starts nothing new. */
      storageMaxBytes: env.USER_STORAGE_MAX_BYTES,
      /**
       * SECRETS_KEYS (`id:base64key,...`: the first seals, all open), or undefined outside
       * production: then secrets/load.ts uses a development key kept in a local file.
       */
      secretsKeys: env.SECRETS_KEYS,
      /** Connections and variables one user may have. */
      connectionsPerUser: env.CONNECTIONS_PER_USER,
      variablesPerUser: env.VARIABLES_PER_USER,
      /** Event subscriptions one user may have: each is a row the outbox reads in every change it announces. */
      eventSubscriptionsPerUser: env.EVENT_SUBSCRIPTIONS_PER_USER,
      /** API keys one user may hold (expired ones included). */
      apiKeysPerUser: env.API_KEYS_PER_USER,
      /** Event streams one user may hold open on this process (each holds a connection and a bus listener). */
      eventStreamsPerUser: env.EVENT_STREAMS_PER_USER,
      /**
       * Stored JSON one list page of payload-carrying items (executions with includeData, steps) may
       * hold: the page ends early (hasNext, nextCursor) once its items pass it; its first item always comes.
       */
      maxPageDataBytes: env.API_MAX_PAGE_DATA_BYTES,
      /** Longest a request may take before it is answered 503 (whatever it waits on). */
      handlerTimeoutMs: env.HANDLER_TIMEOUT_MS,
      corsOrigins: [...env.CORS_ORIGINS],
      trustProxy: env.TRUST_PROXY,
      shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
      enableTestRoutes: env.ENABLE_TEST_ROUTES,
      jobs: {
        /** Jobs one user may have (any status): each is a row the scheduler reads. */
        maxPerUser: env.JOBS_PER_USER_MAX,
        /** Shortest time allowed between two runs of a schedule, at its closest (refused at save). */
        minScheduleIntervalSeconds: env.SCHEDULE_MIN_INTERVAL_S,
      },
      engine: {
        /** Run the engine (workers and scheduler) inside this process. */
        enabled: env.ENGINE_ENABLED,
        /** Executions this process runs at once. */
        concurrency: env.ENGINE_CONCURRENCY,
        /** Executions one user may have running at once, over every worker (the claim enforces it). */
        userConcurrency: env.ENGINE_USER_CONCURRENCY,
        /** Executions one user may have waiting (pending or paused); beyond, runs and retries are 429. */
        userWaitingMax: env.ENGINE_USER_WAITING_MAX,
        /** How long a claimed execution stays ours without a heartbeat (a crashed worker's work is reclaimed after it). */
        leaseMs: env.ENGINE_LEASE_MS,
        /** How often an idle worker looks for work that no notification announced (delays, backoffs, expired leases). */
        pollMs: env.ENGINE_POLL_MS,
        http: {
          /** Loopback/private addresses or host names http.request may reach anyway. */
          allow: env.ENGINE_HTTP_ALLOW,
          timeoutMs: env.ENGINE_HTTP_TIMEOUT_MS,
          maxResponseBytes: env.ENGINE_HTTP_MAX_RESPONSE_BYTES,
        },
        /** Largest payload stored, as JSON: execution input, output and error; step input, output and error. */
        maxPayloadBytes: env.ENGINE_MAX_PAYLOAD_BYTES,
        /** The delivery workers of event messages (events/delivery-worker.ts); they reach receivers through `http.allow`'s guard. */
        events: {
          /** Messages this process sends at once. */
          concurrency: env.EVENT_DELIVERY_CONCURRENCY,
          /** Attempts in flight for one subscription, over every process: a dead receiver holds no more workers than this. */
          perSubscription: env.EVENT_DELIVERY_PER_SUBSCRIPTION,
          /** Attempts in flight for one user's subscriptions together, over every process: one user's slow receivers hold no more workers. */
          perUser: env.EVENT_DELIVERY_PER_USER,
          /** Longest wait before the first retry; it doubles after each failure, up to an hour (full jitter: a random wait below it). */
          retryBaseMs: env.EVENT_RETRY_BASE_MS,
        },
        /**
         * Days an ended execution is kept after it finished when its workflow sets no retentionDays, and
         * a delivery without an execution after it came; the engine's housekeeping deletes them after.
         */
        retentionDays: env.EXECUTION_RETENTION_DAYS,
        /** Expressions and templates run in a pool of worker processes (engine/expression-pool.ts). */
        expressions: {
          /** Budget of one node's evaluation: its expression, or all of its templates together. */
          timeoutMs: env.EXPRESSION_TIMEOUT_MS,
          workers: env.EXPRESSION_WORKERS,
          /** Old-generation heap of each worker process. */
          maxHeapMb: env.EXPRESSION_MAX_HEAP_MB,
          /** Most `{{ }}` templates in one node's params. */
          maxTemplates: env.EXPRESSION_MAX_TEMPLATES,
        },
      },
    }),
  );

/** The service's config: what `loadConfig` returns, deeply read-only and frozen. */
export type Config = z.output<typeof configSchema>;
export type EngineConfig = Config['engine'];
export type DatabaseTarget = Config['database'];

/** Thrown for an unusable environment; `message` is one line naming the variable and the problem. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/**
 * For the entry points (server, worker): the config, or one line on stderr and exit code 1 (no
 * stack: the operator needs the variable and the fix). `check` adds what one entry requires.
 */
export function loadConfigOrExit(check: (config: Config) => void = () => undefined): Config {
  try {
    const config = loadConfig();
    check(config);
    return config;
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.join('.') || 'environment'}: ${issue.message}`)
    .join('; ');
}

/**
 * Where the user ran the command from: for a process npm started in backend/ (the workspace's
 * scripts: npm start, npm run worker), npm's INIT_CWD; else the working directory. INIT_CWD alone
 * does not tell: every process an npm script starts inherits it, wherever it runs.
 */
function commandDirectory(): string {
  const { INIT_CWD, npm_lifecycle_event } = process.env;
  const startedByNpmHere = npm_lifecycle_event !== undefined && INIT_CWD !== undefined && process.cwd() === path.join(repoRoot, 'backend');
  return startedByNpmHere ? INIT_CWD : process.cwd();
}

/** Parses the environment once into a frozen, typed config. Empty (or blank) values count as unset. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(
    // Blank as unset: a number would otherwise read ' ' as 0 (PORT: a random port; SHUTDOWN_GRACE_MS: none).
    Object.entries(source).filter(([, value]) => value !== undefined && value.trim() !== ''),
  );
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(`Invalid configuration: ${describeIssues(parsed.error)}`);
  }
  return parsed.data;
}

type DeepReadonly<T> = T extends readonly (infer Item)[]
  ? readonly DeepReadonly<Item>[]
  : T extends object
    ? { readonly [Key in keyof T]: DeepReadonly<T[Key]> }
    : T;

function deepFreeze<T extends object>(value: T): DeepReadonly<T> {
  for (const child of Object.values(value)) {
    if (child && typeof child === 'object' && !Object.isFrozen(child)) deepFreeze(child);
  }
  return Object.freeze(value) as DeepReadonly<T>;
}
