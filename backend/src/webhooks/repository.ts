import type { FastifyBaseLogger } from 'fastify';
import type { Fragment, Sql } from '../db/client.js';
import type { webhookDeliveryStatuses } from '../db/schema/index.js';
import { WebhookTriggerParams } from '../engine/nodes/trigger.js';
import { outbox, rejectedDeliveryEvent } from '../events/outbox.js';
import type { ExecutionStatus } from '../executions/reads.js';
import { variableSecretBinding } from '../secrets/bindings.js';
import { SecretUnreadableError, type Keyring } from '../secrets/keyring.js';
import type { DeliveryRequest } from './delivery-input.js';
import type { HookSecret } from './verify.js';

/** What a delivery to a hook needs of its workflow: whose it is, which version, and how it is checked and answered. */
export interface Hook {
  readonly hookId: string;
  readonly workflowId: string;
  readonly userId: string;
  readonly version: number;
  readonly params: WebhookTriggerParams;
}

/**
 * The workflow a hook id belongs to, with its trigger.webhook node's params (only those are read
 * of the graph: it may be a megabyte); null when no workflow has the hook, or its graph no longer
 * has the node. `hook_id` is unique, and cleared whenever the node is removed (repository.ts).
 */
export async function findHook(sql: Sql, hookId: string): Promise<Hook | null> {
  const [row] = await sql<{ workflowId: string; userId: string; version: number; params: unknown }[]>`
    select w.id as "workflowId", w.user_id as "userId", w.version,
           (select n->'params' from jsonb_array_elements(w.nodes) n where n->>'type' = 'trigger.webhook' limit 1) as params
      from workflows w
     where w.hook_id = ${hookId}`;
  if (!row || row.params === null) return null;
  // Saved graphs were validated against these params: a failure here is a bug, not the sender's.
  const params = WebhookTriggerParams.parse(row.params);
  return { hookId, workflowId: row.workflowId, userId: row.userId, version: row.version, params };
}

/**
 * The value of the owner's secret variable that a hook checks deliveries with, or why it cannot be
 * had: deleted or made non-secret after the workflow was saved, or unreadable (altered, or its key
 * no longer in SECRETS_KEYS; the operator learns which row from the log, never its value).
 */
export async function readHookSecret(sql: Sql, keyring: Keyring, log: FastifyBaseLogger, userId: string, key: string): Promise<HookSecret> {
  const [row] = await sql<{ id: string; secret: boolean; keyId: string | null; ciphertext: string | null }[]>`
    select id, secret, secret_key_id as "keyId", secret_ciphertext as ciphertext from variables where user_id = ${userId} and key = ${key}`;
  if (!row || !row.secret || row.keyId === null || row.ciphertext === null) {
    return { missing: `the secret variable '${key}' does not exist (deleted, or made non-secret, after the workflow was saved)` };
  }
  try {
    return { value: keyring.open({ keyId: row.keyId, ciphertext: row.ciphertext }, variableSecretBinding({ id: row.id, userId })) };
  } catch (error) {
    if (!(error instanceof SecretUnreadableError)) throw error;
    log.warn({ table: 'variables', rowId: row.id, keyId: row.keyId, reason: error.message }, 'a stored secret cannot be decrypted');
    return { missing: `the secret variable '${key}' cannot be decrypted (it was altered, or its key is no longer configured); set it again` };
  }
}

const EMPTY_BODY = Buffer.alloc(0);

/** A webhook_deliveries row, beside what its source query gives (insertDelivery). */
export interface DeliveryRecord {
  readonly status: (typeof webhookDeliveryStatuses)[number];
  /** The sender's webhook-id or Idempotency-Key, if it sent one. Only an `accepted` row's answers for its repeats. */
  readonly dedupKey: string | null;
  /** Why it was rejected, for the owner; null otherwise. */
  readonly reason: string | null;
  readonly request: DeliveryRequest;
}

/**
 * The insert of a webhook_deliveries row: the one place its columns are written. `source` is a
 * query of the row's `user_id`, `workflow_id` and `execution_id` (no row: nothing is inserted);
 * the caller adds a `returning` clause when it needs one. Only an `accepted` row keeps its body: a
 * `rejected` or `duplicate` one starts nothing and keeps only the body's size (its sender proved
 * nothing, or sent it before; a body is up to 1 MiB, and repeats of one captured request would
 * otherwise store a megabyte each). Their headers (bounded by Node's header limit), query and
 * reason are kept for the owner, and do not count towards the owner's storage quota (migration
 * 0026), which anyone with the hook's URL could otherwise fill.
 */
export function insertDelivery(sql: Sql, record: DeliveryRecord, source: Fragment): Fragment {
  const { request } = record;
  const body = record.status === 'accepted' ? request.body : EMPTY_BODY;
  return sql`
    insert into webhook_deliveries (user_id, workflow_id, execution_id, status, dedup_key, reason, method, headers, query, content_type, body, body_bytes, received_at)
    select s.user_id, s.workflow_id, s.execution_id, ${record.status}::webhook_delivery_status, ${record.dedupKey}, ${record.reason}, ${request.method},
           ${JSON.stringify(request.headers)}::jsonb, ${JSON.stringify(request.query)}::jsonb, ${request.contentType},
           ${body}::bytea, ${request.body.length}, ${request.receivedAt.toISOString()}::timestamptz
      from (${source}) s`;
}

/**
 * Records a delivery that starts no run, and why, for the owner (a `rejected` row: no execution,
 * no body); and, in the same statement, the owner's `webhook.rejected` messages
 * (events/outbox.ts). The delivery workers find them at their next poll: this statement
 * announces nothing on the bus. Rejected rows never answer for a repeat of their key
 * (acceptDelivery looks for an `accepted` one), so the sender's next try is checked afresh.
 */
export async function recordRejected(sql: Sql, hook: Hook, request: DeliveryRequest, dedupKey: string | null, reason: string): Promise<void> {
  const source = sql`select user_id, id as workflow_id, null::uuid as execution_id from workflows where id = ${hook.workflowId}::uuid`;
  await sql`
    with rejected as (
      ${insertDelivery(sql, { status: 'rejected', dedupKey, reason, request }, source)}
      returning id, user_id, workflow_id, reason, received_at),
    ${outbox(sql, rejectedDeliveryEvent(sql))}
    select 1`;
}

/** Where an execution is: its status, and its output once it has ended (its error is the owner's to read, not the sender's). */
export interface ExecutionOutcome {
  readonly status: ExecutionStatus;
  readonly output: unknown;
}

/** One execution's status and output (the execution was just created by the hook: no owner check is needed). */
export async function readOutcome(sql: Sql, executionId: string): Promise<ExecutionOutcome | null> {
  const [row] = await sql<ExecutionOutcome[]>`select status, output from executions where id = ${executionId}::uuid`;
  return row ?? null;
}
