import { z } from 'zod';
import { webhookDeliveryStatuses } from '../../db/schema/index.js';
import { Timestamp } from '../../lib/http.js';
import { commaSeparatedList, listQuery, pageOf } from '../../lib/pagination.js';

const DeliveryStatus = z.enum(webhookDeliveryStatuses).meta({
  description:
    'accepted: it started its execution; rejected: it started nothing and can never be replayed (its signature did not verify, its run ' +
    'input was too large, or its owner could start no run then: see reason); ' +
    'duplicate: a repeated webhook-id or Idempotency-Key within 24 h, which started nothing (its executionId is the first delivery’s).',
});

const Delivery = z
  .object({
    id: z.uuid(),
    workflowId: z.uuid(),
    status: DeliveryStatus,
    executionId: z.uuid().nullable().meta({ description: 'The execution it started (accepted) or the first delivery’s (duplicate); null when rejected.' }),
    receivedAt: Timestamp,
    contentType: z.string().nullable().meta({ description: 'The request’s Content-Type as sent.' }),
    bodyBytes: z.number().int().meta({ description: 'The size of the raw body as received, in bytes (of a rejected delivery too, whose body is not kept).' }),
    reason: z.string().nullable().meta({ description: 'Why it was rejected (for the owner only: the sender was told nothing that says why).' }),
  })
  .meta({ id: 'WebhookDelivery', description: 'A request to a workflow’s webhook URL, as stored.' });

/** A body that is not UTF-8 text, as http.request records one (API.md, Node types). */
const BinaryBody = z
  .object({ base64: z.string(), contentType: z.string().meta({ description: 'The request’s Content-Type, or application/octet-stream when it had none.' }) })
  .meta({ id: 'BinaryBody' });

export const DeliveryDetail = Delivery.extend({
  headers: z
    .record(z.string(), z.string())
    .meta({ description: 'The request’s headers, lower-case, as the workflow saw them: credentials, cookies and signatures were never stored.' }),
  body: z
    .union([z.string(), BinaryBody])
    .nullable()
    .meta({
      description:
        'The raw body exactly as received: a string when it is valid UTF-8 (a byte-order mark included), else `{ base64, contentType }`. ' +
        'null for a rejected delivery: its body is not kept (bodyBytes says how large it was), so unverified senders cannot fill its owner’s storage.',
    }),
}).meta({ id: 'WebhookDeliveryDetail' });

/** Newest first unless sortDirection=asc. */
export const ListDeliveriesQuery = listQuery(['receivedAt'] as const, { status: commaSeparatedList(webhookDeliveryStatuses) });
export const DeliveryPage = pageOf(Delivery, 'WebhookDeliveryPage');

export type DeliveryDto = z.infer<typeof Delivery>;
export type DeliveryDetailDto = z.infer<typeof DeliveryDetail>;
export type BinaryBodyDto = z.infer<typeof BinaryBody>;
