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

type Projection = (value: unknown) => unknown;

const keepAsIs: Projection = (value) => value;

/** `anyOf: [T, {type: null}]` (either order): T, else undefined. */
function nullableBranch(schema: JsonSchema): unknown {
  const anyOf = schema.anyOf;
  if (!Array.isArray(anyOf) || anyOf.length !== 2) return undefined;
  const [first, second] = anyOf as unknown[];
  if (isSchemaObject(second) && second.type === 'null') return first;
  if (isSchemaObject(first) && first.type === 'null') return second;
  return undefined;
}

const branchingKeywords = ['anyOf', 'oneOf', 'allOf', 'not', 'if'];

/**
 * Whether the shape of a value follows from the schema alone. A union (other than "T or null")
 * decides what to write by which branch the value matches, which takes validation: those schemas
 * stay with fast-json-stringify, which validates to choose.
 */
function isProjectable(schema: unknown): boolean {
  if (!isSchemaObject(schema)) return true;
  const nullable = nullableBranch(schema);
  if (nullable !== undefined) return isProjectable(nullable);
  if (branchingKeywords.some((keyword) => keyword in schema)) return false;
  const inner: unknown[] = [schema.items, schema.additionalProperties, ...(Array.isArray(schema.prefixItems) ? schema.prefixItems : [])];
  for (const group of [schema.properties, schema.$defs]) if (isSchemaObject(group)) inner.push(...Object.values(group));
  return inner.every(isProjectable);
}

function typeOf(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
}

/**
 * A function that copies a value down to what the schema declares: for an object, its declared
 * properties (and, where the schema allows others, those), failing on a missing required one; for
 * an array, each item; anything else (strings, numbers, free-form JSON) as it is.
 */
function compileProjection(schema: unknown, definitions: JsonSchema): Projection {
  if (!isSchemaObject(schema)) return keepAsIs;
  if (typeof schema.$ref === 'string') {
    // Compiled on first use: a recursive schema refers to itself.
    const target = definitions[schema.$ref.replace('#/$defs/', '')];
    let compiled: Projection | undefined;
    return (value) => (compiled ??= compileProjection(target, definitions))(value);
  }
  const nullable = nullableBranch(schema);
  if (nullable !== undefined) {
    const project = compileProjection(nullable, definitions);
    return (value) => (value === null ? null : project(value));
  }
  const types = Array.isArray(schema.type) ? (schema.type as unknown[]) : [schema.type];
  const allowsNull = types.includes('null');
  if (types.includes('array') && schema.items !== undefined) {
    const projectItem = compileProjection(schema.items, definitions);
    return (value) => {
      if (value === undefined) return undefined;
      if (value === null && allowsNull) return null;
      if (!Array.isArray(value)) throw new TypeError(`The response has ${typeOf(value)} where its schema declares an array.`);
      // A loop, not map(): map() on an Array subclass (postgres.js's results) takes V8's slow path.
      const copy: unknown[] = new Array(value.length);
      for (let index = 0; index < value.length; index++) copy[index] = projectItem(value[index]);
      return copy;
    };
  }
  if (!types.includes('object')) return keepAsIs;
  const required = new Set(Array.isArray(schema.required) ? (schema.required as unknown[]) : []);
  const declared = Object.entries(isSchemaObject(schema.properties) ? schema.properties : {}).map(([name, inner]) => ({
    name,
    required: required.has(name),
    project: compileProjection(inner, definitions),
  }));
  const others = schema.additionalProperties;
  const projectOther = others === undefined || others === false ? undefined : compileProjection(others, definitions);
  const copyDeclared = compileObjectCopy(declared);
  const declaredNames = new Set(declared.map((property) => property.name));
  return (value) => {
    if (value === undefined) return undefined;
    if (value === null && allowsNull) return null;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new TypeError(`The response has ${typeOf(value)} where its schema declares an object.`);
    }
    const copy = copyDeclared(value as Record<string, unknown>);
    if (projectOther) {
      const source = value as Record<string, unknown>;
      for (const name of Object.keys(source)) {
        if (!declaredNames.has(name) && source[name] !== undefined) copy[name] = projectOther(source[name]);
      }
    }
    return copy;
  };
}

function missingProperty(name: string): never {
  throw new Error(`"${name}" is required!`);
}

/**
 * One object literal with the declared properties, generated as code: V8 then builds every copy
 * with one fixed shape, which a loop assigning property by property does not give. Names are written as JSON string
 * literals, so no name can break out of the code. An undefined value stays undefined, and
 * JSON.stringify leaves it out, as it would an absent optional property.
 */
function compileObjectCopy(properties: readonly { name: string; required: boolean; project: Projection }[]): (source: Record<string, unknown>) => Record<string, unknown> {
  // In an object literal, `"__proto__": value` sets the prototype instead of a property.
  if (properties.some((property) => property.name === '__proto__')) throw new Error('A response schema may not declare a property named __proto__.');
  const checks = properties
    .filter((property) => property.required)
    .map((property) => `if (source[${JSON.stringify(property.name)}] === undefined) missing(${JSON.stringify(property.name)});`);
  const fields = properties.map((property, index) => {
    const read = `source[${JSON.stringify(property.name)}]`;
    return `${JSON.stringify(property.name)}: ${property.project === keepAsIs ? read : `project[${index}](${read})`}`;
  });
  const code = `return function copyDeclared(source) {\n${checks.join('\n')}\nreturn {${fields.join(', ')}};\n};`;
  const build = new Function('project', 'missing', code) as (project: readonly Projection[], missing: (name: string) => never) => (source: Record<string, unknown>) => Record<string, unknown>;
  return build(
    properties.map((property) => property.project),
    missingProperty,
  );
}

const serializationSchema = (schema: z.ZodType) => forSerialization(z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }));

const fastJsonStringifyOf = (jsonSchema: unknown) =>
  fastJsonStringify(jsonSchema as Parameters<typeof fastJsonStringify>[0]) as (data: unknown) => string;

/** fast-json-stringify's writer for a zod schema: for unions here, and as a contender in bench/serializer.ts. */
export function compileFastJsonStringify(schema: z.ZodType): (data: unknown) => string {
  return fastJsonStringifyOf(serializationSchema(schema));
}

/** The compiled JSON writer for one zod response schema. */
export function compileResponseSerializer(schema: z.ZodType): (data: unknown) => string {
  const jsonSchema = serializationSchema(schema);
  if (!isSchemaObject(jsonSchema) || !isProjectable(jsonSchema)) return fastJsonStringifyOf(jsonSchema);
  const project = compileProjection(jsonSchema, isSchemaObject(jsonSchema.$defs) ? jsonSchema.$defs : {});
  return (data) => JSON.stringify(project(data));
}

/**
 * Responses are written from the routes' zod schemas by a compiled projection and JSON.stringify:
 * the projection copies each body down to the properties the schema declares (nothing else can
 * leak) and fails on a missing required one; V8's native JSON.stringify then writes one flat
 * string, cheaper than fast-json-stringify's string per property (bench/serializer.ts measures
 * both, and zod validation). Schemas with unions are written by fast-json-stringify, which
 * validates to choose a branch.
 */
export const responseSerializerCompiler: FastifySerializerCompiler<z.ZodType> = ({ schema }) => compileResponseSerializer(schema);
