import { defineConfig } from 'vitest/config';

// The fault tests stop and start the local PostgreSQL cluster and signal server processes: one
// file at a time, on the real server given by TEST_DATABASE_URL.
export default defineConfig({
  test: {
    include: ['test/faults/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
