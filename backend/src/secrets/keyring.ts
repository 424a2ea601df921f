import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';

/**
 * What a sealed secret belongs to, bound in as authenticated data: its table, row and owner, and
 * for a secret that may be sent to one place only, that place (`scope`: a connection's origin, see
 * src/secrets/bindings.ts). A secret opened with any part changed does not open.
 */
export interface SecretBinding {
  readonly table: 'connections' | 'variables' | 'event_subscriptions';
  readonly rowId: string;
  readonly userId: string;
  readonly scope?: string;
}

/** A secret as stored: the id of the key that wraps it, and the envelope (base64url). */
export interface SealedSecret {
  readonly keyId: string;
  readonly ciphertext: string;
}

/** One SECRETS_KEYS entry: an id (stored beside each secret it wraps) and 32 bytes of key. */
export interface KeyEntry {
  readonly id: string;
  readonly key: Buffer;
}

/** A secret that cannot be opened: tampered, moved to another row or user, or its key removed. */
export class SecretUnreadableError extends Error {
  override readonly name = 'SecretUnreadableError';
  constructor(reason: string) {
    super(`the secret cannot be decrypted (${reason})`);
  }
}

const ALGORITHM = 'aes-256-gcm';
const FORMAT_VERSION = 1;
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** version | wrap iv | wrap tag | wrapped data key | data iv | data tag | ciphertext */
const HEADER_BYTES = 1 + IV_BYTES + TAG_BYTES + KEY_BYTES + IV_BYTES + TAG_BYTES;

function associatedData(binding: SecretBinding, purpose: 'key' | 'value', keyId: string): Buffer {
  // Each part is length-prefixed, so the parts read back unambiguously from the left and no two
  // bindings produce the same bytes, whatever characters a part holds and however many parts
  // there are. The scope is a seventh part only when there is one (a variable's binding has six).
  const parts = [`autonode-secret-v${FORMAT_VERSION}`, purpose, binding.table, binding.rowId, binding.userId, purpose === 'key' ? keyId : ''];
  if (binding.scope !== undefined) parts.push(binding.scope);
  return Buffer.from(parts.map((part) => `${part.length}:${part}`).join('|'), 'utf8');
}

function encrypt(key: Buffer, plaintext: Buffer, aad: Buffer): { iv: Buffer; tag: Buffer; ciphertext: Buffer } {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key, iv);
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, tag: cipher.getAuthTag(), ciphertext };
}

function decrypt(key: Buffer, iv: Buffer, tag: Buffer, ciphertext: Buffer, aad: Buffer): Buffer {
  const decipher = createDecipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

interface Envelope {
  readonly wrapIv: Buffer;
  readonly wrapTag: Buffer;
  readonly wrappedKey: Buffer;
  readonly dataIv: Buffer;
  readonly dataTag: Buffer;
  readonly ciphertext: Buffer;
}

function pack(envelope: Envelope): string {
  const { wrapIv, wrapTag, wrappedKey, dataIv, dataTag, ciphertext } = envelope;
  return Buffer.concat([Buffer.of(FORMAT_VERSION), wrapIv, wrapTag, wrappedKey, dataIv, dataTag, ciphertext]).toString('base64url');
}

function unpack(text: string): Envelope {
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.length < HEADER_BYTES || bytes[0] !== FORMAT_VERSION) throw new SecretUnreadableError('not a sealed secret');
  let offset = 1;
  const take = (length: number) => bytes.subarray(offset, (offset += length));
  return { wrapIv: take(IV_BYTES), wrapTag: take(TAG_BYTES), wrappedKey: take(KEY_BYTES), dataIv: take(IV_BYTES), dataTag: take(TAG_BYTES), ciphertext: bytes.subarray(offset) };
}

/** What the first key is stretched into for Keyring.fingerprint (HKDF's info): no other use derives this key. */
const FINGERPRINT_PURPOSE = 'autonode:idempotency-fingerprint:v1';

/**
 * Envelope encryption of stored secrets with node:crypto's AES-256-GCM: each secret has its own
 * random data key, which encrypts the value; the first key of SECRETS_KEYS wraps (encrypts) the
 * data key. Both layers bind the secret's binding (table, row, owner, scope) as authenticated data
 * (the wrap also the key id), so a ciphertext copied to another row or user, a connection whose
 * origin was rewritten, or a secret relabelled with another key id does not open. Rotation
 * re-wraps the data key under the first key; the value's ciphertext stays.
 */
export class Keyring {
  private readonly byId: ReadonlyMap<string, Buffer>;
  /** HKDF of the first key for FINGERPRINT_PURPOSE: the first key itself only ever wraps data keys. */
  private readonly fingerprintKey: Buffer;

