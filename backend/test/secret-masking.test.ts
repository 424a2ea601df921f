import { Writable } from 'node:stream';
import { DrizzleQueryError } from 'drizzle-orm';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { isDatabaseError } from '../src/db/errors.js';
import { joinToBase, sharesOrigin, targetThrough } from '../src/engine/connection-target.js';
import { StepError } from '../src/engine/errors.js';
import { bindExpressions, ExpressionPool } from '../src/engine/expression-pool.js';
import type { ExpressionScope } from '../src/engine/expressions.js';
import { validateGraph } from '../src/engine/graph.js';
import { Redactor, secretForms } from '../src/engine/redaction.js';
import { stepNeeds } from '../src/engine/run-resources.js';
import { errorRecord } from '../src/engine/runner.js';
import { SecretSlots, secretKeysIn, secretUsage } from '../src/engine/secret-templates.js';
import { varsReadIn } from '../src/engine/vars-references.js';
import { forEachString, mapStrings } from '../src/lib/json-walk.js';
import { createLogger } from '../src/logger.js';

/** An error as postgres.js raises one: a PostgresError with PostgreSQL's fields, here a check violation quoting the row. */
function postgresError(message: string, fields: Record<string, unknown>): Error {
  const error = new Error(message);
  error.name = 'PostgresError';
  return Object.assign(error, { severity: 'ERROR', ...fields });
}

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

  it('masks a secret JSON-escaped to ASCII (every other character as \\uXXXX), as Python and httpbin write it', () => {
    const ascii = JSON.stringify({ t: secret }).replace(/[\u007f-\uffff]/g, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);
    expect(ascii).toContain('\\u00e9');
    expect(redactor.text(ascii)).toBe('{"t":"[secret]"}');
  });

  it('masks a secret in bytes, as UTF-8, and gives back the same buffer when there is none', () => {
    const bytes = Buffer.concat([Buffer.from([0xff, 0x00]), Buffer.from(`x${secret}y`, 'utf8'), Buffer.from([0xfe])]);
    expect(redactor.bytes(bytes)).toEqual(Buffer.concat([Buffer.from([0xff, 0x00]), Buffer.from('x[secret]y'), Buffer.from([0xfe])]));
    const clean = Buffer.from('nothing here');
    expect(redactor.bytes(clean)).toBe(clean);
    expect(Redactor.union(Redactor.none, redactor, new Redactor(['other'])).text(`${secret} other`)).toBe('[secret] [secret]');
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
    expect({ message, retryable, code, details }).toEqual({ message: 'failed with [secret]', retryable: false, code: 'SECRET_UNREADABLE', details: { echoed: '[secret]' } });
    expect((cause as Error).message).toBe('[secret]');
    const plain = redactor.error(new TypeError(`bad ${secret}`)) as Error;
    expect(plain.name).toBe('TypeError');
    expect(plain.message).toBe('bad [secret]');
    expect(plain.stack).toContain('bad [secret]');
    expect(plain.stack).not.toContain(secret);
    expect(redactor.error(`thrown ${secret}`)).toBe('thrown [secret]');
  });

  it('keeps a database error one: the runner records it as such, never its SQL or values', () => {
    const failed = new DrizzleQueryError('select * from "variables" where "key" = $1', [secret], postgresError(`invalid input: ${secret}`, { code: '22P02' }));
    const redacted = redactor.error(failed) as Error;
    // The class and the cause's fields are what the runner and the logger read.
    expect(redacted).toBeInstanceOf(DrizzleQueryError);
    expect(isDatabaseError(redacted)).toBe(true);
    expect(errorRecord(redacted, 'n')).toEqual({ nodeId: 'n', message: 'the step failed because of a database error' });
    expect(redacted.message).toContain('[secret]');
    expect(JSON.stringify([redacted.message, redacted.stack, (redacted.cause as Error).message, (redacted as DrizzleQueryError).params])).not.toContain('s3cr3t');
  });

  it('masks a secret that became a url host or scheme, as the URL parser leaves it: lower-cased, punycoded, percent-decoded', () => {
    const host = 'TenantABCDEFxyz987';
    expect(new Redactor(secretForms(host)).text(`could not resolve ${new URL(`http://${host}.invalid/x`).hostname} (ENOTFOUND)`)).toBe('could not resolve [secret].invalid (ENOTFOUND)');
    const scheme = 'MySchemeToken';
    expect(new Redactor(secretForms(scheme)).text(`only http and https URLs are supported, not ${new URL(`${scheme}://x/`).protocol.slice(0, -1)}`)).toBe(
      'only http and https URLs are supported, not [secret]',
    );
    for (const unicode of ['Tënant-Ünïcode', 'Tenant%41b']) {
      const parsedHost = new URL(`http://${unicode}.invalid/`).hostname;
      expect(new Redactor(secretForms(unicode)).text(`refused to connect to ${parsedHost}`), unicode).toBe('refused to connect to [secret].invalid');
    }
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

  it('refuses a secret in a url before its path begins, where it would be the scheme, userinfo, host or port', () => {
    const refused = [
      'http://{{ $secrets.H }}.invalid/x',
      '{{ $secrets.U }}',
      '{{ $secrets.U }}://api.test/x',
      'https://user:{{ $secrets.P }}@api.test/x',
      'https://api.test:{{ $secrets.P }}/x',
      // A special scheme takes any slashes (or none) before its host; the parser drops tabs and newlines, and trims.
      'http:/{{ $secrets.H }}/x',
      'https:///{{ $secrets.H }}/x',
      'https:{{ $secrets.H }}/x',
      'https:/\t/{{ $secrets.H }}',
      ' https://{{ $secrets.H }}/x',
      // An earlier template may resolve to anything (`https://`, nothing): only literal text decides.
      '{{ input.base }}{{ $secrets.K }}',
      '{{ input.base }}/{{ $secrets.K }}',
      'https://{{ input.host }}/{{ $secrets.K }}',
      'ht{{ $secrets.K }}',
    ];
    const allowed = [
      'https://api.test/v1/{{ $secrets.K }}',
      'https://api.test?k={{ $secrets.K }}',
      'https://api.test/#{{ $secrets.K }}',
      '/relative/{{ $secrets.K }}',
      'users/{{ $secrets.K }}',
      '{{ input.base }}?k={{ $secrets.K }}',
      'https://{{ input.host }}/x/{{ $secrets.K }}',
    ];
    const urlIssues = (url: string) => secretUsage('http.request', { method: 'GET', url, headers: { h: '{{ $secrets.K }}' } }).issues;
    for (const url of refused) expect(urlIssues(url).map((issue) => issue.path), url).toEqual([['url']]);
    for (const url of allowed) expect(urlIssues(url), url).toEqual([]);
    const errors = validateGraph(
      [
        { id: 'start', type: 'trigger.manual', params: {} },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: 'http://{{ $secrets.H }}.invalid/x' } },
      ],
      [{ source: 'start', target: 'call' }],
    );
    expect(errors.map((error) => error.path)).toEqual(['nodes[1].params.url']);
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
    expect(varsReadIn(['$vars.A', '{{ $vars.B }} {{ $varsB }}'])).toEqual({ kind: 'keys', keys: ['A', 'B'] });
  });

  it('reads the connection and the secrets an http.request names', () => {
    const needs = stepNeeds(node('http.request', { method: 'GET', connection: 'api', url: '/x', headers: { a: '{{ $secrets.T }}' } }));
    expect(needs).toEqual({ connection: 'api', secretKeys: ['T'], vars: { kind: 'none' } });
  });
});

describe('the JSON walk', () => {
  it('visits strings in document order with their paths, and copies with keys kept in order and as own keys', () => {
    const value = JSON.parse('{"b": ["x", {"c": "y"}], "__proto__": "z", "a": 1, "d": "w"}') as unknown;
    const seen: unknown[] = [];
    forEachString(value, (text, path) => seen.push([text, path()]));
    expect(seen).toEqual([
      ['x', ['b', 0]],
      ['y', ['b', 1, 'c']],
      ['z', ['__proto__']],
      ['w', ['d']],
    ]);
    const order: string[] = [];
    const copy = mapStrings(value, (text) => (order.push(text), text.toUpperCase()), (key) => `k${key}`) as Record<string, unknown>;
    expect(order).toEqual(['x', 'y', 'z', 'w']);
    expect(Object.keys(copy)).toEqual(['kb', 'k__proto__', 'ka', 'kd']);
    expect(copy).toEqual({ kb: ['X', { kc: 'Y' }], k__proto__: 'Z', ka: 1, kd: 'W' });
    // Only arrays and plain objects are entered.
    const date = new Date(0);
    expect(mapStrings({ date }, (text) => text)).toEqual({ date });
  });
});

describe('the logger', () => {
  it('logs a failed query with its SQL text and the database code and message, never its parameters or the row', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = createLogger({ logLevel: 'info' }, sink);
    const sealed = 'v1.sealed-ciphertext-0123456789abcdef';
    const cause = Object.assign(postgresError('new row for relation "variables" violates check constraint "variables_value_check"', { code: '23514', constraint_name: 'variables_value_check' }), {
      detail: `Failing row contains (${sealed}).`,
      parameters: [sealed],
    });
    const failed = new DrizzleQueryError('insert into "variables" ("key", "secret_ciphertext") values ($1, $2)', ['K', sealed], cause);
    log.error({ err: failed }, 'unhandled error');
    log.warn({ err: new Error('wrapped', { cause: failed }) }, 'wrapped');
    log.error(failed);
    expect(lines).toHaveLength(3);
    for (const line of lines) {
      expect(line).not.toContain(sealed);
      expect(line).toContain('insert into \\"variables\\"');
      expect(line).toContain('violates check constraint');
    }
    expect(JSON.parse(lines[0] as string)).toMatchObject({ err: { type: 'DrizzleQueryError', code: '23514', query: expect.stringContaining('insert into') } });
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
