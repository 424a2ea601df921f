import { z } from 'zod';
import { executionStatuses } from '../db/schema/index.js';

/** The hook route: the logger writes its requests' URL as this pattern, never with the hook id (logger.ts). */
export const HOOK_ROUTE = '/api/hooks/:hookId';

/**
 * What a hook id can be: 16 random bytes in base64url, 22 characters (newHookId,
 * routes/workflows/repository.ts). Anything else is answered 404 without a query.
 */
export const HOOK_ID = /^[A-Za-z0-9_-]{22}$/;

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
    output: z.unknown().meta({ description: 'The run’s output; null unless it completed. Its error is not sent: the owner reads it through the API.' }),
  })
  .meta({ id: 'HookCompleted' });
export type HookCompleted = z.infer<typeof HookCompleted>;
