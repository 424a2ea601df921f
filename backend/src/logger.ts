import type { FastifyRequest } from 'fastify';
import pino, { type Logger } from 'pino';
import type { Config } from './config.js';

/**
 * Paths whose values never reach a log line. Fastify's request serializer logs method/url/host
 * only, but a handler logging a request object, a body or an upstream error must not leak
 * credentials either.
 */
export const redactedPaths = [
  'req.headers.cookie',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  'headers.cookie',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers["set-cookie"]',
  '*.password',
  '*.newPassword',
  '*.currentPassword',
  '*.token',
  '*.key',
  '*.apiKey',
  '*.secret',
  'password',
  'token',
  'key',
  'apiKey',
  'secret',
];

export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    redact: { paths: redactedPaths, censor: '[redacted]' },
    serializers: {
      // Fastify's request fields, with the scheme: behind a proxy, remoteAddress and protocol are the
      // client's (X-Forwarded-For/-Proto) only when TRUST_PROXY trusts that proxy.
      req: (request: FastifyRequest) => ({
        method: request.method,
        url: request.url,
        host: request.host,
        protocol: request.protocol,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
  };
  if (destination) return pino(options, destination);
  // Pretty output is for people at a terminal; pipes and log collectors get one JSON object a line.
  if (process.stdout.isTTY) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(options);
}
