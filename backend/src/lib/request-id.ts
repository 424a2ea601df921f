import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

// A caller-chosen id is honoured only if it is short and plain, so it cannot forge log lines or bloat them.
const acceptableRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

/** Fastify's genReqId: the caller's `x-request-id` when sane, else a fresh UUID. */
export function requestIdFrom(request: IncomingMessage): string {
  const supplied = request.headers['x-request-id'];
  return typeof supplied === 'string' && acceptableRequestId.test(supplied) ? supplied : randomUUID();
}
