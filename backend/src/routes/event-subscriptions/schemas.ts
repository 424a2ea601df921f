import { z } from 'zod';
import { eventMessageStatuses, eventTypes } from '../../db/schema/index.js';
import { Timestamp } from '../../lib/http.js';
import { httpUrl } from '../../lib/http-url.js';
import { commaSeparatedList, listQuery, pageOf } from '../../lib/pagination.js';

export const EventType = z.enum(eventTypes).meta({
  description:
    'execution.completed, execution.failed, execution.cancelled: an execution ended so; step.failed: a step failed for good (after its retries); ' +
    'webhook.rejected: a delivery to a workflow’s webhook failed its signature check.',
});

/**
 * Where messages are POSTed. No credentials (a receiver's credential belongs in its own check of
 * our signature); a query is kept. Whether its host may be reached is judged by the SSRF guard:
 * here only an IP literal or `localhost` (see repository.ts), every other host at each send.
 */
const DeliveryUrl = httpUrl({ withQuery: true })
  .meta({
    description:
      'Absolute http(s) URL without credentials or fragment, at most 2048 characters; stored normalised. It passes the SSRF guard of http.request: ' +
      'an IP literal or localhost that the guard refuses (loopback, private, link-local, metadata...) is 400 here unless ENGINE_HTTP_ALLOW allows it; ' +
      'a host name is checked at every send.',
    example: 'https://hooks.example.com/autonode',
  });

/** Non-empty and without repeats; kept in the order given. */
const Events = z
  .array(EventType)
  .min(1)
  .superRefine((events, ctx) => {
    events.forEach((event, index) => {
      if (events.indexOf(event) !== index) ctx.addIssue({ code: 'custom', path: [index], message: `repeats '${event}'` });
    });
  })
  .meta({ description: 'The event types to send, at least one, each once.', example: ['execution.failed'] });

const WorkflowId = z.uuid().nullable().meta({ description: 'Only this workflow’s events (one of yours: 404 otherwise); null: all of your workflows.' });

export const EventSubscription = z
  .object({
    id: z.uuid(),
    url: z.string(),
    events: z.array(EventType),
    workflowId: z.uuid().nullable().meta({ description: 'The workflow whose events are sent; null: all of the user’s workflows.' }),
    enabled: z.boolean().meta({ description: 'Whether messages are sent. The service disables a subscription whose messages keep failing for 5 days.' }),
    disabledReason: z.string().nullable().meta({ description: 'Why the service disabled it; null while enabled, or when its owner disabled it.' }),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: 'EventSubscription', description: 'Where signed messages (Standard Webhooks) about the user’s executions and webhooks are sent.' });

const secretDescription =
  'The signing secret (Standard Webhooks: whsec_ and the base64 of 32 random bytes), shown in this response only: it is stored encrypted and never returned again.';

export const CreatedEventSubscription = EventSubscription.extend({
  secret: z
    .string()
    .optional()
    .meta({ description: `${secretDescription} A replay of the same Idempotency-Key leaves it out.` }),
}).meta({ id: 'CreatedEventSubscription' });

export const RotatedEventSubscription = EventSubscription.extend({
  secret: z.string().meta({ description: `${secretDescription} The previous secret also signs for 24 h.` }),
}).meta({ id: 'RotatedEventSubscription' });

export const CreateEventSubscriptionBody = z
  .object({ url: DeliveryUrl, events: Events, workflowId: WorkflowId.default(null), enabled: z.boolean().default(true) })
  .strict()
  .meta({ id: 'CreateEventSubscription' });

export const UpdateEventSubscriptionBody = z
  .object({
    url: DeliveryUrl.optional(),
    events: Events.optional(),
    workflowId: WorkflowId.optional(),
    enabled: z.boolean().optional().meta({ description: 'true (re)enables it: clears disabledReason and starts the 5 days of failures afresh; false stops its messages.' }),
  })
  .strict()
  .refine((body) => Object.values(body).some((value) => value !== undefined), { message: 'give at least one field to change' })
  .meta({ id: 'UpdateEventSubscription' });

export const ListEventSubscriptionsQuery = listQuery(['createdAt', 'updatedAt'] as const, {});
export const EventSubscriptionPage = pageOf(EventSubscription, 'EventSubscriptionPage');

export const EventDeliveryStatus = z.enum(eventMessageStatuses).meta({
  description:
    'pending: to be sent (again) at nextAttemptAt; delivered: a 2xx answer came; failed: it kept failing for 24 h, or its subscription was ' +
    'disabled before it was sent (POST /event-deliveries/{id}/retry sends it again).',
});

export const EventDelivery = z
  .object({
    id: z.uuid(),
    type: EventType,
    webhookId: z.string().meta({ description: 'The webhook-id header, the same on every attempt: receivers deduplicate by it.' }),
    status: EventDeliveryStatus,
    attempts: z.number().int(),
    lastStatusCode: z.number().int().nullable().meta({ description: 'The HTTP status of the last attempt; null before one, or when it got no answer.' }),
    lastError: z.string().nullable().meta({ description: 'Why the last attempt failed; null when it did not.' }),
    nextAttemptAt: Timestamp.nullable().meta({ description: 'When it is sent next while pending; null once delivered or failed.' }),
    createdAt: Timestamp,
    deliveredAt: Timestamp.nullable(),
  })
  .meta({ id: 'EventDelivery', description: 'One message of a subscription (never its payload), as it stands.' });

/** Newest first unless sortDirection=asc. */
export const ListEventDeliveriesQuery = listQuery(['createdAt'] as const, { status: commaSeparatedList(eventMessageStatuses), type: commaSeparatedList(eventTypes) });
export const EventDeliveryPage = pageOf(EventDelivery, 'EventDeliveryPage');

export type EventSubscriptionDto = z.infer<typeof EventSubscription>;
export type CreatedEventSubscriptionDto = z.infer<typeof CreatedEventSubscription>;
export type RotatedEventSubscriptionDto = z.infer<typeof RotatedEventSubscription>;
export type CreateEventSubscriptionInput = z.infer<typeof CreateEventSubscriptionBody>;
export type UpdateEventSubscriptionInput = z.infer<typeof UpdateEventSubscriptionBody>;
export type ListEventDeliveriesInput = z.infer<typeof ListEventDeliveriesQuery>;
export type EventDeliveryDto = z.infer<typeof EventDelivery>;
