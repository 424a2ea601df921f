/**
 * A process that starts an expression stuck in one synchronous call, for expression-pool.test.ts:
 * the test kills this process with SIGKILL and checks its worker does not live on.
 */
import { pino } from 'pino';
import { ExpressionPool } from '../src/engine/expression-pool.js';

const pool = new ExpressionPool({ workers: 1, timeoutMs: 60_000, maxHeapMb: 64, maxTemplates: 10, logger: pino({ level: 'silent' }) });
void pool.evaluate(`$match("${'a'.repeat(40)}!", /(a+)+$/)`, { input: null, steps: {} }).catch(() => undefined);
// Alive until killed.
setInterval(() => undefined, 1_000);
