import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { joinToBase, sharesOrigin, targetThrough } from '../src/engine/connection-target.js';
import { StepError } from '../src/engine/errors.js';
import { bindExpressions, ExpressionPool } from '../src/engine/expression-pool.js';
import type { ExpressionScope } from '../src/engine/expressions.js';
import { validateGraph } from '../src/engine/graph.js';
import { Redactor, secretForms } from '../src/engine/redaction.js';
import { stepNeeds } from '../src/engine/run-resources.js';
import { SecretSlots, secretKeysIn, secretUsage } from '../src/engine/secret-templates.js';

/** The pure parts of secrets in workflows: masking, secret templates, what a step reads, where a connection's request goes. */

describe('the redactor', () => {
  const secret = 's3cr3t "q" é&=/+ #?';
  const redactor = new Redactor(secretForms(secret));

  it('masks a secret in each form it travels in, in keys and values at any depth, keeping key order', () => {
    const seen = {
      raw: `a ${secret} b`,
      json: `{"t":${JSON.stringify(secret)}}`,
      component: `?k=${encodeURIComponent(secret)}`,
      form: new URLSearchParams({ k: secret }).toString(),
      url: new URL(`http://h/p?k=${secret.replace('#', '%23')}`).search,
      [secret]: [[{ deep: secret }]],
      untouched: 42,
    };
    const masked = redactor.value(seen) as Record<string, unknown>;
    expect(masked).toEqual({
      raw: 'a [secret] b',
      json: '{"t":"[secret]"}',
      component: '?k=[secret]',
      form: 'k=[secret]',
      url: '?k=[secret]',
      '[secret]': [[{ deep: '[secret]' }]],
      untouched: 42,
    });
    expect(Object.keys(masked)).toEqual(['raw', 'json', 'component', 'form', 'url', '[secret]', 'untouched']);
  });

  it('masks the longest form whole, and never searches a mask it wrote', () => {
    const credential = Buffer.from(`user:${secret}`).toString('base64');
    const both = new Redactor([...secretForms(secret), credential, 'secret']);
    expect(both.text(`Basic ${credential}; ${secret}`)).toBe('Basic [secret]; [secret]');
  });

  it('keeps a "__proto__" key a plain key, and handles nesting deeper than the stack', () => {
    const masked = redactor.value(JSON.parse(`{"__proto__": "x", "v": ${JSON.stringify(secret)}}`)) as Record<string, unknown>;
    expect(Object.getPrototypeOf(masked)).toBe(Object.prototype);
    expect(Object.hasOwn(masked, '__proto__')).toBe(true);
    expect(masked.v).toBe('[secret]');
    let deep: unknown = secret;
    for (let level = 0; level < 100_000; level++) deep = [deep];
    let unwrapped = redactor.value(deep);
    while (Array.isArray(unwrapped)) unwrapped = unwrapped[0];
    expect(unwrapped).toBe('[secret]');
  });

  it('masks an error: a StepError keeps its class, code and retryability; another error its name and stack', () => {
    const stepError = redactor.error(new StepError(`failed with ${secret}`, { retryable: false, code: 'SECRET_UNREADABLE', details: { echoed: secret }, cause: new Error(secret) }));
    expect(stepError).toBeInstanceOf(StepError);
    const { message, retryable, code, details, cause } = stepError as StepError;
    expect({ message, retryable, code, details, cause }).toEqual({ message: 'failed with [secret]', retryable: false, code: 'SECRET_UNREADABLE', details: { echoed: '[secret]' }, cause: undefined });
    const plain = redactor.error(new TypeError(`bad ${secret}`)) as Error;
    expect(plain.name).toBe('TypeError');
    expect(plain.message).toBe('bad [secret]');
    expect(plain.stack).toContain('bad [secret]');
    expect(plain.stack).not.toContain(secret);
    expect(redactor.error(`thrown ${secret}`)).toBe('thrown [secret]');
  });

  it('changes nothing without secrets', () => {
    const value = { a: 'text' };
    expect(Redactor.none.value(value)).toBe(value);
    expect(Redactor.none.active).toBe(false);
  });
});

