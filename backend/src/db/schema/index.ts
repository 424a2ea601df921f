export * from './auth.js';
export * from './workflows.js';
export * from './jobs.js';
export * from './executions.js';
export * from './api-keys.js';
export * from './idempotency.js';
export * from './rate-limits.js';
export * from './usage.js';
