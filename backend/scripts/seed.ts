import { eq } from 'drizzle-orm';
import type { Logger } from 'pino';
import { createAuth } from '../src/auth/auth.js';
import type { Config } from '../src/config.js';
import type { DbClient } from '../src/db/client.js';
import { createEventBus } from '../src/bus/bus.js';
import { jobs, user, workflows, workflowVersions } from '../src/db/schema/index.js';
import { ExecutionLifecycle } from '../src/executions/lifecycle.js';
import { ExecutionReads } from '../src/executions/reads.js';
import { parseSchedule } from '../src/engine/schedule.js';

export const DEMO_USER = { name: 'Demo User', email: 'demo@autonode.local', password: 'demo-password' } as const;

export interface SeedSummary {
  userId: string;
  workflows: number;
  jobs: number;
  executions: number;
}

// Fixed ids make every insert an upsert of the same row: running the seed twice changes nothing.
const ids = {
  greetingWorkflow: '5eed0000-0000-4000-8000-000000000001',
  fetchWorkflow: '5eed0000-0000-4000-8000-000000000002',
  dailyJob: '5eed0000-0000-4000-8000-000000000101',
} as const;

const greetingGraph = {
  nodes: [
    { id: 'start', type: 'trigger.manual', name: 'Start', params: {} },
    { id: 'greet', type: 'transform', name: 'Greet', params: { expression: '"Hello, " & input.name' } },
  ],
  edges: [{ source: 'start', target: 'greet' }],
};

const fetchGraph = {
  nodes: [
    { id: 'tick', type: 'trigger.schedule', name: 'Every morning', params: {} },
    { id: 'fetch', type: 'http.request', name: 'Fetch status', params: { method: 'GET' as const, url: 'https://status.example.com/api' } },
    { id: 'healthy', type: 'condition', name: 'Healthy?', params: { expression: 'steps.fetch.status = 200' } },
    { id: 'alert', type: 'transform', name: 'Alert', params: { expression: '"status page is down"' } },
  ],
  edges: [
    { source: 'tick', target: 'fetch' },
    { source: 'fetch', target: 'healthy' },
    { source: 'healthy', target: 'alert', when: false },
  ],
};

/**
 * Idempotent demo data: fixed identities and upserts, so a second run leaves the same rows.
 * The demo password is public, so seeding is refused in production.
 */
export async function seedDemoData(database: DbClient, config: Config, logger: Logger): Promise<SeedSummary> {
  if (config.isProduction) throw new Error('db:seed refused: NODE_ENV is production (the demo password is public).');
  const userId = await ensureDemoUser(database, config, logger);
  const { db } = database;
  const at = (iso: string) => new Date(iso);

  for (const [id, name, description, graph] of [
    [ids.greetingWorkflow, 'Greeting', 'Says hello to the name in the input.', greetingGraph],
    [ids.fetchWorkflow, 'Status check', 'Fetches a status page every morning and alerts when it is down.', fetchGraph],
  ] as const) {
    await db
      .insert(workflows)
      .values({ id, userId, name, description, nodes: graph.nodes, edges: graph.edges, createdAt: at('2026-01-01T09:00:00Z'), updatedAt: at('2026-01-01T09:00:00Z') })
      .onConflictDoUpdate({ target: workflows.id, set: { name, description, nodes: graph.nodes, edges: graph.edges } });
    // The version runs refer to, as a save records it: the seeded graph is always version 1.
    await db
      .insert(workflowVersions)
      .values({ workflowId: id, version: 1, userId, nodes: graph.nodes, edges: graph.edges, createdAt: at('2026-01-01T09:00:00Z') })
      .onConflictDoUpdate({ target: [workflowVersions.workflowId, workflowVersions.version], set: { nodes: graph.nodes, edges: graph.edges } });
  }

  const schedule = parseSchedule('0 8 * * *', 'Europe/Paris');
  if ('errors' in schedule) throw new Error('the demo schedule is invalid');
  await db
    .insert(jobs)
    .values({
      id: ids.dailyJob,
      userId,
      workflowId: ids.fetchWorkflow,
      name: 'Morning status check',
      definitionNL: 'Every day at 8:00 Paris time, check the status page and alert if it is down.',
      cron: schedule.schedule.cron,
      timezone: schedule.schedule.timezone,
      status: 'PAUSED',
      createdAt: at('2026-01-01T09:05:00Z'),
      updatedAt: at('2026-01-01T09:05:00Z'),
    })
    .onConflictDoNothing({ target: jobs.id });

  // History is made the way production makes it: a run, which the engine carries out when the
  // service starts. Only the first seed starts one, so seeding again adds nothing.
  const [existing] = await database.sql<{ count: number }[]>`select count(*)::int as count from executions where user_id = ${userId}`;
  if (existing?.count === 0) {
    // Announces the run to a service already running on this database; listens to nothing.
    const bus = createEventBus(database, logger, { listens: false });
    try {
      const lifecycle = new ExecutionLifecycle(database.sql, bus, new ExecutionReads(database.sql), {
        maxPayloadBytes: config.engine.maxPayloadBytes,
        maxStorageBytes: config.storageMaxBytes,
        maxWaitingPerUser: config.engine.userWaitingMax,
      });
      await lifecycle.create(userId, ids.greetingWorkflow, 'manual', { name: 'Ada' });
    } finally {
      await bus.close();
    }
  }

  return { userId, workflows: 2, jobs: 1, executions: 1 };
}

async function ensureDemoUser(database: DbClient, config: Config, logger: Logger): Promise<string> {
  const [existing] = await database.db.select({ id: user.id }).from(user).where(eq(user.email, DEMO_USER.email));
  if (existing) return existing.id;
  // Through Better Auth, so the password is hashed and the account row made exactly as sign-up does.
  const auth = createAuth({ config, db: database.db, logger });
  const result = await auth.api.signUpEmail({ body: { ...DEMO_USER } });
  return result.user.id;
}
