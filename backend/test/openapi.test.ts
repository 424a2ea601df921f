import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp } from './helpers.js';

type Operation = { responses?: Record<string, { content?: Record<string, { schema?: unknown }> }>; parameters?: { name: string; in: string }[] };
type OpenApiDocument = { paths: Record<string, Record<string, Operation>>; components?: { schemas?: Record<string, { properties?: Record<string, unknown> }> } };

/** The resource routes of API.md (the engine's actions come with the engine). */
const contract: [string, string, number][] = [
  ['get', '/api/v1/workflows', 200],
  ['post', '/api/v1/workflows', 201],
  ['get', '/api/v1/workflows/{id}', 200],
  ['patch', '/api/v1/workflows/{id}', 200],
  ['delete', '/api/v1/workflows/{id}', 204],
  ['get', '/api/v1/jobs', 200],
  ['post', '/api/v1/jobs', 201],
  ['get', '/api/v1/jobs/{id}', 200],
  ['patch', '/api/v1/jobs/{id}', 200],
  ['delete', '/api/v1/jobs/{id}', 204],
  ['get', '/api/v1/jobs/{id}/next-runs', 200],
  ['get', '/api/v1/executions', 200],
  ['get', '/api/v1/executions/{id}', 200],
  ['get', '/api/v1/executions/{id}/steps', 200],
  ['get', '/api/v1/api-keys', 200],
  ['post', '/api/v1/api-keys', 201],
  ['delete', '/api/v1/api-keys/{id}', 204],
  ['get', '/api/v1/connections', 200],
  ['post', '/api/v1/connections', 201],
  ['get', '/api/v1/connections/{id}', 200],
  ['patch', '/api/v1/connections/{id}', 200],
  ['delete', '/api/v1/connections/{id}', 204],
  ['get', '/api/v1/variables', 200],
  ['post', '/api/v1/variables', 201],
  ['get', '/api/v1/variables/{id}', 200],
  ['patch', '/api/v1/variables/{id}', 200],
  ['delete', '/api/v1/variables/{id}', 204],
  ['get', '/api/v1/workflows/{id}/deliveries', 200],
  ['get', '/api/v1/deliveries/{id}', 200],
  ['post', '/api/v1/deliveries/{id}/replay', 202],
  ['get', '/api/v1/event-subscriptions', 200],
  ['post', '/api/v1/event-subscriptions', 201],
  ['get', '/api/v1/event-subscriptions/{id}', 200],
  ['patch', '/api/v1/event-subscriptions/{id}', 200],
  ['delete', '/api/v1/event-subscriptions/{id}', 204],
  ['post', '/api/v1/event-subscriptions/{id}/rotate-secret', 200],
  ['get', '/api/v1/event-subscriptions/{id}/deliveries', 200],
  ['post', '/api/v1/event-deliveries/{id}/retry', 202],
];

describe('the OpenAPI document', () => {
  let app: App;
  let document: OpenApiDocument;
  beforeAll(async () => {
    app = await buildTestApp();
    document = (await app.inject('/api/openapi.json')).json<OpenApiDocument>();
  });
  afterAll(async () => {
    await app.close();
  });

  it.each(contract)('describes %s %s with its %i response', (method, path, status) => {
    const operation = document.paths[path]?.[method];
    expect(operation, `${method} ${path} is missing`).toBeDefined();
    expect(operation?.responses?.[String(status)]).toBeDefined();
    if (status !== 204) expect(operation?.responses?.[String(status)]?.content?.['application/json']?.schema).toBeDefined();
  });

  it('documents the list parameters and never exposes owners or key hashes', () => {
    const names = document.paths['/api/v1/executions']?.get?.parameters?.map((parameter) => parameter.name) ?? [];
    expect(names).toEqual(expect.arrayContaining(['pageSize', 'cursor', 'page', 'sortBy', 'sortDirection', 'status', 'workflowId', 'jobId', 'createdAfter', 'createdBefore']));
    const text = JSON.stringify(document);
    expect(text).not.toContain('userId');
    expect(text).not.toContain('keyHash');
  });

  it('documents an event subscription’s secret on its creation and rotation only, and the deliveries’ filters', () => {
    const schemas = document.components?.schemas ?? {};
    expect(Object.keys(schemas.EventSubscription?.properties ?? {})).not.toContain('secret');
    expect(Object.keys(schemas.CreatedEventSubscription?.properties ?? {})).toContain('secret');
    expect(Object.keys(schemas.RotatedEventSubscription?.properties ?? {})).toContain('secret');
    const names = document.paths['/api/v1/event-subscriptions/{id}/deliveries']?.get?.parameters?.map((parameter) => parameter.name) ?? [];
    expect(names).toEqual(expect.arrayContaining(['pageSize', 'cursor', 'page', 'sortBy', 'sortDirection', 'status', 'type']));
  });

  it('documents the problem+json error body on every /api/v1 operation, as the API really sends it', async () => {
    const problemRef = { $ref: '#/components/schemas/Problem' };
    for (const [path, operations] of Object.entries(document.paths).filter(([path]) => path.startsWith('/api/v1/'))) {
      for (const [method, operation] of Object.entries(operations)) {
        for (const range of ['4XX', '5XX']) {
          expect(operation.responses?.[range]?.content?.['application/problem+json']?.schema, `${method} ${path} ${range}`).toEqual(problemRef);
        }
      }
    }
    const documented = Object.keys(document.components?.schemas?.Problem?.properties ?? {});
    const refused = await app.inject({ method: 'GET', url: '/api/v1/executions?pageSize=0' });
    // No caller: 401, whose body has exactly the documented fields (errors only on 400s).
    expect(refused.headers['content-type']).toContain('application/problem+json');
    expect(Object.keys(refused.json<Record<string, unknown>>()).every((field) => documented.includes(field))).toBe(true);
    expect(documented).toEqual(expect.arrayContaining(['type', 'title', 'status', 'detail', 'code', 'requestId', 'errors']));
  });
});
