import { z } from 'zod';
import { StepError } from '../errors.js';
import { defineNode } from './types.js';

/** Chooses a branch: edges leaving it with `when` equal to the result are followed. */
export const condition = defineNode({
  params: z.object({ expression: z.string().min(1).max(10_000) }).strict(),
  async execute({ expression }, { scope, expressions }) {
    const result = await expressions.evaluate(expression, scope);
    if (typeof result !== 'boolean') {
      throw new StepError(`the condition must evaluate to true or false, not ${JSON.stringify(result) ?? 'undefined'}`, { retryable: false });
    }
    return { output: { result }, input: { expression } };
  },
});
