import { z } from 'zod';
import { executionStatuses } from '../db/schema/index.js';

export const HookParams = z.object({ hookId: z.string().meta({ description: "The workflow's webhook id (its `webhook.hookId`)" }) }).strict();

/** A sender's delivery id: it keys deduplication, so it is stored and indexed (bounded, printable). */
const deliveryKey = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
  .optional();

export const HookHeaders = z.looseObject({
  'webhook-id': deliveryKey.meta({ description: 'Standard Webhooks message id: a repeat within 24 h answers as the first did and starts nothing.' }),
  'idempotency-key': deliveryKey.meta({ description: 'Used as the webhook-id when there is none.' }),
});

export const HookAccepted = z
  .object({
    executionId: z.uuid(),
    deliveryId: z.uuid().meta({ description: 'For a repeated webhook-id or Idempotency-Key: the first delivery.' }),
  })
  .meta({ id: 'HookAccepted' });

export const HookCompleted = z
  .object({
    executionId: z.uuid(),
    status: z.enum(executionStatuses),
    output: z.unknown(),
    error: z.unknown().optional().meta({ description: 'When the run failed or was cancelled.' }),
  })
  .meta({ id: 'HookCompleted' });
export type HookCompleted = z.infer<typeof HookCompleted>;
