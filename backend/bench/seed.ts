import type { Sql } from '../src/db/client.js';
import { TRUSTED_ORIGIN } from './support.js';

/**
 * The engine benchmark's workflow: a manual trigger feeding one transform step. `params: {}` on
 * the trigger is what the API stores (its schema defaults params): the snapshot is inserted
 * directly here, and the runner parses params as an object.
 */
export const oneStepGraph = {
  nodes: [
    { id: 'start', type: 'trigger.manual', params: {} },
    { id: 't', type: 'transform', params: { expression: 'input.n + 1' } },
  ],
  edges: [{ source: 'start', target: 't' }],
};

export interface SignedUpUser {
  readonly id: string;
  readonly email: string;
  readonly password: string;
  /** The Cookie header value that carries the session. */
  readonly cookie: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function jsonOf(response: Response, what: string): Promise<Record<string, unknown>> {
  const text = await response.text();
  if (!response.ok) throw new Error(`${what} failed: ${response.status} ${text}`);
  const body: unknown = JSON.parse(text);
  if (!isRecord(body)) throw new Error(`${what} answered something that is not an object: ${text}`);
  return body;
}

/** Signs up through the real Better Auth endpoint (the session comes back as Set-Cookie). */
export async function signUp(baseUrl: string, email: string, password: string): Promise<SignedUpUser> {
  const response = await fetch(`${baseUrl}/api/auth/sign-up/email`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: TRUSTED_ORIGIN },
    body: JSON.stringify({ name: 'Bench Caller', email, password }),
  });
  const cookie = response.headers
    .getSetCookie()
    .map((setCookie) => setCookie.split(';')[0] ?? '')
    .filter(Boolean)
    .join('; ');
  const body = await jsonOf(response, 'sign-up');
  const user = body.user;
  if (!isRecord(user) || typeof user.id !== 'string') throw new Error(`sign-up answered no user id: ${JSON.stringify(body)}`);
  if (!cookie) throw new Error('sign-up set no session cookie');
  return { id: user.id, email, password, cookie };
}

/** Creates an API key for the signed-in user; the secret is only in this response. */
export async function createApiKey(baseUrl: string, cookie: string): Promise<string> {
  const response = await fetch(`${baseUrl}/api/v1/api-keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: TRUSTED_ORIGIN, cookie },
    body: JSON.stringify({ name: 'bench' }),
  });
  const body = await jsonOf(response, 'API key creation');
  if (typeof body.key !== 'string') throw new Error('API key creation answered no key');
  return body.key;
}

/** Users that only need to own rows: straight into Better Auth's table, no password, no session. */
export async function insertBulkUsers(sql: Sql, count: number): Promise<void> {
  await sql`
    insert into "user" (id, name, email)
    select 'bench-user-' || g, 'Bench user ' || g, 'bench-user-' || g || '@bench.test'
      from generate_series(1, ${count}::int) g`;
}

export async function insertWorkflowsForEveryUser(sql: Sql, perUser: number): Promise<void> {
  await sql`
    with created as (
      insert into workflows (user_id, name, nodes, edges)
      select u.id, 'Bench workflow ' || w, '[]'::jsonb, '[]'::jsonb
        from "user" u cross join generate_series(1, ${perUser}::int) w
      returning id, version, user_id, nodes, edges)
    insert into workflow_versions (workflow_id, version, user_id, nodes, edges) select * from created`;
}

/**
 * `total` finished executions: every `callerEvery`-th (default: every tenth, so callerShare =
 * total / 10) belongs to the caller, the rest spread over the other users; one every 3 s going
 * back in time (about a week for 200k) from `daysAgo` days ago (default: now), on the owner's
 * workflows in turn, a few percent failed. Then VACUUM ANALYZE, so the planner and the visibility
 * map look like a settled table rather than a fresh bulk load.
 */
export async function insertFinishedExecutions(sql: Sql, callerId: string, total: number, daysAgo = 0, callerEvery = 10): Promise<void> {
  await sql`
    with others as (
      select array_agg(id order by id) as ids from "user" where id <> ${callerId}
    ),
    user_workflows as (
      select user_id, array_agg(id order by id) as ids from workflows group by user_id
    ),
    planned as (
      select g,
             case when g % ${callerEvery}::int = 0 then ${callerId}::text else others.ids[1 + g % array_length(others.ids, 1)] end as user_id,
             now() - make_interval(days => ${daysAgo}::int, secs => g * 3.0) as created_at
        from generate_series(1, ${total}::int) g, others
    )
    insert into executions (user_id, workflow_id, workflow_version, trigger, status,
                            input, output, error, started_at, finished_at, created_at)
    select p.user_id, w.ids[1 + p.g % array_length(w.ids, 1)], 1, 'manual',
           (case when p.g % 17 = 0 then 'failed' else 'completed' end)::execution_status,
           jsonb_build_object('n', p.g),
           case when p.g % 17 = 0 then null else jsonb_build_object('n', p.g + 1) end,
           case when p.g % 17 = 0 then '{"message":"bench failure","nodeId":"t"}'::jsonb end,
           p.created_at + interval '10 milliseconds', p.created_at + interval '50 milliseconds', p.created_at
      from planned p join user_workflows w on w.user_id = p.user_id`;
  await sql`vacuum (analyze) executions`;
  await sql`analyze "user", workflows, session, api_keys`;
}

/**
 * The steps a one-step run leaves (oneStepGraph: the trigger, and the transform, failed in a failed
 * run) for every ended execution that has none (or only those that finished more than
 * `finishedDaysAgo` days ago), with their inputs and outputs. The usage triggers count them into
 * their executions, as the engine's writes do.
 */
export async function insertStepsOfEndedExecutions(sql: Sql, finishedDaysAgo?: number): Promise<void> {
  await sql`
    insert into execution_steps (execution_id, node_id, status, attempt, input, output, started_at, finished_at, created_at)
    select e.id, node.id, node.status::step_status, 1, node.input, node.output, e.started_at, e.finished_at, e.started_at
      from executions e
     cross join lateral (values ('start', 'completed', null::jsonb, e.input),
                                ('t', case when e.status = 'failed' then 'failed' else 'completed' end, e.input, e.output)) as node(id, status, input, output)
     where e.status in ('completed', 'failed', 'cancelled')
       and not exists (select 1 from execution_steps s where s.execution_id = e.id)
       and (${finishedDaysAgo ?? null}::int is null or e.finished_at < now() - make_interval(days => ${finishedDaysAgo ?? null}::int))`;
  await sql`vacuum (analyze) execution_steps, executions`;
}

/** `count` pending executions of the one-step workflow, inputs {"n": i}, oldest first. */
export async function insertPendingExecutions(sql: Sql, userId: string, workflowId: string, count: number): Promise<void> {
  // The version the executions run: the workflow's graph as it stands.
  await sql`
    insert into workflow_versions (workflow_id, version, user_id, nodes, edges)
    select id, 1, user_id, nodes, edges from workflows where id = ${workflowId}::uuid
    on conflict do nothing`;
  await sql`
    insert into executions (user_id, workflow_id, workflow_version, trigger, status, input, created_at)
    select ${userId}, ${workflowId}::uuid, 1, 'manual', 'pending',
           jsonb_build_object('n', g), now() - make_interval(secs => (${count}::int - g) / 1000.0)
      from generate_series(1, ${count}::int) g`;
  await sql`vacuum (analyze) executions`;
}
