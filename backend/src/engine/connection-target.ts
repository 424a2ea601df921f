/**
 * Where an `http.request` through a connection goes (API.md, Connections): the same reading at
 * save (a literal url) and at run (a url from templates).
 */

/** Whether a url names a scheme (`https:`, `ftp:`); one that does not is relative to the connection's baseUrl. */
export function hasScheme(url: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:/.test(url);
}

/**
 * A relative url joined to a baseUrl as axios and ky join them: the baseUrl without its trailing
 * slashes, one '/', the url without its leading slashes. So `/users` and `users` both extend the
 * baseUrl's path (`https://api.example.com/v2` + `/users` is `https://api.example.com/v2/users`),
 * and `//other.example` cannot change the host.
 */
export function joinToBase(baseUrl: string, url: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/${url.replace(/^\/+/, '')}`;
}

/** The url a request through the connection is sent to: joined when relative, as it is when absolute. */
export function targetThrough(baseUrl: string, url: string): string {
  return hasScheme(url) ? url : joinToBase(baseUrl, url);
}

/** The url's origin (`https://api.example.com:8443`), or undefined when it has none (not a URL, or an opaque one). */
export function originOf(url: string): string | undefined {
  try {
    const origin = new URL(url).origin;
    return origin === 'null' ? undefined : origin;
  } catch {
    return undefined;
  }
}

/** Whether a connection's credentials may go to `url`: only to its baseUrl's own origin. */
export function sharesOrigin(url: string, baseUrl: string): boolean {
  const origin = originOf(url);
  return origin !== undefined && origin === originOf(baseUrl);
}
