import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { compileResponseSerializer } from '../src/lib/serializer.js';
import { ExecutionPage } from '../src/routes/executions/schemas.js';

const execution = {
  id: '5eed0000-0000-4000-8000-000000000001',
  workflowId: '5eed0000-0000-4000-8000-000000000002',
  workflowVersion: 2,
  jobId: null,
  trigger: 'manual',
  status: 'completed',
  input: { nested: { list: [1, 'two', null] } },
  output: 'plain string',
  error: null,
  startedAt: '2026-11-22T01:00:00.000Z',
  finishedAt: null,
  createdAt: '2026-11-22T01:00:00.000Z',
  retryOfId: '5eed0000-0000-4000-8000-000000000003',
};

describe('the compiled response serializer', () => {
  it('writes what the zod schema declares, as JSON.stringify would', () => {
    const page = { items: [execution], hasNext: false, nextCursor: null };
    expect(JSON.parse(compileResponseSerializer(ExecutionPage)(page))).toEqual(page);
  });

  it('leaves out every property the schema does not declare, at every level', () => {
    const serialize = compileResponseSerializer(ExecutionPage);
    const leaky = { items: [{ ...execution, userId: 'secret-owner', workflowSnapshot: { nodes: [] } }], hasNext: true, nextCursor: 'c', total: 9 };
    const written = JSON.parse(serialize(leaky)) as { items: Record<string, unknown>[] };
    expect(Object.keys(written)).toEqual(['items', 'hasNext', 'nextCursor']);
    expect(written.items[0]).not.toHaveProperty('userId');
    expect(written.items[0]).not.toHaveProperty('workflowSnapshot');
  });

  it('refuses a body that lacks a required property instead of writing half a contract', () => {
    const { createdAt: _createdAt, ...incomplete } = execution;
    expect(() => compileResponseSerializer(ExecutionPage)({ items: [incomplete], hasNext: false, nextCursor: null })).toThrow(/createdAt/);
  });

  it('keeps fields whose names are JSON Schema keywords, and writes nullable values both ways', () => {
    const schema = z.object({ pattern: z.string(), format: z.string().nullable(), when: z.iso.datetime().nullable() });
    const serialize = compileResponseSerializer(schema);
    expect(JSON.parse(serialize({ pattern: 'a*', format: null, when: '2026-11-22T01:00:00.000Z' }))).toEqual({ pattern: 'a*', format: null, when: '2026-11-22T01:00:00.000Z' });
    expect(JSON.parse(serialize({ pattern: 'b', format: 'csv', when: null }))).toEqual({ pattern: 'b', format: 'csv', when: null });
  });

  it('writes a nullable object and a record by their schemas, and refuses a body of the wrong kind', () => {
    const schema = z.object({ owner: z.object({ id: z.string() }).nullable(), counts: z.record(z.string(), z.object({ n: z.number() })) });
    const serialize = compileResponseSerializer(schema);
    const written = JSON.parse(serialize({ owner: { id: 'u1', password: 'x' }, counts: { a: { n: 1, secret: true }, b: { n: 2 } } })) as unknown;
    expect(written).toEqual({ owner: { id: 'u1' }, counts: { a: { n: 1 }, b: { n: 2 } } });
    expect(JSON.parse(serialize({ owner: null, counts: {} }))).toEqual({ owner: null, counts: {} });
    expect(() => serialize({ owner: 'u1', counts: {} })).toThrow(/object/);
    expect(() => compileResponseSerializer(z.object({ items: z.array(z.string()) }))({ items: 'a' })).toThrow(/array/);
  });

  it('refuses to compile a schema with a property named __proto__ (an object literal would set the prototype)', () => {
    expect(() => compileResponseSerializer(z.object({ ['__proto__']: z.string(), name: z.string() }))).toThrow(/__proto__/);
  });

  it('writes a schema with a union through fast-json-stringify, which validates to pick the branch', () => {
    const schema = z.object({
      result: z.discriminatedUnion('kind', [z.object({ kind: z.literal('number'), value: z.number() }), z.object({ kind: z.literal('text'), text: z.string() })]),
    });
    const serialize = compileResponseSerializer(schema);
    expect(JSON.parse(serialize({ result: { kind: 'text', text: 'hi' } }))).toEqual({ result: { kind: 'text', text: 'hi' } });
    expect(JSON.parse(serialize({ result: { kind: 'number', value: 3 } }))).toEqual({ result: { kind: 'number', value: 3 } });
    // A branch's undeclared property matches no branch: the body is refused, never written.
    expect(() => serialize({ result: { kind: 'text', text: 'hi', hidden: 1 } })).toThrow(/does not match/);
  });
});
