import { defineConfig } from 'drizzle-kit';

// `generate` only diffs the schema files against the committed snapshots, so it needs no database.
// `push`/`studio` talk to DATABASE_URL (a real server; the embedded one serves a single connection).
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema/index.ts',
  out: './migrations',
  strict: true,
  dbCredentials: { url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
});
