import { defineConfig } from 'vitest/config';

// With a real server (TEST_DATABASE_URL) files run in parallel, each on a database of its own
// (test/file-database.ts). The embedded fallback serves one connection: one file at a time.
const realDatabase = Boolean(process.env.TEST_DATABASE_URL);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Fault tests stop the PostgreSQL cluster: they run alone, after the suite (npm run test:faults).
    // Browser tests start Caddy and Chromium: they have their own run (npm run test:e2e).
    exclude: ['test/faults/**', 'test/e2e/**', 'node_modules/**'],
    globalSetup: ['test/global-setup.ts'],
    // Each file's own database on a real server, and a search of every file's captured logs for
    // credentials once its tests have run.
    setupFiles: ['test/file-setup.ts', 'test/log-scan.ts'],
    fileParallelism: realDatabase,
    maxWorkers: realDatabase ? 2 : 1,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
