import type { Sql } from '../db/client.js';
import type { SealedSecret } from '../secrets/keyring.js';

/**
 * The delivery workers' statements over the outbox (`event_messages`), their attempts and their
 * subscriptions. Every process's workers share them: PostgreSQL is the queue.
 *
 * Invariants:
 * - A message is sent while it is `pending`. A claim holds it with a lease: `locked_until` and
 *   `next_attempt_at` both become claim time + DELIVERY_LEASE_MS, and `attempts` grows by one. So a
 *   message in flight is not due; a worker killed while sending leaves it to be claimed again once
 *   the lease has passed (the same `webhook_id`: receivers deduplicate on it).
 * - Every message in flight therefore has `next_attempt_at` within one lease of now, and a
 *   `locked_until` still ahead: that is how a claim counts, along `event_messages_due_idx`, the
 *   attempts in flight for each subscription over every process.
 * - Claims take a transaction-scoped advisory lock first, so they run one at a time across all
 *   processes and each one's count sees every earlier claim: no subscription ever has more than
 *   `perSubscription` attempts in flight. A claim is a few milliseconds.
 * - An attempt's outcome is recorded only by the claim that sent it (`attempts` as claimed, still
 *   `pending`); a late worker whose lease passed and whose message was claimed again records the
 *   attempt row only.
 * - A subscription's `failing_since` is set by its first failed attempt and cleared by a
 *   successful one; a failure when it is more than DISABLE_AFTER_MS old disables the subscription.
 *   Due messages of a disabled subscription end `failed` when a claim comes across them.
 */

/** The spec's limit: a receiver that has not answered 2xx after this long has failed the attempt. */
export const DELIVERY_TIMEOUT_MS = 10_000;
/** A claim's hold on a message: the attempt's longest time plus room to record its outcome. */
export const DELIVERY_LEASE_MS = DELIVERY_TIMEOUT_MS + 5_000;
/** The longest wait between two attempts (the exponential backoff's ceiling). */
export const RETRY_MAX_MS = 60 * 60_000;
/** A message is retried until it is this old; then its next failure is its last (API.md: at least 24 h). */
export const GIVE_UP_AFTER_MS = 24 * 60 * 60_000;
/** A subscription whose every attempt failed for this long is disabled. */
export const DISABLE_AFTER_MS = 5 * 24 * 60 * 60_000;
/** Of a receiver's answer, the first this many bytes are read and recorded with the attempt. */
export const RESPONSE_HEAD_BYTES = 1_024;

/** Candidates a claim reads per free slot: past one subscription's due messages, to the next subscription's. */
const CANDIDATES_PER_SLOT = 4;
/** The advisory lock that makes claims take turns (the key is this text's hash). */
const CLAIM_LOCK = 'autonode:event-delivery-claim';
const DISABLED_SUBSCRIPTION = 'not sent: the subscription is disabled';

const milliseconds = (ms: number) => `${ms} milliseconds`;

/** A claimed message, with what sending it needs. */
export interface ClaimedMessage {
  readonly id: string;
  readonly subscriptionId: string;
  /** The subscription's owner: its secrets are sealed to it. */
  readonly userId: string;
  readonly webhookId: string;
  /** The JSON body, exactly as signed and sent. */
  readonly body: string;
  /** This attempt's number (1 for the first): the claim fences the recording with it. */
  readonly attempt: number;
  readonly url: string;
  /** Null when the subscription holds none (it cannot be signed). */
  readonly secret: SealedSecret | null;
  /** The secret before the last rotation, while it still signs (previous_secret_expires_at ahead); else null. */
  readonly previousSecret: SealedSecret | null;
}

/** What one attempt came to. `ok`: the receiver answered 2xx in time. */
export interface AttemptOutcome {
  readonly ok: boolean;
  readonly statusCode: number | null;
  readonly latencyMs: number;
  readonly error: string | null;
  readonly responseHead: string | null;
}

/** A message's state once its attempt is recorded; null when the attempt was no longer its claim's to record. */
export interface RecordedAttempt {
  readonly status: 'pending' | 'delivered' | 'failed';
  /** The subscription was disabled by this failure. */
  readonly disabledSubscription: boolean;
}

