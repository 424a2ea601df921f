/**
 * The list benchmark's baseline: the floor Autonode's routes are measured against. A bare Fastify
 * with raw postgres.js, no auth, no validation, no plugins; the caller's id is fixed at start-up.
 * It runs the same SQL as the Autonode routes (the same columns, filter, order and limit) on a pool
 * of the same size, and answers the same JSON, so the difference is what Autonode adds: auth,
 * validation, serialisation, hooks, limits.
 */
import Fastify from 'fastify';
import postgres from 'postgres';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

const databaseUrl = required('DATABASE_URL');
const callerId = required('BASELINE_USER_ID');
const poolSize = Number(process.env.DB_POOL_SIZE ?? 10);

const sql = postgres(databaseUrl, {
  max: poolSize,
  // The same start-up parameters as the service's pool (client.ts), so each connection behaves alike.
  connection: { application_name: 'autonode-bench-baseline', statement_timeout: 30_000 },
});

interface ExecutionRecord {
  id: string;
  workflow_id: string;
  workflow_version: number;
  job_id: string | null;
  trigger: string;
  status: string;
  input: unknown;
  output: unknown;
  error: unknown;
  started_at: Date | null;
  finished_at: Date | null;
  created_at: Date;
  retry_of_id: string | null;
}

// The columns the service reads for the API (routes/executions/repository.ts): not the bulky snapshot.
const columns = sql`id, workflow_id, workflow_version, job_id, trigger, status, input, output, error,
  started_at, finished_at, created_at, retry_of_id, revision`;

const present = (row: ExecutionRecord) => ({
  id: row.id,
  workflowId: row.workflow_id,
  workflowVersion: row.workflow_version,
  jobId: row.job_id,
  trigger: row.trigger,
  status: row.status,
  input: row.input ?? null,
  output: row.output ?? null,
  error: row.error ?? null,
  startedAt: row.started_at ? row.started_at.toISOString() : null,
  finishedAt: row.finished_at ? row.finished_at.toISOString() : null,
  createdAt: row.created_at.toISOString(),
  retryOfId: row.retry_of_id,
});

const PAGE_SIZE = 20;

/** The same cursor the service issues (pagination.ts), so the envelope is byte-for-byte alike. */
function cursorAfter(row: ExecutionRecord): string {
  return Buffer.from(JSON.stringify(['createdAt', 'desc', row.created_at.toISOString(), row.id])).toString('base64url');
}

const app = Fastify({ logger: false });

app.get('/api/health', async () => ({ status: 'ok' }));

app.get('/api/v1/executions', async () => {
  const rows = await sql<ExecutionRecord[]>`
    select ${columns} from executions where user_id = ${callerId} order by created_at desc, id desc limit ${PAGE_SIZE + 1}`;
  const hasNext = rows.length > PAGE_SIZE;
  const shown = hasNext ? rows.slice(0, PAGE_SIZE) : rows;
  const last = shown[shown.length - 1];
  return { items: shown.map(present), hasNext, nextCursor: hasNext && last ? cursorAfter(last) : null };
});

app.get<{ Params: { id: string } }>('/api/v1/executions/:id', async (request, reply) => {
  const [row] = await sql<ExecutionRecord[]>`select ${columns} from executions where user_id = ${callerId} and id = ${request.params.id}`;
  if (!row) return reply.code(404).send({ status: 404 });
  return present(row);
});

const shutdown = async () => {
  await app.close();
  await sql.end({ timeout: 5 });
  process.exit(0);
};
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());

const address = await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) });
process.stdout.write(`Server listening at ${address}\n`);
