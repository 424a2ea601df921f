/**
 * The one walk over JSON-like data (a node's params, a scope, a step's output) that the engine
 * uses to find, read or rewrite its strings. One rule for what is walked: arrays, and plain
 * objects (prototype Object.prototype or null), which is everything JSON.parse, jsonb and
 * structured cloning of such data produce; anything else (a Date, a Buffer, a class instance) is a
 * leaf and is neither entered nor copied. Every walk is iterative, so data nested deeper than the
 * stack (an upstream's answer) cannot overflow it, and goes in document order: keys in their
 * order, array items by index, a container before what it holds.
 */

export type JsonKey = string | number;
export type JsonPath = readonly JsonKey[];

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** A value met by the walk, its key or index in its container (undefined at the root), and its container's visit. */
interface Visit {
  readonly value: unknown;
  readonly key: JsonKey | undefined;
  readonly parent: Visit | undefined;
}

function pathOf(visit: Visit): JsonPath {
  const path: JsonKey[] = [];
  for (let current: Visit | undefined = visit; current?.key !== undefined; current = current.parent) path.push(current.key);
  return path.reverse();
}

/**
 * Calls `test` with every value at any depth of `value` (containers too, before their contents),
 * with its key in its container and its path from the root (built only when asked for), and stops
 * at the first call that returns true. True when one did.
 */
export function someValue(value: unknown, test: (item: unknown, key: JsonKey | undefined, path: () => JsonPath) => boolean): boolean {
  const pending: Visit[] = [{ value, key: undefined, parent: undefined }];
  while (pending.length > 0) {
    const visit = pending.pop() as Visit;
    if (test(visit.value, visit.key, () => pathOf(visit))) return true;
    const { value: item } = visit;
    // Pushed last to first, so that they are visited first to last.
    if (Array.isArray(item)) {
      for (let index = item.length - 1; index >= 0; index--) pending.push({ value: item[index], key: index, parent: visit });
    } else if (isPlainObject(item)) {
      const keys = Object.keys(item);
      for (let index = keys.length - 1; index >= 0; index--) {
        const key = keys[index] as string;
        pending.push({ value: item[key], key, parent: visit });
      }
    }
  }
  return false;
}

/** Whether a string value at any depth (keys are not values) passes `test`; stops at the first that does. */
export function someString(value: unknown, test: (text: string, path: () => JsonPath) => boolean): boolean {
  return someValue(value, (item, _key, path) => typeof item === 'string' && test(item, path));
}

/** Calls `visit` with every string value at any depth (keys are not values) and its path. */
export function forEachString(value: unknown, visit: (text: string, path: () => JsonPath) => void): void {
  someString(value, (text, path) => {
    visit(text, path);
    return false;
  });
}

/**
 * A copy of `value` with every string value replaced by `mapString(it)` and, when `mapKey` is
 * given, every key by `mapKey(it)`; other leaves stay as they are. Key order is kept; keys are
 * defined as own properties, so a "__proto__" key stays a plain key (and the copy's prototype is
 * Object.prototype). Two keys mapped to one keep the later value.
 */
export function mapStrings(value: unknown, mapString: (text: string) => unknown, mapKey?: (key: string) => string): unknown {
  const root: { value: unknown } = { value: undefined };
  const pending: { source: unknown; store: (copy: unknown) => void }[] = [{ source: value, store: (copy) => (root.value = copy) }];
  while (pending.length > 0) {
    const { source, store } = pending.pop() as (typeof pending)[number];
    if (typeof source === 'string') {
      store(mapString(source));
    } else if (Array.isArray(source)) {
      const copy: unknown[] = new Array<unknown>(source.length);
      store(copy);
      for (let index = source.length - 1; index >= 0; index--) pending.push({ source: source[index], store: (mapped) => (copy[index] = mapped) });
    } else if (isPlainObject(source)) {
      const copy: Record<string, unknown> = {};
      store(copy);
      const entries = Object.entries(source).map(([key, item]) => [mapKey ? mapKey(key) : key, item] as const);
      // Defined now, filled when its turn comes: the copy keeps the source's key order.
      for (const [key] of entries) defineValue(copy, key, undefined);
      for (let index = entries.length - 1; index >= 0; index--) {
        const [key, item] = entries[index] as (typeof entries)[number];
        pending.push({ source: item, store: (mapped) => defineValue(copy, key, mapped) });
      }
    } else {
      store(source);
    }
  }
  return root.value;
}

function defineValue(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}
