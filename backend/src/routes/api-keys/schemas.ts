import { z } from 'zod';
import { Timestamp, TimestampInput } from '../../lib/http.js';
import { pageOf, searchableListQuery } from '../../lib/pagination.js';

export const ApiKey = z
  .object({
    id: z.uuid(),
    name: z.string(),
    prefix: z.string().meta({ description: 'The first characters of the key, to tell keys apart.' }),
    expiresAt: Timestamp.nullable(),
    lastUsedAt: Timestamp.nullable(),
    createdAt: Timestamp,
  })
  .meta({ id: 'ApiKey' });

export const CreatedApiKey = ApiKey.extend({
  key: z
    .string()
    .optional()
    .meta({
      description:
        'The secret, shown in this response only. A replay of the same Idempotency-Key omits it: it is never stored in plaintext.',
    }),
}).meta({ id: 'CreatedApiKey' });

export const CreateApiKeyBody = z
  .object({
    name: z.string().trim().min(1).max(100),
    expiresAt: TimestampInput.optional()
      .refine((value) => value === undefined || Date.parse(value) > Date.now(), { message: 'must be in the future' })
      .meta({ description: 'When the key stops working; omit for a key that does not expire.' }),
  })
  .strict()
  .meta({ id: 'CreateApiKey' });

export const apiKeySortFields = ['createdAt', 'name'] as const;
export const ListApiKeysQuery = searchableListQuery(apiKeySortFields, {});
export const ApiKeyPage = pageOf(ApiKey, 'ApiKeyPage');

export type ApiKeyDto = z.infer<typeof ApiKey>;
export type CreatedApiKeyDto = z.infer<typeof CreatedApiKey>;
export type CreateApiKeyInput = z.infer<typeof CreateApiKeyBody>;
