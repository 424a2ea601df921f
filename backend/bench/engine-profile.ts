/**
 * Where an engine run's time goes (not part of `npm run bench`): RUNS two-step runs drained by one
 * built worker, as in the engine benchmark, while this process samples PostgreSQL's wait events
 * every 5 ms, and reports the worker's and the database server's CPU per run, transactions and WAL
 * per run, and the wait events seen. `--cpu-prof` of the worker (into bench/results/profiles) with
 * BENCH_CPU_PROFILE=1; plans of 1% of the worker's statements in the server's log (auto_explain)
 * with BENCH_AUTO_EXPLAIN=1.
 *
 *   node --import tsx bench/engine-profile.ts
 */
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { insertPendingExecutions, oneStepGraph } from './seed.js';
import { autonodeBuild, autonodeEnv, generateSecret, log, sleep, spawnAutonodeWorker, withBenchDatabase } from './support.js';

const RUNS = Number(process.env.BENCH_ENGINE_RUNS ?? 3_000);
const CONCURRENCY = Number(process.env.BENCH_ENGINE_CONCURRENCY ?? 4);

/** CPU ms (user + system) of every process whose command line starts with `postgres`. */
function postgresCpuMs(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (!stat.includes('(postgres)')) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

await withBenchDatabase('autonode_bench_engine_profile', async (database) => {
  const sql = database.client.sql;
  const [owner] = await sql<{ id: string }[]>`insert into "user" (id, name, email) values ('bench-profile', 'Profile', 'bench-profile@bench.test') returning id`;
  const [workflow] = await sql<{ id: string }[]>`
    insert into workflows (user_id, name, nodes, edges)
    values (${owner!.id}, 'One step', ${JSON.stringify(oneStepGraph.nodes)}::jsonb, ${JSON.stringify(oneStepGraph.edges)}::jsonb) returning id`;
  await autonodeBuild();
  if (process.env.BENCH_AUTO_EXPLAIN) {
    // Plans of a sample of the worker's statements, in the server's log.
    await sql.unsafe(`alter database ${database.name} set session_preload_libraries = 'auto_explain'`);
    for (const [name, value] of [['log_min_duration', '0'], ['log_analyze', 'on'], ['log_buffers', 'on'], ['sample_rate', '0.01'], ['log_nested_statements', 'on']]) {
      await sql.unsafe(`alter database ${database.name} set auto_explain.${name} = '${value}'`);
    }
  }
  if (process.env.BENCH_LOG_DURATIONS) {
    // Every statement's duration in the server's log (its text cut to the first line by the reader).
    await sql.unsafe(`alter database ${database.name} set log_min_duration_statement = 0`);
  }
  await insertPendingExecutions(sql, owner!.id, workflow!.id, RUNS);
  await sql`checkpoint`.catch(() => undefined);
  const [before] = await sql<{ commits: number; wal: string }[]>`
    select xact_commit::float8 as commits, pg_current_wal_lsn()::text as wal from pg_stat_database where datname = current_database()`;
  const pgCpuBefore = postgresCpuMs();
  const waits = new Map<string, number>();
  let samples = 0;
  const started = performance.now();
  const worker = await spawnAutonodeWorker(
    'autonode-worker',
    { ...autonodeEnv(database.url, generateSecret()), ENGINE_CONCURRENCY: String(CONCURRENCY), ENGINE_USER_CONCURRENCY: String(CONCURRENCY), ENGINE_POLL_MS: '50' },
    process.env.BENCH_CPU_PROFILE ? ['--cpu-prof', '--cpu-prof-dir=bench/results/profiles'] : [],
  );
  let done = false;
  // BENCH_WAIT_SAMPLES=0 leaves the server alone (its CPU per run then has no sampler in it).
  const sampleWaits = process.env.BENCH_WAIT_SAMPLES !== '0';
  const sampler = (async () => {
    while (!done && sampleWaits) {
      const rows = await sql<{ state: string; wait: string | null; query: string }[]>`
        select state, wait_event_type || ':' || wait_event as wait, left(regexp_replace(query, '\\s+', ' ', 'g'), 40) as query
          from pg_stat_activity where datname = current_database() and application_name <> 'autonode-bench' and pid <> pg_backend_pid()`;
      samples++;
      for (const row of rows) {
        const key = `${row.state} ${row.wait ?? 'cpu'} | ${row.state === 'active' ? row.query : ''}`;
        waits.set(key, (waits.get(key) ?? 0) + 1);
      }
      await sleep(5);
    }
  })();
  for (;;) {
    await sleep(50);
    const [row] = await sql<{ completed: number }[]>`select count(*)::int as completed from executions where status = 'completed'`;
    if ((row?.completed ?? 0) >= RUNS) break;
  }
  const wallMs = performance.now() - started;
  const workerCpu = worker.cpuMs() ?? 0;
  const pgCpu = postgresCpuMs() - pgCpuBefore;
  done = true;
  await sampler;
  await worker.stop(3_000);
  const [after] = await sql<{ commits: number; walBytes: number }[]>`
    select xact_commit::float8 as commits, pg_wal_lsn_diff(pg_current_wal_lsn(), ${before!.wal}::pg_lsn)::float8 as "walBytes" from pg_stat_database where datname = current_database()`;
  log(`${RUNS} runs in ${wallMs.toFixed(0)} ms: ${(RUNS / (wallMs / 1000)).toFixed(0)} runs/s`);
  log(`worker CPU ${(workerCpu / RUNS).toFixed(3)} ms/run; PostgreSQL CPU ${(pgCpu / RUNS).toFixed(3)} ms/run (sampler included)`);
  log(`commits ${((after!.commits - before!.commits) / RUNS).toFixed(2)}/run (sampler included: ${samples}); WAL ${(after!.walBytes / RUNS).toFixed(0)} B/run`);
  const sorted = [...waits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25);
  for (const [key, count] of sorted) log(`  ${(count / samples).toFixed(2)} backends  ${key}`);
});
process.exit(0);
