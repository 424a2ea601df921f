import { z } from 'zod';
import { StepError } from '../errors.js';
import { defineNode } from './types.js';

/** The longest wait, by `ms` or by `until`: a paused run holds its job (no next run) while it waits. */
export const MAX_DELAY_MS = 30 * 24 * 3600 * 1000;
const MAX_DELAY_DAYS = MAX_DELAY_MS / (24 * 3600 * 1000);

/** The time `until` names, or null; the same reading at save and at run. */
function parseUntil(value: unknown): Date | null {
  const until = new Date(String(value));
  return Number.isNaN(until.getTime()) ? null : until;
}

const tooFar = (until: Date, now: Date) => until.getTime() - now.getTime() > MAX_DELAY_MS;
const tooFarMessage = `until must be at most ${MAX_DELAY_DAYS} days ahead (the same bound as ms)`;

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
  // Literals (no template) are known at save; templated values are checked when they run.
  checkAtSave(params, now) {
    if (typeof params.ms === 'string' && !params.ms.includes('{{')) {
      const ms = Number(params.ms);
      if (params.ms.trim() === '' || !Number.isFinite(ms) || ms < 0 || ms > MAX_DELAY_MS) {
        return [{ path: ['ms'], message: `must be a number of milliseconds up to ${MAX_DELAY_MS} (${MAX_DELAY_DAYS} days), or a template` }];
      }
    }
    if (params.until === undefined || params.until.includes('{{')) return [];
    const until = parseUntil(params.until);
    if (until === null) return [{ path: ['until'], message: 'is not a time (use ISO 8601, for example 2030-01-31T09:00:00Z)' }];
    return tooFar(until, now) ? [{ path: ['until'], message: tooFarMessage }] : [];
  },
  async execute(params, { scope, step, now, expressions }) {
    const recorded = (step?.input as { until?: unknown } | null | undefined)?.until;
    let until: Date;
    if (typeof recorded === 'string') {
      until = new Date(recorded);
    } else {
      const resolved = (await expressions.resolveTemplates(params, scope)) as { ms?: unknown; until?: unknown };
      if (resolved.until !== undefined) {
        const parsed = parseUntil(resolved.until);
        if (parsed === null) throw new StepError(`until is not a time: ${JSON.stringify(resolved.until)}`, { retryable: false });
        if (tooFar(parsed, now())) throw new StepError(`${tooFarMessage}; it is ${parsed.toISOString()}`, { retryable: false, code: 'DELAY_TOO_LONG' });
        until = parsed;
      } else {
        const ms = Number(resolved.ms);
        if (!Number.isFinite(ms) || ms < 0) throw new StepError(`ms must be a number of milliseconds up to ${MAX_DELAY_MS}`, { retryable: false });
        if (ms > MAX_DELAY_MS) throw new StepError(`ms must be at most ${MAX_DELAY_MS} (${MAX_DELAY_DAYS} days)`, { retryable: false, code: 'DELAY_TOO_LONG' });
        until = new Date(now().getTime() + ms);
      }
    }
    const input = { until: until.toISOString() };
    if (until.getTime() > now().getTime()) return { waitUntil: until, input };
    return { output: { waitedUntil: until.toISOString() }, input };
  },
});
