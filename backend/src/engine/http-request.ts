import dns, { type LookupAddress } from 'node:dns';
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import { TextDecoder } from 'node:util';
import ipaddr from 'ipaddr.js';
import { StepError } from './errors.js';
import { Redactor } from './redaction.js';
import { holdsUnstorableText } from '../executions/payloads.js';

/**
 * The HTTP call of an `http.request` node.
 *
 * Workflows are written by users, so every request is a possible SSRF: the target is vetted after
 * DNS resolution, and the socket then connects only to the addresses that were vetted (a custom
 * `lookup`), so a second, different DNS answer (rebinding) can never be used.
 */

export interface HttpRequestParams {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  timeoutMs?: number;
}

export interface HttpGuard {
  /** Entries from ENGINE_HTTP_ALLOW: IP addresses, CIDRs (v4/v6) or host names that may be reached even though they are loopback/private/link-local. */
  allow: readonly string[];
  /** Response bodies longer than this are cut, with a marker. */
  maxResponseBytes: number;
  /** Default timeout when params.timeoutMs is absent. */
  defaultTimeoutMs: number;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

// ---------------------------------------------------------------------------------------------
// Addresses

type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;
type AddressRange = [network: IpAddress, prefixLength: number];

/** Undefined when the text is not an IP address. Accepts an IPv6 zone (fe80::1%eth0), which does not change the address. */
function parseIp(text: string): IpAddress | undefined {
  const address = text.includes(':') ? (text.split('%', 1)[0] ?? '') : text;
  // net.isIP is the gate: ipaddr.js alone would also read forms such as 010.0.0.1 (as octal) or 2130706433.
  if (net.isIP(address) === 0) return undefined;
  try {
    // ipaddr.js reads ::a.b.c.d as ::ffff:a.b.c.d; written 0::a.b.c.d it stays the IPv4-compatible address (::/96) it is.
    return ipaddr.parse(address.startsWith('::') ? `0${address}` : address);
  } catch {
    return undefined;
  }
}

/** An address alone counts as a range of one (full prefix). */
function parseRange(text: string): AddressRange | undefined {
  const [addressText = '', prefixText, extra] = text.split('/');
  const network = parseIp(addressText);
  if (!network || extra !== undefined) return undefined;
  const maxPrefix = network.kind() === 'ipv4' ? 32 : 128;
  if (prefixText === undefined) return [network, maxPrefix];
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > maxPrefix) return undefined;
  return [network, Number(prefixText)];
}

const inRange = (address: IpAddress, range: AddressRange): boolean => address.kind() === range[0].kind() && address.match(range);

/**
 * Kinds are tried in order and the first match wins, so the more specific ones (metadata, unspecified,
 * loopback) come before the ranges that contain them. IPv4-mapped, NAT64 and 6to4 addresses are not
 * listed: they are judged by the IPv4 address they carry (see embeddedIPv4), so a public address
 * behind NAT64 stays reachable.
 */
