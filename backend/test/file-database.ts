import { createHash, randomUUID } from 'node:crypto';
import { createDbClient, type DbClient } from '../src/db/client.js';
import { runMigrations } from '../src/db/migrate.js';

/**
 * On a real PostgreSQL every test file runs on a database of its own, copied (CREATE DATABASE ...
 * TEMPLATE) from one the global setup migrated: files run two at a time, and an engine or scheduler
 * started by one file would otherwise claim, fire, deliver or purge another file's rows. The copies
 * are named after TEST_DATABASE_URL's database, which stays the connection that creates and drops
 * them (a template must have no connection while it is copied), and are all dropped by the global
 * teardown, not one by one: a DROP DATABASE checkpoints, and dropping with FORCE under a file whose
 * last connections are closing would fail them. The embedded suite runs one file at a time on its
 * one database.
 */

const MAX_IDENTIFIER = 63;

/** Opens a one-connection client on `url`, runs `work`, closes it (the embedded server serves one at a time). */
export async function withConnection<T>(url: string, work: (client: DbClient) => Promise<T>): Promise<T> {
  const client = createDbClient({ url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

/** `url` with its database replaced by `name`. */
export function withDatabase(url: string, name: string): string {
  const next = new URL(url);
  next.pathname = `/${name}`;
  return next.toString();
}

/**
 * `autonode_tpl_<hash of TEST_DATABASE_URL's database>`: one template per test database (two suites
 * on one server do not meet), a fixed prefix `.ci/run` can clean up after a killed run, and room for
 * the copies' suffix within PostgreSQL's 63 bytes.
 */
function templateName(url: string): string {
  const database = decodeURIComponent(new URL(url).pathname.slice(1));
  return `autonode_tpl_${createHash('sha256').update(database).digest('hex').slice(0, 12)}`;
}

/** Creates (again) the migrated template; drops copies a killed run left. Answers its name. */
export async function createFileDatabaseTemplate(url: string): Promise<string> {
  const template = templateName(url);
  await dropFileDatabases(url, template);
  await withConnection(url, (admin) => admin.sql`create database ${admin.sql(template)}`);
  await withConnection(withDatabase(url, template), (client) => runMigrations(client.db));
  return template;
}

/** A new copy of the template for one test file; answers its URL. */
export async function createFileDatabase(url: string, template: string): Promise<string> {
  const name = `${template}_${randomUUID().replaceAll('-', '')}`.slice(0, MAX_IDENTIFIER);
  await withConnection(url, (admin) => admin.sql`create database ${admin.sql(name)} template ${admin.sql(template)}`);
  return withDatabase(url, name);
}

/** Drops the template and every copy of it, whoever is still connected (WITH (FORCE)). */
export async function dropFileDatabases(url: string, template: string): Promise<void> {
  await withConnection(url, async (admin) => {
    const copies = await admin.sql<{ name: string }[]>`
      select datname as name from pg_database where datname = ${template} or datname like ${`${template}\\_%`}`;
    for (const { name } of copies) await admin.sql`drop database if exists ${admin.sql(name)} with (force)`;
  });
}
