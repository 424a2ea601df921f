import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CallerCache } from '../src/auth/caller-cache.js';
import { USER_FIELD_LIMITS } from '../src/auth/auth.js';
import type { RequestCaller } from '../src/auth/caller.js';
import { log } from './support.js';

/** Credentials presented once each: the pattern that grew the heap without bound (issue 19). */
const CREDENTIALS = 100_000;
const TTL_MS = 200;
/** The default AUTH_CACHE_MAX_BYTES. */
const MAX_BYTES = 16 * 1024 * 1024;

export interface CallerCacheResults {
  readonly credentials: number;
  readonly maxBytes: number;
  /** What the cache counted against its budget when full. */
  readonly countedMiB: number;
  /** The heap the full cache held (measured after a full GC). */
  readonly heapMiB: number;
  /** The heap still held a TTL after the last use, once the sweep ran (measured after a full GC). */
  readonly heapAfterSweepMiB: number;
}

/** A full garbage collection, without starting Node with --expose-gc. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

const heapUsed = (): number => {
  collectGarbage();
  return process.memoryUsage().heapUsed;
};

/**
 * Benchmark 7: the verified-caller cache's memory under many credentials, each used once, with
 * user fields at their bounds (the attack of issue 19: every key of every user cached once). The
 * figures show the byte budget holding and the heap returning to where it was after a TTL.
 */
export async function runCallerCache(): Promise<CallerCacheResults> {
  const baseline = heapUsed();
  const cache = new CallerCache(TTL_MS, MAX_BYTES);
  try {
    for (let index = 0; index < CREDENTIALS; index++) {
      const caller: RequestCaller = {
        user: { id: `user-${index % 5_000}`, name: 'n'.repeat(USER_FIELD_LIMITS.nameLength), email: `${'e'.repeat(64)}-${index}@example.test` },
        via: 'apiKey',
        keyId: randomBytes(16).toString('hex'),
        expiresAt: null,
      };
      cache.set(`key:${randomBytes(32).toString('hex')}`, caller, null, cache.mark());
    }
    const full = cache.size;
    const heapFull = heapUsed() - baseline;
    await new Promise((resolve) => setTimeout(resolve, TTL_MS * 3));
    const heapAfterSweep = heapUsed() - baseline;
    const results: CallerCacheResults = {
      credentials: CREDENTIALS,
      maxBytes: MAX_BYTES,
      countedMiB: full.bytes / 2 ** 20,
      heapMiB: heapFull / 2 ** 20,
      heapAfterSweepMiB: heapAfterSweep / 2 ** 20,
    };
    log(
      `caller cache: ${CREDENTIALS} credentials -> ${full.entries} entries, ${results.countedMiB.toFixed(1)} MiB counted, ` +
        `heap +${results.heapMiB.toFixed(1)} MiB full, +${results.heapAfterSweepMiB.toFixed(1)} MiB after the sweep (${cache.size.entries} entries)`,
    );
    return results;
  } finally {
    cache.stop();
  }
}
