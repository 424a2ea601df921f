import { performance } from 'node:perf_hooks';
import jsonata from 'jsonata';
import { forEachString, mapStrings, type JsonPath } from '../lib/json-walk.js';
import { StepError, type StepErrorCode } from './errors.js';

/** What every expression sees as its root: `input.x`, `steps.<nodeId>.y`. */
export interface ExpressionScope {
  input: unknown;
  steps: Record<string, unknown>;
}

/**
 * Values bound as `$name` for every expression of one call, beside the root scope (so `$$` stays
 * `{ input, steps }`): `vars` is `$vars`, the caller's non-secret variables.
 */
export interface ExpressionBindings {
  readonly vars?: Readonly<Record<string, unknown>>;
}

export interface ExpressionLimits {
  /** Wall-clock budget of one call: one expression, or every template of one value together. */
  timeoutMs: number;
  /** Deepest nesting of JSONata evaluation (sub-expressions and function calls) allowed. */
  maxDepth: number;
  /** Largest result allowed, measured as UTF-8 JSON. */
  maxResultBytes: number;
  /** Most `{{ }}` templates one call resolves (a 1 MB body could hold tens of thousands). */
  maxTemplates: number;
}

/**
 * maxDepth 500 (as in JSONata's own test suite) leaves room for about 120 levels of non-tail
 * recursion (each call nests ~4 evaluations) while stopping a runaway one in milliseconds.
 * Without a depth limit, JSONata's async evaluator never overflows the native stack: it grows
 * the heap until Node aborts the whole process (measured: out of memory after ~70 s).
 */
export const defaultExpressionLimits: ExpressionLimits = { timeoutMs: 1000, maxDepth: 500, maxResultBytes: 1_000_000, maxTemplates: 1000 };

/**
 * What is left of one call's limits: its deadline, the templates it may still evaluate, and the
 * bytes of results it may still produce (maxResultBytes for all of a node's templates together,
 * so many results within the bound each cannot add up to a heap's worth).
 */
interface Budget {
  readonly limits: ExpressionLimits;
  readonly deadline: number;
  readonly scope: 'expression' | 'templates';
  /** Given to JSONata as its bindings, the same for every expression of the call. */
  readonly bindings: ExpressionBindings | undefined;
  templates: number;
  resultBytes: number;
}

/** `deadline` (a performance.now() time) continues a budget begun earlier; else it starts now. */
function budgetOf(
  limits: Partial<ExpressionLimits> | undefined,
  scope: Budget['scope'],
  deadline: number | undefined,
  bindings: ExpressionBindings | undefined,
): Budget {
  const full = { ...defaultExpressionLimits, ...limits };
  return { limits: full, deadline: deadline ?? performance.now() + full.timeoutMs, scope, bindings, templates: 0, resultBytes: 0 };
}

// JSONata's guardrail error codes (jsonata >= 2.2).
const STACK_LIMIT_CODE = 'D1011';
const TIMEOUT_CODE = 'D1012';

/**
 * Evaluates one JSONata expression over the scope, in this thread: the engine calls it inside an
 * expression worker (expression-pool.ts), never on the main thread. Throws StepError with
 * retryable: false on syntax errors, runtime errors, timeouts (code EXPRESSION_TIMEOUT),
 * too-deep recursion, or a result whose JSON is larger than maxResultBytes (EXPRESSION_TOO_LARGE).
 * JSONata's `undefined` result (nothing matched) becomes null.
 */
export async function evaluateExpression(
  expression: string,
  scope: ExpressionScope,
  limits?: Partial<ExpressionLimits>,
  deadline?: number,
  bindings?: ExpressionBindings,
): Promise<unknown> {
  return nullIfUndefined(await evaluateToJsonValue(expression, scope, budgetOf(limits, 'expression', deadline, bindings)));
}

const nullIfUndefined = (value: unknown): unknown => (value === undefined ? null : value);

/**
 * Resolves `{{ expression }}` templates in every string at any depth of `value` (object keys are
 * left alone). A string that is exactly one template (whitespace around allowed) becomes the
 * expression's value with its type; otherwise each template is replaced by its value as text.
 * Strings without `{{` come back unchanged. Same errors as evaluateExpression; the time budget
 * and maxTemplates cover all the templates of `value` together (one node's params), so many
 * templates each under the limit cannot add up to more.
 */
