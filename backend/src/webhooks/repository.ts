import type { FastifyBaseLogger } from 'fastify';
import type { Sql } from '../db/client.js';
import { WebhookTriggerParams } from '../engine/nodes/trigger.js';
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

/** Records a delivery whose check failed: no execution, and why, for the owner. */
export async function recordRejected(sql: Sql, hook: Hook, request: DeliveryRequest, dedupKey: string | null, reason: string): Promise<void> {
  await sql`
    insert into webhook_deliveries (user_id, workflow_id, status, dedup_key, method, headers, query, content_type, body, body_bytes, received_at, reason)
    select user_id, id, 'rejected', ${dedupKey}, ${request.method}, ${JSON.stringify(request.headers)}::jsonb, ${JSON.stringify(request.query)}::jsonb,
           ${request.contentType}, ${request.body}::bytea, ${request.body.length}, ${request.receivedAt.toISOString()}::timestamptz, ${reason}
      from workflows where id = ${hook.workflowId}::uuid`;
}

/** Where an execution is: its status, and its output and error once it has ended. */
export interface ExecutionOutcome {
  readonly status: ExecutionStatus;
  readonly output: unknown;
  readonly error: unknown;
}

/** One execution's status, output and error (the execution was just created by the hook: no owner check is needed). */
export async function readOutcome(sql: Sql, executionId: string): Promise<ExecutionOutcome | null> {
  const [row] = await sql<ExecutionOutcome[]>`select status, output, error from executions where id = ${executionId}::uuid`;
  return row ?? null;
}
