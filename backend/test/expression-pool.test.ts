import { execFileSync } from 'node:child_process';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { StepError } from '../src/engine/errors.js';
import { ExpressionPool, type ExpressionPoolOptions } from '../src/engine/expression-pool.js';
import { evaluateExpression, type ExpressionScope } from '../src/engine/expressions.js';
import { eventually } from './engine-helpers.js';
import { runScript } from './process.js';

/** The first child process of `pid`, if it has one yet (`ps` fails when none matches). */
function childPidOf(pid: number): number | undefined {
  try {
    const listed = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).trim();
    return listed === '' ? undefined : Number(listed.split(/\s+/)[0]);
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const scope: ExpressionScope = { input: { name: 'Ada', count: 3 }, steps: { fetch: { status: 200 } } };

const pools: ExpressionPool[] = [];
function pool(options: Partial<ExpressionPoolOptions> = {}): ExpressionPool {
  const created = new ExpressionPool({ workers: 1, timeoutMs: 1000, maxHeapMb: 128, maxTemplates: 1000, logger: pino({ level: 'silent' }), ...options });
  pools.push(created);
  return created;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((created) => created.close()));
});

async function stepErrorOf(promise: Promise<unknown>): Promise<StepError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(StepError);
    return error as StepError;
  }
  throw new Error('expected a StepError');
}

