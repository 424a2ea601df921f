import { z } from 'zod';
import { originOf, sharesOrigin, targetThrough } from '../connection-target.js';
import { StepError } from '../errors.js';
import { performHttpRequest, type HttpRequestParams, type HttpResult } from '../http-request.js';
import { SECRET_MASK } from '../redaction.js';
import { basicCredential, type StepConnection, type StepResources } from '../run-resources.js';
import { SecretSlots } from '../secret-templates.js';
import { defineNode } from './types.js';

const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** A connection's name, as connections are named (API.md, Connections). */
export const CONNECTION_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

/**
 * Calls an HTTP endpoint; values may refer to earlier outputs through `{{ }}` templates, to the
 * user's secret variables as `{{ $secrets.KEY }}` (whole templates only, never evaluated: see
 * secret-templates.ts), and go through a stored connection.
 */
export const httpRequest = defineNode({
  params: z
    .object({
      method: z.enum(methods),
      url: z.string().min(1).max(2048).meta({
        description:
          "With a connection, a url without a scheme is relative to its baseUrl, joined as axios and ky do: the baseUrl without trailing slashes, '/', the url without leading slashes (`/users` on `https://api.example.com/v2` is `https://api.example.com/v2/users`). An absolute url must have the baseUrl's origin.",
      }),
      connection: z
        .string()
        .regex(CONNECTION_NAME, 'a connection name: a lower-case letter, then lower-case letters, digits, _ or - (at most 63)')
        .optional()
        .meta({ description: "The name of one of the caller's connections (a literal, not a template): its headers and auth are added, read when the step runs." }),
      headers: z.record(z.string(), z.string()).optional(),
      body: z.unknown().optional(),
      timeoutMs: z.number().int().min(1).max(300_000).optional(),
    })
    .strict(),
  async execute(params, { scope, signal, http, expressions, resources }) {
    const { connection: connectionName, ...request } = params;
    const slots = new SecretSlots();
    const resolved = await expressions.resolveTemplates(slots.hide(request), scope);
    // What is sent carries the secrets; what is recorded and reported carries the mask.
    const sent = slots.fill(resolved, (key) => secretValue(resources, key)) as HttpRequestParams;
    const shown = slots.fill(resolved, () => SECRET_MASK) as HttpRequestParams;

    const connection = connectionName === undefined ? undefined : connectionNamed(resources, connectionName);
    const outgoing = connection ? throughConnection(sent, shown, connection) : { params: sent, shownUrl: shown.url };
    // Parsed here first, so that an invalid url is reported with its secrets masked.
    parseUrl(outgoing.params.url, outgoing.shownUrl);
    // A use of the connection from here on (its origin is checked): recorded beside the request,
    // and over before the step ends (see StepResources.recordConnectionUse).
    const recorded = resources.recordConnectionUse();
    let output: HttpResult;
    try {
      output = await performHttpRequest(outgoing.params, http, signal, resources.redactor);
    } finally {
      await recorded;
    }
    // The recorded input names the headers sent but leaves their values out: they often carry credentials.
    const { headers: _shownHeaders, ...visible } = shown;
    const sentHeaders = outgoing.params.headers;
    return {
      output,
      input: { ...visible, url: outgoing.shownUrl, ...(connection ? { connection: connection.name } : {}), headers: sentHeaders ? Object.keys(sentHeaders) : undefined },
    };
  },
});

function secretValue(resources: StepResources, key: string): string {
  const value = resources.secrets.get(key);
  // The runner reads every key the params name before the step runs (or fails it SECRET_NOT_FOUND).
  if (value === undefined) throw new Error(`the secret '${key}' was not read for this step`);
  return value;
}

function connectionNamed(resources: StepResources, name: string): StepConnection {
  // The runner reads the named connection before the step runs (or fails it CONNECTION_NOT_FOUND).
  if (resources.connection?.name !== name) throw new Error(`the connection '${name}' was not read for this step`);
  return resources.connection;
}

