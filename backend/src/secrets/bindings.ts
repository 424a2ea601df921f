import type { SecretBinding } from './keyring.js';

/**
 * The origin (scheme, host and port) a connection's secret is bound to: the one its baseUrl names.
 * The engine sends a connection's credentials to that origin only (src/engine/connection-target.ts),
 * so binding it into the sealed secret makes a base_url rewritten in the database alone (to
 * another origin, or to something that is not a URL) leave the secret unreadable rather than send
 * it elsewhere. A base URL that does not parse gets a scope no sealed secret has: stored base URLs
 * are absolute http(s) URLs, whose origin is never the text below.
 */
export function connectionSecretScope(baseUrl: string): string {
  try {
    return new URL(baseUrl).origin;
  } catch {
    return `not a URL: ${baseUrl}`;
  }
}

/** Where a connection's secret is sealed: its row, its owner and its baseUrl's origin. */
export function connectionSecretBinding(connection: { readonly id: string; readonly userId: string; readonly baseUrl: string }): SecretBinding {
  return { table: 'connections', rowId: connection.id, userId: connection.userId, scope: connectionSecretScope(connection.baseUrl) };
}

/** Where a secret variable is sealed: its row and its owner (it may be sent anywhere a workflow names it). */
export function variableSecretBinding(variable: { readonly id: string; readonly userId: string }): SecretBinding {
  return { table: 'variables', rowId: variable.id, userId: variable.userId };
}

/**
 * Where an event subscription's signing secrets are sealed: its row and its owner. The current and
 * the previous secret (after a rotation) share it, so a rotation moves the current one to the
 * previous_secret_* columns as it is; the URL is not bound in: a receiver's URL may change while
 * its secret stays.
 */
export function eventSubscriptionSecretBinding(subscription: { readonly id: string; readonly userId: string }): SecretBinding {
  return { table: 'event_subscriptions', rowId: subscription.id, userId: subscription.userId };
}