export async function resolveTemplates(
  value: unknown,
  scope: ExpressionScope,
  limits?: Partial<ExpressionLimits>,
  deadline?: number,
  bindings?: ExpressionBindings,
): Promise<unknown> {
  const budget = budgetOf(limits, 'templates', deadline, bindings);
  // Sequential on purpose: evaluations never yield, so running them "in parallel" would only
  // interleave them and make each one's clock include the others' work.
  const templated: { text: string; path: string }[] = [];
  forEachString(value, (text, path) => {
    if (text.includes('{{')) templated.push({ text, path: formatPath(path()) });
  });
  if (templated.length === 0) return value;
  const resolved: unknown[] = [];
  for (const { text, path } of templated) resolved.push(await resolveString(text, scope, budget, path));
  // Both walks meet the strings in the same (document) order: the nth templated string gets the nth result.
  let next = 0;
  return mapStrings(value, (text) => (text.includes('{{') ? resolved[next++] : text));
}

/** Checks an expression compiles; returns the error message or null (used for validation). */
export function expressionSyntaxError(expression: string): string | null {
  if (expression.trim() === '') return EMPTY_EXPRESSION_MESSAGE;
  try {
    jsonata(expression);
    return null;
  } catch (error) {
    return describeJsonataError(error);
  }
}

const EMPTY_EXPRESSION_MESSAGE = 'expression is empty';

/**
 * Limits are enforced by JSONata's own guardrail options (`timeout`, `stack`), checked each time
 * the evaluator enters a sub-expression. We do not use the exerciser's "timeboxExpression" trick
 * (`expr.assign('__evaluate_entry', fn)`): since jsonata 2.x those hooks are looked up under
 * `Symbol.for('jsonata.__evaluate_*')`, so a string-named hook is silently never called, and the
 * symbol form is undocumented and untyped. The options give the same checks, typed.
 *
 * What no in-evaluator check can interrupt, because it is one synchronous built-in call:
 * - a catastrophically backtracking regular expression, e.g. `$match("aaaa…a!", /(a+)+$/)`
 *   (measured: 6.7 s with 25 a's, a 300 ms limit notwithstanding);
 * - a single large built-in step, e.g. building `[1..10000000]` or `$sum` over it (~0.7 s;
 *   JSONata itself refuses ranges over 1e7 items). The timeout fires at the next sub-expression.
 * Those are bounded by where this runs: a worker process (expression-pool.ts) that is killed
 * when the budget is over, with a bounded heap.
 *
 * Evaluation never yields to the event loop (JSONata only awaits already-settled promises), so
 * a timer racing `evaluate()` could not fire before it finished: the check has to be inside.
 */
async function evaluateToJsonValue(
  expression: string,
  scope: ExpressionScope,
  budget: Budget,
): Promise<unknown> {
  const { limits } = budget;
  if (expression.trim() === '') throw expressionError(EMPTY_EXPRESSION_MESSAGE, expression);
  // JSONata's clock starts at each evaluate(): it gets what is left of the whole call's budget.
  const remainingMs = Math.floor(budget.deadline - performance.now());
  if (remainingMs <= 0) throw timeoutError(budget, expression);

  let rawResult: unknown;
  try {
    const compiled = jsonata(expression, { timeout: remainingMs, stack: limits.maxDepth });
    // Each binding is a `$name` (vars is `$vars`); the copy is a plain object, as JSONata's type wants.
    rawResult = await compiled.evaluate(scope, budget.bindings === undefined ? undefined : { ...budget.bindings });
  } catch (error) {
    throw toStepError(error, expression, budget);
  }
  if (rawResult === undefined) return undefined;

  const json = serializeResult(rawResult, expression);
  const bytes = Buffer.byteLength(json, 'utf8');
  budget.resultBytes += bytes;
  if (budget.resultBytes > limits.maxResultBytes) {
    const what = budget.resultBytes === bytes ? 'expression result is' : 'the results of these templates are';
    throw expressionError(
      `${what} ${budget.resultBytes} bytes of JSON, more than the ${limits.maxResultBytes} allowed`,
      expression,
      { resultBytes: budget.resultBytes },
      undefined,
      'EXPRESSION_TOO_LARGE',
    );
  }
  // A JSON round trip hands back plain data: JSONata's results can be arrays tagged with
  // internal flags (`sequence`, `keepSingleton`), which have no business in a step's output.
  return JSON.parse(json);
}

