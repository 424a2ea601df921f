import { z } from 'zod';
import { performHttpRequest, type HttpRequestParams } from '../http-request.js';
import { defineNode } from './types.js';

const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** Calls an HTTP endpoint; values may refer to earlier outputs through `{{ }}` templates. */
export const httpRequest = defineNode({
  params: z
    .object({
      method: z.enum(methods),
      url: z.string().min(1).max(2048),
      headers: z.record(z.string(), z.string()).optional(),
      body: z.unknown().optional(),
      timeoutMs: z.number().int().min(1).max(300_000).optional(),
    })
    .strict(),
  async execute(params, { scope, signal, http, expressions }) {
    const resolved = (await expressions.resolveTemplates(params, scope)) as HttpRequestParams;
    const output = await performHttpRequest(resolved, http, signal);
    // The recorded input leaves header values out: they often carry credentials.
    const { headers, ...visible } = resolved;
    return { output, input: { ...visible, headers: headers ? Object.keys(headers) : undefined } };
  },
});
