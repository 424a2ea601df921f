import { Webhook } from 'standardwebhooks';

/** The Standard Webhooks headers of one attempt to send a message. */
export interface SignedHeaders {
  readonly 'webhook-id': string;
  readonly 'webhook-timestamp': string;
  readonly 'webhook-signature': string;
}

/**
 * Signs `body` (the exact bytes sent) as the Standard Webhooks spec says: `v1,<base64 HMAC-SHA256
 * of "id.timestamp.body">`, one per secret, space-separated (the current secret first; during a
 * rotation's overlap the previous one too), so a receiver that still knows only one of them
 * verifies. `webhook-timestamp` is the attempt's, in seconds: signed anew on every attempt, with
 * the same `webhook-id`.
 */
export function signMessage(secrets: readonly string[], webhookId: string, at: Date, body: string): SignedHeaders {
  if (secrets.length === 0) throw new Error('a message is signed with at least one secret');
  return {
    'webhook-id': webhookId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': secrets.map((secret) => new Webhook(secret).sign(webhookId, at, body)).join(' '),
  };
}
