import { StepError } from './errors.js';

/** What a secret value reads as wherever it would have been recorded, streamed or logged (API.md). */
export const SECRET_MASK = '[secret]';

/**
 * The texts under which a secret may travel and come back: as it is (a header, a body string),
 * JSON-escaped (inside a JSON body sent as text and echoed back), percent-encoded as
 * encodeURIComponent and URLSearchParams do (query auth), and as the URL parser leaves it in a
 * query or a path (a `{{ $secrets.KEY }}` in a url). A form is kept only when it is not empty.
 */
export function secretForms(secret: string): string[] {
  const forms = [secret, JSON.stringify(secret).slice(1, -1)];
  const attempts: (() => string)[] = [
    () => encodeURIComponent(secret),
    () => new URLSearchParams([['', secret]]).toString().slice(1),
    // `#` and `?` would end the query or the path: escaped first, they stay inside it, as they were sent.
    () => new URL(`http://host/?${secret.replaceAll('#', '%23')}`).search.slice(1),
    () => new URL(`http://host/${secret.replace(/[?#]/g, (character) => encodeURIComponent(character))}`).pathname.slice(1),
  ];
  for (const attempt of attempts) {
    try {
      forms.push(attempt());
    } catch {
      // A text the encoder refuses (an unpaired surrogate) cannot be sent in that form either.
    }
  }
  return forms.filter((form) => form !== '');
}

const escapeForRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Replaces every known secret text with `[secret]` in every string, keys included, of a step's
 * input, output and error, and in whatever is logged about the step. The runner builds one per
 * step from the secrets that step used; without any it changes nothing and costs nothing.
 *
 * One pass of one regular expression whose alternatives go longest first: at each position the
 * longest form wins (a Basic credential is masked whole, not around its secret), and a mask
 * already written is never searched again.
 */
export class Redactor {
  static readonly none = new Redactor([]);

  private readonly pattern: RegExp | undefined;

  constructor(forms: Iterable<string>) {
    const distinct = [...new Set(forms)].filter((form) => form !== '').sort((left, right) => right.length - left.length);
    this.pattern = distinct.length === 0 ? undefined : new RegExp(distinct.map(escapeForRegExp).join('|'), 'g');
  }

  get active(): boolean {
    return this.pattern !== undefined;
  }

  text(text: string): string {
    // A global pattern: replace() starts at the beginning whatever lastIndex says.
    return this.pattern === undefined ? text : text.replace(this.pattern, SECRET_MASK);
  }

  /**
   * A copy of JSON-like data with every string (keys too) redacted. Iterative, so an upstream's
   * deeply nested answer cannot overflow the stack; key order is kept.
   */
  value(value: unknown): unknown {
    if (this.pattern === undefined) return value;
    const root: { value: unknown } = { value: undefined };
    const pending: { source: unknown; store: (copy: unknown) => void }[] = [{ source: value, store: (copy) => (root.value = copy) }];
    while (pending.length > 0) {
      const { source, store } = pending.pop() as (typeof pending)[number];
      if (typeof source === 'string') {
        store(this.text(source));
      } else if (Array.isArray(source)) {
        const copy: unknown[] = new Array<unknown>(source.length);
        store(copy);
        source.forEach((item, index) => pending.push({ source: item, store: (redacted) => (copy[index] = redacted) }));
      } else if (isPlainObject(source)) {
        const copy: Record<string, unknown> = {};
        store(copy);
        for (const [key, item] of Object.entries(source)) {
          const redactedKey = this.text(key);
          // Defined now, filled when its turn comes: the copy keeps the source's key order. Own
          // properties, so a "__proto__" key stays a plain key.
          defineValue(copy, redactedKey, undefined);
          pending.push({ source: item, store: (redacted) => defineValue(copy, redactedKey, redacted) });
        }
      } else {
        store(source);
      }
    }
    return root.value;
  }

  /**
   * The error with its message, details and stack redacted. A StepError keeps its class, code and
   * retryability; its cause is dropped (it is never recorded, and a logger would print it whole).
   */
  error(error: unknown): unknown {
    if (this.pattern === undefined) return error;
    if (error instanceof StepError) {
      return new StepError(this.text(error.message), {
        retryable: error.retryable,
        ...(error.code ? { code: error.code } : {}),
        ...(error.details ? { details: this.value(error.details) as Record<string, unknown> } : {}),
      });
    }
    if (error instanceof Error) {
      const copy = new Error(this.text(error.message));
      copy.name = error.name;
      copy.stack = error.stack === undefined ? undefined : this.text(error.stack);
      return copy;
    }
    return this.text(String(error));
  }
}

function defineValue(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}
