/**
 * Response serialization on a 100-item executions page: the zod serializer of
 * fastify-type-provider-zod (validate every item with zod, then JSON.stringify), fast-json-stringify
 * (Fastify's compiled serializer) from the same schema, the serializer the routes use (a compiled
 * projection to the declared properties, then JSON.stringify: src/lib/serializer.ts), and bare
 * JSON.stringify as the floor. Prints ops/s and ratios, alternating them over several rounds.
 * Run: node --import tsx bench/serializer.ts
 */
import { createSerializerCompiler } from 'fastify-type-provider-zod';
import { compileFastJsonStringify, compileResponseSerializer } from '../src/lib/serializer.js';
import { ExecutionPage } from '../src/routes/executions/schemas.js';

const items = Array.from({ length: 100 }, (_, index) => ({
  id: '5eed0000-0000-4000-8000-' + String(index).padStart(12, '0'),
  workflowId: '5eed0000-0000-4000-8000-000000000001',
  workflowVersion: 3,
  jobId: null,
  trigger: 'manual' as const,
  status: 'completed' as const,
  input: { n: index, tags: ['a', 'b'] },
  output: { result: { n: index * 2 } },
  error: null,
  startedAt: '2026-11-22T01:00:00.000Z',
  finishedAt: '2026-11-22T01:00:00.120Z',
  createdAt: '2026-11-22T01:00:00.000Z',
  retryOfId: null,
}));
const page = { items, hasNext: true, nextCursor: 'WyJjcmVhdGVkQXQiLCJkZXNjIl0' };

const zodSerialize = createSerializerCompiler()({ schema: ExecutionPage, method: 'GET', url: '/api/v1/executions', httpStatus: '200' }) as (data: unknown) => string;
const compiled = compileResponseSerializer(ExecutionPage);
const fastJsonStringify = compileFastJsonStringify(ExecutionPage);
const floor = (data: unknown) => JSON.stringify(data);

for (const [name, serialize] of [['compiled', compiled], ['fast-json-stringify', fastJsonStringify]] as const) {
  if (zodSerialize(page) !== serialize(page)) throw new Error(`the zod and ${name} serializers disagree on the page`);
}

function opsPerSecond(serialize: (data: unknown) => string, durationMs = 1_000): number {
  let count = 0;
  const started = performance.now();
  while (performance.now() - started < durationMs) {
    serialize(page);
    count++;
  }
  return count / ((performance.now() - started) / 1000);
}

const contenders = { zod: zodSerialize, 'fast-json-stringify': fastJsonStringify, compiled, 'JSON.stringify': floor };
const runs = new Map<string, number[]>(Object.keys(contenders).map((name) => [name, []]));
for (const serialize of Object.values(contenders)) opsPerSecond(serialize, 300);
for (let round = 0; round < 5; round++) {
  for (const [name, serialize] of Object.entries(contenders)) runs.get(name)?.push(opsPerSecond(serialize));
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const compiledOps = median(runs.get('compiled') ?? []);
console.log('| serializer (100-item executions page) | ops/s | ratio to compiled |');
console.log('| --- | ---: | ---: |');
for (const [name, values] of runs) console.log(`| ${name} | ${Math.round(median(values))} | ${(median(values) / compiledOps).toFixed(2)} |`);
