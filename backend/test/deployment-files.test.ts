import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configVariables, loadConfig } from '../src/config.js';
import { readComposeFile as compose, repoRoot } from './compose-file.js';

describe('compose.dev.yml', () => {
  it('runs postgres 16 with a healthcheck and a named volume, the backend in watch mode, and caddy on :8100', async () => {
    const file = await compose('compose.dev.yml');
    const { postgres, backend, caddy } = file.services;
    expect(postgres?.image).toMatch(/^postgres:16-alpine$/);
    expect(postgres?.healthcheck?.test?.join(' ')).toContain('pg_isready');
    expect(postgres?.volumes?.some((volume) => volume.startsWith('pgdata:'))).toBe(true);
    expect(file.volumes).toHaveProperty('pgdata');

    expect(backend?.command).toContain('npm run dev');
    expect(backend?.volumes).toContain('.:/app');
    expect(backend?.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(backend?.environment?.AUTH_BASE_URL).toBe('http://localhost:8100/api');
    expect(backend?.environment?.DATABASE_URL).toMatch(/@postgres:5432\//);
    // The values compose hands the backend must pass the service's own config validation.
    expect(() => loadConfig(backend?.environment)).not.toThrow();

    expect(caddy?.ports).toContain('127.0.0.1:8100:8100');
    expect(caddy?.volumes).toContain('./Caddyfile:/etc/caddy/Caddyfile:ro');
  });
});

describe('compose.test.yml', () => {
  it('runs the test suite against its own postgres', async () => {
    const { postgres, tests } = (await compose('compose.test.yml')).services;
    expect(postgres?.image).toMatch(/^postgres:16/);
    expect(postgres?.healthcheck?.test?.join(' ')).toContain('pg_isready');
    expect(tests?.command).toContain('npm test');
    expect(tests?.environment?.TEST_DATABASE_URL).toMatch(/@postgres:5432\//);
    expect(tests?.environment?.AUTH_BASE_URL).toBe('http://localhost:3000/api');
    expect(tests?.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
  });
});

describe('.env.example', () => {
  it('documents every variable the config reads, with a comment', async () => {
    const text = await readFile(path.join(repoRoot, '.env.example'), 'utf8');
    for (const variable of configVariables) {
      expect(text, `${variable} is missing from .env.example`).toMatch(new RegExp(`^${variable}=`, 'm'));
    }
    const documented = [...text.matchAll(/^([A-Z_]+)=/gm)].map((match) => match[1]);
    expect(documented.sort()).toEqual([...configVariables].sort());
  });
});

describe('Caddyfile', () => {
  it('serves :8100, proxies /api/* to the backend and falls back to index.html', async () => {
    const text = await readFile(path.join(repoRoot, 'Caddyfile'), 'utf8');
    expect(text).toMatch(/^:8100 \{/m);
    expect(text).toMatch(/handle \/api\/\* \{\s+(#.*\s+)*reverse_proxy/);
    expect(text).toContain('try_files {path} /index.html');
  });
});
