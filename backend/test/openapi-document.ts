/**
 * The OpenAPI document as the route-driven tests read it (fuzz.test.ts, hostile-input.test.ts):
 * every /api/v1 operation, its parameters and body schemas, `$ref`s resolved.
 */
import type { App } from '../src/app.js';

export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  enum?: unknown[];
  const?: unknown;
  format?: string;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  maxItems?: number;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  example?: unknown;
  examples?: unknown[];
  default?: unknown;
}
export interface Parameter {
  in: 'query' | 'path' | 'header' | 'cookie';
  name: string;
  schema?: JsonSchema;
}
export interface OperationSpec {
  parameters?: Parameter[];
  requestBody?: { content?: Record<string, { schema?: JsonSchema }> };
  responses?: Record<string, { content?: Record<string, { schema?: JsonSchema }> }>;
}
export interface OpenApiDocument {
  paths: Record<string, Record<string, OperationSpec>>;
  components?: { schemas?: Record<string, JsonSchema> };
}
export interface Operation {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly spec: OperationSpec;
}

function refTarget(document: OpenApiDocument, ref: string): JsonSchema | undefined {
  const name = /^#\/components\/schemas\/(.+)$/.exec(ref)?.[1];
  return name === undefined ? undefined : document.components?.schemas?.[name];
}

/** Every `$ref` in the document's paths that names no schema of `components.schemas`. */
export function danglingRefs(document: OpenApiDocument): string[] {
  const dangling = new Set<string>();
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value !== null && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) {
        if (key === '$ref' && typeof item === 'string' && !refTarget(document, item)) dangling.add(item);
        else walk(item);
      }
    }
  };
  walk(document.paths);
  return [...dangling].sort();
}

/** The document the service publishes at /api/openapi.json. */
export async function publishedDocument(app: App): Promise<OpenApiDocument> {
  return (await app.inject('/api/openapi.json')).json<OpenApiDocument>();
}

/** Follows `$ref`s to the schema they name (an unknown one resolves to the empty schema). */
export function resolve(document: OpenApiDocument, schema: JsonSchema | undefined): JsonSchema {
  let current = schema ?? {};
  for (let hops = 0; current.$ref !== undefined && hops < 10; hops++) current = refTarget(document, current.$ref) ?? {};
  return current;
}

/** Every operation under /api/v1. */
export function operationsOf(document: OpenApiDocument): Operation[] {
  return Object.entries(document.paths)
    .filter(([path]) => path.startsWith('/api/v1/'))
    .flatMap(([path, operations]) =>
      Object.entries(operations)
        .filter(([method]) => ['get', 'post', 'patch', 'put', 'delete'].includes(method))
        .map(([method, spec]) => ({ method: method.toUpperCase() as Operation['method'], path, spec })),
    );
}

/** The JSON body schema of an operation, resolved; undefined when it takes no body. */
export function bodySchemaOf(document: OpenApiDocument, operation: Operation): JsonSchema | undefined {
  const schema = operation.spec.requestBody?.content?.['application/json']?.schema;
  return schema === undefined ? undefined : resolve(document, schema);
}
