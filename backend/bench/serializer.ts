/**
 * Response serialization on a 100-item executions page: the zod serializer the routes use
 * (fastify-type-provider-zod: validate with zod, then JSON.stringify) against Fastify's compiled
 * JSON-schema serializer (fast-json-stringify) built from the same schema. Prints ops/s and the
 * ratio, alternating A, B over several rounds.  Run: node --import tsx bench/serializer.ts
 */
import fastJsonStringify from 'fast-json-stringify';
import { createSerializerCompiler } from 'fastify-type-provider-zod';
import { z } from 'zod';
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
const compiled = fastJsonStringify(z.toJSONSchema(ExecutionPage, { io: 'output', unrepresentable: 'any' }) as never);

if (zodSerialize(page) !== JSON.stringify(JSON.parse(compiled(page)))) {
  throw new Error('the two serializers disagree on the page');
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

const zodRuns: number[] = [];
const compiledRuns: number[] = [];
opsPerSecond(zodSerialize, 300);
opsPerSecond(compiled, 300);
for (let round = 0; round < 5; round++) {
  zodRuns.push(opsPerSecond(zodSerialize));
  compiledRuns.push(opsPerSecond(compiled));
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
console.log(`| serializer (100-item executions page) | ops/s |`);
console.log(`| zod (validate + JSON.stringify) | ${Math.round(median(zodRuns))} |`);
console.log(`| fast-json-stringify (compiled) | ${Math.round(median(compiledRuns))} |`);
console.log(`ratio zod / compiled: ${(median(zodRuns) / median(compiledRuns)).toFixed(2)}`);
