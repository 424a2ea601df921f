/** Marks a property that copyError leaves out of the copy. */
export const OMIT: unique symbol = Symbol('omit');

/**
 * A copy of `error` of the same class: the same prototype, so `instanceof`, its name and the
 * checks that read its fields (isDatabaseError reads `severity` and `code` down the `cause`
 * chain) hold for the copy as for the original; no constructor runs. Each own data property
 * (`message`, `stack`, `cause`, `code`, ...) is `transform(key, value)`, or left out where that
 * is OMIT; its enumerability stays, so a logger prints what it printed before. Other accessors
 * are left out (reading one could run anything); `stack`, which some engines define as one, is
 * read once and copied as data.
 */
export function copyError(error: Error, transform: (key: PropertyKey, value: unknown) => unknown): Error {
  const copy = Object.create(Object.getPrototypeOf(error) as object | null) as Error;
  for (const key of Reflect.ownKeys(error)) {
    const descriptor = Object.getOwnPropertyDescriptor(error, key);
    if (descriptor === undefined) continue;
    let value: unknown;
    if ('value' in descriptor) value = descriptor.value;
    else if (key === 'stack') value = error.stack;
    else continue;
    const transformed = transform(key, value);
    if (transformed === OMIT) continue;
    Object.defineProperty(copy, key, { value: transformed, enumerable: descriptor.enumerable ?? false, writable: true, configurable: true });
  }
  return copy;
}
