import type { RequestCaller } from './caller.js';

interface Entry {
  readonly caller: RequestCaller;
  readonly expiresAt: number;
}

/**
 * Callers already verified, by a hash of the credential they presented, for a few seconds: the
 * hot path then costs no query. A key must be exactly the credential that was verified, or a
 * forged one could hit: an API key's hash, or the value of the one cookie of Better Auth's exact
 * session cookie name (a request with that name twice, or beside another session-like cookie, is
 * never cached: plugin.ts, sessionCookieOf). Staleness is bounded twice: entries live at most
 * `ttlMs` (and never past the session's own expiry), and a sign-out or revocation drops the user's
 * entries on every replica at once (through the event bus).
 */
export class CallerCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 50_000,
  ) {}

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  get(key: string): RequestCaller | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.caller;
  }

  set(key: string, caller: RequestCaller, credentialExpiresAt?: Date | null): void {
    if (!this.enabled) return;
    const expiresAt = Math.min(Date.now() + this.ttlMs, credentialExpiresAt ? credentialExpiresAt.getTime() : Number.POSITIVE_INFINITY);
    if (this.entries.size >= this.maxEntries) {
      // Maps iterate in insertion order: drop the oldest entry.
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { caller, expiresAt });
  }

  forgetUser(userId: string): void {
    for (const [key, entry] of this.entries) if (entry.caller.user.id === userId) this.entries.delete(key);
  }
}