const blockedRanges: ReadonlyArray<readonly [kind: string, cidrs: readonly string[]]> = [
  ['cloud metadata address', ['169.254.169.254/32', 'fd00:ec2::254/128']],
  ['unspecified address', ['0.0.0.0/8', '::/128']],
  ['loopback address', ['127.0.0.0/8', '::1/128']],
  ['private address', ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']],
  ['shared CGNAT address', ['100.64.0.0/10']],
  ['link-local address', ['169.254.0.0/16', 'fe80::/10']],
  ['multicast address', ['224.0.0.0/4', 'ff00::/8']],
  ['unique-local address', ['fc00::/7']],
  ['site-local address', ['fec0::/10']],
  [
    'reserved address',
    [
      ...['192.0.0.0/24', '192.0.2.0/24', '192.88.99.0/24', '198.18.0.0/15', '198.51.100.0/24', '203.0.113.0/24', '240.0.0.0/4'],
      '::/96', // deprecated IPv4-compatible addresses
      '64:ff9b:1::/48', // local-use NAT64: its translations are site-specific
      ...['100::/64', '2001::/23', '2001:db8::/32'],
    ],
  ],
];

const blockedTable = blockedRanges.flatMap(([kind, cidrs]) => cidrs.map((cidr) => ({ kind, range: ipaddr.parseCIDR(cidr) })));

/** IPv6 ranges whose addresses lead to an IPv4 address, and the byte at which that address starts. */
const ipv4Carriers = [
  { range: ipaddr.parseCIDR('::ffff:0:0/96'), at: 12 }, // IPv4-mapped
  { range: ipaddr.parseCIDR('64:ff9b::/96'), at: 12 }, // NAT64
  { range: ipaddr.parseCIDR('2002::/16'), at: 2 }, // 6to4
];

/** The IPv4 address an IPv6 address leads to (IPv4-mapped, NAT64, 6to4), if any. */
function embeddedIPv4(address: IpAddress): ipaddr.IPv4 | undefined {
  const carrier = ipv4Carriers.find(({ range }) => inRange(address, range));
  return carrier && new ipaddr.IPv4(address.toByteArray().slice(carrier.at, carrier.at + 4));
}

function blockedKind(address: IpAddress): string | undefined {
  const embedded = embeddedIPv4(address);
  if (embedded) return blockedKind(embedded);
  return blockedTable.find(({ range }) => inRange(address, range))?.kind;
}

/** True when the address is loopback, private (RFC 1918), link-local, unique-local, CGNAT 100.64/10, unspecified 0.0.0.0/8 or ::, multicast/reserved, the cloud metadata address 169.254.169.254, or an IPv4-mapped IPv6 form of any of these. Anything that is not an IP address counts as blocked: when in doubt, do not connect. */
export function isBlockedAddress(address: string): boolean {
  const parsed = parseIp(address);
  return parsed === undefined || blockedKind(parsed) !== undefined;
}

// ---------------------------------------------------------------------------------------------
// Vetting the target

/** A host name as the allow-list compares it: trimmed, lower-case, without IPv6 brackets or trailing dots. */
export const normaliseHostName = (name: string): string => name.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.+$/, '');

/**
 * Why an ENGINE_HTTP_ALLOW entry can never admit anything, or undefined: it must be an IP address,
 * a CIDR, or a host name as URLs write them (no port, no wildcard). Checked at start-up (config.ts),
 * so a mistyped entry is said there rather than ignored while the guard says "add it".
 */
export function allowEntryProblem(entry: string): string | undefined {
  const normalised = normaliseHostName(entry);
  if (parseRange(normalised) !== undefined) return undefined;
  if (/[/:]/.test(normalised) || /^[\d.]+$/.test(normalised)) return `'${entry}' is not an IP address or CIDR (a host name takes no port)`;
  if (!/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(normalised)) return `'${entry}' is not a host name (no wildcards: name each host)`;
  return undefined;
}

function isAllowed(hostName: string, address: IpAddress, allow: readonly string[]): boolean {
  // An allowed IPv4 address also allows its IPv4-mapped form, which is the same destination.
  const candidates = [address, embeddedIPv4(address)].filter((candidate) => candidate !== undefined);
  return allow.some((entry) => {
    const normalised = normaliseHostName(entry);
    if (normalised === '') return false;
    if (normalised === hostName) return true;
    const range = parseRange(normalised);
    return range !== undefined && candidates.some((candidate) => inRange(candidate, range));
  });
}

/**
 * Whether ENGINE_HTTP_ALLOW lets `address` (an IP address), reached by the name `hostName`, through:
 * the guard's own reading, for checks made before any send (a subscription's URL at save).
 */
export function allowListAdmits(hostName: string, address: string, allow: readonly string[]): boolean {
  const parsed = parseIp(address);
  return parsed !== undefined && isAllowed(normaliseHostName(hostName), parsed, allow);
}

