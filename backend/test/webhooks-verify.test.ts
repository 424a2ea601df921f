/**
 * The webhook verification schemes on their own (src/webhooks/verify.ts), with the clock where a
 * test vector needs it: the Standard Webhooks specification's own vector, HMAC-SHA256 as GitHub
 * sends it, and a shared header secret.
 */
import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { sentHeaders, verifyDelivery as verifySent } from '../src/webhooks/verify.js';

/** From the Standard Webhooks specification (and every library's tests). */
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  payload: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};
const standard = { scheme: 'standard-webhooks', secretVariable: 'SW' } as const;
const vectorHeaders = (signature = VECTOR.signature, timestamp = VECTOR.timestamp) => ({
  'webhook-id': VECTOR.id,
  'webhook-timestamp': String(timestamp),
  'webhook-signature': signature,
});
/** The headers as a request sends them: an array is a header sent once per value. */
const verifyDelivery = (verify: Parameters<typeof verifySent>[0], secret: Parameters<typeof verifySent>[1], body: Buffer, headers: Record<string, string | string[]>) =>
  verifySent(verify, secret, body, sentHeaders(Object.entries(headers).flatMap(([name, value]) => (Array.isArray(value) ? value : [value]).flatMap((one) => [name, one]))));
const atSeconds = (seconds: number) => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(seconds * 1000);
};

