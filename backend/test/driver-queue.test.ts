import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

interface DriverQueue<T> {
  readonly length: number;
  push(item: T): T;
  shift(): T;
  remove(item: T): T | null;
}

/** postgres.js's internal queue (src/queue.js), patched by patches/postgres+3.4.9.patch. */
async function loadDriverQueue(): Promise<<T>(initial: T[]) => DriverQueue<T>> {
  // The package exports only its entry: find the file next to it.
  const entry = createRequire(import.meta.url).resolve('postgres');
  const root = path.resolve(path.dirname(entry), '..', '..');
  const module = (await import(pathToFileURL(path.join(root, 'src', 'queue.js')).href)) as { default: <T>(initial: T[]) => DriverQueue<T> };
  return module.default;
}

/** An array that counts the slots indexOf looks at (the queue keeps the class: it copies with slice). */
class WatchedArray<T> extends Array<T> {
  static scanned = 0;
  override indexOf(item: T, from = 0): number {
    const found = super.indexOf(item, from);
    WatchedArray.scanned += (found === -1 ? this.length : found + 1) - Math.max(0, from);
    return found;
  }
}

describe("postgres.js's connection queue (patched)", () => {
  it('stays small when it never empties, so moving a connection costs the same after many queries', async () => {
    const Queue = await loadDriverQueue();
    // The pool's `busy` queue under sustained load: connections are shifted to take a query,
    // pushed back, and removed when they finish, and the queue is never empty.
    const busy = Queue<string>(new WatchedArray<string>());
    for (const connection of ['a', 'b', 'c']) busy.push(connection);
    const removals = 20_000;
    WatchedArray.scanned = 0;
    for (let query = 0; query < removals; query++) {
      const connection = busy.shift();
      busy.push(connection);
      expect(busy.remove(connection)).toBe(connection);
      busy.push(connection);
    }
    expect(busy.length).toBe(3);
    // Unpatched, every remove scanned every slot ever shifted out: about removals² / 2 in all.
    expect(WatchedArray.scanned / removals).toBeLessThan(200);
  });
});
