import { createHmac, hash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { Webhook } from 'standardwebhooks';
import type { WebhookVerify } from '../engine/nodes/trigger.js';

/**
 * Whether a delivery proves it comes from the hook's sender (API.md, Inbound webhooks), over the
 * raw bytes as received. `reason` is for the workflow's owner (stored on the rejected delivery);
 * the sender is never told which check failed.
 */
export type Verification = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** The secret a scheme checks with: the opened value of the hook's secret variable, or why there is none. */
export type HookSecret = { readonly value: string } | { readonly missing: string };

const VERIFIED: Verification = { ok: true };
const reject = (reason: string): Verification => ({ ok: false, reason });

/** One value of a header: a repeated header (joined by Node, or an array) is not one signature. */
function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return typeof value === 'string' ? value : undefined;
}

/** Equal, in time that depends on neither value: both sides are hashed to 32 bytes first. */
function constantTimeEqual(a: string, b: string): boolean {
  return timingSafeEqual(hash('sha256', a, 'buffer'), hash('sha256', b, 'buffer'));
}

/**
 * Checks a delivery against its hook's `verify` params. No params, or `none`: every delivery
 * passes. The comparisons take time independent of the secret: `hmac-sha256` and `header` compare
 * fixed-size digests with timingSafeEqual, `standard-webhooks` uses the standardwebhooks package
 * (its own constant-time comparison; timestamps within 5 minutes of now, several space-separated
 * `v1,` signatures of which one must match).
 */
export function verifyDelivery(verify: WebhookVerify | undefined, secret: HookSecret | undefined, body: Buffer, headers: IncomingHttpHeaders): Verification {
  if (verify === undefined || verify.scheme === 'none') return VERIFIED;
  if (secret === undefined) return reject(`no secret was read for the scheme ${verify.scheme}`);
  if ('missing' in secret) return reject(secret.missing);
  switch (verify.scheme) {
    case 'hmac-sha256': {
      const header = headerValue(headers, verify.header);
      if (header === undefined) return reject(`the ${verify.header} header is missing (or sent more than once)`);
      const prefix = verify.prefix ?? '';
      if (!header.startsWith(prefix)) return reject(`the ${verify.header} header does not start with '${prefix}'`);
      const expected = createHmac('sha256', secret.value).update(body).digest('hex');
      return constantTimeEqual(header.slice(prefix.length).toLowerCase(), expected) ? VERIFIED : reject(`the ${verify.header} signature does not match the body`);
    }
    case 'header': {
      const header = headerValue(headers, verify.header);
      if (header === undefined) return reject(`the ${verify.header} header is missing (or sent more than once)`);
      return constantTimeEqual(header, secret.value) ? VERIFIED : reject(`the ${verify.header} header does not match the secret`);
    }
    case 'standard-webhooks': {
      let webhook: Webhook;
      try {
        webhook = new Webhook(secret.value);
      } catch {
        return reject(`the secret variable '${verify.secretVariable}' is not a Standard Webhooks secret (whsec_ and base64)`);
      }
      const signed = {
        'webhook-id': headerValue(headers, 'webhook-id') ?? '',
        'webhook-timestamp': headerValue(headers, 'webhook-timestamp') ?? '',
        'webhook-signature': headerValue(headers, 'webhook-signature') ?? '',
      };
      try {
        // jsonParse: false: the package would otherwise parse the body as JSON, which a form or text is not.
        webhook.verify(body, signed, { jsonParse: false });
        return VERIFIED;
      } catch (error) {
        // The package's messages name the check: missing headers, timestamp too old or new, no matching signature.
        return reject(`standard-webhooks: ${error instanceof Error ? error.message : 'the signature does not verify'}`);
      }
    }
  }
}
