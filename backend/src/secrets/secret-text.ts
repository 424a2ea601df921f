import { z } from 'zod';
import { wellFormed } from '../lib/well-formed-text.js';

/** The most a secret may take (API.md: 8 KiB), in UTF-8 bytes: what is sealed, stored and sent. */
export const SECRET_MAX_BYTES = 8192;

/**
 * A secret's value, as every resource that stores one takes it (a connection's `auth.secret`, a
 * secret variable's `value`): a non-empty string of valid Unicode, at most SECRET_MAX_BYTES in
 * UTF-8. Messages name the rule, never the value.
 */
export const SecretText = wellFormed(
  z
    .string({ error: 'must be a string' })
    .min(1, 'must not be empty')
    .superRefine((text, context) => {
      const bytes = Buffer.byteLength(text, 'utf8');
      if (bytes > SECRET_MAX_BYTES) {
        context.addIssue({ code: 'custom', message: `is ${bytes} bytes as UTF-8; at most ${SECRET_MAX_BYTES} (8 KiB) are allowed` });
      }
    }),
  // For the OpenAPI document: the length bound the byte bound implies (no UTF-16 code unit takes less than one UTF-8 byte).
).meta({ maxLength: SECRET_MAX_BYTES });
