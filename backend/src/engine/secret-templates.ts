import { randomBytes } from 'node:crypto';
import { forEachString, mapStrings, someString } from '../lib/json-walk.js';
import { templateParts, type TemplatePart } from './expressions.js';
import type { ParamIssue } from './nodes/types.js';

/**
 * `{{ $secrets.KEY }}` (API.md, Variables): the one way a workflow names a secret variable, and only
 * in the params of the node types below. The template is never evaluated: before the step's
 * templates are resolved it is swapped for a slot, text that no expression can read, and the
 * secret takes the slot's place after resolution (SecretSlots). So a secret never reaches an
 * expression worker, no expression can transform it (`$base64encode($secrets.X)` would defeat
 * masking), and a secret whose value holds "{{" is never read as a template.
 */

const SECRETS_NAME = '$secrets';
/** The whole expression of a secret template, whitespace aside; KEY has a variable key's syntax. */
const SECRET_TEMPLATE = /^\s*\$secrets\.([A-Za-z_][A-Za-z0-9_]{0,63})\s*$/;

/**
 * Node types whose params may hold `{{ $secrets.KEY }}` (in any string value, at any depth), and
 * the param of each that is a url: there, only in the path, the query or the fragment (urlIssue).
 */
const secretBearingTypes: ReadonlyMap<string, { readonly urlParam: string }> = new Map([['http.request', { urlParam: 'url' }]]);

export interface SecretReference {
  readonly key: string;
  /** Where in the node's params, as a ParamIssue's path. */
  readonly path: readonly PropertyKey[];
}

export interface SecretUsage {
  readonly issues: ParamIssue[];
  readonly references: SecretReference[];
}

/**
 * The save-time reading of one node's params: every `$secrets` outside the exact form (in a node
 * type that takes none, inside a larger expression, in literal text, in a template that does not
 * close) is an issue; the exact forms are references, whose keys the caller checks exist.
 */
export function secretUsage(type: string, params: unknown): SecretUsage {
  const issues: ParamIssue[] = [];
  const references: SecretReference[] = [];
  const bearing = secretBearingTypes.get(type);
  forEachString(params, (text, pathOf) => {
    if (!text.includes(SECRETS_NAME)) return;
    const path = pathOf();
    if (!bearing) {
      issues.push({ path, message: `${SECRETS_NAME} is allowed only in http.request params, as a whole template {{ $secrets.KEY }}` });
      return;
    }
    const parts = templateParts(text);
    const found: string[] = [];
    const elsewhere = (part: TemplatePart): boolean => {
      if (part.kind === 'text') return part.text.includes(SECRETS_NAME);
      const key = SECRET_TEMPLATE.exec(part.source)?.[1];
      if (key !== undefined) found.push(key);
      return key === undefined && part.source.includes(SECRETS_NAME);
    };
    if (parts === null || parts.some(elsewhere)) {
      issues.push({ path, message: `${SECRETS_NAME} is allowed only as a whole template {{ $secrets.KEY }}: no expression can read or change a secret` });
      return;
    }
    if (path.length === 1 && path[0] === bearing.urlParam && secretBeforePath(parts)) {
      issues.push({
        path,
        message: `{{ ${SECRETS_NAME}.KEY }} is allowed in a url only after its path begins (a literal '/' after the host, or '?'), never in its scheme or host: those show in errors, and the host goes to DNS`,
      });
      return;
    }
    for (const key of found) references.push({ key, path });
  });
  return { issues, references };
}

/** The URL parser drops tabs and newlines wherever they are. */
const URL_IGNORED = /[\t\n\r]/g;

/**
 * Whether a secret template of a url stands where the url has not surely reached its path, so
 * that it may end up in its scheme or its authority (userinfo, host, port), which the step's errors show as the URL
 * parser leaves them (lower-cased, punycoded: forms the redactor may not know) and which reach DNS.
 *
 * Templates before a secret may resolve to any text, so only literal text decides. The path has
 * begun (or the url has no scheme: relative, all of it joined to a connection's baseUrl as path,
 * or invalid) once there is:
 * - a first character that no scheme begins with, the url opening with literal text (the parser
 *   trims leading spaces and controls);
 * - a literal '?' or '#': the authority ends there at the latest, and no scheme holds them;
 * - a literal '/' right after a character other than '/', '\' or ':' in the same text: a '/'
 *   always ends an authority, and slashes that begin one follow the scheme's ':' at once (a
 *   special scheme takes any number of them, `http:/x` and `https:///x` name hosts too).
 */
function secretBeforePath(parts: readonly TemplatePart[]): boolean {
  const [first] = parts;
  if (first?.kind === 'text') {
    const opening = first.text.replace(URL_IGNORED, '').replace(/^[\u0000-\u0020]+/, '');
    if (opening !== '' && !/^[A-Za-z][A-Za-z0-9+.-]*(?::|$)/.test(opening)) return false;
  }
  for (const part of parts) {
    if (part.kind === 'expression') {
      if (SECRET_TEMPLATE.test(part.source)) return true;
      continue;
    }
    const text = part.text.replace(URL_IGNORED, '');
    if (/[?#]/.test(text) || /[^/\\:]\//.test(text)) return false;
  }
  return false;
}

/** The secret variables a node's params name in the exact form, each once (what a step must read). */
export function secretKeysIn(type: string, params: unknown): string[] {
  if (!secretBearingTypes.has(type)) return [];
  const keys = new Set<string>();
  forEachString(params, (text) => {
    if (!text.includes(SECRETS_NAME)) return;
    for (const part of templateParts(text) ?? []) {
      const key = part.kind === 'expression' ? SECRET_TEMPLATE.exec(part.source)?.[1] : undefined;
      if (key !== undefined) keys.add(key);
    }
  });
  return [...keys];
}

/**
 * One step's slots. A slot is random text (no "{{", so templates pass it through as literal text)
 * that stands for one secret template between `hide` and `fill`; being random per step, no
 * workflow can write or guess it.
 */
export class SecretSlots {
  private readonly token = randomBytes(16).toString('hex');
  private readonly keys: string[] = [];
  private readonly slotPattern = new RegExp(`@@secret-${this.token}-(\\d+)@@`, 'g');

  /** A copy of `value` with each `{{ $secrets.KEY }}` template in its strings (keys aside) made a slot. */
  hide(value: unknown): unknown {
    // Most params name no secret: they are not copied.
    if (!someString(value, (text) => text.includes(SECRETS_NAME))) return value;
    return mapStrings(value, (text) => {
      if (!text.includes(SECRETS_NAME)) return text;
      const parts = templateParts(text);
      // An unclosed template is left for template resolution to report.
      if (parts === null) return text;
      return parts
        .map((part) => {
          if (part.kind === 'text') return part.text;
          const key = SECRET_TEMPLATE.exec(part.source)?.[1];
          return key === undefined ? `{{${part.source}}}` : this.slotFor(key);
        })
        .join('');
    });
  }

  /** A copy of `value` (resolved) with each slot in its strings replaced by `textOf(its key)`. */
  fill(value: unknown, textOf: (key: string) => string): unknown {
    if (this.keys.length === 0) return value;
    return mapStrings(value, (text) => (text.includes(`@@secret-${this.token}-`) ? text.replace(this.slotPattern, (_slot, index: string) => textOf(this.keys[Number(index)] as string)) : text));
  }

  private slotFor(key: string): string {
    this.keys.push(key);
    return `@@secret-${this.token}-${this.keys.length - 1}@@`;
  }
}
