import type { ExpressionScope } from './expressions.js';

/**
 * The few expressions the engine may evaluate on its own thread instead of in a worker process
 * (expression-pool.ts): a path of plain field names (`input.n`, `steps.fetch.status`), a number or
 * string literal, or one binary operator between two of those (`input.n + 1`, `steps.a.x > 10`).
 *
 * What stays true:
 * - Bounded work: the text is at most MAX_INLINE_LENGTH characters, read once by a linear
 *   tokenizer (no regular expression that could backtrack), and evaluating it reads at most
 *   MAX_PATH_STEPS object fields per operand: no loop, no call, no allocation that grows with the
 *   data. So no expression evaluated here can stall the event loop or exhaust memory, which is
 *   what the worker processes are for; everything else goes to them.
 * - The same answer as JSONata or none: any case whose JSONata semantics are not plain (an array
 *   on the path, where JSONata maps; an operand of the wrong type, where JSONata raises an error;
 *   a non-finite number; an object or a long string as the result; a name JSONata treats as a
 *   keyword or that an object inherits) answers `undefined`, and the pool evaluates the
 *   expression as before, errors and all. test/inline-expression.test.ts compares both.
 */

/** Longer texts are never inline: the tokenizer's work, and the cache's memory, stay small. */
const MAX_INLINE_LENGTH = 200;
/** Field names in one path. */
const MAX_PATH_STEPS = 16;
/** A string operand or result longer than this goes to the pool (its budget bounds comparing, and it measures results against maxResultBytes). */
const MAX_INLINE_STRING = 4_096;
/** Distinct expression texts remembered (one entry per text, however many runs use it); the cache is emptied when full. */
const MAX_CACHED = 1_000;

type Operand = { readonly kind: 'path'; readonly names: readonly string[] } | { readonly kind: 'literal'; readonly value: number | string };
type BinaryOperator = '+' | '-' | '*' | '/' | '%' | '=' | '!=' | '<' | '<=' | '>' | '>=' | '&' | 'and' | 'or';
/** A parsed inline expression: one operand, or two around an operator. */
type InlinePlan = { readonly left: Operand; readonly operator?: BinaryOperator; readonly right?: Operand };

/** Words JSONata reads as something other than a field name. */
const RESERVED = new Set(['and', 'or', 'in', 'true', 'false', 'null', 'function']);
const OPERATORS = new Set<string>(['+', '-', '*', '/', '%', '=', '!=', '<', '<=', '>', '>=', '&', 'and', 'or']);

type Token = { readonly kind: 'name' | 'number' | 'string' | 'operator' | 'dot'; readonly text: string };

/** The tokens of `text`, or undefined at the first character outside the inline grammar. */
function tokenize(text: string): Token[] | undefined {
  const tokens: Token[] = [];
  let index = 0;
  while (index < text.length) {
    const char = text[index] as string;
    if (char === ' ' || char === '\t' || char === '\n' || char === '\r') {
      index += 1;
    } else if (/[A-Za-z_]/.test(char)) {
      let end = index + 1;
      while (end < text.length && /[A-Za-z0-9_]/.test(text[end] as string)) end += 1;
      const word = text.slice(index, end);
      tokens.push({ kind: word === 'and' || word === 'or' ? 'operator' : 'name', text: word });
      index = end;
    } else if (/[0-9]/.test(char)) {
      let end = index + 1;
      while (end < text.length && /[0-9]/.test(text[end] as string)) end += 1;
      // A fraction needs digits after its dot (`1.x` is not a number here).
      if (text[end] === '.' && /[0-9]/.test(text[end + 1] ?? '')) {
        end += 1;
        while (end < text.length && /[0-9]/.test(text[end] as string)) end += 1;
      }
      // Exponents, leading zeros and the like: left to JSONata.
      if (/[A-Za-z_.]/.test(text[end] ?? '') || (text[index] === '0' && end > index + 1 && text[index + 1] !== '.')) return undefined;
      tokens.push({ kind: 'number', text: text.slice(index, end) });
      index = end;
    } else if (char === '"' || char === "'") {
      const end = text.indexOf(char, index + 1);
      if (end < 0) return undefined;
      const body = text.slice(index + 1, end);
      // Escapes are JSONata's to decode.
      if (body.includes('\\')) return undefined;
      tokens.push({ kind: 'string', text: body });
      index = end + 1;
    } else if (char === '.') {
      tokens.push({ kind: 'dot', text: '.' });
      index += 1;
    } else {
      const two = text.slice(index, index + 2);
      const operator = two === '!=' || two === '<=' || two === '>=' ? two : char;
      if (!OPERATORS.has(operator)) return undefined;
      tokens.push({ kind: 'operator', text: operator });
      index += operator.length;
    }
  }
  return tokens;
}

