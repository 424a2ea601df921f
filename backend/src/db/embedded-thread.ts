import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

/** What embedded.ts passes to the thread. */
export interface EmbeddedThreadOptions {
  readonly dataDir: string;
}

/** What the thread tells embedded.ts: its address once serving, and the end of a stop it was asked for. */
export type EmbeddedThreadMessage =
  | { readonly kind: 'listening'; readonly address: string }
  | { readonly kind: 'stopped' }
  | { readonly kind: 'failed'; readonly message: string; readonly stack?: string };

/** A failure as the thread reports it: the message, and the stack where it was thrown (in this thread). */
function failure(error: unknown): EmbeddedThreadMessage {
  return error instanceof Error ? { kind: 'failed', message: error.message, stack: error.stack } : { kind: 'failed', message: String(error) };
}

/**
 * The worker thread that owns PGlite and its one-connection socket server (started by
 * startEmbeddedPostgres in embedded.ts, which holds the data directory's lock). It opens the
 * database, reports its address, and on 'stop' closes the server and then the database.
 */
async function serve(port: NonNullable<typeof parentPort>, options: EmbeddedThreadOptions): Promise<void> {
  const send = (message: EmbeddedThreadMessage) => port.postMessage(message);
  let database: PGlite;
  let server: PGLiteSocketServer;
  try {
    database = await PGlite.create({ dataDir: options.dataDir });
    server = new PGLiteSocketServer({ db: database, host: '127.0.0.1', port: 0, maxConnections: 1 });
    await server.start();
  } catch (error) {
    send(failure(error));
    return;
  }
  port.once('message', () => {
    void (async () => {
      try {
        await server.stop();
        await database.close();
        send({ kind: 'stopped' });
      } catch (error) {
        send(failure(error));
      }
    })();
  });
  send({ kind: 'listening', address: server.getServerConn() });
}

if (!parentPort) throw new Error('embedded-thread runs as a worker thread of startEmbeddedPostgres (embedded.ts)');
await serve(parentPort, workerData as EmbeddedThreadOptions);
