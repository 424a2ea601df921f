import { randomBytes } from 'node:crypto';
import { templateParts } from './expressions.js';
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

/** Node types whose params may hold `{{ $secrets.KEY }}` (in any string value, at any depth). */
const secretBearingTypes: ReadonlySet<string> = new Set(['http.request']);

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
  const bearing = secretBearingTypes.has(type);
  forEachString(params, [], (text, path) => {
    if (!text.includes(SECRETS_NAME)) return;
    if (!bearing) {
      issues.push({ path, message: `${SECRETS_NAME} is allowed only in http.request params, as a whole template {{ $secrets.KEY }}` });
      return;
    }
    const parts = templateParts(text);
    const found: string[] = [];
    const elsewhere =
      parts === null ||
      parts.some((part) => {
        if (part.kind === 'text') return part.text.includes(SECRETS_NAME);
        const key = SECRET_TEMPLATE.exec(part.source)?.[1];
        if (key !== undefined) found.push(key);
        return key === undefined && part.source.includes(SECRETS_NAME);
      });
    if (elsewhere) {
      issues.push({ path, message: `${SECRETS_NAME} is allowed only as a whole template {{ $secrets.KEY }}: no expression can read or change a secret` });
      return;
    }
    for (const key of found) references.push({ key, path });
  });
  return { issues, references };
}

/** The secret variables a node's params name in the exact form, each once (what a step must read). */
export function secretKeysIn(type: string, params: unknown): string[] {
  if (!secretBearingTypes.has(type)) return [];
  const keys = new Set<string>();
  forEachString(params, [], (text) => {
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
    let mentioned = false;
    forEachString(value, [], (text) => (mentioned ||= text.includes(SECRETS_NAME)));
    if (!mentioned) return value;
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

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** Calls `visit` with every string value at any depth of `value` (object keys are not values). */
function forEachString(value: unknown, path: PropertyKey[], visit: (text: string, path: readonly PropertyKey[]) => void): void {
  if (typeof value === 'string') visit(value, path);
  else if (Array.isArray(value)) value.forEach((item, index) => forEachString(item, [...path, index], visit));
  else if (isPlainObject(value)) for (const [key, item] of Object.entries(value)) forEachString(item, [...path, key], visit);
}

/** A copy of `value` with every string value mapped; keys stay (own properties, so "__proto__" stays a key). */
function mapStrings(value: unknown, map: (text: string) => string): unknown {
  if (typeof value === 'string') return map(value);
  if (Array.isArray(value)) return value.map((item) => mapStrings(item, map));
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, mapStrings(item, map)]));
  return value;
}
