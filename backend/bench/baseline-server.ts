/**
 * The list benchmark's baseline: the floor Autonode's routes are measured against. A bare Fastify
 * with raw postgres.js, no auth, no validation, no plugins; the caller's id is fixed at start-up.
 * It sends the same statements as the Autonode routes (src/executions/reads.ts: the same
 * text, columns, timestamp formatting, filter, order and limit) on a pool of the same size, and
 * answers the same JSON, so the difference is what Autonode adds: auth, validation, serialisation,
 * hooks, limits.
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
// As on the service's pool, where drizzle makes them so: timestamps travel as text both ways.
for (const timestampType of [1184, 1114]) {
  sql.options.serializers[timestampType] = (value: unknown) => value;
  sql.options.parsers[timestampType] = (value: string) => value;
}

interface ExecutionRecord {
  id: string;
  workflowId: string;
  workflowVersion: number;
  jobId: string | null;
  trigger: string;
  status: string;
  input: unknown;
  output: unknown;
  error: unknown;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  retryOfId: string | null;
  revision: number;
}

// The service's select lists, timestamps in toISOString() form written by PostgreSQL: list items
// without input and output (the default), a single execution with them.
const columns = (data: ReturnType<typeof sql>) => sql`id, workflow_id as "workflowId", workflow_version as "workflowVersion", job_id as "jobId", trigger, status,
  ${data} error,
  to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "startedAt",
  to_char(finished_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "finishedAt",
  to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "createdAt",
  retry_of_id as "retryOfId", revision`;
const withData = columns(sql`input, output,`);
const withoutData = columns(sql``);

const presentItem = (row: ExecutionRecord) => ({
  id: row.id,
  workflowId: row.workflowId,
  workflowVersion: row.workflowVersion,
  jobId: row.jobId,
  trigger: row.trigger,
  status: row.status,
  error: row.error ?? null,
  startedAt: row.startedAt,
  finishedAt: row.finishedAt,
  createdAt: row.createdAt,
  retryOfId: row.retryOfId,
});
const present = (row: ExecutionRecord) => ({ ...presentItem(row), input: row.input ?? null, output: row.output ?? null });

const PAGE_SIZE = 20;

/** The same cursor the service issues (pagination.ts), so the envelope is byte-for-byte alike. */
function cursorAfter(row: ExecutionRecord): string {
  return Buffer.from(JSON.stringify(['createdAt', 'desc', row.createdAt, row.id])).toString('base64url');
}

const app = Fastify({ logger: false });

app.get('/api/health', async () => ({ status: 'ok' }));

app.get('/api/v1/executions', async () => {
  const rows = await sql<ExecutionRecord[]>`select ${withoutData} from executions
    where user_id = ${callerId} and (created_at, id) < (${'infinity'}::timestamptz, ${'ffffffff-ffff-ffff-ffff-ffffffffffff'}::uuid)
    order by created_at desc, id desc limit ${PAGE_SIZE + 1} offset ${0}`;
  const hasNext = rows.length > PAGE_SIZE;
  const shown = hasNext ? rows.slice(0, PAGE_SIZE) : rows;
  const last = shown[shown.length - 1];
  return { items: shown.map(presentItem), hasNext, nextCursor: hasNext && last ? cursorAfter(last) : null };
});

app.get<{ Params: { id: string } }>('/api/v1/executions/:id', async (request, reply) => {
  const [row] = await sql<ExecutionRecord[]>`select ${withData} from executions where user_id = ${callerId} and id = ${request.params.id}::uuid`;
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