describe('the expression pool', () => {
  it('evaluates in a worker process with the same results and errors as in-process evaluation', async () => {
    const expressions = pool();
    expect(await expressions.evaluate('input.count * 2', scope)).toBe(6);
    expect(await expressions.evaluate('input.missing', scope)).toBeNull();
    expect(await expressions.resolveTemplates({ url: 'https://x/{{ input.name }}', n: '{{ steps.fetch.status }}' }, scope)).toEqual({
      url: 'https://x/Ada',
      n: 200,
    });

    const syntax = await stepErrorOf(expressions.evaluate('input.name +', scope));
    expect(syntax.message).toMatch(/^expression error at position \d+: /);
    expect(syntax.retryable).toBe(false);
    expect(syntax.details).toMatchObject({ expression: 'input.name +', code: 'S0207' });
    expect(syntax.code).toBeUndefined();

    const templated = await stepErrorOf(expressions.resolveTemplates({ body: ['ok', 'n={{ input.name + }}'] }, scope));
    expect(templated.details).toMatchObject({ path: 'body[1]', expression: ' input.name + ' });
  });

  it('sends large parts of the scope only when read, with the same results as in-process evaluation', async () => {
    const items = Array.from({ length: 20_000 }, (_, index) => ({ id: index, name: `item ${index}` }));
    const large: ExpressionScope = {
      input: { n: 2, padding: 'x'.repeat(100_000) },
      steps: { first: { ok: true }, big: { items }, last: { n: 7 } },
    };
    const expressions = pool();
    const cases = [
      'steps.first.ok',
      'steps.last.n * input.n',
      '$count(steps.big.items)',
      '$keys(steps)',
      '$keys($$)',
      '$length($string($$.steps.big))',
      '( $f := $lookup; $count($f(steps, "big").items) )',
      '$each(steps, function($v, $k) { $k & ":" & $count($keys($v)) })',
      '$eval("steps.big.items[5].name")',
      '$length(input.padding)',
      'steps.last.%.big.items[1].id',
    ];
    for (const expression of cases) {
      expect({ expression, value: await expressions.evaluate(expression, large) }).toEqual({ expression, value: await evaluateExpression(expression, large) });
    }
    expect(await expressions.resolveTemplates({ a: '{{ steps.big.items[3].name }}', b: 'n={{ input.n }}' }, large)).toEqual({ a: 'item 3', b: 'n=2' });
  });

  // Retried for the same reason as the budget test below: its bound is wall-clock time on a shared machine.
  it('kills a worker whose task outlives its budget in one uninterruptible call, and replaces it', { retry: 2 }, async () => {
    const expressions = pool({ timeoutMs: 200 });
    const started = performance.now();
    const error = await stepErrorOf(expressions.evaluate('$match("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", /(a+)+$/)', scope));
    expect(error).toMatchObject({ code: 'EXPRESSION_TIMEOUT', message: 'expression took longer than 200 ms', retryable: false });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(await expressions.evaluate('1 + 1', scope)).toBe(2);
  });

  it('lets a worker that outgrows its heap die alone: the task fails EXPRESSION_TOO_LARGE and the next one runs', async () => {
    // One large allocation at the limit: in a worker thread this aborted the whole process.
    const expressions = pool({ maxHeapMb: 64, timeoutMs: 20_000 });
    const error = await stepErrorOf(expressions.evaluate('$count($append([1..9000000], [1..9000000]))', scope));
    expect(error).toMatchObject({ code: 'EXPRESSION_TOO_LARGE', message: 'expression evaluation needed more than the 64 MB of memory allowed' });
    expect(await expressions.evaluate('input.name', scope)).toBe('Ada');
  });

  // Timed against a calibration made in the same run: a machine busy with other test files can
  // stretch one task past the margin, so a failure is retried; a pool that starts the budget at
  // enqueue fails every time (the fourth task waits three tasks' time).
  it('starts the budget when a worker takes the task, not while it waits in the queue', { retry: 2 }, async () => {
    const heavy = '$count($map([1..100000], function($v) { $v + 1 }))';
    const calibration = pool();
    await calibration.evaluate(heavy, scope);
    let slowest = 0;
    for (let run = 0; run < 2; run++) {
      const started = performance.now();
      await calibration.evaluate(heavy, scope);
      slowest = Math.max(slowest, performance.now() - started);
    }
    // Each task fits its budget three times over (other test files share the CPUs); six in a row
    // on one worker do not: a budget counted from submission would fail the last ones.
    const expressions = pool({ workers: 1, timeoutMs: Math.ceil(3 * slowest) + 100 });
    await expressions.evaluate('1', scope);
    const results = await Promise.all(Array.from({ length: 6 }, () => expressions.evaluate(heavy, scope)));
    expect(results).toEqual(Array.from({ length: 6 }, () => 100000));
  });

  it('leaves no worker behind when the service is killed while a worker is stuck in one call', async () => {
    const parent = runScript('test/expression-pool-parent.ts', [], {});
    try {
      const parentPid = parent.child.pid as number;
      // The worker is the parent's child process; once it has run a while, it is inside the regex.
      const workerPid = await eventually(async () => {
        return childPidOf(parentPid);
      }, 15_000, 'the worker started');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      parent.child.kill('SIGKILL');
      await parent.exited;
      const gone = await eventually(async () => !isAlive(workerPid), 5_000, 'the orphaned worker ended');
      expect(gone).toBe(true);
    } finally {
      parent.child.kill('SIGKILL');
    }
  }, 30_000);

  it('serves waiting tasks in turns by owner: one owner`s many tasks hold another`s next one back by one task, not all of them', async () => {
    const expressions = pool({ timeoutMs: 10_000 });
    // Busy work of a few hundred milliseconds, far inside the budget (a busy machine is slower); never answered on this thread.
    const slow = '$count([1..400000].($ * 2))';
    const finished: string[] = [];
    const track = (label: string, promise: Promise<unknown>) => promise.then(() => finished.push(label));
    const hog = [1, 2, 3, 4, 5].map((n) => track(`hog ${n}`, expressions.evaluate(slow, scope, undefined, { owner: 'hog' })));
    // Queued after all five of the hog's (the first may already run).
    const neighbour = track('neighbour', expressions.evaluate(`${slow} + 1`, scope, undefined, { owner: 'neighbour' }));
    await Promise.all([...hog, neighbour]);
    expect(finished.indexOf('neighbour')).toBeLessThanOrEqual(1);
    expect(finished).toHaveLength(6);
  });

  it('drops the waiting tasks of a run that stopped, and runs the next owner`s at once', async () => {
    const expressions = pool({ timeoutMs: 10_000 });
    const slow = '$count([1..400000].($ * 2))';
    const stopped = new AbortController();
    const context = { owner: 'stopped run', signal: stopped.signal };
    const outcomes = [1, 2, 3, 4].map((n) => expressions.evaluate(`${slow} + ${n}`, scope, undefined, context).then(() => 'done', (error: Error) => error.message));
    stopped.abort();
    const other = await expressions.evaluate('1 + 1 + input.count', scope, undefined, { owner: 'someone else' });
    expect(other).toBe(5);
    const settled = await Promise.all(outcomes);
    // The one a worker had taken ran to its end; the three still waiting never ran.
    expect(settled.filter((outcome) => outcome === 'done').length).toBeLessThanOrEqual(1);
    expect(settled.filter((outcome) => /abandoned/.test(outcome))).toHaveLength(settled.filter((outcome) => outcome !== 'done').length);
    expect(settled.filter((outcome) => outcome !== 'done').length).toBeGreaterThanOrEqual(3);
    // Aborted before it is submitted: refused at once.
    await expect(expressions.evaluate(slow, scope, undefined, context)).rejects.toThrow(/abandoned/);
  });

  it('refuses work once closed', async () => {
    const expressions = pool();
    expect(await expressions.evaluate('1', scope)).toBe(1);
    await expressions.close();
    await expect(expressions.evaluate('1', scope)).rejects.toThrow('the expression pool is closed');
  });
});