  constructor(private readonly keys: readonly KeyEntry[]) {
    if (keys.length === 0) throw new Error('a keyring needs at least one key');
    for (const entry of keys) {
      if (entry.key.length !== KEY_BYTES) throw new Error(`key '${entry.id}' is ${entry.key.length} bytes; AES-256 needs ${KEY_BYTES}`);
    }
    this.byId = new Map(keys.map((entry) => [entry.id, entry.key]));
    this.fingerprintKey = Buffer.from(hkdfSync('sha256', (keys[0] as KeyEntry).key, Buffer.alloc(0), FINGERPRINT_PURPOSE, KEY_BYTES));
  }

  /**
   * A keyed digest of a secret (HMAC-SHA256, base64url) that stands for it where a request must be
   * recognised again without the secret being kept (src/secrets/fingerprint.ts). The same value
   * gives the same digest as long as the first key stays first; without the key, a stored digest
   * cannot confirm a guess of the value.
   */
  fingerprint(value: string): string {
    return createHmac('sha256', this.fingerprintKey).update(value, 'utf8').digest('base64url');
  }

  /** The key that seals every new secret (and every rotated one). */
  get primaryKeyId(): string {
    return (this.keys[0] as KeyEntry).id;
  }

  seal(plaintext: string, binding: SecretBinding): SealedSecret {
    const dataKey = randomBytes(KEY_BYTES);
    const data = encrypt(dataKey, Buffer.from(plaintext, 'utf8'), associatedData(binding, 'value', ''));
    return this.wrap(dataKey, { dataIv: data.iv, dataTag: data.tag, ciphertext: data.ciphertext }, binding);
  }

  /** The value, or SecretUnreadableError (tampered, moved, or its key no longer in SECRETS_KEYS). */
  open(sealed: SealedSecret, binding: SecretBinding): string {
    const envelope = unpack(sealed.ciphertext);
    const dataKey = this.unwrap(sealed.keyId, envelope, binding);
    try {
      return decrypt(dataKey, envelope.dataIv, envelope.dataTag, envelope.ciphertext, associatedData(binding, 'value', '')).toString('utf8');
    } catch {
      throw new SecretUnreadableError('it does not belong to this row, or it was altered');
    }
  }

  /** The same secret wrapped by the first key (the value's ciphertext is unchanged); throws as `open`. */
  rewrap(sealed: SealedSecret, binding: SecretBinding): SealedSecret {
    const envelope = unpack(sealed.ciphertext);
    const dataKey = this.unwrap(sealed.keyId, envelope, binding);
    return this.wrap(dataKey, envelope, binding);
  }

  private wrap(dataKey: Buffer, data: Pick<Envelope, 'dataIv' | 'dataTag' | 'ciphertext'>, binding: SecretBinding): SealedSecret {
    const keyId = this.primaryKeyId;
    const wrapped = encrypt(this.byId.get(keyId) as Buffer, dataKey, associatedData(binding, 'key', keyId));
    // Only the value's three parts are taken from `data`: rewrap passes a whole envelope, whose old
    // wrap must not replace the new one.
    return {
      keyId,
      ciphertext: pack({ wrapIv: wrapped.iv, wrapTag: wrapped.tag, wrappedKey: wrapped.ciphertext, dataIv: data.dataIv, dataTag: data.dataTag, ciphertext: data.ciphertext }),
    };
  }

  private unwrap(keyId: string, envelope: Envelope, binding: SecretBinding): Buffer {
    const key = this.byId.get(keyId);
    if (!key) throw new SecretUnreadableError(`its key '${keyId}' is not in SECRETS_KEYS`);
    try {
      return decrypt(key, envelope.wrapIv, envelope.wrapTag, envelope.wrappedKey, associatedData(binding, 'key', keyId));
    } catch {
      throw new SecretUnreadableError('it does not belong to this row, or it was altered');
    }
  }
}

/** A new random key entry in SECRETS_KEYS form (`id:base64`), for development and for the README's command. */
export function generateKeyEntry(id: string): string {
  return `${id}:${randomBytes(KEY_BYTES).toString('base64')}`;
}

/**
 * Parses SECRETS_KEYS (`id:base64-32-bytes,...`): ids are unique and made of letters, digits, `_`
 * and `-`; each key decodes to exactly 32 bytes. Throws an Error whose message names the problem
 * and never includes key material.
 */
export function parseKeyEntries(spec: string): KeyEntry[] {
  const entries = spec.split(',').map((part) => part.trim()).filter(Boolean);
  if (entries.length === 0) throw new Error('expected id:base64key[,id:base64key...]');
  const seen = new Set<string>();
  return entries.map((entry, index) => {
    const colon = entry.indexOf(':');
    const id = colon === -1 ? '' : entry.slice(0, colon);
    const material = colon === -1 ? '' : entry.slice(colon + 1);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new Error(`entry ${index + 1}: expected id:base64key with an id of letters, digits, _ or - (at most 64)`);
    if (seen.has(id)) throw new Error(`entry ${index + 1}: the id '${id}' is used twice`);
    seen.add(id);
    const key = Buffer.from(material, 'base64');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(material) || key.length !== KEY_BYTES) {
      throw new Error(`key '${id}' must be ${KEY_BYTES} random bytes in base64 (openssl rand -base64 32)`);
    }
    return { id, key };
  });
}
