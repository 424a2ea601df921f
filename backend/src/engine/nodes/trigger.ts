import { z } from 'zod';
import { defineNode } from './types.js';

/** The entry of a run started by the API: its output is the execution input. */
export const manualTrigger = defineNode({
  params: z.object({}).strict(),
  async execute(_params, { scope }) {
    return { output: scope.input ?? null };
  },
});

/** The entry of a run started by a job: the execution input is `{ jobId, scheduledAt }`. */
export const scheduleTrigger = defineNode({
  params: z.object({}).strict(),
  async execute(_params, { scope }) {
    return { output: scope.input ?? null };
  },
});

const headerName = z
  .string()
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/, 'an HTTP header name')
  .transform((name) => name.toLowerCase());
const secretVariable = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'the key of one of your secret variables');

/** How a delivery proves it comes from the sender (API.md, Inbound webhooks); the secret is a secret variable. */
export const WebhookVerify = z.discriminatedUnion('scheme', [
  z.object({ scheme: z.literal('none') }).strict(),
  z
    .object({
      scheme: z.literal('hmac-sha256'),
      header: headerName.meta({ description: 'Where the hex HMAC-SHA256 of the raw body is, e.g. x-hub-signature-256' }),
      prefix: z.string().max(64).optional().meta({ description: 'Before the hex digest, e.g. sha256=' }),
      secretVariable,
    })
    .strict(),
  z.object({ scheme: z.literal('standard-webhooks'), secretVariable }).strict(),
  z.object({ scheme: z.literal('header'), header: headerName, secretVariable }).strict(),
]);
export type WebhookVerify = z.infer<typeof WebhookVerify>;

export const WebhookTriggerParams = z
  .object({
    verify: WebhookVerify.optional(),
    respond: z.enum(['accepted', 'completed']).optional().meta({ description: 'completed: answer with the run\'s output when it ends within timeoutMs' }),
    timeoutMs: z.number().int().min(1).max(30_000).optional().meta({ description: 'How long respond: completed waits (default 10000)' }),
  })
  .strict();
export type WebhookTriggerParams = z.infer<typeof WebhookTriggerParams>;

/** The entry of a run started by a webhook delivery: the execution input is `{ method, headers, query, body, receivedAt }`. */
export const webhookTrigger = defineNode({
  params: WebhookTriggerParams,
  async execute(_params, { scope }) {
    return { output: scope.input ?? null };
  },
});
