import { describe, expect, it } from 'vitest';
import { ConfigError, DEVELOPMENT_AUTH_SECRET, loadConfig } from '../src/config.js';
import { runScript } from './process.js';

const productionBase = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://app@db.internal:5432/autonode',
  BETTER_AUTH_SECRET: 'a-private-secret-that-is-long-enough-0123456789',
};

function errorOf(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('expected the config to be refused');
}

describe('config', () => {
  it('applies the documented defaults and freezes the result', () => {
    const config = loadConfig({});
    expect(config.port).toBe(3000);
    expect(config.db.poolSize).toBe(10);
    expect(config.db.idleTimeoutSeconds).toBe(20);
    expect(config.db.connectTimeoutSeconds).toBe(10);
    expect(config.database.kind).toBe('embedded');
    expect(config.auth.secret).toBe(DEVELOPMENT_AUTH_SECRET);
    expect(config.trustProxy).toBe(false);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.db)).toBe(true);
  });

  it('parses lists, booleans and proxies', () => {
    const config = loadConfig({
      CORS_ORIGINS: 'http://localhost:8100, https://app.example.com',
      TRUST_PROXY: '10.0.0.0/8,127.0.0.1',
      MIGRATE_ON_START: 'true',
      DATABASE_URL: 'postgres://u@h/db',
    });
    expect(config.corsOrigins).toEqual(['http://localhost:8100', 'https://app.example.com']);
    expect(config.auth.trustedOrigins).toEqual(config.corsOrigins);
    expect(config.trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1']);
    expect(config.db.migrateOnStart).toBe(true);
    expect(config.database).toEqual({ kind: 'external', url: 'postgres://u@h/db' });
    expect(loadConfig({ TRUST_PROXY: '1' }).trustProxy).toBe(1);
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT'],
    [{ DB_POOL_SIZE: '0' }, 'DB_POOL_SIZE'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ CORS_ORIGINS: 'not a url' }, 'CORS_ORIGINS'],
    [{ AUTH_BASE_URL: 'http://localhost:3000/' }, 'AUTH_BASE_URL'],
    [{ TRUST_PROXY: 'maybe' }, 'TRUST_PROXY'],
    [{ MIGRATE_ON_START: 'perhaps' }, 'MIGRATE_ON_START'],
    [{ BETTER_AUTH_SECRET: 'short' }, 'BETTER_AUTH_SECRET'],
  ])('names the variable in one line when it is invalid: %o', (env, variable) => {
    const message = errorOf(env);
    expect(message).toContain(variable);
    expect(message).not.toContain('\n');
  });

  it('refuses production without DATABASE_URL, or with a missing or development secret', () => {
    expect(() => loadConfig(productionBase)).not.toThrow();
    expect(errorOf({ ...productionBase, DATABASE_URL: '' })).toContain('DATABASE_URL');
    expect(errorOf({ ...productionBase, BETTER_AUTH_SECRET: '' })).toContain('BETTER_AUTH_SECRET');
    expect(errorOf({ ...productionBase, BETTER_AUTH_SECRET: DEVELOPMENT_AUTH_SECRET })).toContain('BETTER_AUTH_SECRET');
    expect(errorOf({ ...productionBase, ENABLE_TEST_ROUTES: 'true' })).toContain('ENABLE_TEST_ROUTES');
  });

  it('stops the server at start-up with one clear line and a non-zero exit', async () => {
    const run = runScript('src/server.ts', [], { PORT: 'not-a-port', DB_POOL_SIZE: '-3' });
    const code = await run.exited;
    expect(code).toBe(1);
    const lines = run.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^Invalid configuration: .*PORT.*DB_POOL_SIZE/);
    expect(run.output()).not.toMatch(/\n\s+at /);
  });
});
