import { exceedsDepth } from '../lib/json-depth.js';

/**
 * What an execution stores as JSON (execution input, output and error; step input, output and
 * error): each value is serialized once, measured in UTF-8 bytes, and bounded by
 * ENGINE_MAX_PAYLOAD_BYTES. jsonb refuses two things JSON.stringify writes happily: the NUL
 * character (`\u0000`) and unpaired UTF-16 surrogates (`\ud800`); they are found here, in the
 * serialized text, so a step fails with a clear reason instead of a statement failing later.
 */

/** Error codes recorded in step and execution errors. */
export const STEP_OUTPUT_TOO_LARGE = 'STEP_OUTPUT_TOO_LARGE';
export const EXECUTION_OUTPUT_TOO_LARGE = 'EXECUTION_OUTPUT_TOO_LARGE';
/** A value the database cannot store (a NUL character, an unpaired surrogate, a value it refuses). Also the API's 400 code for such a request. */
export const UNSTORABLE_VALUE = 'UNSTORABLE_VALUE';

export interface Serialized {
  readonly json: string;
  readonly bytes: number;
}

export interface PayloadProblem {
  readonly code: string;
  readonly message: string;
}

/** A value's JSON and its size in bytes; undefined for undefined (nothing to store). */
export function serialize(value: unknown): Serialized | undefined {
  if (value === undefined) return undefined;
  const json = JSON.stringify(value) ?? 'null';
  return { json, bytes: Buffer.byteLength(json, 'utf8') };
}

// JSON.stringify escapes NUL as \u0000 and an unpaired surrogate as \udXXX (paired ones it writes
// as they are); an escape counts only after an even number of backslashes (`\\u0000` is text).
const unstorableEscape = /(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/;

/** True when the JSON text holds a NUL character or an unpaired surrogate, which jsonb refuses. */
export function holdsUnstorableText(json: string): boolean {
  return json.includes('\\u') && unstorableEscape.test(json);
}

/**
 * The deepest nesting a step output may have. An HTTP answer can nest arrays thousands deep in a
 * few kilobytes: JSON.stringify recurses (it overflows the stack near 5,000 levels), and so do the
 * serializers of the API answers and events that show the output later. Far beyond real data.
 */
export const MAX_PAYLOAD_DEPTH = 512;

/**
 * A step output's JSON, or why it cannot be stored because of its shape: nested deeper than
 * MAX_PAYLOAD_DEPTH (checked only when the JSON is long enough to nest that deep: two bytes a level).
 */
export function serializeOutput(value: unknown): { serialized: Serialized | undefined } | { problem: PayloadProblem } {
  const tooDeep = { problem: { code: UNSTORABLE_VALUE, message: `the step output is nested deeper than ${MAX_PAYLOAD_DEPTH} levels, which cannot be stored` } };
  let serialized: Serialized | undefined;
  try {
    serialized = serialize(value);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    // The call stack (nesting) or V8's longest string (a value whose JSON would pass 512 MB).
    if (/call stack/i.test(error.message)) return tooDeep;
    return { problem: { code: STEP_OUTPUT_TOO_LARGE, message: 'the step output is too large to write as JSON' } };
  }
  if (serialized && serialized.bytes > 2 * MAX_PAYLOAD_DEPTH && exceedsDepth(value, MAX_PAYLOAD_DEPTH)) return tooDeep;
  return { serialized };
}

/**
 * Why a value cannot be stored as `what` (size over `maxBytes`, or unstorable text), or undefined.
 * `tooLargeCode` names the size limit in the recorded error.
 */
export function payloadProblem(serialized: Serialized | undefined, maxBytes: number, what: string, tooLargeCode: string): PayloadProblem | undefined {
  if (!serialized) return undefined;
  if (serialized.bytes > maxBytes) {
    return { code: tooLargeCode, message: `${what} is ${serialized.bytes} bytes of JSON, larger than ${maxBytes} bytes (ENGINE_MAX_PAYLOAD_BYTES)` };
  }
  if (holdsUnstorableText(serialized.json)) {
    return { code: UNSTORABLE_VALUE, message: `${what} contains a NUL character (\\u0000) or an unpaired surrogate, which cannot be stored` };
  }
  return undefined;
}

const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** The text with every NUL character and unpaired surrogate replaced by U+FFFD, so jsonb takes it. */
export function storableText(text: string): string {
  return text.replace(loneSurrogate, '\uFFFD').replace(/\u0000/g, '\uFFFD');
}

/** Longest message kept when an error record has to be cut down (JSON may spend 6 bytes on a character). */
const maxMessageCharacters = (maxBytes: number): number => Math.max(64, Math.min(2_000, Math.floor((maxBytes - 256) / 6)));

/**
 * An error record that fits: the record itself when it is storable and within `maxBytes`, else
 * its `nodeId`, `code` and (cut, cleaned) `message`, with `detailsOmitted` saying why the rest went.
 */
export function boundedError(error: unknown, maxBytes: number): unknown {
  const serialized = serialize(error);
  const problem = payloadProblem(serialized, maxBytes, 'the error', 'ERROR_TOO_LARGE');
  if (!problem) return error;
  const record = typeof error === 'object' && error !== null ? (error as Record<string, unknown>) : { message: String(error) };
  const text = (value: unknown, limit: number) => (typeof value === 'string' ? storableText(value).slice(0, limit) : undefined);
  const nodeId = text(record.nodeId, 200);
  const code = text(record.code, 100);
  return {
    ...(nodeId !== undefined ? { nodeId } : {}),
    ...(code !== undefined ? { code } : {}),
    message: text(record.message, maxMessageCharacters(maxBytes)) ?? 'error',
    detailsOmitted: problem.code === UNSTORABLE_VALUE ? 'they held text that cannot be stored' : `they were larger than ${maxBytes} bytes`,
  };
}

/**
 * A write the lifecycle refused before sending it (a step output over the bound): it ends the
 * execution `failed` with this reason, as a value the database refuses does.
 */
export class RefusedPayload extends Error {
  override readonly name = 'RefusedPayload';

  constructor(
    readonly problem: PayloadProblem,
    readonly nodeId: string | undefined,
  ) {
    super(problem.message);
  }
}
