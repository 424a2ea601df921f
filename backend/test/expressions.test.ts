import { describe, expect, it } from 'vitest';
import { StepError } from '../src/engine/errors.js';
import {
  defaultExpressionLimits,
  evaluateExpression,
  expressionSyntaxError,
  resolveTemplates,
  type ExpressionScope,
} from '../src/engine/expressions.js';

const scope: ExpressionScope = {
  input: { name: 'Ada', count: 3, tags: ['a', 'b'], active: true },
  steps: {
    fetch: { status: 200, body: { items: [{ id: 1, price: 5 }, { id: 2, price: 7 }] } },
    'my-node': { ok: true },
  },
};

/** The StepError a call rejects with; fails the test if it resolves or throws something else. */
async function stepErrorOf(promise: Promise<unknown>): Promise<StepError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(StepError);
    return error as StepError;
  }
  throw new Error('expected a StepError');
}

const runawayTailRecursion = '( $f := function($x){ $f($x) }; $f(1) )';
const runawayDeepRecursion = '( $f := function($x){ 1 + $f($x) }; $f(1) )';

describe('evaluateExpression', () => {
  it('reads input and the outputs of earlier steps', async () => {
    expect(await evaluateExpression('input.name', scope)).toBe('Ada');
    expect(await evaluateExpression('steps.fetch.status', scope)).toBe(200);
    expect(await evaluateExpression('$sum(steps.fetch.body.items.price)', scope)).toBe(12);
    expect(await evaluateExpression('steps.`my-node`.ok', scope)).toBe(true);
  });

  it('keeps the type of the result', async () => {
    expect(await evaluateExpression('input.count * 2', scope)).toBe(6);
    expect(await evaluateExpression('input.count > 2', scope)).toBe(true);
    expect(await evaluateExpression('{ "who": input.name, "n": input.count }', scope)).toEqual({ who: 'Ada', n: 3 });
    expect(await evaluateExpression('steps.fetch.body.items.id', scope)).toEqual([1, 2]);
  });

  it('returns plain arrays, without JSONata internal flags', async () => {
    const result = await evaluateExpression('steps.fetch.body.items.id', scope);
    expect(Object.keys(result as object)).toEqual(['0', '1']);
  });

  it('turns an undefined result into null', async () => {
    expect(await evaluateExpression('input.missing', scope)).toBeNull();
    expect(await evaluateExpression('steps.nope.anything', scope)).toBeNull();
  });

  it('reports a syntax error with its position, not retryable', async () => {
    const error = await stepErrorOf(evaluateExpression('input.name +', scope));
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/^expression error at position \d+: /);
    expect(error.details).toMatchObject({ expression: 'input.name +', code: 'S0207' });
  });

  it('reports a runtime error, not retryable', async () => {
    const error = await stepErrorOf(evaluateExpression('input.name + 1', scope));
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/^expression error at position \d+: The left side of the "\+" operator must evaluate to a number/);
  });

  it('refuses an empty expression', async () => {
    const error = await stepErrorOf(evaluateExpression('   ', scope));
    expect(error.message).toBe('expression is empty');
    expect(error.retryable).toBe(false);
  });

  it('stops a runaway tail recursion with a timeout', async () => {
    const started = Date.now();
    const error = await stepErrorOf(evaluateExpression(runawayTailRecursion, scope, { timeoutMs: 100 }));
    expect(error.message).toBe('expression took longer than 100 ms');
    expect(error.retryable).toBe(false);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('stops a long loop with a timeout', async () => {
    const error = await stepErrorOf(evaluateExpression('$sum($map([1..1000000], function($v) { $v * 2 }))', scope, { timeoutMs: 50 }));
    expect(error.message).toBe('expression took longer than 50 ms');
    expect(error.code).toBe('EXPRESSION_TIMEOUT');
  });

  it('applies the timeout inside $eval too', async () => {
    const error = await stepErrorOf(evaluateExpression(`$eval(${JSON.stringify(runawayTailRecursion)})`, scope, { timeoutMs: 100 }));
    expect(error.message).toBe('expression took longer than 100 ms');
  });

  it('stops a runaway recursion that nests too deep', async () => {
    const error = await stepErrorOf(evaluateExpression(runawayDeepRecursion, scope, { maxDepth: 100 }));
    expect(error.message).toBe('expression nested deeper than 100 levels; check for a recursive function that never stops');
    expect(error.retryable).toBe(false);
  });

  it('stops a runaway recursion with the default limits', async () => {
    const error = await stepErrorOf(evaluateExpression(runawayDeepRecursion, scope));
    expect(error.message).toContain(`deeper than ${defaultExpressionLimits.maxDepth} levels`);
  });

  it('lets a bounded recursion finish within the default limits', async () => {
    const factorial = '( $fact := function($n) { $n <= 1 ? 1 : $n * $fact($n - 1) }; $fact(20) )';
    expect(await evaluateExpression(factorial, scope)).toBe(2432902008176640000);
  });

  it('refuses a result larger than maxResultBytes', async () => {
    const error = await stepErrorOf(evaluateExpression('$pad("", 2000, "x")', scope, { maxResultBytes: 1000 }));
    expect(error.message).toBe('expression result is 2002 bytes of JSON, more than the 1000 allowed');
    expect(error.retryable).toBe(false);
    expect(error.code).toBe('EXPRESSION_TOO_LARGE');
    expect(await evaluateExpression('$pad("", 998, "x")', scope, { maxResultBytes: 1000 })).toHaveLength(998);
  });

  it('refuses a function or a non-finite number as a result', async () => {
    const fn = await stepErrorOf(evaluateExpression('function($x) { $x }', scope));
    expect(fn.message).toMatch(/^expression result contains a function/);
    const builtin = await stepErrorOf(evaluateExpression('{ "f": $uppercase }', scope));
    expect(builtin.message).toMatch(/^expression result contains a function/);
    const infinite = await stepErrorOf(evaluateExpression('1 / 0', scope));
    expect(infinite.message).toBe('expression result contains the number Infinity, which JSON cannot hold');
  });
});

