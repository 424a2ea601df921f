import { domainToASCII } from 'node:url';
import { copyError, OMIT } from '../lib/error-copy.js';
import { mapStrings } from '../lib/json-walk.js';

/** What a secret value reads as wherever it would have been recorded, streamed or logged (API.md). */
export const SECRET_MASK = '[secret]';

/**
 * The texts under which a secret may travel and come back: as it is (a header, a body string),
 * JSON-escaped (inside a JSON body sent as text and echoed back), percent-encoded as
 * encodeURIComponent and URLSearchParams do (query auth), and as the URL parser leaves it in a
 * query or a path (a `{{ $secrets.KEY }}` in a url). And, should one reach a url's host (a graph
 * saved before such urls were refused, secret-templates.ts), as the parser leaves a host and
 * messages about it show it: lower-cased, and percent-decoded and punycoded (domainToASCII). A
 * form is kept only when it is not empty.
 */
export function secretForms(secret: string): string[] {
  const forms = [secret, JSON.stringify(secret).slice(1, -1), secret.toLowerCase()];
  const attempts: (() => string)[] = [
    () => encodeURIComponent(secret),
    () => new URLSearchParams([['', secret]]).toString().slice(1),
    // `#` and `?` would end the query or the path: escaped first, they stay inside it, as they were sent.
    () => new URL(`http://host/?${secret.replaceAll('#', '%23')}`).search.slice(1),
    () => new URL(`http://host/${secret.replace(/[?#]/g, (character) => encodeURIComponent(character))}`).pathname.slice(1),
    // Empty when the secret is no valid domain (a host could not have held it whole).
    () => domainToASCII(secret),
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

  /** A copy of JSON-like data (json-walk.ts) with every string, keys too, redacted; key order is kept. */
  value(value: unknown): unknown {
    if (this.pattern === undefined) return value;
    const text = (source: string): string => this.text(source);
    return mapStrings(value, text, text);
  }

  /**
   * The error redacted, of its own class (copyError): a StepError keeps its code and
   * retryability, a database error still reads as one (the runner records a database error's
   * message as a generic one, isDatabaseError, and the logger leaves its parameters out, which
   * both depend on its class and fields). Every own property is redacted, its message, stack,
   * details and cause (copied the same way, to a bounded depth) included. What is not an Error
   * becomes its redacted text.
   */
  error(error: unknown): unknown {
    if (this.pattern === undefined) return error;
    return error instanceof Error ? this.copyError(error, 0) : this.text(String(error));
  }

  private copyError(error: Error, depth: number): Error {
    return copyError(error, (_key, value) => {
      if (!(value instanceof Error)) return this.value(value);
      return depth < MAX_CAUSE_DEPTH ? this.copyError(value, depth + 1) : OMIT;
    });
  }
}

/** Errors nested deeper (causes of causes) are left out of a redacted copy: a cycle must end. */
const MAX_CAUSE_DEPTH = 5;
