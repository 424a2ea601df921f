/**
 * A step failed for a reason worth telling the workflow's author (a non-2xx answer, a refused
 * address, an expression error). Its message is recorded in the step and execution `error`.
 * `retryable: false` fails the step at once, whatever the node's retry policy says.
 */
export class StepError extends Error {
  override readonly name = 'StepError';
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;
  /** Stable, machine-readable reason, recorded beside the message when there is one (API.md). */
  readonly code: StepErrorCode | undefined;

  constructor(message: string, options: { retryable?: boolean; details?: Record<string, unknown>; cause?: unknown; code?: StepErrorCode } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable ?? true;
    this.details = options.details;
    this.code = options.code;
  }
}

/**
 * EXPRESSION_TIMEOUT: a node's expressions ran past their time budget. EXPRESSION_TOO_LARGE: a
 * result, the number of templates, or the evaluating worker's heap went past its bound.
 * DELAY_TOO_LONG: a delay's `ms` or `until` (from a template) lies beyond the longest wait.
 * STEP_OUTPUT_TOO_LARGE: the output's JSON is over ENGINE_MAX_PAYLOAD_BYTES. UNSTORABLE_VALUE: the
 * output holds text the database cannot store (a NUL character, an unpaired surrogate) or is nested
 * deeper than MAX_PAYLOAD_DEPTH. STEP_INTERRUPTED: the step was found interrupted when its
 * execution was taken over more than MAX_TAKEOVERS times (runner.ts). CONNECTION_NOT_FOUND: the
 * `http.request` names a connection the user no longer has (deleted or
 * renamed since the save). CONNECTION_ORIGIN_MISMATCH: its url (from a template) leads to another
 * origin than the connection's baseUrl. SECRET_NOT_FOUND: a `{{ $secrets.KEY }}` names no secret
 * variable (deleted, or made plain, since the save). SECRET_UNREADABLE: a stored secret the step
 * needs cannot be decrypted (altered in the database, or its key removed from SECRETS_KEYS).
 */
export type StepErrorCode =
  | 'EXPRESSION_TIMEOUT'
  | 'EXPRESSION_TOO_LARGE'
  | 'DELAY_TOO_LONG'
  | 'STEP_OUTPUT_TOO_LARGE'
  | 'UNSTORABLE_VALUE'
  | 'STEP_INTERRUPTED'
  | 'CONNECTION_NOT_FOUND'
  | 'CONNECTION_ORIGIN_MISMATCH'
  | 'SECRET_NOT_FOUND'
  | 'SECRET_UNREADABLE';