describe('resolveTemplates', () => {
  it('gives an exact template the value with its type', async () => {
    expect(await resolveTemplates('{{ input.count }}', scope)).toBe(3);
    expect(await resolveTemplates('  {{input.active}}\n', scope)).toBe(true);
    expect(await resolveTemplates('{{ steps.fetch.body.items[0] }}', scope)).toEqual({ id: 1, price: 5 });
    expect(await resolveTemplates('{{ input.tags }}', scope)).toEqual(['a', 'b']);
    expect(await resolveTemplates('{{ input.missing }}', scope)).toBeNull();
  });

  it('interpolates templates inside longer strings', async () => {
    expect(await resolveTemplates('Hello {{ input.name }}!', scope)).toBe('Hello Ada!');
    expect(await resolveTemplates('{{ input.name }} has {{ input.count }} items', scope)).toBe('Ada has 3 items');
    expect(await resolveTemplates('tags={{ input.tags }} first={{ steps.fetch.body.items[0] }}', scope)).toBe(
      'tags=["a","b"] first={"id":1,"price":5}',
    );
    expect(await resolveTemplates('ok: {{ input.active }}, null: {{ null }}', scope)).toBe('ok: true, null: null');
    expect(await resolveTemplates('[{{ input.missing }}]', scope)).toBe('[]');
  });

  it('resolves strings at any depth of objects and arrays, leaving keys alone', async () => {
    const params = {
      url: 'https://api.example.com/users/{{ input.name }}',
      headers: { '{{ input.name }}': '{{ input.count }}' },
      body: { list: [1, '{{ input.count + 1 }}', { deep: ['{{ steps.fetch.status }}'] }], flag: false, none: null },
    };
    expect(await resolveTemplates(params, scope)).toEqual({
      url: 'https://api.example.com/users/Ada',
      headers: { '{{ input.name }}': 3 },
      body: { list: [1, 4, { deep: [200] }], flag: false, none: null },
    });
  });

  it('returns strings without templates and non-string values unchanged', async () => {
    expect(await resolveTemplates('plain text with { braces } and }}', scope)).toBe('plain text with { braces } and }}');
    expect(await resolveTemplates(42, scope)).toBe(42);
    expect(await resolveTemplates(null, scope)).toBeNull();
    expect(await resolveTemplates(true, scope)).toBe(true);
    expect(await resolveTemplates({ a: 'input.name' }, scope)).toEqual({ a: 'input.name' });
  });

  it('does not mutate its argument', async () => {
    const params = { a: '{{ input.count }}', b: ['{{ input.name }}'] };
    await resolveTemplates(params, scope);
    expect(params).toEqual({ a: '{{ input.count }}', b: ['{{ input.name }}'] });
  });

  it('keeps "}}" inside object constructors and string literals as part of the expression', async () => {
    expect(await resolveTemplates('{{ { "a": { "b": input.count }} }}', scope)).toEqual({ a: { b: 3 } });
    expect(await resolveTemplates('x{{ "}}" }}y', scope)).toBe('x}}y');
    expect(await resolveTemplates('{{ "{{" }} literal', scope)).toBe('{{ literal');
  });

  it('keeps a "__proto__" key as a plain key', async () => {
    const params: unknown = JSON.parse('{"__proto__": "{{ input.count }}"}');
    const resolved = (await resolveTemplates(params, scope)) as Record<string, unknown>;
    expect(Object.getPrototypeOf(resolved)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(resolved, '__proto__')?.value).toBe(3);
  });

  it('refuses a template that is never closed', async () => {
    const error = await stepErrorOf(resolveTemplates({ url: 'https://x/{{ input.name' }, scope));
    expect(error.message).toBe('template "{{ input.name" opens "{{" without a matching "}}"');
    expect(error.retryable).toBe(false);
    expect(error.details).toMatchObject({ path: 'url' });
  });

  it('reports expression errors with the path of the failing param', async () => {
    const error = await stepErrorOf(resolveTemplates({ body: { items: ['ok', 'n={{ input.name + }}'] } }, scope));
    expect(error.message).toMatch(/^expression error at position \d+: /);
    expect(error.retryable).toBe(false);
    expect(error.details).toMatchObject({ path: 'body.items[1]', expression: ' input.name + ' });
  });

  it('applies the limits to templates', async () => {
    const timeout = await stepErrorOf(resolveTemplates({ a: `{{ ${runawayTailRecursion} }}` }, scope, { timeoutMs: 100 }));
    expect(timeout.message).toBe('templates took longer than 100 ms in all');
    expect(timeout.code).toBe('EXPRESSION_TIMEOUT');
    const depth = await stepErrorOf(resolveTemplates(`x {{ ${runawayDeepRecursion} }}`, scope, { maxDepth: 100 }));
    expect(depth.message).toContain('deeper than 100 levels');
    const size = await stepErrorOf(resolveTemplates('{{ $pad("", 50, "x") }}', scope, { maxResultBytes: 20 }));
    expect(size.message).toBe('expression result is 52 bytes of JSON, more than the 20 allowed');
    expect(size.code).toBe('EXPRESSION_TOO_LARGE');
  });

  it('gives all the templates of one value one time budget, not one each', async () => {
    const heavy = '{{ $count($map([1..20000], function($v) { $v + 1 })) }}';
    const started = performance.now();
    expect(await resolveTemplates(heavy, scope)).toBe(20000);
    // Each template alone takes a third of the budget; ten of them together cannot fit.
    const budgetMs = Math.max(30, Math.ceil(3 * (performance.now() - started)));
    const params = { body: Object.fromEntries(Array.from({ length: 10 }, (_, index) => [`t${index}`, heavy])) };
    const error = await stepErrorOf(resolveTemplates(params, scope, { timeoutMs: budgetMs }));
    expect(error.message).toBe(`templates took longer than ${budgetMs} ms in all`);
    expect(error.code).toBe('EXPRESSION_TIMEOUT');
    expect(error.details).toMatchObject({ path: expect.stringMatching(/^body\.t[1-9]$/) });
  });

  it('counts the templates of one value against maxTemplates', async () => {
    const params = { url: 'https://x/{{ input.name }}/{{ input.count }}', body: ['{{ input.count }}', 'n={{ input.count }}'] };
    expect(await resolveTemplates(params, scope, { maxTemplates: 4 })).toEqual({ url: 'https://x/Ada/3', body: [3, 'n=3'] });
    const error = await stepErrorOf(resolveTemplates(params, scope, { maxTemplates: 3 }));
    expect(error.message).toBe('the params hold more than 3 templates');
    expect(error.code).toBe('EXPRESSION_TOO_LARGE');
    expect(error.details).toMatchObject({ path: 'body[1]' });
  });

  it('limits the results of all the templates of one value together, not only each one', async () => {
    const params = { a: '{{ $pad("", 15, "x") }}', b: '{{ $pad("", 15, "y") }}' };
    expect(await resolveTemplates(params, scope, { maxResultBytes: 40 })).toEqual({ a: 'x'.repeat(15), b: 'y'.repeat(15) });
    const error = await stepErrorOf(resolveTemplates(params, scope, { maxResultBytes: 30 }));
    expect(error.code).toBe('EXPRESSION_TOO_LARGE');
    expect(error.message).toContain('the results of these templates are 34 bytes of JSON, more than the 30 allowed');
  });

  it('limits the size of an interpolated string made of many small values', async () => {
    const template = '{{ $pad("", 15, "x") }}{{ $pad("", 15, "y") }}';
    const error = await stepErrorOf(resolveTemplates(template, scope, { maxResultBytes: 20 }));
    expect(error.code).toBe('EXPRESSION_TOO_LARGE');
    expect(error.message).toMatch(/more than the 20 allowed$/);
  });
});

describe('expressionSyntaxError', () => {
  it('returns null for a valid expression', () => {
    expect(expressionSyntaxError('input.name & " " & steps.fetch.status')).toBeNull();
    expect(expressionSyntaxError(runawayTailRecursion)).toBeNull();
  });

  it('describes an invalid expression', () => {
    expect(expressionSyntaxError('input.name +')).toMatch(/^expression error at position \d+: Unexpected end of expression$/);
    expect(expressionSyntaxError('(1')).toMatch(/^expression error at position \d+: /);
    expect(expressionSyntaxError('')).toBe('expression is empty');
  });
});