describe('secret templates', () => {
  it('accepts only whole {{ $secrets.KEY }} templates in http.request params, and names where each other $secrets is', () => {
    const http = {
      method: 'POST',
      url: 'https://x.test/?a={{ $secrets.A }}',
      headers: { one: '{{$secrets.B}}', two: 'Bearer {{ $secrets.A }}', three: '{{ $lowercase($secrets.A) }}' },
      body: { list: ['{{ "{{ $secrets.A }}" }}', 'plain $secrets.A', '{{ $secrets.A '] },
    };
    const usage = secretUsage('http.request', http);
    expect(usage.references).toEqual([
      { key: 'A', path: ['url'] },
      { key: 'B', path: ['headers', 'one'] },
      { key: 'A', path: ['headers', 'two'] },
    ]);
    expect(usage.issues.map((issue) => issue.path)).toEqual([
      ['headers', 'three'],
      ['body', 'list', 0],
      ['body', 'list', 1],
      ['body', 'list', 2],
    ]);
    expect(secretUsage('transform', { expression: '"{{ $secrets.A }}"' }).issues).toHaveLength(1);
    expect(secretKeysIn('http.request', http)).toEqual(['A', 'B']);
    expect(secretKeysIn('transform', { expression: '{{ $secrets.A }}' })).toEqual([]);
  });

  it('refuses a graph with $secrets outside them, naming the param', () => {
    const errors = validateGraph(
      [
        { id: 'start', type: 'trigger.manual', params: {} },
        { id: 'shape', type: 'transform', params: { expression: '$base64encode($secrets.A)' } },
      ],
      [{ source: 'start', target: 'shape' }],
    );
    expect(errors.map((error) => error.path)).toEqual(['nodes[1].params.expression']);
  });

  it('swaps each secret template for a slot no template reads, then fills the slots after resolution', () => {
    const slots = new SecretSlots();
    const hidden = slots.hide({ a: '{{ $secrets.A }}', b: ['x {{ $secrets.B }} {{ input.n }}'], 'key {{ $secrets.A }}': 1 }) as Record<string, unknown>;
    // Values only: keys are never resolved, so a key keeps its text.
    expect(JSON.stringify([hidden.a, hidden.b])).not.toContain('$secrets');
    expect(String(hidden.a)).not.toContain('{{');
    expect(Object.keys(hidden)).toContain('key {{ $secrets.A }}');
    const values: Record<string, string> = { A: 'alpha {{ input.n }}', B: 'beta' };
    expect(slots.fill(hidden, (key) => values[key] as string)).toEqual({ a: 'alpha {{ input.n }}', b: ['x beta {{ input.n }}'], 'key {{ $secrets.A }}': 1 });
    expect(slots.fill(hidden, () => '[secret]')).toEqual({ a: '[secret]', b: ['x [secret] {{ input.n }}'], 'key {{ $secrets.A }}': 1 });
    const plain = { a: 'no secrets {{ input.n }}' };
    expect(new SecretSlots().hide(plain)).toBe(plain);
  });
});

describe('what a step reads', () => {
  const node = (type: string, params: Record<string, unknown>) => ({ id: 'n', type, params });

  it('reads $vars keys named as $vars.KEY, all of them otherwise, and none for $varsOther', () => {
    expect(stepNeeds(node('transform', { expression: '$vars.A & $vars.B.c' })).vars).toEqual({ kind: 'keys', keys: ['A', 'B'] });
    expect(stepNeeds(node('transform', { expression: '$keys($vars)' })).vars).toEqual({ kind: 'all' });
    expect(stepNeeds(node('delay', { ms: '{{ $vars.`odd key` }}' })).vars).toEqual({ kind: 'all' });
    expect(stepNeeds(node('transform', { expression: '$varsOther' })).vars).toEqual({ kind: 'none' });
    expect(stepNeeds(node('transform', { expression: 'input.vars' }))).toEqual({ connection: undefined, secretKeys: [], vars: { kind: 'none' } });
  });

  it('reads the connection and the secrets an http.request names', () => {
    const needs = stepNeeds(node('http.request', { method: 'GET', connection: 'api', url: '/x', headers: { a: '{{ $secrets.T }}' } }));
    expect(needs).toEqual({ connection: 'api', secretKeys: ['T'], vars: { kind: 'none' } });
  });
});

describe('where a request through a connection goes', () => {
  it('joins a relative url as axios and ky do, and keeps credentials to the baseUrl origin', () => {
    expect(joinToBase('https://api.test/v2/', '/users')).toBe('https://api.test/v2/users');
    expect(joinToBase('https://api.test/v2', 'users?x=1')).toBe('https://api.test/v2/users?x=1');
    expect(targetThrough('https://api.test/v2', '//evil.test/x')).toBe('https://api.test/v2/evil.test/x');
    expect(targetThrough('https://api.test/v2', 'https://evil.test/x')).toBe('https://evil.test/x');
    expect(sharesOrigin('https://API.test:443/other', 'https://api.test/v2')).toBe(true);
    expect(sharesOrigin('http://api.test/v2', 'https://api.test/v2')).toBe(false);
    expect(sharesOrigin('mailto:a@api.test', 'https://api.test/')).toBe(false);
  });
});

describe('$vars in the expression workers', () => {
  const pool = new ExpressionPool({ workers: 1, timeoutMs: 2000, maxHeapMb: 128, maxTemplates: 1000, logger: pino({ level: 'silent' }) });
  afterAll(() => pool.close());
  const scope: ExpressionScope = { input: { n: 1 }, steps: {} };
  const bound = bindExpressions(pool, { vars: { A: 'alpha', B: { c: 2 } } });

  it('binds $vars without changing the root scope, in expressions and templates', async () => {
    expect(await bound.evaluate('[$vars.A, $vars.B.c, $vars.MISSING, $keys($$)]', scope)).toEqual(['alpha', 2, 'input', 'steps']);
    expect(await bound.evaluate('$vars.MISSING', scope)).toBeNull();
    expect(await bound.resolveTemplates({ a: '{{ $vars.B }}', b: 'x-{{ $vars.A }}' }, scope)).toEqual({ a: { c: 2 }, b: 'x-alpha' });
  });

  it('sends the variables only with a task whose text names $vars', async () => {
    expect(await bound.evaluate('$eval("$vars.A")', scope)).toBe('alpha');
    // The same read, with a name built at run time: the text does not name $vars, so nothing was sent.
    expect(await bound.evaluate('$eval("$" & "va" & "rs.A")', scope)).toBeNull();
  });
});
