import { text } from 'drizzle-orm/pg-core';

/**
 * The two columns of a stored secret (src/secrets/keyring.ts): the id of the SECRETS_KEYS key that
 * wraps it, and the sealed envelope (wrapped data key, then the AES-256-GCM ciphertext of the value)
 * as base64url text. Never the value: null in both when the row holds no secret.
 */
export const sealedSecretColumns = () => ({
  secretKeyId: text('secret_key_id'),
  secretCiphertext: text('secret_ciphertext'),
});
