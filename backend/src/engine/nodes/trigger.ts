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