/** JSON of a JSONata result; functions, non-finite numbers and cycles are refused, not dropped. */
function serializeResult(result: unknown, expression: string): string {
  try {
    const json = JSON.stringify(result, (_key, value: unknown) => {
      if (isJsonataFunction(value)) throw new UnserializableResult('a function, not a value (did you forget to call it?)');
      if (typeof value === 'number' && !Number.isFinite(value)) throw new UnserializableResult(`the number ${value}, which JSON cannot hold`);
      return value;
    });
    // Unreachable for a defined, non-function result, but keeps the type honest.
    if (json === undefined) throw new UnserializableResult('a value JSON cannot hold');
    return json;
  } catch (error) {
    const reason = error instanceof UnserializableResult ? error.message : `a value JSON cannot hold (${errorMessage(error)})`;
    throw expressionError(`expression result contains ${reason}`, expression);
  }
}

class UnserializableResult extends Error {}

/** JSONata functions are JS functions (built-ins, regexes) or marked objects (lambdas, partials). */
function isJsonataFunction(value: unknown): boolean {
  if (typeof value === 'function') return true;
  return isRecord(value) && (value._jsonata_lambda === true || value._jsonata_function === true);
}

// ---------------------------------------------------------------------------------------------
// Templates

export type TemplatePart = { kind: 'text'; text: string } | { kind: 'expression'; source: string };

/**
 * The literal text and `{{ }}` expressions of a string, read exactly as template resolution reads
 * them (so a check made on them holds for what runs); null when a "{{" is never closed.
 * Joining text parts as they are and expression parts as `{{source}}` gives the string back.
 */
export function templateParts(text: string): TemplatePart[] | null {
  try {
    return parseTemplate(text, '');
  } catch (error) {
    if (error instanceof StepError) return null;
    throw error;
  }
}

async function resolveString(text: string, scope: ExpressionScope, budget: Budget, path: string): Promise<unknown> {
  if (!text.includes('{{')) return text;
  const { limits } = budget;
  const parts = parseTemplate(text, path);
  const expressions = parts.filter((part) => part.kind === 'expression');
  budget.templates += expressions.length;
  if (budget.templates > limits.maxTemplates) {
    throw new StepError(`the params hold more than ${limits.maxTemplates} templates`, {
      retryable: false,
      code: 'EXPRESSION_TOO_LARGE',
      details: { path, maxTemplates: limits.maxTemplates },
    });
  }
  const onlyWhitespaceAround = parts.every((part) => part.kind === 'expression' || part.text.trim() === '');

  if (expressions.length === 1 && onlyWhitespaceAround) {
    const [only] = expressions;
    if (only) return withPath(path, async () => nullIfUndefined(await evaluateToJsonValue(only.source, scope, budget)));
  }

  let resolved = '';
  for (const part of parts) {
    if (part.kind === 'text') {
      resolved += part.text;
      continue;
    }
    const result = await withPath(path, () => evaluateToJsonValue(part.source, scope, budget));
    resolved += result === undefined ? '' : typeof result === 'string' ? result : JSON.stringify(result);
  }
  // Each expression was within the limit, but many of them can still add up.
  const bytes = Buffer.byteLength(resolved, 'utf8');
  if (bytes > limits.maxResultBytes) {
    throw new StepError(`template result is ${bytes} bytes, more than the ${limits.maxResultBytes} allowed`, {
      retryable: false,
      code: 'EXPRESSION_TOO_LARGE',
      details: { path, resultBytes: bytes },
    });
  }
  return resolved;
}

/** Splits a string into literal text and `{{ }}` expressions. */
function parseTemplate(text: string, path: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let cursor = 0;
  while (cursor < text.length) {
    const open = text.indexOf('{{', cursor);
    if (open === -1) break;
    if (open > cursor) parts.push({ kind: 'text', text: text.slice(cursor, open) });
    const close = findTemplateClose(text, open + 2);
    if (close === -1) {
      throw new StepError(`template ${quoteSnippet(text.slice(open))} opens "{{" without a matching "}}"`, {
        retryable: false,
        details: { path, template: text },
      });
    }
    parts.push({ kind: 'expression', source: text.slice(open + 2, close) });
    cursor = close + 2;
  }
  if (cursor < text.length) parts.push({ kind: 'text', text: text.slice(cursor) });
  return parts;
}

/**
 * Index of the `}}` closing a template whose expression starts at `start`, or -1. A plain search
 * for `}}` would cut `{{ {"a": {"b": 1}} }}` or `{{ "}}" }}` short, so this skips JSONata string
 * literals, `backtick names` and comments, and only closes outside object constructors. Regex
 * literals are not recognised (telling `/` from division needs the full parser): a quote or an
 * unbalanced brace inside a regex in a template can confuse it. A literal "{{" in text can be
 * written as {{ "{{" }}.
 */
