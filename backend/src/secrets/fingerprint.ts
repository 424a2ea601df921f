import type { Keyring } from './keyring.js';

/**
 * What identifies a creation that carries a secret for its Idempotency-Key (replyIdempotently's
 * `fingerprint`): its body and query, with the secret (the string at `secretPath` in the body, when
 * the body has one there) replaced by its keyed digest, Keyring.fingerprint. The same secret gives
 * the same digest, so a replay still matches and another secret is still another request; but
 * the hash kept for 24 h cannot confirm a guess of the secret to whoever reads the database
 * without SECRETS_KEYS.
 *
 * The digest is keyed by SECRETS_KEYS' first key: once another key comes first, a replay of a
 * secret-carrying creation made before is another request, and answers 409 IDEMPOTENCY_KEY_REUSED
 * (a creation that carries no secret replays as before).
 */
export function secretFingerprint(keyring: Keyring, body: unknown, query: unknown, secretPath: readonly string[] | undefined): unknown {
  return { body: secretPath === undefined ? body : withDigestAt(keyring, body, secretPath), query };
}

/** `value` with the string at `path` replaced by its digest; as it is when there is none there. */
function withDigestAt(keyring: Keyring, value: unknown, path: readonly string[]): unknown {
  const [head, ...rest] = path;
  if (head === undefined) return typeof value === 'string' ? { keyedDigest: keyring.fingerprint(value) } : value;
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, head)) return value;
  const fields = value as Record<string, unknown>;
  return { ...fields, [head]: withDigestAt(keyring, fields[head], rest) };
}