async function resolveHost(hostName: string): Promise<LookupAddress[]> {
  let addresses: LookupAddress[];
  try {
    // Through the `dns.promises` object rather than a named import, so tests can stand in for DNS.
    addresses = await dns.promises.lookup(hostName, { all: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new StepError(`could not resolve ${hostName}${code ? ` (${code})` : ''}`, { retryable: true, cause: error });
  }
  if (addresses.length === 0) throw new StepError(`could not resolve ${hostName}`, { retryable: true });
  return addresses;
}

/** The addresses the socket may connect to: every one of them passed the guard. */
async function vetTarget(url: URL, allow: readonly string[]): Promise<LookupAddress[]> {
  // URL keeps IPv6 literals in brackets and has already turned decimal/hex IPv4 forms into dotted quads.
  const hostName = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const literal = parseIp(hostName);
  const addresses = literal ? [{ address: hostName, family: literal.kind() === 'ipv4' ? 4 : 6 }] : await resolveHost(hostName);
  for (const { address } of addresses) {
    const parsed = parseIp(address);
    const kind = parsed ? blockedKind(parsed) : 'not an IP address';
    if (kind === undefined || (parsed && isAllowed(normaliseHostName(hostName), parsed, allow))) continue;
    // A name's address is not told: the message is stored where the workflow's owner reads it, and
    // what internal names resolve to is the network's to know, not a tenant's.
    const what = literal ? `${address} (${kind})` : `${hostName} (it resolves to a ${kind})`;
    throw new StepError(`refused to connect to ${what}; add it to ENGINE_HTTP_ALLOW to allow it`, { retryable: false });
  }
  return addresses;
}

/** A `lookup` for http.request that answers only with the vetted addresses, never asking DNS again. */
function lookupVetted(addresses: readonly LookupAddress[]): LookupFunction {
  return (_hostName, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : (options.family ?? 0);
    const candidates = family === 0 ? [...addresses] : addresses.filter((candidate) => candidate.family === family);
    // Asynchronously, as a real lookup would answer: net attaches its listeners after calling it.
    process.nextTick(() => {
      const [first] = candidates;
      if (!first) {
        const error: NodeJS.ErrnoException = new Error(`no vetted IPv${family} address`);
        error.code = 'ENOTFOUND';
        callback(error, '');
      } else if (options.all) {
        callback(null, candidates);
      } else {
        callback(null, first.address, first.family);
      }
    });
  };
}

// ---------------------------------------------------------------------------------------------
// The exchange

interface OutgoingRequest {
  method: HttpRequestParams['method'];
  headers: OutgoingHttpHeaders;
  body: string | undefined;
}

interface ReceivedResponse extends HttpResult {
  statusText: string;
}

const cancelled = (): StepError => new StepError('cancelled', { retryable: false });

/** Why the exchange was stopped: the deadline or the caller's cancellation put a StepError there. */
const stopReason = (signal: AbortSignal): StepError => (signal.reason instanceof StepError ? signal.reason : cancelled());

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

function parseTarget(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch (error) {
    throw new StepError(`'${text.slice(0, 200)}' is not a valid URL`, { retryable: false, cause: error });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new StepError(`only http and https URLs are supported, not ${url.protocol.slice(0, -1)}`, { retryable: false });
  }
  return url;
}

function prepareRequest(params: HttpRequestParams): OutgoingRequest {
  const callerHeaders = Object.entries(params.headers ?? {});
  const callerSet = (name: string): boolean => callerHeaders.some(([headerName]) => headerName.toLowerCase() === name);
  // Node's header object is case-insensitive on lookup but not here: build a fresh one.
  const headers: OutgoingHttpHeaders = Object.fromEntries(
    // The body is ours, so its length is too: a stale caller content-length would corrupt the framing.
    callerHeaders.filter(([name]) => name.toLowerCase() !== 'content-length'),
  );
  if (!callerSet('user-agent')) headers['user-agent'] = 'autonode-engine';

  // null counts as no body: a body expression that evaluated to nothing should not send the text "null".
  if (params.body === undefined || params.body === null) return { method: params.method, headers, body: undefined };

  let body: string;
  if (typeof params.body === 'string') {
    body = params.body;
  } else {
    let json: string | undefined;
    try {
      json = JSON.stringify(params.body);
    } catch (error) {
      throw new StepError(`the request body cannot be sent as JSON: ${messageOf(error)}`, { retryable: false, cause: error });
    }
    if (json === undefined) throw new StepError('the request body cannot be sent as JSON', { retryable: false });
    body = json;
    if (!callerSet('content-type')) headers['content-type'] = 'application/json';
  }
  // Explicit, because Node sends GET/DELETE/OPTIONS bodies with neither a length nor chunking.
  headers['content-length'] = Buffer.byteLength(body);
  return { method: params.method, headers, body };
}

const isJsonContentType = (mediaType: string): boolean => /^application\/(?:[\w.!#$&^-]+\+)?json$/i.test(mediaType);

/** Media types whose bodies are bytes, whatever those bytes happen to look like. */
const isBinaryMediaType = (mediaType: string): boolean =>
  /^(?:image\/(?!svg\+xml$)|audio\/|video\/|font\/|application\/(?:octet-stream|pdf|zip|gzip|x-protobuf|vnd\.google\.protobuf)$)/i.test(mediaType);

/** A body that is not text: its bytes, as base64, with the content type that came with them. */
export interface BinaryBody {
  base64: string;
  contentType: string;
  /** Present when the response was cut at maxResponseBytes. */
  truncated?: true;
}

/**
 * The body as recorded. Text (valid in its charset, UTF-8 unless declared, with no NUL character)
 * is a string, or the parsed value for a JSON media type; anything else, and any binary media
 * type, is `{ base64, contentType }` (API.md). So every body can be stored: jsonb refuses NUL
 * characters, and a JSON body whose strings hold one (`\u0000`) is kept as its text.
 */
function decodeBody(bytes: Buffer, contentType: string | undefined, truncatedAt: number | undefined): unknown {
  const [mediaType = '', ...parameters] = (contentType ?? '').split(';').map((part) => part.trim());
  const charset = parameters.find((parameter) => /^charset=/i.test(parameter))?.slice('charset='.length).replace(/^"|"$/g, '');
  const binary = (): BinaryBody => ({
    base64: bytes.toString('base64'),
    contentType: contentType ?? 'application/octet-stream',
    ...(truncatedAt !== undefined ? { truncated: true as const } : {}),
  });
  if (isBinaryMediaType(mediaType)) return binary();
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(charset || 'utf-8', { fatal: true });
  } catch {
    decoder = new TextDecoder('utf-8', { fatal: true });
  }
  let text: string;
  try {
    // stream: true (when cut) holds back a character cut in half at the limit instead of failing on it.
    text = decoder.decode(bytes, truncatedAt !== undefined ? { stream: true } : undefined);
  } catch {
    return binary();
  }
  if (text.includes('\u0000')) return binary();
  if (truncatedAt !== undefined) return `${text}…[truncated: response exceeded ${truncatedAt} bytes]`;
  if (!isJsonContentType(mediaType)) return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text) as unknown;
  } catch {
    return text;
  }
  return text.includes('\\u') && holdsUnstorableText(JSON.stringify(parsed)) ? text : parsed;
}

function flattenHeaders(response: IncomingMessage): Record<string, string> {
  // headersDistinct keeps every value (res.headers drops duplicates of some names); names are lower-case.
  return Object.fromEntries(Object.entries(response.headersDistinct).map(([name, values]) => [name, (values ?? []).join(', ')]));
}

function networkError(host: string, error: unknown): StepError {
  // The host only, not the URL: paths and query strings often carry tokens, and this message is stored.
  return new StepError(`request to ${host} failed: ${messageOf(error)}`, { retryable: true, cause: error });
}

/**
 * `redactor` masks the secrets the request may have sent in the response's bytes, before they are
 * decoded or cut: a body kept as base64 would hide them from the masking of text, and a cut at
 * maxResponseBytes could leave a secret's first part. So a response is read this much further than
 * the bound (the longest secret form, less a byte), masked, then cut at the bound.
 */
function exchange(url: URL, outgoing: OutgoingRequest, addresses: readonly LookupAddress[], maxResponseBytes: number, redactor: Redactor, stop: AbortSignal): Promise<ReceivedResponse> {
  const readBytes = maxResponseBytes + Math.max(0, redactor.longestFormBytes - 1);
  return new Promise((resolve, reject) => {
    if (stop.aborted) {
      reject(stopReason(stop));
      return;
    }
    const transport = url.protocol === 'https:' ? https : http;
    let request: http.ClientRequest;
    try {
      request = transport.request(url, {
        method: outgoing.method,
        headers: outgoing.headers,
        // No pooling: a fresh socket per call, connected through the vetted lookup, closed afterwards.
        agent: false,
        lookup: lookupVetted(addresses),
      });
    } catch (error) {
      // Node checks header names and values before anything is sent.
      reject(new StepError(`invalid request: ${messageOf(error)}`, { retryable: false, cause: error }));
      return;
    }

    let settled = false;
    const settle = (finish: () => void): void => {
      if (settled) return;
      settled = true;
      stop.removeEventListener('abort', onStop);
      finish();
    };
    const onStop = (): void =>
      settle(() => {
        request.destroy();
        reject(stopReason(stop));
      });
    stop.addEventListener('abort', onStop, { once: true });

    request.on('error', (error) => settle(() => reject(networkError(url.host, error))));
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      let received = 0;
      const complete = (cut: boolean): ReceivedResponse => {
        const headers = flattenHeaders(response);
        const masked = redactor.bytes(Buffer.concat(chunks));
        // Over the bound as received (masking may lengthen a body: the mask is longer than a short secret).
        const truncatedAt = cut || received > maxResponseBytes ? maxResponseBytes : undefined;
        return {
          status: response.statusCode ?? 0,
          statusText: response.statusMessage ?? '',
          headers,
          body: decodeBody(truncatedAt === undefined ? masked : masked.subarray(0, maxResponseBytes), headers['content-type'], truncatedAt),
        };
      };
      response.on('data', (chunk: Buffer) => {
        if (settled) return;
        const room = readBytes - received;
        if (chunk.length <= room) {
          chunks.push(chunk);
          received += chunk.length;
          return;
        }
        chunks.push(chunk.subarray(0, room));
        // Stop reading: the rest may be unbounded, and it would be thrown away anyway.
        response.destroy();
        request.destroy();
        settle(() => resolve(complete(true)));
      });
      response.on('end', () => settle(() => resolve(complete(false))));
      response.on('error', (error) => settle(() => reject(networkError(url.host, error))));
      response.on('close', () => {
        if (!response.complete) settle(() => reject(networkError(url.host, new Error('the connection closed before the response ended'))));
      });
    });

    if (outgoing.body === undefined) request.end();
    else request.end(outgoing.body);
  });
}

