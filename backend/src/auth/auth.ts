import { betterAuth } from 'better-auth';
import { drizzleAdapter } from 'better-auth/adapters/drizzle';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import * as schema from '../db/schema/index.js';

/**
 * The header the Fastify mount sets to `request.ip` (which honours TRUST_PROXY) before handing a
 * request to Better Auth, replacing anything a client sent under that name. Better Auth reads the
 * client address only from it, so a spoofed X-Forwarded-For cannot pick someone else's address.
 */
export const CLIENT_IP_HEADER = 'x-autonode-client-ip';

export interface AuthDeps {
  readonly config: Pick<Config, 'auth' | 'isProduction'>;
  readonly db: Db;
  readonly logger: Logger;
}

/** Better Auth over the service's one drizzle/postgres.js client: no second pool. */
export function createAuth({ config, db, logger }: AuthDeps) {
  const authLogger = logger.child({ module: 'better-auth' });
  return betterAuth({
    appName: 'Autonode',
    // Better Auth routes by the path of its base URL, so it must be the mount point: <API root>/auth.
    baseURL: `${config.auth.apiBaseUrl}/auth`,
    basePath: '/api/auth',
    secret: config.auth.secret,
    trustedOrigins: [...config.auth.trustedOrigins],
    database: drizzleAdapter(db, { provider: 'pg', schema }),
    emailAndPassword: { enabled: true, minPasswordLength: 8, maxPasswordLength: 256 },
    // Brute force on sign-in/sign-up is limited per client address, counted in the database so
    // the limit holds across replicas (the default memory store would count per process).
    rateLimit: {
      enabled: true,
      storage: 'database',
      window: config.auth.rateLimit.windowSeconds,
      max: config.auth.rateLimit.max * 10,
      customRules: {
        '/sign-in/email': { window: config.auth.rateLimit.windowSeconds, max: config.auth.rateLimit.max },
        '/sign-up/email': { window: config.auth.rateLimit.windowSeconds, max: config.auth.rateLimit.max },
      },
    },
    telemetry: { enabled: false },
    advanced: {
      useSecureCookies: config.isProduction,
      defaultCookieAttributes: { httpOnly: true, sameSite: 'lax', secure: config.isProduction },
      ipAddress: { ipAddressHeaders: [CLIENT_IP_HEADER] },
      // Better Auth skips its Origin/CSRF checks when NODE_ENV=test; the tests must see what production does.
      disableOriginCheck: false,
    },
    logger: {
      log(level, message, ...args) {
        authLogger[level]({ details: args.length > 0 ? args : undefined }, message);
      },
    },
  });
}

export type Auth = ReturnType<typeof createAuth>;