function findTemplateClose(text: string, start: number): number {
  let braceDepth = 0;
  let index = start;
  while (index < text.length) {
    const char = text[index];
    if (char === '"' || char === "'" || char === '`') {
      index = skipQuoted(text, index);
      continue;
    }
    if (char === '/' && text[index + 1] === '*') {
      const commentEnd = text.indexOf('*/', index + 2);
      if (commentEnd === -1) return -1;
      index = commentEnd + 2;
      continue;
    }
    if (char === '{') {
      braceDepth++;
    } else if (char === '}') {
      if (braceDepth === 0 && text[index + 1] === '}') return index;
      if (braceDepth > 0) braceDepth--;
    }
    index++;
  }
  return -1;
}

/** Index just past the quoted run starting at `start` (text.length if it never closes). */
function skipQuoted(text: string, start: number): number {
  const quote = text[start];
  // Backtick names have no escapes in JSONata; string literals use backslash escapes.
  const hasEscapes = quote !== '`';
  let index = start + 1;
  while (index < text.length) {
    const char = text[index];
    if (hasEscapes && char === '\\') {
      index += 2;
      continue;
    }
    if (char === quote) return index + 1;
    index++;
  }
  return text.length;
}

/** Records where in the params a failing template was, for whoever reports the error. */
async function withPath<T>(path: string, evaluate: () => Promise<T>): Promise<T> {
  try {
    return await evaluate();
  } catch (error) {
    if (error instanceof StepError && path !== '') {
      throw new StepError(error.message, { retryable: error.retryable, details: { ...error.details, path }, cause: error.cause, code: error.code });
    }
    throw error;
  }
}

/** Where a string is in the params, as error details name it: `headers.x`, `body.list[0]`, `body["a b"]`. */
function formatPath(path: JsonPath): string {
  let text = '';
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(key)) text += text === '' ? key : `.${key}`;
    else text += `[${JSON.stringify(key)}]`;
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** The parts of a JSONata error we use; JSONata throws plain objects, not Error instances. */
interface JsonataErrorFields {
  code: string | undefined;
  message: string;
  position: number | undefined;
  token: string | undefined;
}

function toStepError(error: unknown, expression: string, budget: Budget): StepError {
  if (error instanceof StepError) return error;
  const { limits } = budget;
  const fields = jsonataErrorFields(error);
  const details = { code: fields.code, position: fields.position, token: fields.token };

  // $eval wraps errors from the evaluated text (D3121 with the original in `.error`), so the
  // limit that actually stopped evaluation may be a level or two down.
  const limitCode = findLimitCode(error);
  if (limitCode === TIMEOUT_CODE) return timeoutError(budget, expression, details, error);
  if (limitCode === STACK_LIMIT_CODE) {
    return expressionError(
      `expression nested deeper than ${limits.maxDepth} levels; check for a recursive function that never stops`,
      expression,
      details,
      error,
    );
  }
  return expressionError(describeJsonataError(error), expression, details, error);
}

function describeJsonataError(error: unknown): string {
  const { message, position } = jsonataErrorFields(error);
  return position === undefined ? `expression error: ${message}` : `expression error at position ${position}: ${message}`;
}

function findLimitCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let level = 0; level < 10 && isRecord(current); level++) {
    if (current.code === TIMEOUT_CODE || current.code === STACK_LIMIT_CODE) return current.code;
    current = current.error;
  }
  return undefined;
}

function jsonataErrorFields(error: unknown): JsonataErrorFields {
  if (!isRecord(error)) return { code: undefined, message: String(error), position: undefined, token: undefined };
  const fields = error;
  return {
    code: typeof fields.code === 'string' ? fields.code : undefined,
    message: errorMessage(error),
    position: typeof fields.position === 'number' ? fields.position : undefined,
    token: typeof fields.token === 'string' ? fields.token : undefined,
  };
}

function expressionError(
  message: string,
  expression: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
  code?: StepErrorCode,
): StepError {
  return new StepError(message, { retryable: false, details: { expression, ...details }, cause, code });
}

/** The budget ran out: one expression's, or (templates) the whole call's. */
function timeoutError(budget: Budget, expression: string, details: Record<string, unknown> = {}, cause?: unknown): StepError {
  const message =
    budget.scope === 'expression'
      ? `expression took longer than ${budget.limits.timeoutMs} ms`
      : `templates took longer than ${budget.limits.timeoutMs} ms in all`;
  return expressionError(message, expression, details, cause, 'EXPRESSION_TIMEOUT');
}

function errorMessage(error: unknown): string {
  if (isRecord(error) && typeof error.message === 'string') return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

function quoteSnippet(text: string): string {
  const maxLength = 60;
  return JSON.stringify(text.length > maxLength ? `${text.slice(0, maxLength)}…` : text);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
