import { afterAll, expect } from 'vitest';
import { allCapturedLogLines } from './helpers.js';

/**
 * After every test file: the logs of all the apps it built hold no credential. API keys and the
 * suite's passwords have known shapes; a session token would follow its cookie name unredacted.
 */
const leaks: { what: string; pattern: RegExp }[] = [
  { what: 'an API key', pattern: /ank_[A-Za-z0-9_-]{43}/ },
  { what: 'a test password', pattern: /correct-horse-battery|very-secret-password-42|right-password-1|wrong-password-1/ },
  { what: 'a session cookie value', pattern: /session_token=(?!\[redacted\])[A-Za-z0-9%._-]{16,}/ },
  { what: 'an Authorization header value', pattern: /"authorization":"(?!\[redacted\])[^"]+"/i },
];

afterAll(() => {
  const logs = allCapturedLogLines.flat().join('');
  for (const { what, pattern } of leaks) {
    const match = pattern.exec(logs);
    expect(match?.[0], `the logs of this file's apps contain ${what}`).toBeUndefined();
  }
});
