import { defineConfig } from 'vitest/config';

// The browser tests (npm run test:e2e): each file starts its own stack (scratch database, backend,
// Caddy, Chromium; see test/e2e/stack.ts), so files run one at a time on the machine's two cores.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 90_000,
    reporters: ['default'],
  },
});
