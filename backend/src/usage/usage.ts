import type { Sql } from '../db/client.js';
import { ProblemError } from '../lib/problem.js';

export interface StoredUsage {
  readonly workflows: number;
  readonly jobs: number;
  readonly executions: number;
  readonly steps: number;
  readonly connections: number;
  readonly variables: number;
  readonly webhookDeliveries: number;
  readonly eventDeliveries: number;
  /** Bytes of the user's stored payloads as JSON text: graphs (each version), inputs, outputs, errors, connections and variables. */
  readonly payloadBytes: number;
}

const NOTHING: StoredUsage = { workflows: 0, jobs: 0, executions: 0, steps: 0, connections: 0, variables: 0, webhookDeliveries: 0, eventDeliveries: 0, payloadBytes: 0 };

/** What the user stores, as the database's triggers keep it (user_usage): one primary-key read. */
export async function readUsage(sql: Sql, userId: string): Promise<StoredUsage> {
  const [row] = await sql<StoredUsage[]>`
    select workflows, jobs, executions, steps, connections, variables, webhook_deliveries as "webhookDeliveries", event_deliveries as "eventDeliveries", payload_bytes::float8 as "payloadBytes" from user_usage where user_id = ${userId}`;
  return row ?? NOTHING;
}

/**
 * The storage quota (USER_STORAGE_MAX_BYTES): a user whose payloads take the quota or more starts
 * nothing new that stores more (a run, a retry, a workflow save; the scheduler skips the user's
 * due jobs: lifecycle.ts, fireDueJobs) until something is deleted. Work under way finishes: it is
 * bounded by ENGINE_USER_WAITING_MAX runs, each of bounded steps (ENGINE_MAX_PAYLOAD_BYTES), so the
 * overshoot is bounded too. Requests in flight together are checked against the same figure.
 */
export async function assertStorageAvailable(sql: Sql, userId: string, maxBytes: number): Promise<void> {
  const { payloadBytes } = await readUsage(sql, userId);
  if (payloadBytes >= maxBytes) throw storageQuotaExceeded(payloadBytes, maxBytes);
}

export function storageQuotaExceeded(payloadBytes: number, maxBytes: number): ProblemError {
  return new ProblemError(
    409,
    'STORAGE_QUOTA_EXCEEDED',
    `Your stored payloads take ${payloadBytes} bytes of the ${maxBytes} allowed: delete workflows you no longer need (their runs go with them) before storing more (GET /api/v1/usage).`,
  );
}
