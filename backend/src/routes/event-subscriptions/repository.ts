import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import { and, eq, inArray, ne, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { eventMessages, eventSubscriptions, workflows, type EventType } from '../../db/schema/index.js';
import { allowListAdmits, isBlockedAddress, normaliseHostName } from '../../engine/http-request.js';
import { removeIfMatch, updateIfMatch } from '../../lib/conditional-update.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { columnSortKeys, getOwned, isOwned, keysetPlan, listOwned, toPage, type ColumnSortKey, type ListParams, type Page, type SortKeys } from '../../lib/pagination.js';
import { createWithinLimit } from '../../lib/per-user-limit.js';
import { conflict, invalidBody, notFound } from '../../lib/problem.js';
import { eventSubscriptionSecretBinding } from '../../secrets/bindings.js';
import type { Keyring } from '../../secrets/keyring.js';
import type { CreateEventSubscriptionInput, EventDeliveryDto, EventSubscriptionDto, UpdateEventSubscriptionInput } from './schemas.js';

export type EventSubscriptionRow = typeof eventSubscriptions.$inferSelect;
type EventMessageStatus = (typeof eventMessages.$inferSelect)['status'];

/** What a subscription's creation needs from the config. */
export interface EventSubscriptionSettings {
  /** EVENT_SUBSCRIPTIONS_PER_USER. */
  readonly maxPerUser: number;
  /** ENGINE_HTTP_ALLOW: what the SSRF guard lets through although it is internal. */
  readonly allow: readonly string[];
}

/** How long a rotated-out secret still signs (API.md: both secrets sign for 24 h). */
export const PREVIOUS_SECRET_HOURS = 24;

const sortKeys = columnSortKeys(eventSubscriptions, { createdAt: 'timestamp', updatedAt: 'timestamp' });

/** The API shape: everything but the owner, the sealed secrets and the delivery bookkeeping. */
export function present(row: EventSubscriptionRow): EventSubscriptionDto {
  return {
    id: row.id,
    url: row.url,
    events: row.events,
    workflowId: row.workflowId,
    enabled: row.enabled,
    disabledReason: row.disabledReason,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

/** A new signing secret in the Standard Webhooks form: `whsec_` and the base64 of 32 random bytes. */
export function newSigningSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

type SecretColumns = Pick<EventSubscriptionRow, 'secretKeyId' | 'secretCiphertext'>;

/**
 * Seals a signing secret to its subscription and owner (eventSubscriptionSecretBinding). The
 * previous secret of a rotation has the same binding, so it moves to the previous_secret_*
 * columns as it is, without being opened.
 */
function sealedColumns(keyring: Keyring, secret: string, subscription: { readonly id: string; readonly userId: string }): SecretColumns {
  const sealed = keyring.seal(secret, eventSubscriptionSecretBinding(subscription));
  return { secretKeyId: sealed.keyId, secretCiphertext: sealed.ciphertext };
}

// ---------------------------------------------------------------------------------------------
// The SSRF guard at save: engine/http-request.ts's own reading of the blocked ranges and of
// ENGINE_HTTP_ALLOW, so a URL saved here is one that guard would let through, and the other way round.

/**
 * Refuses (400 naming url) a URL that the SSRF guard of `http.request` would refuse whatever DNS
 * answers: an IP literal it blocks (loopback, private, link-local, metadata...), or `localhost`
 * (and its subdomains, RFC 6761), which always resolves to loopback; unless ENGINE_HTTP_ALLOW
 * lets it through, as the guard reads it. Any other host name is judged at each send, after DNS
 * (the delivery worker), so a name whose address changes is never trusted for its past answer.
 */
export function assertDeliverableUrl(url: string, allow: readonly string[]): void {
  const hostName = normaliseHostName(new URL(url).hostname);
  const localhost = hostName === 'localhost' || hostName.endsWith('.localhost');
  // localhost may resolve to either loopback address: refused only when neither is allowed.
  const candidates = localhost ? ['127.0.0.1', '::1'] : net.isIP(hostName) === 0 ? [] : [hostName];
  const blocked = candidates.filter(isBlockedAddress);
  if (blocked.length === 0) return;
  if (blocked.some((address) => allowListAdmits(hostName, address, allow))) return;
  const what = localhost ? `${hostName} (a loopback name)` : hostName;
  throw invalidBody('url', `reaches ${what}, an internal address the SSRF guard refuses (loopback, private, link-local, metadata...); add it to ENGINE_HTTP_ALLOW to allow it`);
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<EventSubscriptionDto>> {
  return listOwned(db, eventSubscriptions, userId, params, { sortKeys, searchColumns: [] }, present);
}

export async function get(db: Db, userId: string, id: string): Promise<EventSubscriptionRow | null> {
  return getOwned(db, eventSubscriptions, userId, id);
}

/**
 * A subscription may name only one of the caller's workflows (404 as jobs answer otherwise). The
 * workflow's row is share-locked until the caller's transaction ends, so it cannot be deleted
 * between this check and the write that refers to it.
 */
async function assertOwnWorkflow(tx: Db, userId: string, workflowId: string): Promise<void> {
  const [row] = await tx
    .select({ id: workflows.id })
    .from(workflows)
    .where(and(eq(workflows.userId, userId), eq(workflows.id, workflowId)))
    .for('key share');
  if (!row) throw notFound('workflow', workflowId);
}

/**
 * Creates a subscription with a new signing secret, within the user's limit (createWithinLimit);
 * returns the row and the secret, which is shown once and stored only sealed. Its id is chosen
 * here because the secret is sealed to it.
 */
export async function create(
  db: Db,
  keyring: Keyring,
  userId: string,
  input: CreateEventSubscriptionInput,
  settings: EventSubscriptionSettings,
): Promise<{ row: EventSubscriptionRow; secret: string }> {
  assertDeliverableUrl(input.url, settings.allow);
  const id = randomUUID();
  const secret = newSigningSecret();
  const values = { id, userId, url: input.url, events: input.events, workflowId: input.workflowId, enabled: input.enabled, ...sealedColumns(keyring, secret, { id, userId }) };
  const { workflowId } = input;
  const row = await createWithinLimit(
    db,
    eventSubscriptions,
    userId,
    { maxPerUser: settings.maxPerUser, noun: 'event subscriptions', code: 'EVENT_SUBSCRIPTION_LIMIT_REACHED' },
    async (tx) => (await tx.insert(eventSubscriptions).values(values).returning())[0],
    workflowId === null ? {} : { underLock: (tx) => assertOwnWorkflow(tx, userId, workflowId) },
  );
  return { row, secret };
}

/**
 * Changes a subscription under a row lock (If-Match first). `enabled: true` clears
 * disabledReason and failingSince: a re-enabled subscription has 5 days of failures again before
 * the service disables it. disabledReason is the service's only: the owner disabling one leaves it
 * as it is (null, unless the service had disabled it already).
 */
export async function update(
  db: Db,
  userId: string,
  id: string,
  input: UpdateEventSubscriptionInput,
  ifMatch: string | undefined,
  settings: EventSubscriptionSettings,
): Promise<EventSubscriptionRow | null> {
  if (input.url !== undefined) assertDeliverableUrl(input.url, settings.allow);
  return updateIfMatch(db, eventSubscriptions, userId, id, ifMatch, async (tx, current) => {
    const workflowId = input.workflowId === undefined ? current.workflowId : input.workflowId;
    if (workflowId !== null && workflowId !== current.workflowId) await assertOwnWorkflow(tx, userId, workflowId);
    return {
      url: input.url ?? current.url,
      events: input.events ?? current.events,
      workflowId,
      enabled: input.enabled ?? current.enabled,
      ...(input.enabled === true ? { disabledReason: null, failingSince: null } : {}),
    };
  });
}

/** Deletes a subscription and, with it, its messages (the foreign key cascades). */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return removeIfMatch(db, eventSubscriptions, userId, id, ifMatch);
}

/**
 * Gives a subscription a new signing secret (under If-Match, as a PATCH; a change of the
 * resource: its version and updatedAt move). The current secret becomes the previous one, which
 * also signs until PREVIOUS_SECRET_HOURS from now (the database's clock, which the delivery
 * workers read too); a previous secret from an earlier rotation is dropped. Null when the caller
 * has no such subscription.
 */
export async function rotateSecret(
  db: Db,
  keyring: Keyring,
  userId: string,
  id: string,
  ifMatch: string | undefined,
): Promise<{ row: EventSubscriptionRow; secret: string } | null> {
  const secret = newSigningSecret();
  const row = await updateIfMatch(db, eventSubscriptions, userId, id, ifMatch, (_tx, current) => ({
    previousSecretKeyId: current.secretKeyId,
    previousSecretCiphertext: current.secretCiphertext,
    previousSecretExpiresAt: current.secretCiphertext === null ? null : sql`now() + make_interval(hours => ${PREVIOUS_SECRET_HOURS})`,
    ...sealedColumns(keyring, secret, current),
  }));
  return row ? { row, secret } : null;
}

// ---------------------------------------------------------------------------------------------
// Deliveries (the subscription's messages)

/** What a list reads of a message: never its payload. */
const deliveryColumns = {
  id: eventMessages.id,
  type: eventMessages.type,
  webhookId: eventMessages.webhookId,
  status: eventMessages.status,
  attempts: eventMessages.attempts,
  lastStatusCode: eventMessages.lastStatusCode,
  lastError: eventMessages.lastError,
  nextAttemptAt: eventMessages.nextAttemptAt,
  createdAt: eventMessages.createdAt,
  deliveredAt: eventMessages.deliveredAt,
};
type DeliveryRow = Pick<typeof eventMessages.$inferSelect, keyof typeof deliveryColumns>;

const deliverySortKeys: SortKeys<DeliveryRow, ColumnSortKey<DeliveryRow>> = {
  createdAt: { column: eventMessages.createdAt, kind: 'timestamp', valueOf: (row) => row.createdAt },
};

/** A message as the API shows it: its next attempt only while one is due (the column keeps the last one). */
export function presentDelivery(row: DeliveryRow): EventDeliveryDto {
  return {
    id: row.id,
    type: row.type,
    webhookId: row.webhookId,
    status: row.status,
    attempts: row.attempts,
    lastStatusCode: row.lastStatusCode,
    lastError: row.lastError,
    nextAttemptAt: row.status === 'pending' ? iso(row.nextAttemptAt) : null,
    createdAt: iso(row.createdAt),
    deliveredAt: isoOrNull(row.deliveredAt),
  };
}

/**
 * A page of one of the caller's subscriptions' messages, newest first unless asked otherwise;
 * null when the caller has no such subscription (another user's is as missing). The index on
 * (subscription, createdAt, id) serves every page and filter.
 */
export async function listDeliveries(
  db: Db,
  userId: string,
  subscriptionId: string,
  params: ListParams & { status?: EventMessageStatus[] | undefined; type?: EventType[] | undefined },
): Promise<Page<EventDeliveryDto> | null> {
  if (!(await isOwned(db, eventSubscriptions, userId, subscriptionId))) return null;
  const plan = keysetPlan(params, deliverySortKeys, eventMessages.id);
  const rows = await db
    .select(deliveryColumns)
    .from(eventMessages)
    .where(
      and(
        eq(eventMessages.subscriptionId, subscriptionId),
        eq(eventMessages.userId, userId),
        params.status ? inArray(eventMessages.status, params.status) : undefined,
        params.type ? inArray(eventMessages.type, params.type) : undefined,
        plan.after,
      ),
    )
    .orderBy(...plan.orderBy)
    .limit(plan.limit)
    .offset(plan.offset);
  return toPage(rows, params, deliverySortKeys, presentDelivery);
}

/**
 * Queues one of the caller's messages, delivered or failed, to be sent again: pending, due now,
 * unlocked; its attempts and last outcome stay as history until the next attempt, and its
 * webhook-id stays (a receiver that had it may drop it as a duplicate). The delivery workers give
 * up on a message 24 h after it was written, so an older one gets this one attempt. One
 * statement, so it cannot race a worker: a pending message (queued, or being sent) is not taken
 * (409 EVENT_DELIVERY_PENDING), nor one of a disabled subscription, which the workers would fail
 * unsent (409 EVENT_SUBSCRIPTION_DISABLED: enable it first). Null when the caller has no such
 * message (another user's is as missing). The caller wakes the workers once this has committed.
 */
export async function retryDelivery(db: Db, userId: string, id: string): Promise<EventDeliveryDto | null> {
  const owned = and(eq(eventMessages.userId, userId), eq(eventMessages.id, id));
  const [row] = await db
    .update(eventMessages)
    .set({ status: 'pending', nextAttemptAt: sql`now()`, lockedUntil: null })
    .from(eventSubscriptions)
    .where(and(owned, ne(eventMessages.status, 'pending'), eq(eventSubscriptions.id, eventMessages.subscriptionId), eq(eventSubscriptions.enabled, true)))
    .returning(deliveryColumns);
  if (row) return presentDelivery(row);
  const [existing] = await db
    .select({ status: eventMessages.status })
    .from(eventMessages)
    .innerJoin(eventSubscriptions, eq(eventSubscriptions.id, eventMessages.subscriptionId))
    .where(owned);
  if (!existing) return null;
  if (existing.status === 'pending') throw conflict('This delivery is pending already: it will be sent at its next attempt.', 'EVENT_DELIVERY_PENDING');
  throw conflict('Its event subscription is disabled: enable it (PATCH enabled true), then send the delivery again.', 'EVENT_SUBSCRIPTION_DISABLED');
}
