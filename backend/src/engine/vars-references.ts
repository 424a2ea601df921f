/**
 * `$vars` (API.md, Variables): the one reading of which variables a text (an expression, or a
 * string of params holding templates) reads. It decides both which rows a step reads
 * (run-resources.ts) and whether a task sends them to an expression worker (expression-pool.ts),
 * so the two cannot disagree. It reads text, not a parse: it may find a read where there is none
 * (`"$vars"` in a string literal), which costs a query, never one where there is.
 */

/** What a text reads of `$vars`: nothing, the keys it names as `$vars.KEY`, or all of them (`$keys($vars)`, `$lookup($vars, k)`). */
export type VarsRead = { readonly kind: 'none' } | { readonly kind: 'keys'; readonly keys: readonly string[] } | { readonly kind: 'all' };

const NAME = '$vars';
/** `$vars` not followed by a name character (else it is another variable, `$varsOld`), and the key when it is `$vars.KEY`. */
const REFERENCE = /\$vars(?![\w$])(?:\.([A-Za-z_]\w*)(?![\w$]))?/g;

/** What `texts` together read of `$vars`. */
export function varsReadIn(texts: Iterable<string>): VarsRead {
  const keys = new Set<string>();
  let mentioned = false;
  for (const text of texts) {
    if (!text.includes(NAME)) continue;
    for (const match of text.matchAll(REFERENCE)) {
      mentioned = true;
      if (match[1] === undefined) return { kind: 'all' };
      keys.add(match[1]);
    }
  }
  return mentioned ? { kind: 'keys', keys: [...keys] } : { kind: 'none' };
}

/** Whether `text` reads `$vars` at all. */
export function readsVars(text: string): boolean {
  return varsReadIn([text]).kind !== 'none';
}