/** Settles like `work`, unless `stop` aborts first (DNS lookups themselves cannot be cancelled). */
function untilStopped<T>(work: Promise<T>, stop: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const onStop = (): void => reject(stopReason(stop));
    if (stop.aborted) {
      onStop();
      return;
    }
    stop.addEventListener('abort', onStop, { once: true });
    work.then(
      (value) => {
        stop.removeEventListener('abort', onStop);
        resolve(value);
      },
      (error: unknown) => {
        stop.removeEventListener('abort', onStop);
        reject(error);
      },
    );
  });
}

function statusError(response: ReceivedResponse): StepError {
  const { status, statusText, headers, body } = response;
  const location = headers.location;
  const redirectNote = status >= 300 && status < 400 ? ` (redirects are not followed${location ? `; location: ${location}` : ''})` : '';
  return new StepError(`request failed with status ${status}${statusText ? ` ${statusText}` : ''}${redirectNote}`, {
    // 5xx and 429 are the server's passing trouble; another 4xx will answer the same next time.
    retryable: status >= 500 || status === 429,
    details: { status, headers, body },
  });
}

/** Throws StepError for: a refused address, a bad URL or scheme (only http/https), a timeout, a network error, or a non-2xx status (the message names the status; `details` carries { status, headers, body } for non-2xx). Aborts promptly (within a few ms) when `signal` aborts, throwing StepError('cancelled', { retryable: false }). */
export async function performHttpRequest(params: HttpRequestParams, guard: HttpGuard, signal: AbortSignal, redactor: Redactor = Redactor.none): Promise<HttpResult> {
  if (signal.aborted) throw cancelled();
  const url = parseTarget(params.url);
  const outgoing = prepareRequest(params);
  const timeoutMs = params.timeoutMs ?? guard.defaultTimeoutMs;

  // One signal ends the whole exchange (DNS, connect, upload, download), whichever comes first:
  // the deadline or the caller's cancellation. Its reason is the StepError to throw.
  const stop = new AbortController();
  const deadline = setTimeout(() => stop.abort(new StepError(`request timed out after ${timeoutMs} ms`, { retryable: true })), timeoutMs);
  const forwardCancel = (): void => stop.abort(cancelled());
  signal.addEventListener('abort', forwardCancel, { once: true });
  try {
    const addresses = await untilStopped(vetTarget(url, guard.allow), stop.signal);
    const response = await exchange(url, outgoing, addresses, guard.maxResponseBytes, redactor, stop.signal);
    if (response.status < 200 || response.status > 299) throw statusError(response);
    return { status: response.status, headers: response.headers, body: response.body };
  } finally {
    clearTimeout(deadline);
    signal.removeEventListener('abort', forwardCancel);
  }
}
