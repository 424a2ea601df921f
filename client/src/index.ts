/**
 * A typed client for the Autonode API: the request and response types come from the service's
 * OpenAPI document (generated into ./openapi.d.ts by `npm run client:generate`), the calls go
 * through openapi-fetch, so a path, a query parameter or a body field the API does not have is a
 * compile error.
 *
 *   const api = createAutonodeClient('http://localhost:8100');
 *   const { data, error } = await api.GET('/api/v1/workflows', { params: { query: { pageSize: 10 } } });
 */
import createClient, { type Client, type ClientOptions } from 'openapi-fetch';
import type { components, paths } from './openapi.js';

export type { components, operations, paths } from './openapi.js';

type Schemas = components['schemas'];
export type Workflow = Schemas['Workflow'];
export type WorkflowPage = Schemas['WorkflowPage'];
export type CreateWorkflow = Schemas['CreateWorkflow'];
export type WorkflowNode = Schemas['WorkflowNode'];
export type WorkflowEdge = Schemas['WorkflowEdge'];
export type Execution = Schemas['Execution'];
export type Step = Schemas['Step'];
export type Job = Schemas['Job'];
export type ApiKey = Schemas['ApiKey'];
export type Me = Schemas['Me'];
/** The problem+json body of every error (4XX, 5XX): `code` is stable, `errors` lists refused fields. */
export type Problem = Schemas['Problem'];

export interface AutonodeClientOptions {
  /**
   * An API key, for scripts; sent as `x-api-key`. Leave it unset in a browser: the session cookie
   * (from `POST /api/auth/sign-in/email`) is sent instead.
   */
  readonly apiKey?: string;
  /** Extra headers on every request (an `Idempotency-Key` belongs on the single call instead). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Another fetch (a test's, or one with a proxy agent); the global one by default. */
  readonly fetch?: ClientOptions['fetch'];
}

export type AutonodeClient = Client<paths>;

/**
 * `baseUrl` is the site the API is served from (`http://localhost:8100` behind Caddy), not the
 * API root: the document's paths already start with `/api`.
 */
export function createAutonodeClient(baseUrl: string, options: AutonodeClientOptions = {}): AutonodeClient {
  return createClient<paths>({
    baseUrl: baseUrl.replace(/\/+$/, ''),
    // Cookie sessions: a page on another allowed origin (CORS_ORIGINS) must send its cookie too.
    credentials: 'include',
    headers: { ...options.headers, ...(options.apiKey ? { 'x-api-key': options.apiKey } : {}) },
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}
