import type { z } from 'zod';

/** A UTF-16 surrogate without its pair. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * `schema`, refusing text that holds a lone surrogate. Everything the service stores or sends is
 * UTF-8 (PostgreSQL text, a sealed secret, a header, a query string), and UTF-8 cannot encode a
 * lone surrogate: it would become U+FFFD without a word, so the value kept would not be the one
 * sent. The message never quotes the text: it may be a secret.
 */
export function wellFormed<Schema extends z.ZodType<string>>(schema: Schema): Schema {
  return schema.refine((text) => !LONE_SURROGATE.test(text), 'must be valid Unicode text (it contains an unpaired surrogate)');
}
