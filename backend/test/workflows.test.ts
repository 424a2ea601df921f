import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, expectProblem, sampleGraph, signUp, type SignedInUser } from './helpers.js';

describe('workflows', () => {
  let app: App;
  let alice: SignedInUser;
  const as = (user: SignedInUser) => ({ cookie: user.cookie });

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const create = (user: SignedInUser, body: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(user), payload: body });

  it('creates, reads, changes and deletes a workflow', async () => {
    const created = await create(alice, { name: 'Nightly report', description: 'sums things', ...sampleGraph });
    expect(created.statusCode).toBe(201);
    const workflow = created.json();
    expect(workflow).toMatchObject({ name: 'Nightly report', description: 'sums things', version: 1, ...sampleGraph });
    expect(workflow).not.toHaveProperty('userId');
    expect(created.headers.location).toBe(`/api/v1/workflows/${workflow.id}`);

    const read = await app.inject({ url: `/api/v1/workflows/${workflow.id}`, headers: as(alice) });
    expect(read.statusCode).toBe(200);
    expect(read.headers.etag).toBe('"1"');
    expect(read.json()).toEqual(workflow);

    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflow.id}`,
      headers: { ...as(alice), 'if-match': '"1"' },
      payload: { name: 'Nightly report v2' },
    });
    expect(patched.statusCode).toBe(200);
    expect(patched.json()).toMatchObject({ name: 'Nightly report v2', version: 2, nodes: sampleGraph.nodes });
    expect(patched.headers.etag).toBe('"2"');

    const deleted = await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflow.id}`, headers: as(alice) });
    expect(deleted.statusCode).toBe(204);
    expectProblem(await app.inject({ url: `/api/v1/workflows/${workflow.id}`, headers: as(alice) }), 404);
  });

  it('refuses a stale If-Match with 412 and changes nothing', async () => {
    const workflow = (await create(alice, { name: 'Guarded', ...sampleGraph })).json();
    await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${workflow.id}`, headers: as(alice), payload: { name: 'moved on' } });
    const stale = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflow.id}`,
      headers: { ...as(alice), 'if-match': '"1"' },
      payload: { name: 'lost update' },
    });
    expectProblem(stale, 412);
    const staleDelete = await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflow.id}`, headers: { ...as(alice), 'if-match': '"1"' } });
    expectProblem(staleDelete, 412);
    const current = (await app.inject({ url: `/api/v1/workflows/${workflow.id}`, headers: as(alice) })).json();
    expect(current).toMatchObject({ name: 'moved on', version: 2 });
    const url = `/api/v1/workflows/${workflow.id}`;
    expect((await app.inject({ method: 'DELETE', url, headers: { ...as(alice), 'if-match': '"2"' } })).statusCode).toBe(204);
    expectProblem(await app.inject({ method: 'DELETE', url, headers: { ...as(alice), 'if-match': '"2"' } }), 404);
  });

  it.each([
    ['an unknown node type', { nodes: [{ id: 'a', type: 'teleport', params: {} }], edges: [] }, 'nodes[0].type'],
    [
      'a duplicate node id',
      { nodes: [{ id: 'a', type: 'trigger.manual' }, { id: 'b', type: 'transform', params: { expression: '1' } }, { id: 'a', type: 'trigger.manual' }], edges: [] },
      'nodes[2].id',
    ],
    ['an edge to a missing node', { nodes: [{ id: 'a', type: 'trigger.manual' }], edges: [{ source: 'a', target: 'ghost' }] }, 'edges[0].target'],
    [
      'a cycle',
      {
        nodes: [
          { id: 'a', type: 'trigger.manual' },
          { id: 'b', type: 'transform', params: { expression: '1' } },
          { id: 'c', type: 'transform', params: { expression: '2' } },
        ],
        edges: [
          { source: 'a', target: 'b' },
          { source: 'b', target: 'c' },
          { source: 'c', target: 'b' },
        ],
      },
      'edges[2]',
    ],
    ['params that do not fit the type', { nodes: [{ id: 'a', type: 'http.request', params: { url: 'http://x' } }], edges: [] }, 'nodes[0].params.method'],
    [
      'when on an edge that does not leave a condition',
      { nodes: [{ id: 'a', type: 'trigger.manual' }, { id: 'b', type: 'transform', params: { expression: '1' } }], edges: [{ source: 'a', target: 'b', when: true }] },
      'edges[0].when',
    ],
  ])('refuses %s with 400 naming the path', async (_label, graph, path) => {
    const response = await create(alice, { name: 'bad', ...graph });
    const problem = expectProblem(response, 400);
    expect(problem.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path })]));
  });

  it('refuses unknown and server-owned fields (mass assignment) with 400', async () => {
    for (const field of ['userId', 'id', 'createdAt', 'version', 'nmae']) {
      const problem = expectProblem(await create(alice, { name: 'x', ...sampleGraph, [field]: 'sneaky' }), 400);
      expect(problem.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path: field })]));
    }
    const workflow = (await create(alice, { name: 'target', ...sampleGraph })).json();
    const patch = await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${workflow.id}`, headers: as(alice), payload: { version: 99 } });
    expectProblem(patch, 400);
  });

  it('validates a PATCHed graph against the other half already stored', async () => {
    const workflow = (await create(alice, { name: 'half', ...sampleGraph })).json();
    const response = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflow.id}`,
      headers: as(alice),
      payload: { nodes: [{ id: 'start', type: 'trigger.manual', params: {} }] },
    });
    const problem = expectProblem(response, 400);
    expect(problem.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'edges[0].target' })]));
  });

  it('walks 250 rows by cursor with no gap or repeat while rows are inserted between pages', async () => {
    const walker = await signUp(app);
    const created: { id: string; createdAt: string }[] = [];
    for (let index = 0; index < 250; index++) {
      const { id, createdAt } = (await create(walker, { name: `wf ${String(index).padStart(3, '0')}`, ...sampleGraph })).json();
      created.push({ id, createdAt });
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: URLSearchParams = new URLSearchParams({ pageSize: '40', ...(cursor ? { cursor } : {}) });
      const page: { items: { id: string }[]; hasNext: boolean; nextCursor: string | null } = (
        await app.inject({ url: `/api/v1/workflows?${query}`, headers: as(walker) })
      ).json();
      seen.push(...page.items.map((item: { id: string }) => item.id));
      cursor = page.nextCursor;
      expect(page.hasNext).toBe(cursor !== null);
      // New rows arrive between pages; newest-first paging must neither repeat nor skip older rows.
      await create(walker, { name: `late ${pages}`, ...sampleGraph });
      pages++;
    } while (cursor);
    // Newest first. Timestamps hold milliseconds, so rows created in the same millisecond come in
    // the keyset's tie-break order, id descending (PostgreSQL orders uuids as their hex text does).
    const descending = (left: string, right: string) => (left < right ? 1 : left > right ? -1 : 0);
    const newestFirst = [...created].sort((a, b) => descending(a.createdAt, b.createdAt) || descending(a.id, b.id));
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(newestFirst.map((row) => row.id));
  });

  it('pages by number, sorts by name both ways, and searches with % as data', async () => {
    const user = await signUp(app);
    for (const name of ['beta', 'alpha', '100% done', 'gamma', '100 percent']) await create(user, { name, ...sampleGraph });

    const ascending = (await app.inject({ url: '/api/v1/workflows?sortBy=name&sortDirection=asc&pageSize=2&page=2', headers: as(user) })).json();
    const allAscending = (await app.inject({ url: '/api/v1/workflows?sortBy=name&sortDirection=asc', headers: as(user) })).json();
    const names = allAscending.items.map((item: { name: string }) => item.name);
    expect(names).toEqual([...names].sort((a: string, b: string) => (a < b ? -1 : 1)));
    expect(ascending.items.map((item: { name: string }) => item.name)).toEqual(names.slice(2, 4));
    expect(ascending.hasNext).toBe(true);

    const search = (await app.inject({ url: `/api/v1/workflows?searchQuery=${encodeURIComponent('0%')}`, headers: as(user) })).json();
    expect(search.items.map((item: { name: string }) => item.name)).toEqual(['100% done']);
    const underscore = (await app.inject({ url: `/api/v1/workflows?searchQuery=${encodeURIComponent('_')}`, headers: as(user) })).json();
    expect(underscore.items).toEqual([]);
    const caseless = (await app.inject({ url: '/api/v1/workflows?searchQuery=ALPH', headers: as(user) })).json();
    expect(caseless.items.map((item: { name: string }) => item.name)).toEqual(['alpha']);
  });

  it.each([
    ['pageSize=0', 'pageSize'],
    ['pageSize=101', 'pageSize'],
    ['sortBy=userId', 'sortBy'],
    ['sortDirection=up', 'sortDirection'],
    ['page=1&cursor=abc', 'page'],
    ['cursor=not-a-cursor', 'cursor'],
    ['unknownFilter=1', 'unknownFilter'],
  ])('refuses the list query %s with 400', async (query, path) => {
    const problem = expectProblem(await app.inject({ url: `/api/v1/workflows?${query}`, headers: as(alice) }), 400);
    expect(problem.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path })]));
  });
});

describe('graph checks at save', () => {
  let app: App;
  let user: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const save = (nodes: Record<string, unknown>[], edges: Record<string, unknown>[] = []) =>
    app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie }, payload: { name: 'checked', nodes, edges } });
  const start = { id: 'start', type: 'trigger.manual', params: {} };

  // Node ids become keys of outputs and of `steps`: a name every object already has is refused.
  it.each(['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'])(
    'refuses the node id %s with 400 naming the node',
    async (id) => {
      const created = await save([start, { id, type: 'transform', params: { expression: '1' } }], [{ source: 'start', target: id }]);
      const problem = expectProblem(created, 400);
      expect(problem.code).toBe('INVALID_GRAPH');
      expect(problem.errors).toEqual([expect.objectContaining({ path: 'nodes[1].id', message: expect.stringContaining('reserved') })]);

      const workflow = (await save([start])).json();
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/workflows/${workflow.id}`,
        headers: { cookie: user.cookie },
        payload: { nodes: [{ id, type: 'trigger.manual', params: {} }], edges: [] },
      });
      expect(expectProblem(patched, 400).errors).toEqual([expect.objectContaining({ path: 'nodes[0].id' })]);
    },
  );

  it('still takes ids that merely contain such a name', async () => {
    expect((await save([{ ...start, id: 'proto' }, { id: 'my_constructor', type: 'transform', params: { expression: '1' } }], [{ source: 'proto', target: 'my_constructor' }])).statusCode).toBe(201);
  });

  // A delay may wait at most 30 days, by `ms` or by a literal `until`; templates are checked when they run.
  it.each([
    [{ until: '9999-12-31' }, 'nodes[1].params.until'],
    [{ until: new Date(Date.now() + 31 * 86_400_000).toISOString() }, 'nodes[1].params.until'],
    [{ until: 'next tuesday' }, 'nodes[1].params.until'],
    [{ ms: 31 * 86_400_000 }, 'nodes[1].params.ms'],
    [{ ms: '99999999999' }, 'nodes[1].params.ms'],
  ])('refuses the delay params %j with 400 at %s', async (params, path) => {
    const problem = expectProblem(await save([start, { id: 'wait', type: 'delay', params }], [{ source: 'start', target: 'wait' }]), 400);
    expect(problem.errors).toEqual([expect.objectContaining({ path })]);
  });

  it.each([
    { until: new Date(Date.now() + 29 * 86_400_000).toISOString() },
    { until: '2001-01-01T00:00:00Z' },
    { until: '{{ input.when }}' },
    { ms: '{{ input.ms }}' },
    { ms: '1500' },
  ])('takes the delay params %j', async (params) => {
    expect((await save([start, { id: 'wait', type: 'delay', params }], [{ source: 'start', target: 'wait' }])).statusCode).toBe(201);
  });
});
