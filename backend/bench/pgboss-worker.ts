/**
 * The engine benchmark's pg-boss side, run as a child process like Autonode's worker: CONCURRENCY
 * loops each fetch one job, run a no-op handler, and complete it, so at most CONCURRENCY jobs are
 * in flight, as with ENGINE_CONCURRENCY. An empty fetch waits POLL_MS (ENGINE_POLL_MS's twin).
 *
 * Why not `boss.work()`: in pg-boss 10 (the last line that runs on Node 20) a worker waits
 * `pollingIntervalSeconds` (at least 0.5 s) after every fetch, even one that found jobs, so four
 * one-job workers could not pass 8 jobs/s whatever the database does. These loops run the same
 * fetch and complete statements work() runs, without that pause: pg-boss at its fastest.
 */
import PgBoss from 'pg-boss';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

const queue = required('PGBOSS_QUEUE');
const concurrency = Number(process.env.CONCURRENCY ?? 4);
const pollMs = Number(process.env.POLL_MS ?? 50);

const boss = new PgBoss({
  connectionString: required('DATABASE_URL'),
  schema: required('PGBOSS_SCHEMA'),
  max: Number(process.env.DB_POOL_SIZE ?? 10),
  application_name: 'autonode-bench-pgboss',
  // The parent installed the schema and the jobs; this process only works (no maintenance, no cron).
  migrate: false,
  supervise: false,
  schedule: false,
});
boss.on('error', (error) => process.stderr.write(`pg-boss error: ${error.message}\n`));

let stopping = false;
const noOp = async (): Promise<void> => undefined;

async function workLoop(): Promise<void> {
  while (!stopping) {
    const [job] = await boss.fetch<{ n: number }>(queue, { batchSize: 1 });
    if (!job) {
      await new Promise((resolve) => setTimeout(resolve, pollMs));
      continue;
    }
    await noOp();
    await boss.complete(queue, job.id);
  }
}

process.once('SIGTERM', () => {
  stopping = true;
});

await boss.start();
await Promise.all(Array.from({ length: concurrency }, () => workLoop()));
await boss.stop({ graceful: false, wait: true });
