/**
 * The engine benchmark's graphile-worker side, run as a child process like Autonode's worker: the
 * library's own `run()` with a no-op task, as its users start it, CONCURRENCY jobs at a time. The
 * parent installed the schema and queued the jobs; this process only works them until SIGTERM.
 */
import { Logger, run } from 'graphile-worker';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

/**
 * Warnings and errors only, like Autonode's worker at LOG_LEVEL=warn: graphile-worker's default
 * logger writes a line per completed job, which would bill this side for console output.
 */
const warningsOnly = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`graphile-worker ${level}: ${message}\n`);
});

const runner = await run({
  connectionString: required('DATABASE_URL'),
  schema: required('GRAPHILE_SCHEMA'),
  concurrency: Number(process.env.CONCURRENCY ?? 4),
  pollInterval: Number(process.env.POLL_MS ?? 50),
  maxPoolSize: Number(process.env.DB_POOL_SIZE ?? 10),
  // The parent stops this process with SIGTERM; graphile-worker's own handlers would log and re-raise.
  noHandleSignals: true,
  logger: warningsOnly,
  taskList: { [required('GRAPHILE_TASK')]: async () => undefined },
});

process.once('SIGTERM', () => {
  void runner.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
await runner.promise;
