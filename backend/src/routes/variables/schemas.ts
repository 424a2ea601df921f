import { z } from 'zod';
import { Timestamp } from '../../lib/http.js';
import { pageOf, searchableListQuery } from '../../lib/pagination.js';
import { SECRET_MAX_BYTES, SecretText } from '../../secrets/secret-text.js';

/** A plain variable's value, measured as compact JSON text (JSON.stringify) in UTF-8 bytes. */
export const PLAIN_VALUE_MAX_BYTES = 64 * 1024;

const KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * What is wrong with `value` as the value of a variable that is (or becomes) secret or plain, or
 * undefined when it is acceptable. A secret meets the rule of every stored secret (SecretText).
 * The message never quotes the value: it may be a secret.
 */
export function valueProblem(value: unknown, secret: boolean): string | undefined {
  if (secret) {
    const parsed = SecretText.safeParse(value);
    return parsed.success ? undefined : `a secret variable’s value ${parsed.error.issues[0]?.message ?? 'is invalid'}`;
  }
  const bytes = Buffer.byteLength(JSON.stringify(value), 'utf8');
  if (bytes > PLAIN_VALUE_MAX_BYTES) return `the value is ${bytes} bytes as JSON text; at most ${PLAIN_VALUE_MAX_BYTES} (64 KiB) are allowed`;
  return undefined;
}

export const Variable = z
  .object({
    id: z.uuid(),
    key: z.string(),
    value: z
      .unknown()
      .optional()
      .meta({ description: 'Any JSON value, null included. Absent (not null) when the variable is secret: a secret’s value is write-only and no response carries it.' }),
    secret: z.boolean(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: 'Variable', description: 'A variable; GET and PATCH send its ETag.' });

const key = z
  .string()
  .regex(KEY_PATTERN, 'must start with a letter or _ and go on with letters, digits or _ (at most 64 characters)')
  .meta({ description: 'Unique per user (409 NAME_TAKEN): `$vars.KEY` or `$secrets.KEY` in expressions.', example: 'API_BASE_URL' });

const valueDescription =
  `Any JSON value up to ${PLAIN_VALUE_MAX_BYTES} bytes as compact UTF-8 JSON text (null is a value); ` +
  `for a secret, a non-empty string of at most ${SECRET_MAX_BYTES} bytes as UTF-8 (8 KiB). Nesting is bounded by the body's depth limit (64 levels). ` +
  'Objects are stored as JSONB: their keys may come back in another order.';

const valueExample = 'https://api.example.com';

const secretDescription = 'Write-only value: responses leave `value` out. A secret can be read only by `{{ $secrets.KEY }}` in http.request params.';

export const CreateVariableBody = z
  .object({
    key,
    // Required: `null` is a legal value of a plain variable, so an absent value cannot mean null.
    value: z.unknown().nonoptional('is required (null is a value: send it for a variable without one)').meta({ description: valueDescription, example: valueExample }),
    secret: z.boolean().default(false).meta({ description: secretDescription }),
  })
  .strict()
  .superRefine((body, context) => {
    const problem = valueProblem(body.value, body.secret);
    if (problem) context.addIssue({ code: 'custom', path: ['value'], message: problem });
  })
  .meta({ id: 'CreateVariable' });

export const UpdateVariableBody = z
  .object({
    value: z
      .unknown()
      .optional()
      .meta({ description: `${valueDescription} Absent: the stored value stays (a secret stays sealed); null: the value becomes null.`, example: valueExample }),
    key: key.optional(),
    secret: z
      .boolean()
      .optional()
      .meta({
        description:
          'Changes only together with a new `value` (400 otherwise): a secret’s stored value is never revealed by making it plain, ' +
          'and a plain value, readable until now and not necessarily a string, is never relabelled secret. Repeating the current setting is allowed.',
      }),
  })
  .strict()
  .refine((body) => Object.values(body).some((value) => value !== undefined), { message: 'give at least one field to change' })
  .superRefine((body, context) => {
    // Without `secret`, which check applies depends on the stored variable: the repository makes it.
    if (body.value === undefined || body.secret === undefined) return;
    const problem = valueProblem(body.value, body.secret);
    if (problem) context.addIssue({ code: 'custom', path: ['value'], message: problem });
  })
  .meta({
    id: 'UpdateVariable',
    description: 'Changes the fields given. A value sent for a secret variable (without `secret: false`) is sealed as its new secret.',
  });

export const variableSortFields = ['createdAt', 'updatedAt', 'key'] as const;
export const ListVariablesQuery = searchableListQuery(variableSortFields, {
  searchQuery: z.string().max(200).optional().meta({ description: 'Case-insensitive substring of the key.' }),
});
export const VariablePage = pageOf(Variable, 'VariablePage');

export type VariableDto = z.infer<typeof Variable>;
export type CreateVariableInput = z.infer<typeof CreateVariableBody>;
export type UpdateVariableInput = z.infer<typeof UpdateVariableBody>;
