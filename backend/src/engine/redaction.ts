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
  const escaped = JSON.stringify(secret).slice(1, -1);
  // JSON as ASCII-only encoders write it (Python's json.dumps, httpbin's echoes): every other character as \uXXXX.
  const asciiEscaped = escaped.replace(/[\u007f-\uffff]/g, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const forms = [secret, escaped, asciiEscaped, secret.toLowerCase()];
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
 * input, output and error, and in whatever is logged about the step. The runner gives each step
 * one for the secrets of its whole run (RunResources.forRun: a secret one step sent may come back
 * in a later step's response) and of the step itself; without any it changes nothing and costs
 * nothing.
 *
 * One pass of one regular expression whose alternatives go longest first: at each position the
 * longest form wins (a Basic credential is masked whole, not around its secret), and a mask
 * already written is never searched again.
 */
export class Redactor {
  static readonly none = new Redactor([]);

  /** Every form it masks, distinct, longest first. */
  readonly forms: readonly string[];
  private readonly pattern: RegExp | undefined;
  /** The same forms as UTF-8 bytes, each byte one latin1 character: for bytes(). Built when first needed. */
  private bytePattern: RegExp | undefined;

  constructor(forms: Iterable<string>) {
    this.forms = [...new Set(forms)].filter((form) => form !== '').sort((left, right) => right.length - left.length);
    this.pattern = this.forms.length === 0 ? undefined : new RegExp(this.forms.map(escapeForRegExp).join('|'), 'g');
  }

  /** One that masks what each of these masks. */
  static union(...redactors: readonly Redactor[]): Redactor {
    const active = redactors.filter((redactor) => redactor.active);
    if (active.length <= 1) return active[0] ?? Redactor.none;
    return new Redactor(active.flatMap((redactor) => redactor.forms));
  }

  get active(): boolean {
    return this.pattern !== undefined;
  }

  /** The longest form, in UTF-8 bytes (0 when there is none): how far past a cut a secret may reach. */
  get longestFormBytes(): number {
    return this.forms.reduce((longest, form) => Math.max(longest, Buffer.byteLength(form)), 0);
  }

  text(text: string): string {
    // A global pattern: replace() starts at the beginning whatever lastIndex says.
    return this.pattern === undefined ? text : text.replace(this.pattern, SECRET_MASK);
  }

  /**
   * Bytes with every form's UTF-8 bytes replaced by the mask's: for what is kept as bytes (a binary
   * response body, recorded as base64, where no text form would be found) and before a body is cut
   * (a secret cut in two would no longer match whole).
   */
  bytes(bytes: Buffer): Buffer {
    if (this.pattern === undefined) return bytes;
    this.bytePattern ??= new RegExp(this.forms.map((form) => escapeForRegExp(Buffer.from(form, 'utf8').toString('latin1'))).join('|'), 'g');
    const text = bytes.toString('latin1');
    const masked = text.replace(this.bytePattern, SECRET_MASK);
    return masked === text ? bytes : Buffer.from(masked, 'latin1');
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
