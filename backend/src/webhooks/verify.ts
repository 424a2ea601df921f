import { createHmac, hash, timingSafeEqual } from 'node:crypto';
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

/**
 * A request's headers as sent: each name (lower-case) with every value it came with, in order.
 * Node joins a repeated header into one string (`a, b`) in `request.headers`, which would pass for
 * one value; a repeat is told apart only in `rawHeaders`, from which this is built.
 */
export type SentHeaders = ReadonlyMap<string, readonly string[]>;

/** The headers of `rawHeaders` (name, value, name, value, ...), repeats kept apart. */
export function sentHeaders(rawHeaders: readonly string[]): SentHeaders {
  const headers = new Map<string, string[]>();
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = (rawHeaders[index] as string).toLowerCase();
    const value = rawHeaders[index + 1] as string;
    const values = headers.get(name);
    if (values) values.push(value);
    else headers.set(name, [value]);
  }
  return headers;
}

/** A header's one value, or why it has none (the reason is for the owner). */
type OneHeader = { readonly value: string } | { readonly repeated: boolean; readonly reason: string };

/** The one value of a header: a header sent twice is not one signature. */
function headerValue(headers: SentHeaders, name: string): OneHeader {
  const values = headers.get(name.toLowerCase()) ?? [];
  if (values.length === 1) return { value: values[0] as string };
  if (values.length === 0) return { repeated: false, reason: `the ${name} header is missing` };
  return { repeated: true, reason: `the ${name} header was sent ${values.length} times` };
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
export function verifyDelivery(verify: WebhookVerify | undefined, secret: HookSecret | undefined, body: Buffer, headers: SentHeaders): Verification {
  if (verify === undefined || verify.scheme === 'none') return VERIFIED;
  if (secret === undefined) return reject(`no secret was read for the scheme ${verify.scheme}`);
  if ('missing' in secret) return reject(secret.missing);
  switch (verify.scheme) {
    case 'hmac-sha256': {
      const header = headerValue(headers, verify.header);
      if (!('value' in header)) return reject(header.reason);
      const prefix = verify.prefix ?? '';
      if (!header.value.startsWith(prefix)) return reject(`the ${verify.header} header does not start with '${prefix}'`);
      const expected = createHmac('sha256', secret.value).update(body).digest('hex');
      return constantTimeEqual(header.value.slice(prefix.length).toLowerCase(), expected) ? VERIFIED : reject(`the ${verify.header} signature does not match the body`);
    }
    case 'header': {
      const header = headerValue(headers, verify.header);
      if (!('value' in header)) return reject(header.reason);
      return constantTimeEqual(header.value, secret.value) ? VERIFIED : reject(`the ${verify.header} header does not match the secret`);
    }
    case 'standard-webhooks': {
      let webhook: Webhook;
      try {
        webhook = new Webhook(secret.value);
      } catch {
        return reject(`the secret variable '${verify.secretVariable}' is not a Standard Webhooks secret (whsec_ and base64)`);
      }
      const signed: Record<string, string> = {};
      for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
        const header = headerValue(headers, name);
        // A missing one is left out: the package says so.
        if ('value' in header) signed[name] = header.value;
        else if (header.repeated) return reject(header.reason);
      }
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
