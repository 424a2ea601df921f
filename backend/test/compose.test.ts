import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { createDbClient } from '../src/db/client.js';
import { containerEnvironment, interpolate, readComposeFile, readDockerfileStages, referencesIn, repoRoot, service } from './compose-file.js';

const execFileAsync = promisify(execFile);
const require = createRequire(import.meta.url);
/** dclint's command-line entry, found through its package.json (the only file it exports besides its API). */
const dclintCli = path.join(path.dirname(require.resolve('dclint/package.json')), 'bin', 'dclint.cjs');
/** Caddy is installed on CI (.ci/run installs it before the suite); elsewhere its test is skipped. */
const caddyInstalled = (process.env.PATH ?? '').split(path.delimiter).some((directory) => directory !== '' && existsSync(path.join(directory, 'caddy')));

/** Variables whose value must come from .env: compose refuses to start without them. */
const secretVariables = ['POSTGRES_PASSWORD', 'BETTER_AUTH_SECRET', 'SECRETS_KEYS'];
/** The scalable services: compose --scale runs several of each. */
const scalableServices = ['api', 'worker'];

/** The README's one-line command that creates .env, run in an empty directory; the variables it wrote. */
async function envFromReadmeCommand(): Promise<Record<string, string>> {
  const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8');
  const lines = readme.split('\n').filter((line) => line.includes('> .env') && line.includes('openssl rand'));
  expect(lines, 'the README has one command that writes .env').toHaveLength(1);
  const directory = await mkdtemp(path.join(tmpdir(), 'autonode-dotenv-'));
  try {
    await execFileAsync('sh', ['-c', lines[0] ?? ''], { cwd: directory });
    const text = await readFile(path.join(directory, '.env'), 'utf8');
    // Run again: it must not overwrite an existing .env (the old SECRETS_KEYS would be lost).
    await execFileAsync('sh', ['-c', lines[0] ?? ''], { cwd: directory });
    expect(await readFile(path.join(directory, '.env'), 'utf8')).toBe(text);
    return Object.fromEntries(
      text
        .split('\n')
        .filter((line) => line.includes('='))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

describe('compose.yml (the production stack of `docker compose up`)', () => {
  it('runs postgres 16 with a healthcheck and a named volume', async () => {
    const file = await readComposeFile('compose.yml');
    const postgres = service(file, 'postgres');
    expect(postgres.image).toMatch(/^postgres:16(-|$)/);
    expect(postgres.healthcheck?.test?.join(' ')).toContain('pg_isready');
    const volume = postgres.volumes?.find((entry) => entry.endsWith(':/var/lib/postgresql/data'))?.split(':')[0];
    expect(volume, 'the data directory is a named volume').toBeDefined();
    expect(file.volumes).toHaveProperty(volume ?? '');
  });

  it('builds one image for migrate, api and worker; the app services wait for the migration', async () => {
    const file = await readComposeFile('compose.yml');
    const migrate = service(file, 'migrate');
    expect(migrate.build, 'migrate builds the image from the Dockerfile').toBeDefined();
    expect(migrate.command).toEqual(['node', 'dist/migrate.js']);
    expect(migrate.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    for (const name of scalableServices) {
      const app = service(file, name);
      expect(app.image, `${name} runs the image migrate builds`).toBe(migrate.image);
      expect(app.build, `${name} does not build a second copy`).toBeUndefined();
      expect(app.depends_on).toEqual({
        migrate: { condition: 'service_completed_successfully' },
        postgres: { condition: 'service_healthy' },
      });
    }
    // The api runs the image's own command (the Dockerfile test starts it); the worker the built worker.
    expect(service(file, 'api').command).toBeUndefined();
    expect(service(file, 'worker').command).toEqual(['node', 'dist/worker.js']);
  });

  it('can scale api and worker: no container name, no host port', async () => {
    const file = await readComposeFile('compose.yml');
    for (const name of scalableServices) {
      expect(service(file, name).container_name, name).toBeUndefined();
      expect(service(file, name).ports, name).toBeUndefined();
    }
    for (const [name, entry] of Object.entries(file.services)) {
      expect(entry.container_name, `${name} has no fixed container name`).toBeUndefined();
    }
  });

  it('waits for health only where a healthcheck exists, and checks the api through the image', async () => {
    const file = await readComposeFile('compose.yml');
    const runtime = (await readDockerfileStages()).at(-1);
    const imageHasHealthcheck = runtime?.instructions.some((instruction) => instruction.getKeyword() === 'HEALTHCHECK') ?? false;
    const migrateImage = service(file, 'migrate').image;
    for (const [name, entry] of Object.entries(file.services)) {
      const dependencies = Array.isArray(entry.depends_on) ? {} : (entry.depends_on ?? {});
      for (const [target, { condition }] of Object.entries(dependencies)) {
        expect(['service_healthy', 'service_completed_successfully'], `${name} -> ${target}`).toContain(condition);
        if (condition !== 'service_healthy') continue;
        const dependency = service(file, target);
        const ownCheck = dependency.healthcheck?.test !== undefined;
        const imageCheck = dependency.image === migrateImage && imageHasHealthcheck && dependency.healthcheck?.disable !== true;
        expect(ownCheck || imageCheck, `${target} has a healthcheck for ${name} to wait on`).toBe(true);
      }
    }
    expect(service(file, 'caddy').depends_on).toEqual({ api: { condition: 'service_healthy' } });
    // The worker has no HTTP listener: the image's /api/ready check is turned off there.
    expect(service(file, 'worker').healthcheck?.disable).toBe(true);
  });

  it('takes every secret from .env, with no default value anywhere', async () => {
    const text = await readFile(path.join(repoRoot, 'compose.yml'), 'utf8');
    const references = referencesIn(text);
    for (const variable of secretVariables) {
      const uses = references.filter((reference) => reference.variable === variable);
      expect(uses.length, `${variable} is used`).toBeGreaterThan(0);
      for (const use of uses) expect(use.operator, `${variable} is required (:?), never defaulted`).toBe(':?');
    }
    // No literal credential: every secret-looking setting is built from those variables.
    const file = await readComposeFile('compose.yml');
    for (const [name, entry] of Object.entries(file.services)) {
      for (const [key, value] of Object.entries(entry.environment ?? {})) {
        if (key === 'DATABASE_URL') {
          expect(new URL(String(value)).password, `${name}.${key} holds no password (PGPASSWORD does)`).toBe('');
          continue;
        }
        if (!/SECRET|PASSWORD|KEYS/.test(key)) continue;
        const used = referencesIn(String(value)).map((reference) => reference.variable);
        expect(used.some((variable) => secretVariables.includes(variable)), `${name}.${key} comes from .env`).toBe(true);
      }
    }
  });

  it('refuses to start without .env, and with the README command`s .env configures production api and worker', async () => {
    const file = await readComposeFile('compose.yml');
    await expect(containerEnvironment(file, 'api', {})).rejects.toThrow(/required variable/);

    const variables = await envFromReadmeCommand();
    expect(Object.keys(variables).sort()).toEqual([...secretVariables].sort());
    const api = loadConfig(await containerEnvironment(file, 'api', variables));
    expect(api.isProduction).toBe(true);
    expect(api.engine.enabled).toBe(false);
    expect(api.trustProxy).toBe(1);
    expect(api.host).toBe('0.0.0.0');
    const apiEnvironment = await containerEnvironment(file, 'api', variables);
    expect(api.database).toEqual({ kind: 'external', url: 'postgres://autonode@postgres:5432/autonode' });
    expect(apiEnvironment.PGPASSWORD).toBe(variables.POSTGRES_PASSWORD);
    expect(interpolate(service(file, 'postgres').environment?.POSTGRES_PASSWORD ?? '', variables)).toBe(variables.POSTGRES_PASSWORD);

    const worker = loadConfig(await containerEnvironment(file, 'worker', variables));
    expect(worker.isProduction).toBe(true);
    expect(worker.engine.enabled).toBe(true);
    expect(worker.secretsKeys).toBe(api.secretsKeys);
  });

  it('hands the driver a password holding URL-special characters whole (PGPASSWORD beside a URL without one)', async () => {
    const password = 'p@ss/w:rd#?%20&é';
    const environment = await containerEnvironment(await readComposeFile('compose.yml'), 'api', {
      POSTGRES_PASSWORD: password,
      BETTER_AUTH_SECRET: 'unused',
      SECRETS_KEYS: 'unused',
    });
    const previous = process.env.PGPASSWORD;
    process.env.PGPASSWORD = environment.PGPASSWORD;
    // postgres.js reads PGPASSWORD when the pool is made; it connects only at the first query.
    const client = createDbClient({ url: environment.DATABASE_URL ?? '', poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 1, statementTimeoutMs: 0 });
    try {
      expect(client.sql.options).toMatchObject({ user: 'autonode', host: ['postgres'], database: 'autonode', pass: password });
    } finally {
      if (previous === undefined) delete process.env.PGPASSWORD;
      else process.env.PGPASSWORD = previous;
      await client.close();
    }
  });

  it('puts caddy in front with the project Caddyfile, balancing over every api replica', async () => {
    const caddy = service(await readComposeFile('compose.yml'), 'caddy');
    expect(caddy.volumes).toContain('./Caddyfile:/etc/caddy/Caddyfile:ro');
    expect(caddy.environment?.BACKEND_UPSTREAM).toBe('api:3000');
    // Published on an explicit interface only.
    for (const port of caddy.ports ?? []) expect(port.split(':')).toHaveLength(3);
  });

  it.skipIf(!caddyInstalled)(
    'adapts the Caddyfile with caddy`s compose environment to A-record upstreams of the api service',
    async () => {
      const caddy = service(await readComposeFile('compose.yml'), 'caddy');
      const home = await mkdtemp(path.join(tmpdir(), 'autonode-caddy-'));
      try {
        const { stdout } = await execFileAsync('caddy', ['adapt', '--config', path.join(repoRoot, 'Caddyfile'), '--adapter', 'caddyfile'], {
          env: { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: home, XDG_DATA_HOME: home, ...caddy.environment },
        });
        const proxy = findReverseProxy(JSON.parse(stdout));
        expect(proxy?.dynamic_upstreams).toMatchObject({ source: 'a', name: 'api', port: '3000' });
      } finally {
        await rm(home, { recursive: true, force: true });
      }
    },
  );
});

/** The first reverse_proxy handler anywhere in an adapted Caddy JSON config. */
function findReverseProxy(node: unknown): Record<string, unknown> | undefined {
  if (Array.isArray(node)) {
    for (const child of node) {
      const found = findReverseProxy(child);
      if (found) return found;
    }
    return undefined;
  }
  if (node === null || typeof node !== 'object') return undefined;
  const record = node as Record<string, unknown>;
  if (record.handler === 'reverse_proxy') return record;
  return findReverseProxy(Object.values(record));
}

describe('dclint (Compose Specification schema and best practices)', () => {
  it('finds no error in any compose file', async () => {
    const files = ['compose.yml', 'compose.dev.yml', 'compose.test.yml'].map((file) => path.join(repoRoot, file));
    const result = await execFileAsync(process.execPath, [dclintCli, '--quiet', '--color', 'false', ...files], { cwd: repoRoot }).then(
      ({ stdout }) => ({ code: 0, output: stdout }),
      (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: error.code ?? 1, output: `${error.stdout ?? ''}${error.stderr ?? ''}` }),
    );
    expect(result.code, result.output).toBe(0);
  });
});
