import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEventBus, type BusMessage, type EventBus } from '../src/bus/bus.js';
import { createDbClient, type DbClient } from '../src/db/client.js';
import { eventually } from './engine-helpers.js';
import { databaseUrl, isEmbeddedDatabase } from './helpers.js';

describe.skipIf(isEmbeddedDatabase())('the event bus on PostgreSQL (skipped on the embedded database: no LISTEN there)', () => {
  const applicationName = `autonode-bus-test-${process.pid}`;
  let database: DbClient;
  let bus: EventBus;
  const heard: BusMessage[] = [];

  beforeAll(() => {
    database = createDbClient({ url: databaseUrl(), poolSize: 2, idleTimeoutSeconds: 0, connectTimeoutSeconds: 5, statementTimeoutMs: 0, applicationName }, 'external');
    bus = createEventBus(database, pino({ level: 'silent' }));
    bus.subscribe((message) => heard.push(message));
  });
  afterAll(async () => {
    await bus.close();
    await database.close();
  });

  const count = (kind: BusMessage['kind']) => heard.filter((message) => message.kind === kind).length;

  it('tells subscribers to resync when it listens again after losing its connection, and delivers each message once', async () => {
    await eventually(async () => count('resync') >= 1, 10_000, 'the bus listening');
    const [killed] = await database.sql<{ count: number }[]>`
      select count(pg_terminate_backend(pid))::int as count from pg_stat_activity
       where application_name = ${applicationName} and query ilike 'listen%'`;
    expect(killed?.count).toBe(1);
    await eventually(async () => count('resync') >= 2, 10_000, 'the bus listening again');

    await bus.publish({ kind: 'callers-changed', userId: 'bus-test' });
    await eventually(async () => count('callers-changed') >= 1, 5_000, 'the message arriving');
    // Time for a second copy to arrive, if the reconnect had left two listeners.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(count('callers-changed')).toBe(1);
  });

  it('closes cleanly while the database is unreachable for its unlisten', async () => {
    const unreachable = createDbClient({ url: 'postgres://postgres@127.0.0.1:9/none', poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 1, statementTimeoutMs: 0 }, 'external');
    const deaf = createEventBus(unreachable, pino({ level: 'silent' }));
    await expect(deaf.close()).resolves.toBeUndefined();
    await unreachable.close();
  });
});