describe('verifyDelivery', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  describe('standard-webhooks', () => {
    const verify = (headers: Record<string, string | string[]>, payload = VECTOR.payload, secret = VECTOR.secret) => verifyDelivery(standard, { value: secret }, Buffer.from(payload), headers);

    it('accepts the specification’s test vector with the clock at its timestamp', () => {
      atSeconds(VECTOR.timestamp);
      expect(verify(vectorHeaders())).toEqual({ ok: true });
    });

    it('accepts one valid signature among several (space-separated, other versions ignored)', () => {
      atSeconds(VECTOR.timestamp);
      const wrong = `v1,${Buffer.alloc(32, 1).toString('base64')}`;
      expect(verify(vectorHeaders(`${wrong} v2,abc ${VECTOR.signature}`))).toEqual({ ok: true });
      expect(verify(vectorHeaders(`${VECTOR.signature} ${wrong}`))).toEqual({ ok: true });
      expect(verify(vectorHeaders(`${wrong} v2,abc`)).ok).toBe(false);
    });

    it('takes timestamps within 5 minutes either way, and no further', () => {
      for (const skew of [-300, 300]) {
        atSeconds(VECTOR.timestamp + skew);
        expect(verify(vectorHeaders()), `clock ${skew} s off`).toEqual({ ok: true });
      }
      atSeconds(VECTOR.timestamp + 301);
      expect(verify(vectorHeaders())).toEqual({ ok: false, reason: expect.stringMatching(/too old/) });
      atSeconds(VECTOR.timestamp - 301);
      expect(verify(vectorHeaders())).toEqual({ ok: false, reason: expect.stringMatching(/too new/) });
    });

    it('rejects a payload changed by one byte, another id, another secret, and a missing header', () => {
      atSeconds(VECTOR.timestamp);
      expect(verify(vectorHeaders(), VECTOR.payload.replace('4', '5')).ok).toBe(false);
      expect(verify({ ...vectorHeaders(), 'webhook-id': `${VECTOR.id}x` }).ok).toBe(false);
      expect(verify(vectorHeaders(), VECTOR.payload, `whsec_${Buffer.alloc(24, 9).toString('base64')}`).ok).toBe(false);
      for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
        const headers: Record<string, string> = vectorHeaders();
        delete headers[header];
        expect(verify(headers), header).toEqual({ ok: false, reason: expect.stringMatching(/missing/i) });
      }
      for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
        const headers: Record<string, string | string[]> = vectorHeaders();
        headers[header] = [headers[header] as string, headers[header] as string];
        expect(verify(headers), header).toEqual({ ok: false, reason: `the ${header} header was sent 2 times` });
      }
      expect(verify({ ...vectorHeaders(), 'webhook-timestamp': 'soon' }).ok).toBe(false);
    });

    it('rejects, with the reason for the owner, a secret that is not a Standard Webhooks secret', () => {
      atSeconds(VECTOR.timestamp);
      expect(verify(vectorHeaders(), VECTOR.payload, 'whsec_')).toEqual({ ok: false, reason: expect.stringContaining("'SW' is not a Standard Webhooks secret") });
    });

    it('checks the raw bytes, whatever the body is (a form or text is not parsed as JSON)', () => {
      atSeconds(VECTOR.timestamp);
      const form = 'a=1&a=2';
      const signature = `v1,${createHmac('sha256', Buffer.from(VECTOR.secret.slice('whsec_'.length), 'base64')).update(`${VECTOR.id}.${VECTOR.timestamp}.${form}`).digest('base64')}`;
      expect(verify(vectorHeaders(signature), form)).toEqual({ ok: true });
    });
  });

  describe('hmac-sha256', () => {
    const github = { scheme: 'hmac-sha256', header: 'x-hub-signature-256', prefix: 'sha256=', secretVariable: 'GH' } as const;
    const body = Buffer.from('{"zen":"Keep it logically awesome."}');
    const hex = createHmac('sha256', 'gh-secret').update(body).digest('hex');

    it('accepts the hex digest after its prefix (either case), and rejects anything else', () => {
      const check = (value: string | undefined, payload = body, verify: typeof github | Omit<typeof github, 'prefix'> = github) =>
        verifyDelivery(verify, { value: 'gh-secret' }, payload, value === undefined ? {} : { 'x-hub-signature-256': value });
      expect(check(`sha256=${hex}`)).toEqual({ ok: true });
      expect(check(`sha256=${hex.toUpperCase()}`)).toEqual({ ok: true });
      expect(check(hex, body, { scheme: 'hmac-sha256', header: 'x-hub-signature-256', secretVariable: 'GH' })).toEqual({ ok: true });
      expect(check(hex).ok).toBe(false);
      expect(check(`sha1=${hex}`).ok).toBe(false);
      expect(check(`sha256=${hex.slice(0, -1)}`).ok).toBe(false);
      expect(check(`sha256=${hex}0`).ok).toBe(false);
      expect(check(`sha256=${hex}`, Buffer.concat([body, Buffer.from(' ')])).ok).toBe(false);
      expect(check(undefined)).toEqual({ ok: false, reason: expect.stringContaining('x-hub-signature-256 header is missing') });
    });

    it('does not take a header sent twice as a signature, and tells the owner so; the name is matched in any case', () => {
      expect(verifyDelivery(github, { value: 'gh-secret' }, body, { 'x-hub-signature-256': [`sha256=${hex}`, `sha256=${hex}`] })).toEqual({
        ok: false,
        reason: 'the x-hub-signature-256 header was sent 2 times',
      });
      expect(verifyDelivery(github, { value: 'gh-secret' }, body, { 'X-Hub-Signature-256': `sha256=${hex}` })).toEqual({ ok: true });
    });
  });

  describe('header', () => {
    const verify = { scheme: 'header', header: 'x-token', secretVariable: 'T' } as const;
    it('accepts exactly the secret', () => {
      expect(verifyDelivery(verify, { value: 's3cret' }, Buffer.alloc(0), { 'x-token': 's3cret' })).toEqual({ ok: true });
      for (const value of ['s3cre', 's3crett', 'S3CRET', '', ' s3cret']) expect(verifyDelivery(verify, { value: 's3cret' }, Buffer.alloc(0), { 'x-token': value }).ok, value).toBe(false);
      expect(verifyDelivery(verify, { value: 's3cret' }, Buffer.alloc(0), {}).ok).toBe(false);
    });
  });

  it('passes every delivery without verify or with scheme none; rejects with the secret’s reason when it cannot be read', () => {
    expect(verifyDelivery(undefined, undefined, Buffer.from('x'), {})).toEqual({ ok: true });
    expect(verifyDelivery({ scheme: 'none' }, undefined, Buffer.from('x'), {})).toEqual({ ok: true });
    expect(verifyDelivery({ scheme: 'header', header: 'x-token', secretVariable: 'T' }, { missing: "the secret variable 'T' does not exist" }, Buffer.alloc(0), { 'x-token': 'anything' })).toEqual({
      ok: false,
      reason: "the secret variable 'T' does not exist",
    });
  });
});
