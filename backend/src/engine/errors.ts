/**
 * A step failed for a reason worth telling the workflow's author (a non-2xx answer, a refused
 * address, an expression error). Its message is recorded in the step and execution `error`.
 * `retryable: false` fails the step at once, whatever the node's retry policy says.
 */
export class StepError extends Error {
  override readonly name = 'StepError';
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(message: string, options: { retryable?: boolean; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable ?? true;
    this.details = options.details;
  }
}