function parseUrl(url: unknown, shownUrl: unknown): URL {
  try {
    return new URL(String(url));
  } catch {
    // No cause: the parser's error carries the whole url as it was sent, secrets included.
    throw new StepError(`'${String(shownUrl).slice(0, 200)}' is not a valid URL`, { retryable: false });
  }
}

/**
 * The request as it goes through the connection: its url joined to the baseUrl (or, absolute,
 * checked to have the baseUrl's origin: the credentials go to their own origin only); its headers
 * the connection's, then the node's (a node's header replaces a connection's of the same name,
 * in any case), then the auth, always last, so the stored credentials are what is sent.
 */
function throughConnection(sent: HttpRequestParams, shown: HttpRequestParams, connection: StepConnection): { params: HttpRequestParams; shownUrl: string } {
  const sentTarget = targetThrough(connection.baseUrl, String(sent.url));
  let shownUrl = targetThrough(connection.baseUrl, String(shown.url));
  const url = parseUrl(sentTarget, shownUrl);
  if (!sharesOrigin(url.href, connection.baseUrl)) {
    const expected = originOf(connection.baseUrl) ?? connection.baseUrl;
    // The origin as shown (secrets masked), never as sent: the parser lower-cases and punycodes a
    // host, forms in which the redactor may not recognise a secret.
    const leadsTo = originOf(shownUrl) ?? 'another origin';
    throw new StepError(`the url leads to ${leadsTo}, not to the origin of the connection '${connection.name}' (${expected}): a connection's credentials go to its own origin only`, {
      retryable: false,
      code: 'CONNECTION_ORIGIN_MISMATCH',
      details: { connection: connection.name },
    });
  }

  // Keyed by lower-case name: HTTP header names are case-insensitive, and a later one replaces an earlier one.
  const headers = new Map<string, [name: string, value: string]>();
  const put = (name: string, value: string) => headers.set(name.toLowerCase(), [name, value]);
  for (const [name, value] of Object.entries(connection.headers)) put(name, value);
  for (const [name, value] of Object.entries(sent.headers ?? {})) put(name, value);

  const { auth } = connection;
  let sentUrl = url.href;
  switch (auth.type) {
    case 'none':
      break;
    case 'bearer':
      put('authorization', `Bearer ${auth.secret}`);
      break;
    case 'basic':
      put('authorization', `Basic ${basicCredential(auth.username, auth.secret)}`);
      break;
    case 'header':
      put(auth.name, auth.secret);
      break;
    case 'query':
      // The recorded url names the parameter too, as it was sent but masked: `key=[secret]`.
      sentUrl = withQueryParameter(sentUrl, auth.name, encodeURIComponent(auth.secret));
      shownUrl = withQueryParameter(shownUrl, auth.name, SECRET_MASK);
      break;
  }
  // fromEntries defines own properties: a header named "__proto__" stays a header.
  return { params: { ...sent, url: sentUrl, headers: Object.fromEntries(headers.values()) }, shownUrl };
}

/**
 * The url with the query parameter `name` set to `encodedValue` (written as it is: percent-encode
 * it first), after the rest of the query, which stays byte for byte as written but for any
 * parameter of that name, left out (the connection's credential replaces it). Text only, so the
 * same rule makes the url sent and the url recorded; the fragment stays last.
 */
function withQueryParameter(url: string, name: string, encodedValue: string): string {
  const hashAt = url.indexOf('#');
  const beforeFragment = hashAt === -1 ? url : url.slice(0, hashAt);
  const fragment = hashAt === -1 ? '' : url.slice(hashAt);
  const queryAt = beforeFragment.indexOf('?');
  const base = queryAt === -1 ? beforeFragment : beforeFragment.slice(0, queryAt);
  const query = queryAt === -1 ? '' : beforeFragment.slice(queryAt + 1);
  // A pair's name as URLSearchParams reads it ('+' a space, percent-decoded).
  const kept = query.split('&').filter((pair) => pair !== '' && new URLSearchParams(pair).keys().next().value !== name);
  return `${base}?${[...kept, `${encodeURIComponent(name)}=${encodedValue}`].join('&')}${fragment}`;
}
