import { z } from 'zod';

export const MAX_HTTP_URL_LENGTH = 2048;

/**
 * An absolute http(s) URL stored normalised (`new URL(x).href`: scheme and host lower-case,
 * default port and dot segments dropped; a path stays as given), at most 2048 characters before
 * and after normalising. Credentials (`user:password@`) are always refused: they would be stored
 * and shown in plain text. A fragment is never sent, so it is refused too; a query is refused
 * only where the caller says it would be lost (`withQuery: false`).
 */
export function httpUrl(options: { withQuery: boolean; credentialsHint?: string }) {
  return z
    .string()
    .max(MAX_HTTP_URL_LENGTH)
    .transform((text, ctx) => {
      const refuse = (message: string) => {
        ctx.addIssue({ code: 'custom', message });
        return z.NEVER;
      };
      // The URL parser would silently drop tabs and line breaks and trim spaces: refuse them instead.
      if (/[\x00-\x20\x7f]/.test(text)) return refuse('must not contain spaces or control characters');
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        return refuse('must be an absolute URL');
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return refuse('must be an http or https URL');
      if (url.username !== '' || url.password !== '') {
        return refuse(`must not contain credentials (user:password@)${options.credentialsHint ? `: ${options.credentialsHint}` : ''}`);
      }
      if (!options.withQuery && url.href.includes('?')) return refuse('must not have a query or a fragment');
      if (url.hash !== '' || url.href.endsWith('#')) return refuse(options.withQuery ? 'must not have a fragment (it is never sent)' : 'must not have a query or a fragment');
      if (url.href.length > MAX_HTTP_URL_LENGTH) return refuse(`must be at most ${MAX_HTTP_URL_LENGTH} characters once normalised`);
      return url.href;
    });
}
