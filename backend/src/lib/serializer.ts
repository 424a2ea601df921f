import fastJsonStringify from 'fast-json-stringify';
import type { FastifySerializerCompiler } from 'fastify';
import { z } from 'zod';

type JsonSchema = { [keyword: string]: unknown };

function isSchemaObject(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The JSON Schema a serializer needs from the one zod writes for the OpenAPI document. A
 * serializer writes values, it does not check them: `pattern` and `format` go (fast-json-stringify
 * would otherwise test every uuid and timestamp against zod's long regexes), and `anyOf: [T, null]`
 * becomes `type: [T, 'null']`, which it writes directly instead of trying each branch in turn.
 */
function forSerialization(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(forSerialization);
  if (!isSchemaObject(schema)) return schema;
  const anyOf = schema.anyOf;
  if (Array.isArray(anyOf) && anyOf.length === 2) {
    const [first, second] = anyOf as unknown[];
    const nullable = isSchemaObject(second) && second.type === 'null' ? first : isSchemaObject(first) && first.type === 'null' ? second : undefined;
    if (isSchemaObject(nullable) && typeof nullable.type === 'string' && nullable.type !== 'object' && nullable.type !== 'array') {
      const { anyOf: _anyOf, ...rest } = schema;
      return forSerialization({ ...rest, ...nullable, type: [nullable.type, 'null'] });
    }
  }
  const result: JsonSchema = {};
  for (const [keyword, value] of Object.entries(schema)) {
    if (keyword === 'pattern' || keyword === 'format' || keyword === '$schema') continue;
    // Inside `properties` and `$defs` the keys are names, not keywords: a field called `pattern` stays.
    if ((keyword === 'properties' || keyword === '$defs') && isSchemaObject(value)) {
      result[keyword] = Object.fromEntries(Object.entries(value).map(([name, inner]) => [name, forSerialization(inner)]));
    } else {
      result[keyword] = forSerialization(value);
    }
  }
  return result;
}

/** The compiled JSON writer for one zod response schema. */
export function compileResponseSerializer(schema: z.ZodType): (data: unknown) => string {
  const jsonSchema = forSerialization(z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }));
  return fastJsonStringify(jsonSchema as Parameters<typeof fastJsonStringify>[0]) as (data: unknown) => string;
}

/**
 * Responses are written by fast-json-stringify (Fastify's own compiled serializer) from the routes'
 * zod schemas. It writes only the properties the schema declares (nothing else can leak), fails on a
 * missing required one, and costs a fraction of validating every item with zod and then running
 * JSON.stringify (bench/serializer.ts measures the three). The route handlers build their bodies
 * from typed DTOs, so the compiler already holds them to the contract.
 */
export const responseSerializerCompiler: FastifySerializerCompiler<z.ZodType> = ({ schema }) => compileResponseSerializer(schema);
