import { z } from 'zod';
import { defineNode } from './types.js';

/** Builds a new value from the input and earlier outputs with a JSONata expression. */
export const transform = defineNode({
  params: z.object({ expression: z.string().min(1).max(10_000) }).strict(),
  async execute({ expression }, { scope, expressions }) {
    return { output: await expressions.evaluate(expression, scope), input: { expression } };
  },
});
