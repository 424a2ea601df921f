import { betterAuth } from 'better-auth';
import { drizzleAdapter } from 'better-auth/adapters/drizzle';
import { APIError } from 'better-auth/api';
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

/**
 * Bounds of what a user record may hold, on every path that writes one (sign-up, update-user,
 * change-email): the record is read on every verification and copied into cached callers, so
 * it must stay small whatever a client sends.
 */
export const USER_FIELD_LIMITS = { nameLength: 100, emailLength: 254, imageLength: 2048 } as const;

/** The code of a user field out of bounds; its message is `<field>: <rule>` (problem-answers.ts makes it `errors`). */
export const INVALID_USER_FIELD = 'INVALID_USER_FIELD';

/** Refuses user fields out of bounds (400 INVALID_USER_FIELD, naming the field); an image must be an http(s) URL. */
function checkUserFields(fields: { name?: unknown; email?: unknown; image?: unknown }): void {
  const refuse = (message: string) => {
    throw new APIError('BAD_REQUEST', { code: INVALID_USER_FIELD, message });
  };
  if (typeof fields.name === 'string' && fields.name.length > USER_FIELD_LIMITS.nameLength) {
    refuse(`name: at most ${USER_FIELD_LIMITS.nameLength} characters`);
  }
  if (typeof fields.email === 'string' && fields.email.length > USER_FIELD_LIMITS.emailLength) {
    refuse(`email: at most ${USER_FIELD_LIMITS.emailLength} characters`);
  }
  const { image } = fields;
  if (image !== undefined && image !== null) {
    if (typeof image !== 'string' || image.length > USER_FIELD_LIMITS.imageLength || !URL.canParse(image) || !/^https?:$/.test(new URL(image).protocol)) {
      refuse(`image: an http(s) URL of at most ${USER_FIELD_LIMITS.imageLength} characters`);
    }
  }
}

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
    databaseHooks: {
      user: {
        create: { before: async (user) => checkUserFields(user) },
        update: { before: async (user) => checkUserFields(user) },
      },
    },
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
