import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { connectionSecretBinding, connectionSecretScope } from '../src/secrets/bindings.js';
import { generateKeyEntry, Keyring, parseKeyEntries, SecretUnreadableError, type SealedSecret, type SecretBinding } from '../src/secrets/keyring.js';

/** The envelope's layout (keyring.ts): version, wrap iv, wrap tag, wrapped data key; then the value's iv, tag, ciphertext. */
const WRAP_BYTES = 1 + 12 + 16 + 32;

const keyringOf = (...specs: string[]) => new Keyring(parseKeyEntries(specs.join(',')));
const bindingFor = (overrides: Partial<SecretBinding> = {}): SecretBinding => ({ table: 'connections', rowId: randomUUID(), userId: `user-${randomUUID()}`, ...overrides });

function expectUnreadable(open: () => unknown): SecretUnreadableError {
  let thrown: unknown;
  try {
    open();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(SecretUnreadableError);
  return thrown as SecretUnreadableError;
}

const envelopeBytes = (sealed: SealedSecret) => Buffer.from(sealed.ciphertext, 'base64url');
const withBytes = (sealed: SealedSecret, bytes: Buffer): SealedSecret => ({ keyId: sealed.keyId, ciphertext: bytes.toString('base64url') });

describe('Keyring', () => {
  const keyA = generateKeyEntry('a');
  const keyB = generateKeyEntry('b');

  it('opens what it sealed, for empty, unicode and long values, and never stores the value as is', () => {
    const keyring = keyringOf(keyA);
    const values = ['', 'plain-token-123', 'pässwörd 🔑 秘密 ключ', 'x'.repeat(8 * 1024), randomBytes(64).toString('base64')];
    for (const value of values) {
      const binding = bindingFor();
      const sealed = keyring.seal(value, binding);
      expect(sealed.keyId).toBe('a');
      expect(keyring.open(sealed, binding)).toBe(value);
      if (value.length > 0) {
        expect(sealed.ciphertext).not.toContain(value);
        expect(envelopeBytes(sealed).includes(Buffer.from(value, 'utf8'))).toBe(false);
      }
    }
  });

  it('seals the same value differently every time (a random data key and IVs)', () => {
    const keyring = keyringOf(keyA);
    const binding = bindingFor();
    const first = keyring.seal('same value', binding);
    const second = keyring.seal('same value', binding);
    expect(first.ciphertext).not.toBe(second.ciphertext);
    expect(envelopeBytes(first).subarray(WRAP_BYTES)).not.toEqual(envelopeBytes(second).subarray(WRAP_BYTES));
  });

  it('refuses an envelope with any one byte altered, cut short or extended', () => {
    const keyring = keyringOf(keyA);
    const binding = bindingFor();
    const sealed = keyring.seal('tamper-evident value', binding);
    const original = envelopeBytes(sealed);
    for (let index = 0; index < original.length; index += 1) {
      const altered = Buffer.from(original);
      altered[index] = (altered[index] ?? 0) ^ 0x01;
      expectUnreadable(() => keyring.open(withBytes(sealed, altered), binding));
    }
    expectUnreadable(() => keyring.open(withBytes(sealed, original.subarray(0, original.length - 1)), binding));
    expectUnreadable(() => keyring.open(withBytes(sealed, original.subarray(0, WRAP_BYTES)), binding));
    expectUnreadable(() => keyring.open(withBytes(sealed, Buffer.concat([original, Buffer.of(0)])), binding));
    expectUnreadable(() => keyring.open({ keyId: 'a', ciphertext: 'not an envelope' }, binding));
    // The original still opens: the failures above came from the alterations.
    expect(keyring.open(sealed, binding)).toBe('tamper-evident value');
  });

  it('refuses a secret opened for another table, row or owner', () => {
    const keyring = keyringOf(keyA);
    const binding = bindingFor();
    const sealed = keyring.seal('bound value', binding);
    expectUnreadable(() => keyring.open(sealed, { ...binding, table: 'variables' }));
    expectUnreadable(() => keyring.open(sealed, { ...binding, rowId: randomUUID() }));
    expectUnreadable(() => keyring.open(sealed, { ...binding, userId: `user-${randomUUID()}` }));
    expect(keyring.open(sealed, binding)).toBe('bound value');
  });

  it('binds the scope when there is one: another scope, or none, does not open, nor rewraps', () => {
    const keyring = keyringOf(keyA);
    const binding = bindingFor({ scope: 'https://api.example.com' });
    const sealed = keyring.seal('scoped value', binding);
    for (const scope of ['https://attacker.example.net', 'http://api.example.com', 'https://api.example.com:8443', '']) {
      expectUnreadable(() => keyring.open(sealed, { ...binding, scope }));
    }
    const unscoped: SecretBinding = { table: binding.table, rowId: binding.rowId, userId: binding.userId };
    expectUnreadable(() => keyring.open(sealed, unscoped));
    expectUnreadable(() => keyringOf(generateKeyEntry('b'), keyA).rewrap(sealed, { ...binding, scope: 'https://attacker.example.net' }));
    expect(keyring.open(sealed, binding)).toBe('scoped value');
    // And a secret sealed without one does not open with one.
    const plain = keyring.seal('unscoped value', unscoped);
    expectUnreadable(() => keyring.open(plain, { ...unscoped, scope: '' }));
    expect(keyring.open(plain, unscoped)).toBe('unscoped value');
  });

  it('binds a connection’s secret to its baseUrl’s origin: another path stays readable, another scheme, host or port does not', () => {
    const keyring = keyringOf(keyA);
    const connection = { id: randomUUID(), userId: `user-${randomUUID()}`, baseUrl: 'https://api.example.com/v1/' };
    const sealed = keyring.seal('connection secret', connectionSecretBinding(connection));
    for (const baseUrl of ['https://api.example.com/v2', 'https://api.example.com', 'https://api.example.com:443/other/']) {
      expect(keyring.open(sealed, connectionSecretBinding({ ...connection, baseUrl }))).toBe('connection secret');
    }
    for (const baseUrl of ['https://attacker.example.net/v1/', 'http://api.example.com/v1/', 'https://api.example.com:8443/v1/', 'not a url', '']) {
      expectUnreadable(() => keyring.open(sealed, connectionSecretBinding({ ...connection, baseUrl })));
    }
    expect(connectionSecretScope('https://API.Example.com:443/v1')).toBe('https://api.example.com');
    // Text that is not a URL never gets the scope of one.
    expect(connectionSecretScope('https://api.example.com')).not.toBe(connectionSecretScope('not a url'));
  });

  it('fingerprints a value with a key derived from the first key alone: stable, one-way, not the key itself', () => {
    const entryA = parseKeyEntries(keyA)[0];
    if (!entryA) throw new Error('no key');
    const withA = keyringOf(keyA);
    const digest = withA.fingerprint('a secret value');
    expect(digest).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(withA.fingerprint('a secret value')).toBe(digest);
    expect(withA.fingerprint('another secret value')).not.toBe(digest);
    // The keys after the first do not matter; another first key gives another digest.
    expect(keyringOf(keyA, keyB).fingerprint('a secret value')).toBe(digest);
    expect(keyringOf(keyB, keyA).fingerprint('a secret value')).not.toBe(digest);
    // Not an HMAC under the first key as it is: that key only wraps data keys.
    expect(createHmac('sha256', entryA.key).update('a secret value').digest('base64url')).not.toBe(digest);
  });

  it('refuses a secret relabelled with another configured key id, and names a key that is not configured', () => {
    const keyring = keyringOf(keyA, keyB);
    const binding = bindingFor();
    const sealed = keyring.seal('labelled value', binding);
    expect(sealed.keyId).toBe('a');
    expectUnreadable(() => keyring.open({ ...sealed, keyId: 'b' }, binding));
    const missing = expectUnreadable(() => keyring.open({ ...sealed, keyId: 'gone' }, binding));
    expect(missing.message).toContain("'gone' is not in SECRETS_KEYS");
  });

  it('rewraps under the first key: the key id changes, the value and its ciphertext stay', () => {
    const binding = bindingFor({ table: 'variables' });
    const sealedUnderA = keyringOf(keyA).seal('rotating välue ✓', binding);
    const rotating = keyringOf(keyB, keyA);
    const rewrapped = rotating.rewrap(sealedUnderA, binding);

    expect(rewrapped.keyId).toBe('b');
    expect(envelopeBytes(rewrapped).subarray(WRAP_BYTES)).toEqual(envelopeBytes(sealedUnderA).subarray(WRAP_BYTES));
    expect(envelopeBytes(rewrapped).subarray(0, WRAP_BYTES)).not.toEqual(envelopeBytes(sealedUnderA).subarray(0, WRAP_BYTES));
    expect(rotating.open(rewrapped, binding)).toBe('rotating välue ✓');
    // Only B is needed now; A alone no longer opens it.
    expect(keyringOf(keyB).open(rewrapped, binding)).toBe('rotating välue ✓');
    expectUnreadable(() => keyringOf(keyA).open(rewrapped, binding));
    // A rewrap checks the binding as open does.
    expectUnreadable(() => rotating.rewrap(sealedUnderA, { ...binding, rowId: randomUUID() }));
  });

  it('refuses keys that are not 32 bytes, without showing them', () => {
    const material = randomBytes(16);
    let message = '';
    try {
      new Keyring([{ id: 'short', key: material }]);
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("key 'short' is 16 bytes");
    expect(message).not.toContain(material.toString('base64'));
    expect(() => new Keyring([])).toThrow(/at least one key/);
  });
});

describe('parseKeyEntries', () => {
  it('reads what generateKeyEntry writes, in order, the first being the one that seals', () => {
    const entries = parseKeyEntries(` ${generateKeyEntry('new_1')} , ${generateKeyEntry('old-0')} `);
    expect(entries.map((entry) => entry.id)).toEqual(['new_1', 'old-0']);
    expect(entries.every((entry) => entry.key.length === 32)).toBe(true);
    expect(new Keyring(entries).primaryKeyId).toBe('new_1');
  });

  it('names the problem of a bad entry and never repeats any key material', () => {
    const valid = randomBytes(32).toString('base64');
    const short = randomBytes(31).toString('base64');
    const long = randomBytes(33).toString('base64');
    const cases: { spec: string; material: string; expected: RegExp }[] = [
      { spec: `k1:${short}`, material: short, expected: /key 'k1' must be 32 random bytes/ },
      { spec: `k1:${long}`, material: long, expected: /key 'k1' must be 32 random bytes/ },
      { spec: `k1:${valid.slice(0, 20)}!${valid.slice(21)}`, material: valid.slice(0, 20), expected: /key 'k1' must be 32 random bytes/ },
      { spec: `k1:${valid},k1:${valid}`, material: valid, expected: /entry 2: the id 'k1' is used twice/ },
      { spec: `bad id:${valid}`, material: valid, expected: /entry 1: expected id:base64key/ },
      { spec: valid, material: valid, expected: /entry 1: expected id:base64key/ },
      { spec: `:${valid}`, material: valid, expected: /entry 1: expected id:base64key/ },
      { spec: ' , ', material: '', expected: /expected id:base64key/ },
    ];
    for (const { spec, material, expected } of cases) {
      let message = '';
      try {
        parseKeyEntries(spec);
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message, spec).toMatch(expected);
      // No run of 8 characters of the material appears in the message.
      for (let start = 0; start + 8 <= material.length; start += 1) {
        expect(message.includes(material.slice(start, start + 8)), `${spec}: the message contains key material`).toBe(false);
      }
    }
  });
});
