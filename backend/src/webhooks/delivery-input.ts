import type { IncomingHttpHeaders } from 'node:http';
import type { WebhookVerify } from '../engine/nodes/trigger.js';

/** What a delivery's request was, as stored (webhook_deliveries) and as replayed. */
export interface DeliveryRequest {
  readonly method: string;
  /** Already without credentials and signatures (visibleHeaders). */
  readonly headers: Readonly<Record<string, string>>;
  readonly query: Readonly<Record<string, unknown>>;
  readonly contentType: string | null;
  readonly body: Buffer;
  readonly receivedAt: Date;
}

/** The trigger's output and the execution's input (API.md, `trigger.webhook`). */
export interface WebhookTriggerInput {
  readonly method: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly query: Readonly<Record<string, unknown>>;
  readonly body: unknown;
  readonly receivedAt: string;
}

/** The media types a hook takes (415 for any other): JSON, form posts, and text. */
type DeliveryBodyKind = 'json' | 'form' | 'text';

export function bodyKindOf(contentType: string | null | undefined): DeliveryBodyKind | undefined {
  const mediaType = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (mediaType === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(mediaType)) return 'json';
  if (mediaType === 'application/x-www-form-urlencoded') return 'form';
  if (mediaType.startsWith('text/')) return 'text';
  return undefined;
}

/**
 * Headers that prove who sent a request or carry a credential: never stored, never shown to the
 * workflow. The verifying header of the hook's own scheme is added to these.
 */
const CREDENTIAL_HEADERS: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'x-api-key',
  'idempotency-key',
  'webhook-signature',
  'x-hub-signature',
  'x-hub-signature-256',
  'stripe-signature',
  'x-slack-signature',
  'x-twilio-signature',
  'x-shopify-hmac-sha256',
  'x-gitlab-token',
  'x-signature',
]);

/** The request's headers as the workflow sees them: lower-case names, one string each, no credentials or signatures. */
export function visibleHeaders(headers: IncomingHttpHeaders, verify: WebhookVerify | undefined): Record<string, string> {
  const hidden = new Set(CREDENTIAL_HEADERS);
  if (verify && 'header' in verify) hidden.add(verify.header.toLowerCase());
  const visible: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value === undefined || hidden.has(lower) || lower.endsWith('-signature')) continue;
    visible[lower] = Array.isArray(value) ? value.join(', ') : value;
  }
  return visible;
}

/**
 * A form body's fields; a repeated field is an array of its values, in order. Linear in the
 * body: a repeat appends in place (copying the array at each repeat made a body of one field
 * repeated 40,000 times block the process for seconds, before any signature was checked).
 */
function formFields(text: string): Record<string, string | string[]> {
  const fields: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  for (const [name, value] of new URLSearchParams(text)) {
    const existing = fields[name];
    if (existing === undefined) fields[name] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else fields[name] = [existing, value];
  }
  return { ...fields };
}

/** U+FEFF, a byte-order mark: UTF-8 senders may start a body with it, and JSON.parse refuses it. */
const BYTE_ORDER_MARK = '\ufeff';

/**
 * The body as the workflow sees it: JSON parsed (after a leading byte-order mark, which is no part
 * of the JSON text), a form as its fields, text as a string. Throws SyntaxError for JSON that does
 * not parse (the endpoint answers 400 before storing anything).
 */
function parseDeliveryBody(contentType: string | null, body: Buffer): unknown {
  const kind = bodyKindOf(contentType);
  const text = body.toString('utf8');
  if (kind === 'json') {
    const json = text.startsWith(BYTE_ORDER_MARK) ? text.slice(BYTE_ORDER_MARK.length) : text;
    return json.length === 0 ? null : (JSON.parse(json) as unknown);
  }
  if (kind === 'form') return formFields(text);
  return text;
}

/** The execution input of a delivery: the same for its first run and every replay. */
export function triggerInputOf(request: DeliveryRequest): WebhookTriggerInput {
  return {
    method: request.method,
    headers: request.headers,
    query: request.query,
    body: parseDeliveryBody(request.contentType, request.body),
    receivedAt: request.receivedAt.toISOString(),
  };
}
