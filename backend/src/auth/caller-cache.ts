import type { RequestCaller } from './caller.js';

interface Entry {
  readonly caller: RequestCaller;
  readonly expiresAt: number;
  readonly bytes: number;
}

/** What a Map entry, its Entry and caller objects cost beyond their strings (measured order of magnitude, V8 x64). */
const ENTRY_OVERHEAD_BYTES = 240;

/** The memory an entry holds: its strings (UTF-16, two bytes a unit) and its objects. */
function entryBytes(key: string, caller: RequestCaller): number {
  const { id, name, email } = caller.user;
  const keyId = caller.via === 'apiKey' ? caller.keyId : '';
  return ENTRY_OVERHEAD_BYTES + 2 * (key.length + id.length + name.length + email.length + keyId.length);
}

/**
 * Callers already verified, by a hash of the credential they presented, for a few seconds: the
 * hot path then costs no query. A key must be exactly the credential that was verified, or a
 * forged one could hit: an API key's hash, or the value of the one cookie of Better Auth's exact
 * session cookie name (a request with that name twice, or beside another session-like cookie, is
 * never cached: plugin.ts, sessionCookieOf). Staleness is bounded twice: entries live at most
 * `ttlMs` (and never past the credential's own expiry), and a sign-out or revocation drops the
 * user's entries on every replica at once (through the event bus).
 *
 * Memory is bounded too, whatever callers do: the entries together never hold more than
 * `maxBytes` (the oldest leave first), and expired ones are swept every `ttlMs`, so a burst of
 * credentials used once is gone a TTL later rather than when each is presented again.
 *
 * A verification runs while the credential may be revoked: begun before a sign-out or revocation
 * committed and finished after the cache was told, it would put the old caller back for a TTL. So
 * a verification takes a `mark()` before it reads, and `set` keeps nothing when any user has been
 * forgotten since that mark (the next request verifies again, after the change).
 */
export class CallerCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;
  /** Counts the forgets (of a user, or of everyone); see mark(). */
  private forgets = 0;
  private readonly sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly ttlMs: number,
    private readonly maxBytes: number,
  ) {
    if (this.enabled) {
      this.sweeper = setInterval(() => this.sweep(), ttlMs);
      this.sweeper.unref();
    }
  }

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  /** What the entries hold now, as counted against `maxBytes`. */
  get size(): { entries: number; bytes: number } {
    return { entries: this.entries.size, bytes: this.bytes };
  }

  get(key: string): RequestCaller | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.delete(key, entry);
      return undefined;
    }
    return entry.caller;
  }

  /** Taken before a verification reads the credential; handed back to `set` with its result. */
  mark(): number {
    return this.forgets;
  }

  /** Keeps `caller` under `key`, unless a forget happened after `verifiedFrom` (the verification's mark). */
  set(key: string, caller: RequestCaller, credentialExpiresAt: Date | null, verifiedFrom: number): void {
    if (!this.enabled || verifiedFrom !== this.forgets) return;
    const expiresAt = Math.min(Date.now() + this.ttlMs, credentialExpiresAt ? credentialExpiresAt.getTime() : Number.POSITIVE_INFINITY);
    const bytes = entryBytes(key, caller);
    if (bytes > this.maxBytes) return;
    const previous = this.entries.get(key);
    if (previous) this.delete(key, previous);
    // Maps iterate in insertion order: the oldest entries leave first.
    for (const [oldestKey, oldest] of this.entries) {
      if (this.bytes + bytes <= this.maxBytes) break;
      this.delete(oldestKey, oldest);
    }
    this.entries.set(key, { caller, expiresAt, bytes });
    this.bytes += bytes;
  }

  forgetUser(userId: string): void {
    this.forgets++;
    for (const [key, entry] of this.entries) if (entry.caller.user.id === userId) this.delete(key, entry);
  }

  /** Forgets every caller: for when the notices of who to forget may have been missed (the bus reconnected). */
  forgetAll(): void {
    this.forgets++;
    this.entries.clear();
    this.bytes = 0;
  }

  /** Drops every expired entry. */
  sweep(now = Date.now()): void {
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.delete(key, entry);
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  private delete(key: string, entry: Entry): void {
    this.entries.delete(key);
    this.bytes -= entry.bytes;
  }
}
