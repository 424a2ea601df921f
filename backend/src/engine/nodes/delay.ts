import { z } from 'zod';
import { StepError } from '../errors.js';
import { resolveTemplates } from '../expressions.js';
import { defineNode } from './types.js';

const MAX_DELAY_MS = 30 * 24 * 3600 * 1000;

/**
 * Waits `ms` or until a time. Durable: the chosen time is recorded in the step's input, the
 * execution is paused (no worker held) and claimed again when it is due, even after a restart.
 */
export const delay = defineNode({
  params: z
    .object({
      ms: z.union([z.number().int().min(0).max(MAX_DELAY_MS), z.string().max(200)]).optional(),
      until: z.string().max(200).optional(),
    })
    .strict()
    .refine((params) => (params.ms === undefined) !== (params.until === undefined), { message: 'give exactly one of ms or until' }),
  async execute(params, { scope, step, now }) {
    const recorded = (step?.input as { until?: unknown } | null | undefined)?.until;
    let until: Date;
    if (typeof recorded === 'string') {
      until = new Date(recorded);
    } else {
      const resolved = (await resolveTemplates(params, scope)) as { ms?: unknown; until?: unknown };
      if (resolved.until !== undefined) {
        until = new Date(String(resolved.until));
        if (Number.isNaN(until.getTime())) throw new StepError(`until is not a time: ${JSON.stringify(resolved.until)}`, { retryable: false });
      } else {
        const ms = Number(resolved.ms);
        if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DELAY_MS) throw new StepError(`ms must be a number of milliseconds up to ${MAX_DELAY_MS}`, { retryable: false });
        until = new Date(now().getTime() + ms);
      }
    }
    const input = { until: until.toISOString() };
    if (until.getTime() > now().getTime()) return { waitUntil: until, input };
    return { output: { waitedUntil: until.toISOString() }, input };
  },
});