/** The plan of `text`, or null when it is not an inline expression. */
function parse(text: string): InlinePlan | null {
  if (text.length > MAX_INLINE_LENGTH) return null;
  const tokens = tokenize(text);
  if (!tokens || tokens.length === 0) return null;
  let position = 0;
  const operand = (): Operand | undefined => {
    const token = tokens[position];
    if (!token) return undefined;
    if (token.kind === 'number') {
      position += 1;
      return { kind: 'literal', value: Number(token.text) };
    }
    if (token.kind === 'string') {
      position += 1;
      return { kind: 'literal', value: token.text };
    }
    if (token.kind !== 'name') return undefined;
    const names: string[] = [];
    for (;;) {
      const name = tokens[position];
      if (name?.kind !== 'name' || RESERVED.has(name.text)) return undefined;
      names.push(name.text);
      position += 1;
      if (tokens[position]?.kind !== 'dot') break;
      position += 1;
    }
    return names.length <= MAX_PATH_STEPS ? { kind: 'path', names } : undefined;
  };
  const left = operand();
  if (!left) return null;
  if (position === tokens.length) return { left };
  const operator = tokens[position];
  if (operator?.kind !== 'operator') return null;
  position += 1;
  const right = operand();
  if (!right || position !== tokens.length) return null;
  return { left, operator: operator.text as BinaryOperator, right };
}

/** Marks a value JSONata's semantics for which are not plain here: the pool decides. */
const UNSURE = Symbol('unsure');
type Resolved = number | string | boolean | null | Record<string, unknown> | undefined | typeof UNSURE;

function resolve(operand: Operand, scope: ExpressionScope): Resolved {
  if (operand.kind === 'literal') return operand.value;
  let value: unknown = scope;
  for (const name of operand.names) {
    if (value === undefined) return undefined;
    // JSONata maps a path over arrays (and flattens): not plain.
    if (Array.isArray(value)) return UNSURE;
    if (typeof value !== 'object' || value === null) return undefined;
    if (!Object.hasOwn(value, name)) {
      // An inherited name (`constructor`, `toString`) is what JSONata would read: not plain.
      if (name in value) return UNSURE;
      return undefined;
    }
    value = (value as Record<string, unknown>)[name];
  }
  if (Array.isArray(value)) return UNSURE;
  if (value === undefined || value === null || typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'object') return value as Record<string, unknown>;
  return UNSURE;
}

function apply(operator: BinaryOperator, left: Resolved, right: Resolved): Resolved {
  switch (operator) {
    case '+':
    case '-':
    case '*':
    case '/':
    case '%': {
      // JSONata: nothing on either side is nothing; anything but numbers is an error.
      if (left === undefined || right === undefined) return typeof left === 'number' || typeof right === 'number' || left === right ? undefined : UNSURE;
      if (typeof left !== 'number' || typeof right !== 'number') return UNSURE;
      const result = operator === '+' ? left + right : operator === '-' ? left - right : operator === '*' ? left * right : operator === '/' ? left / right : left % right;
      return Number.isFinite(result) ? result : UNSURE;
    }
    case '=':
    case '!=': {
      const plain = (value: Resolved) => value === undefined || typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean' || value === null;
      if (!plain(left) || !plain(right)) return UNSURE;
      if (left === undefined || right === undefined) return false;
      return operator === '=' ? left === right : left !== right;
    }
    case '<':
    case '<=':
    case '>':
    case '>=': {
      const bothNumbers = typeof left === 'number' && typeof right === 'number';
      const bothStrings = typeof left === 'string' && typeof right === 'string';
      if (!bothNumbers && !bothStrings) return UNSURE;
      return operator === '<' ? left < right : operator === '<=' ? left <= right : operator === '>' ? left > right : left >= right;
    }
    case '&':
      return typeof left === 'string' && typeof right === 'string' ? left + right : UNSURE;
    case 'and':
    case 'or':
      if (typeof left !== 'boolean' || typeof right !== 'boolean') return UNSURE;
      return operator === 'and' ? left && right : left || right;
  }
}

const isLongString = (value: Resolved) => typeof value === 'string' && value.length > MAX_INLINE_STRING;

/**
 * Evaluates the plain expressions described above on this thread. Parsed plans are kept per
 * expression text (a workflow version's expressions are the same texts run after run).
 */
export class InlineExpressions {
  private readonly plans = new Map<string, InlinePlan | null>();

  /** `{ value }` (JSONata's "nothing" as null) when `expression` is plain and its answer certain; undefined: evaluate it in the pool. */
  evaluate(expression: string, scope: ExpressionScope): { value: unknown } | undefined {
    // Checked before the cache: a text that can never be inline must not be kept (it may be a megabyte).
    if (expression.length > MAX_INLINE_LENGTH) return undefined;
    let plan = this.plans.get(expression);
    if (plan === undefined) {
      plan = parse(expression);
      if (this.plans.size >= MAX_CACHED) this.plans.clear();
      this.plans.set(expression, plan);
    }
    if (plan === null) return undefined;
    const left = resolve(plan.left, scope);
    const right = plan.operator === undefined || plan.right === undefined ? undefined : resolve(plan.right, scope);
    // Comparing or joining strings costs their length: long ones go to the pool, whose budget bounds it.
    if (isLongString(left) || isLongString(right)) return undefined;
    const result = plan.operator === undefined || plan.right === undefined ? left : apply(plan.operator, left, right);
    if (result === UNSURE) return undefined;
    // An object is copied by the pool (and can be large): only plain values are answered here.
    if (typeof result === 'object' && result !== null) return undefined;
    if (typeof result === 'string' && result.length > MAX_INLINE_STRING) return undefined;
    // The pool's answers pass through JSON, which writes -0 as 0: so do these.
    return { value: result === undefined ? null : Object.is(result, -0) ? 0 : result };
  }
}
