import { describe, expect, it } from 'vitest';
import { evaluateExpression, type ExpressionScope } from '../src/engine/expressions.js';
import { InlineExpressions } from '../src/engine/inline-expression.js';

const scope: ExpressionScope = {
  input: { n: 41, name: 'Ada', empty: '', zero: 0, flag: true, off: false, nothing: null, tags: ['a', 'b'], one: [5], nested: { deep: { value: 7 } } },
  steps: { fetch: { status: 200, body: { items: [{ price: 5 }, { price: 7 }] } }, t: 3.5 },
};

/** JSONata's own answer (the worker's evaluation, run here): its value, or the error's code and message. */
async function jsonataAnswer(expression: string, on: ExpressionScope): Promise<{ value: unknown } | { error: string }> {
  try {
    return { value: await evaluateExpression(expression, on) };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** Expressions the engine answers on its own thread: each must give JSONata's answer. */
const answeredInline = [
  'input.n + 1',
  'input.n - 1',
  'input.n * 2',
  'input.n / 2',
  'input.n % 5',
  '1 + 2',
  'input.n',
  'input.name',
  'input.flag',
  'input.nothing',
  'input.missing',
  'input.missing.deeper',
  'input.name.length',
  'input.nested.deep.value * 3',
  'steps.fetch.status = 200',
  'steps.fetch.status != 200',
  'steps.t > 3',
  'steps.t >= 3.5',
  'input.n < 100',
  'input.n <= 41',
  "input.name = 'Ada'",
  'input.name = "Ada"',
  "input.name & ' Lovelace'",
  'input.name < "B"',
  'input.missing = 1',
  'input.missing != 1',
  'input.missing + 1',
  '1 + input.missing',
  'input.flag and input.off',
  'input.flag or input.off',
  'input.zero = 0',
  '42',
  '"text"',
  '  input.n  +  1  ',
];

/** Expressions whose JSONata semantics are not plain (arrays, errors, functions, keywords): always the pool's. */
const leftToThePool = [
  'input.tags',
  'input.one',
  'input.tags.x',
  'steps.fetch.body.items.price',
  'input.nested',
  'input.name + 1',
  'input.flag + 1',
  'input.nothing + 1',
  'input.missing + "a"',
  'input.n / input.zero',
  'input.n & "x"',
  'input.n < "x"',
  'input.missing < 1',
  'input.flag and input.n',
  'input.tags = input.tags',
  'input.constructor',
  'input.toString',
  '$sum(input.tags)',
  '$vars.x',
  'input.n + 1 + 2',
  '-1',
  'true',
  'input.true',
  'input.nothing = null',
  'input.n in [1, 2]',
  '"a\\"b"',
  '1e3',
  '007',
  'input.`n`',
  '(input.n)',
  'input.n ~> $string()',
  '',
  `input.n + ${'1'.repeat(300)}`,
];

describe('inline expressions (evaluated on the engine thread)', () => {
  it.each(answeredInline)('answers %s as JSONata does', async (expression) => {
    const inline = new InlineExpressions().evaluate(expression, scope);
    expect(inline).toBeDefined();
    expect(inline).toEqual(await jsonataAnswer(expression, scope));
  });

  it.each(leftToThePool)('leaves %s to the worker processes', (expression) => {
    expect(new InlineExpressions().evaluate(expression, scope)).toBeUndefined();
  });

  it('answers -0 as 0, as the pool does (its answers pass through JSON)', () => {
    const answered = new InlineExpressions().evaluate('input.m * input.z', { input: { m: -1, z: 0 }, steps: {} });
    expect(answered).toBeDefined();
    expect(Object.is(answered?.value, 0)).toBe(true);
  });

  it('leaves long string operands to the pool, where comparing them counts against the budget', () => {
    const long = 'x'.repeat(100_000);
    const on: ExpressionScope = { input: { a: long, b: long }, steps: {} };
    for (const expression of ['input.a = input.b', 'input.a < input.b', 'input.a & "!"', 'input.a']) {
      expect(new InlineExpressions().evaluate(expression, on), expression).toBeUndefined();
    }
    expect(new InlineExpressions().evaluate('input.a = input.b', { input: { a: 'short', b: 'short' }, steps: {} })).toEqual({ value: true });
  });

  it('gives JSONata’s answer for every scope the cached plan meets, or none', async () => {
    const inline = new InlineExpressions();
    const scopes: ExpressionScope[] = [
      scope,
      { input: { n: 'text' }, steps: {} },
      { input: { n: [1, 2] }, steps: {} },
      { input: { n: null }, steps: {} },
      { input: { n: 1e308 }, steps: {} },
      { input: 5, steps: {} },
      { input: null, steps: {} },
    ];
    for (const expression of ['input.n + 1', 'input.n * 2', 'input.n = 1', 'input.n > 0', 'input.n', 'input.n.m']) {
      for (const on of scopes) {
        const answered = inline.evaluate(expression, on);
        if (answered) expect(answered, `${expression} on ${JSON.stringify(on.input)}`).toEqual(await jsonataAnswer(expression, on));
      }
    }
  });
});
