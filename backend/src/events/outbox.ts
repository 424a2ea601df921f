import type { Fragment, Sql } from '../db/client.js';

/**
 * The outbox (API.md, Event subscriptions): the one way a message is written. A change that is
 * announced to subscribers carries, in its own statement, a CTE named `outbox` that inserts one
 * `event_messages` row per enabled subscription of the change's owner that wants it (its event
 * type is in `events`, and its `workflow_id` is null or the change's workflow). A change that is
 * rolled back (or fenced out: its CTE returns no row) therefore writes no message, and a
 * committed one writes each of its messages exactly once. The delivery workers
 * (delivery-worker.ts) send them afterwards.
 *
 * The events a statement announces are rows of `events`, a SQL query the caller builds from its
 * own CTEs with the helpers below, of the columns
 *   (type text, user_id text, workflow_id uuid, execution_id uuid, webhook_delivery_id uuid, data jsonb).
 * `data` is what the receiver gets under `data`; the message body is `{ type, timestamp, data }`
 * with `timestamp` the statement's transaction time.
 *
 * Cost when the owner has no subscription: one probe of `event_subscriptions_user_enabled_idx`
 * per event row, and the empty insert's statement triggers (the usage count, migration 0023).
 * Callers therefore add the CTE only to statements that may announce something: ending or
 * cancelling an execution, writing a step `failed`, rejecting a webhook delivery.
 *
 * `webhook_id` is `msg_` + the message's id: fixed at the insert, the same on every attempt.
 */
export function outbox(sql: Sql, events: Fragment): Fragment {
  // The inner select draws each message's id: gen_random_uuid() is volatile, so it is evaluated
  // once per row there and the id and the webhook-id agree.
  return sql`outbox as (
    insert into event_messages (id, subscription_id, user_id, type, webhook_id, payload, execution_id, webhook_delivery_id)
    select m.id, m.subscription_id, m.user_id, m.type, 'msg_' || m.id::text,
           jsonb_build_object('type', m.type, 'timestamp', ${isoTime(sql, sql`now()`)}, 'data', m.data),
           m.execution_id, m.webhook_delivery_id
      from (select gen_random_uuid() as id, s.id as subscription_id, e.user_id, e.type, e.data, e.execution_id, e.webhook_delivery_id
              from (${events}) e
              join event_subscriptions s on s.user_id = e.user_id and s.enabled
             where e.type = any(s.events) and (s.workflow_id is null or s.workflow_id = e.workflow_id)) m
    returning 1)`;
}

/** A boolean SQL expression: whether the statement's `outbox` CTE wrote a message. */
export function outboxWrote(sql: Sql): Fragment {
  return sql`exists (select 1 from outbox)`;
}

/**
 * The event of an execution that ended or was cancelled. Requires the statement's CTE `fence` (the
 * changed execution) to return `id`, `user_id`, `workflow_id`, `status`, `error`, `started_at` and
 * `finished_at` as they are after the change.
 */
export function executionEndedEvent(sql: Sql): Fragment {
  return sql`
    select case fence.status when 'completed' then 'execution.completed' when 'failed' then 'execution.failed' else 'execution.cancelled' end as type,
           fence.user_id, fence.workflow_id, fence.id as execution_id, null::uuid as webhook_delivery_id,
           jsonb_build_object('executionId', fence.id, 'workflowId', fence.workflow_id, 'status', fence.status, 'error', ${boundedError(sql, sql`fence.error`)},
                              'startedAt', ${isoTime(sql, sql`fence.started_at`)}, 'finishedAt', ${isoTime(sql, sql`fence.finished_at`)}) as data
      from fence`;
}

/**
 * A `step.failed` event per step row written `failed`. Requires the statement's CTE `written` (the
 * written step rows) to return `node_id`, `status`, `error`, `started_at` and `finished_at`, and its
 * CTE `fence` (the execution) `id`, `user_id` and `workflow_id`. A step is written `failed` only for
 * good (the runner writes a failed attempt that will be retried as `pending`), so each failed step
 * is announced once. `startedAt` and `finishedAt` are the step's.
 */
export function failedStepEvents(sql: Sql): Fragment {
  return sql`
    select 'step.failed' as type, fence.user_id, fence.workflow_id, fence.id as execution_id, null::uuid as webhook_delivery_id,
           jsonb_build_object('executionId', fence.id, 'workflowId', fence.workflow_id, 'nodeId', written.node_id, 'status', 'failed',
                              'error', ${boundedError(sql, sql`written.error`)},
                              'startedAt', ${isoTime(sql, sql`written.started_at`)}, 'finishedAt', ${isoTime(sql, sql`written.finished_at`)}) as data
      from fence join written on written.status = 'failed'`;
}

/**
 * The `webhook.rejected` event of a rejected delivery. Requires the statement's CTE `rejected` (the
 * inserted delivery) to return `id`, `user_id`, `workflow_id`, `reason` and `received_at`. `reason`
 * says which check failed, in the words stored on the delivery (webhooks/verify.ts): it names a
 * header or a secret variable, never a secret's value. No body or header of the request is sent.
 */
export function rejectedDeliveryEvent(sql: Sql): Fragment {
  return sql`
    select 'webhook.rejected' as type, rejected.user_id, rejected.workflow_id, null::uuid as execution_id, rejected.id as webhook_delivery_id,
           jsonb_build_object('deliveryId', rejected.id, 'workflowId', rejected.workflow_id, 'reason', rejected.reason,
                              'receivedAt', ${isoTime(sql, sql`rejected.received_at`)}) as data
      from rejected`;
}

/**
 * Errors stored with executions and steps may be as large as ENGINE_MAX_PAYLOAD_BYTES; a message
 * carries one of at most this many bytes of JSON, else its `code`, `nodeId` and the first
 * MAX_EVENT_ERROR_MESSAGE characters of its `message`, marked `truncated` (the whole error is
 * read from the executions API). Each subscription's message stores its own copy.
 */
export const MAX_EVENT_ERROR_BYTES = 8_192;
const MAX_EVENT_ERROR_MESSAGE = 1_000;

function boundedError(sql: Sql, error: Fragment): Fragment {
  return sql`case when ${error} is null or octet_length(${error}::text) <= ${MAX_EVENT_ERROR_BYTES} then ${error}
                  else jsonb_strip_nulls(jsonb_build_object('code', ${error}->'code', 'nodeId', ${error}->'nodeId',
                                                            'message', left(${error}->>'message', ${MAX_EVENT_ERROR_MESSAGE}), 'truncated', true)) end`;
}

/** A timestamptz as the API writes times (Date#toISOString: UTC, milliseconds, `Z`), whatever the session's time zone; null stays null. */
function isoTime(sql: Sql, time: Fragment): Fragment {
  return sql`to_char(${time} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
}