/** Whether a claim could find anything: one probe of the due index, the idle loop's only query. */
export async function hasDueMessages(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ due: boolean }[]>`
    select exists (select 1 from event_messages
                    where status = 'pending' and next_attempt_at <= now() and (locked_until is null or locked_until <= now())) as due`;
  return row?.due ?? false;
}

interface ClaimRow {
  id: string;
  subscriptionId: string;
  userId: string;
  webhookId: string;
  body: string;
  attempt: number;
  url: string;
  secretKeyId: string | null;
  secretCiphertext: string | null;
  previousKeyId: string | null;
  previousCiphertext: string | null;
}

/**
 * Claims up to `limit` due messages, oldest due first (FOR UPDATE SKIP LOCKED), leaving out
 * subscriptions that have `perSubscription` attempts in flight already and users (all their
 * subscriptions) that have `perUser`, and giving none more than it has room for: one user's slow
 * receivers hold at most `perUser` of the workers, whatever the number of their subscriptions.
 * Due messages of disabled subscriptions it comes across end `failed`.
 */
export async function claimMessages(sql: Sql, limit: number, perSubscription: number, perUser: number): Promise<ClaimedMessage[]> {
  const lease = milliseconds(DELIVERY_LEASE_MS);
  const rows = await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtextextended(${CLAIM_LOCK}, 0))`;
    // The window's second of slack covers the rounding of stored times to milliseconds.
    return tx<ClaimRow[]>`
      with in_flight as (
        select subscription_id, user_id from event_messages
         where status = 'pending' and next_attempt_at > now() and next_attempt_at <= now() + ${lease}::interval + interval '1 second'
           and locked_until > now()),
      busy as (select subscription_id, count(*)::int as n from in_flight group by subscription_id),
      busy_users as (select user_id, count(*)::int as n from in_flight group by user_id),
      candidates as (
        select m.id, m.subscription_id, m.user_id, m.next_attempt_at from event_messages m
         where m.status = 'pending' and m.next_attempt_at <= now() and (m.locked_until is null or m.locked_until <= now())
           and not exists (select 1 from busy b where b.subscription_id = m.subscription_id and b.n >= ${perSubscription})
           and not exists (select 1 from busy_users u where u.user_id = m.user_id and u.n >= ${perUser})
         order by m.next_attempt_at
         limit ${limit * CANDIDATES_PER_SLOT}
         for update of m skip locked),
      ranked as (
        select c.id, c.next_attempt_at, s.enabled,
               row_number() over (partition by c.subscription_id order by c.next_attempt_at) + coalesce(b.n, 0) as slot,
               row_number() over (partition by c.user_id order by c.next_attempt_at) + coalesce(u.n, 0) as user_slot
          from candidates c
          join event_subscriptions s on s.id = c.subscription_id
          left join busy b on b.subscription_id = c.subscription_id
          left join busy_users u on u.user_id = c.user_id),
      abandoned as (
        update event_messages set status = 'failed', locked_until = null, last_error = ${DISABLED_SUBSCRIPTION}
         where id in (select id from ranked where not enabled)),
      claimed as (
        update event_messages m
           set attempts = m.attempts + 1, locked_until = now() + ${lease}::interval, next_attempt_at = now() + ${lease}::interval
         where m.id in (select id from ranked where enabled and slot <= ${perSubscription} and user_slot <= ${perUser} order by next_attempt_at limit ${limit})
        returning m.id, m.subscription_id, m.webhook_id, m.payload, m.attempts)
      select c.id, c.subscription_id as "subscriptionId", s.user_id as "userId", c.webhook_id as "webhookId", c.payload::text as body,
             c.attempts as attempt, s.url, s.secret_key_id as "secretKeyId", s.secret_ciphertext as "secretCiphertext",
             case when s.previous_secret_expires_at > now() then s.previous_secret_key_id end as "previousKeyId",
             case when s.previous_secret_expires_at > now() then s.previous_secret_ciphertext end as "previousCiphertext"
        from claimed c join event_subscriptions s on s.id = c.subscription_id`;
  });
  return rows.map((row) => ({
    id: row.id,
    subscriptionId: row.subscriptionId,
    userId: row.userId,
    webhookId: row.webhookId,
    body: row.body,
    attempt: row.attempt,
    url: row.url,
    secret: sealed(row.secretKeyId, row.secretCiphertext),
    previousSecret: sealed(row.previousKeyId, row.previousCiphertext),
  }));
}

const sealed = (keyId: string | null, ciphertext: string | null): SealedSecret | null => (keyId !== null && ciphertext !== null ? { keyId, ciphertext } : null);

/**
 * Records one attempt (always, while the message exists) and, if the attempt is still its claim's,
 * its outcome, in one statement: 2xx delivers the message and clears the subscription's
 * `failing_since`; anything else schedules the next attempt `retryDelayMs` from now, or fails the
 * message when it is GIVE_UP_AFTER_MS old or its subscription is disabled, sets `failing_since` if
 * it was not, and disables the subscription (a new version, and `disabled_reason`) when it has
 * been failing for DISABLE_AFTER_MS.
 */
export async function recordAttempt(sql: Sql, message: ClaimedMessage, outcome: AttemptOutcome, retryDelayMs: number): Promise<RecordedAttempt | null> {
  const { ok } = outcome;
  const disabledReason = `every attempt to send its messages failed for 5 days (the last: ${outcome.error ?? `status ${outcome.statusCode ?? 'unknown'}`})`;
  // Read against the subscription row as the update finds it (a concurrent success may just have cleared it).
  // Never null (a subscription not failing yet has no failing_since): it decides enabled, which is not null.
  const disabling = sql`(s.enabled and not ${ok}::boolean and coalesce(s.failing_since <= now() - ${milliseconds(DISABLE_AFTER_MS)}::interval, false))`;
  const [row] = await sql<{ status: RecordedAttempt['status']; disabled: boolean }[]>`
    with attempt as (
      insert into event_attempts (message_id, status_code, latency_ms, error, response_head)
      select id, ${outcome.statusCode}::int, ${Math.round(outcome.latencyMs)}::int, ${outcome.error}::text, ${outcome.responseHead}::text
        from event_messages where id = ${message.id}::uuid
      returning 1),
    mine as (
      select m.id, m.subscription_id, m.created_at, s.enabled
        from event_messages m join event_subscriptions s on s.id = m.subscription_id
       where m.id = ${message.id}::uuid and m.attempts = ${message.attempt}::int and m.status = 'pending'),
    subscription as (
      -- Written only when the outcome changes it: a healthy subscription's row is not rewritten per message.
      update event_subscriptions s
         set failing_since = case when ${ok}::boolean then null else coalesce(s.failing_since, now()) end,
             enabled = s.enabled and not ${disabling},
             disabled_reason = case when ${disabling} then ${disabledReason}::text else s.disabled_reason end,
             version = s.version + case when ${disabling} then 1 else 0 end,
             updated_at = case when ${disabling} then now() else s.updated_at end
        from mine
       where s.id = mine.subscription_id
         and case when ${ok}::boolean then s.failing_since is not null else s.failing_since is null or ${disabling} end
      returning s.enabled, mine.enabled as was_enabled),
    settled as (
      update event_messages m
         set status = case when ${ok}::boolean then 'delivered'::event_message_status
                           when mine.created_at <= now() - ${milliseconds(GIVE_UP_AFTER_MS)}::interval
                             or not coalesce((select enabled from subscription), mine.enabled) then 'failed'::event_message_status
                           else 'pending'::event_message_status end,
             delivered_at = case when ${ok}::boolean then now() end,
             next_attempt_at = case when ${ok}::boolean then m.next_attempt_at else now() + ${milliseconds(retryDelayMs)}::interval end,
             locked_until = null,
             last_status_code = ${outcome.statusCode}::int,
             last_error = ${ok ? null : outcome.error}::text
        from mine
       where m.id = mine.id
      returning m.status)
    select settled.status, coalesce((select was_enabled and not enabled from subscription), false) as disabled
      from settled`;
  return row ? { status: row.status, disabledSubscription: row.disabled } : null;
}

/**
 * Gives a claimed message back at once, its attempt unfinished (the worker is stopping): due now,
 * for any worker. Its `attempts` keeps the interrupted attempt. Nothing when it is no longer this claim's.
 */
export async function releaseMessage(sql: Sql, message: ClaimedMessage): Promise<void> {
  await sql`
    update event_messages set locked_until = null, next_attempt_at = now()
     where id = ${message.id}::uuid and attempts = ${message.attempt} and status = 'pending'`;
}
