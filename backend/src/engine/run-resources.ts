import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Db } from '../db/client.js';
import { connections, variables, type ConnectionAuthType } from '../db/schema/index.js';
import { connectionSecretBinding } from '../secrets/bindings.js';
import { SecretUnreadableError, type Keyring, type SecretBinding } from '../secrets/keyring.js';
import { StepError } from './errors.js';
import type { WorkflowNode } from './graph.js';
import { forEachString } from '../lib/json-walk.js';
import { Redactor, secretForms } from './redaction.js';
import { secretKeysIn } from './secret-templates.js';
import { varsReadIn, type VarsRead } from './vars-references.js';

/**
 * What one step reads of its user's settings when it runs (API.md, Connections and Variables):
 * the connection its `http.request` names, the non-secret variables its expressions read as
 * `$vars`, and the secret variables it names as `{{ $secrets.KEY }}`. Always the rows as they are
 * now, never as they were when the workflow was saved. A step whose params mention none of them
 * costs no query at all.
 */

/** How a connection authenticates, with its secret opened. */
export type ConnectionAuth =
  | { readonly type: 'none' }
  | { readonly type: 'bearer'; readonly secret: string }
  | { readonly type: 'basic'; readonly username: string; readonly secret: string }
  | { readonly type: 'header' | 'query'; readonly name: string; readonly secret: string };

export interface StepConnection {
  readonly id: string;
  readonly name: string;
  readonly baseUrl: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly auth: ConnectionAuth;
}

export interface StepResources {
  /** `$vars`: the variables read (all of them, or those named as `$vars.KEY`); undefined when no expression mentions `$vars`. */
  readonly vars: Readonly<Record<string, unknown>> | undefined;
  /** Secret variables' values by key: exactly those the params name. */
  readonly secrets: ReadonlyMap<string, string>;
  /** The connection the params name, if any. */
  readonly connection: StepConnection | undefined;
  /** Masks every secret above, in every form it is sent in, wherever the step's data is recorded or logged. */
  readonly redactor: Redactor;
  /**
   * Records that the step used its connection (lastUsedAt): called by the node once its request
   * may go (a request refused before, CONNECTION_ORIGIN_MISMATCH, is no use). Never rejects; the
   * node awaits it before its step ends, so the write is over before the engine's runs are (and
   * before the pool closes after engine.stop).
   */
  readonly recordConnectionUse: () => Promise<void>;
}

const nothingToRecord = (): Promise<void> => Promise.resolve();

export const noStepResources: StepResources = { vars: undefined, secrets: new Map(), connection: undefined, redactor: Redactor.none, recordConnectionUse: nothingToRecord };

/** Where the runner gets a step's resources (an interface, so the runner does not depend on the database). */
export interface StepResourceSource {
  forStep(userId: string, node: WorkflowNode): Promise<StepResources>;
  /**
   * Masks every secret the workflow names anywhere (its connections' secrets, its `$secrets`
   * keys), as they are now: a secret one step sent may come back in a later step's response, and
   * is masked there too. Names that no longer resolve (deleted, unreadable) are left out: the step
   * that names one fails, it sends nothing. Costs nothing for a workflow that names none.
   */
  forRun(userId: string, snapshot: { readonly nodes: readonly WorkflowNode[] }): Promise<Redactor>;
}

export interface StepNeeds {
  readonly connection: string | undefined;
  readonly secretKeys: readonly string[];
  readonly vars: VarsRead;
}

/** What a node's params ask for, read from their text (no evaluation). */
export function stepNeeds(node: WorkflowNode): StepNeeds {
  const texts: string[] = [];
  forEachString(node.params, (text) => texts.push(text));
  const vars = varsReadIn(texts);
  const connection = node.type === 'http.request' && typeof node.params.connection === 'string' ? node.params.connection : undefined;
  return { connection, secretKeys: secretKeysIn(node.type, node.params), vars };
}

/** The columns of a connection a step reads. */
const connectionColumns = {
  id: connections.id,
  name: connections.name,
  baseUrl: connections.baseUrl,
  headers: connections.headers,
  authType: connections.authType,
  authUsername: connections.authUsername,
  authName: connections.authName,
  secretKeyId: connections.secretKeyId,
  secretCiphertext: connections.secretCiphertext,
};

/** The texts a connection's auth puts on the wire, in every form (secretForms). */
function authForms(auth: ConnectionAuth): string[] {
  if (auth.type === 'none') return [];
  // The Basic credential is base64 of `username:secret`: the secret does not show in it as such.
  return [...secretForms(auth.secret), ...(auth.type === 'basic' ? [basicCredential(auth.username, auth.secret)] : [])];
}

/** A connection is stamped at most this often, per process (and, in SQL, per database). */
const LAST_USED_RESOLUTION_MS = 60_000;
/** Past this many remembered stamps, the expired ones are forgotten (the map does not grow with every connection ever used). */
const LAST_USED_MEMORY = 10_000;

/** The engine's StepResourceSource: reads from the database, opens secrets with the keyring. */
export class RunResources implements StepResourceSource {
  /** Per node of the snapshots being run: its needs, read once however many attempts it takes. */
  private readonly needsByNode = new WeakMap<WorkflowNode, StepNeeds>();
  /** Per connection: when this process last stamped its lastUsedAt (ms). */
  private readonly stampedAt = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly keyring: Keyring,
    private readonly logger: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  private needsOf(node: WorkflowNode): StepNeeds {
    let needs = this.needsByNode.get(node);
    if (needs === undefined) {
      needs = stepNeeds(node);
      this.needsByNode.set(node, needs);
    }
    return needs;
  }

  async forRun(userId: string, snapshot: { readonly nodes: readonly WorkflowNode[] }): Promise<Redactor> {
    const names = new Set<string>();
    const keys = new Set<string>();
    for (const node of snapshot.nodes) {
      const needs = this.needsOf(node);
      if (needs.connection !== undefined) names.add(needs.connection);
      for (const key of needs.secretKeys) keys.add(key);
    }
    if (names.size === 0 && keys.size === 0) return Redactor.none;
    const [connectionRows, secretRows] = await Promise.all([
      names.size === 0 ? [] : this.db.select(connectionColumns).from(connections).where(and(eq(connections.userId, userId), inArray(connections.name, [...names]))),
      keys.size === 0 ? [] : this.secretRows(userId, [...keys]),
    ]);
    const forms: string[] = [];
    // What cannot be opened is left out here: the step that names it fails before it sends anything.
    const opened = <T>(open: () => T): T | undefined => {
      try {
        return open();
      } catch (error) {
        if (error instanceof StepError) return undefined;
        throw error;
      }
    };
    for (const row of connectionRows) {
      const auth = opened(() => this.openAuth(userId, row));
      if (auth) forms.push(...authForms(auth));
    }
    for (const row of secretRows) {
      if (!row.secret || row.secretKeyId === null || row.secretCiphertext === null) continue;
      const { secretKeyId: keyId, secretCiphertext: ciphertext } = row;
      const value = opened(() => this.open({ keyId, ciphertext }, { table: 'variables', rowId: row.id, userId }, `the secret variable '${row.key}'`));
      if (value !== undefined) forms.push(...secretForms(value));
    }
    return forms.length === 0 ? Redactor.none : new Redactor(forms);
  }

  async forStep(userId: string, node: WorkflowNode): Promise<StepResources> {
    const needs = this.needsOf(node);
    if (needs.connection === undefined && needs.secretKeys.length === 0 && needs.vars.kind === 'none') return noStepResources;

    const [connection, vars, secrets] = await Promise.all([
      needs.connection === undefined ? undefined : this.readConnection(userId, needs.connection),
      needs.vars.kind === 'none' ? undefined : this.readVars(userId, needs.vars),
      needs.secretKeys.length === 0 ? new Map<string, string>() : this.readSecrets(userId, needs.secretKeys),
    ]);
    const forms = [...secrets.values()].flatMap(secretForms);
    if (connection) forms.push(...authForms(connection.auth));
    return {
      vars,
      secrets,
      connection,
      redactor: forms.length === 0 ? Redactor.none : new Redactor(forms),
      recordConnectionUse: connection ? () => this.stampLastUsed(connection.id) : nothingToRecord,
    };
  }

  private async readConnection(userId: string, name: string): Promise<StepConnection> {
    const [row] = await this.db
      .select(connectionColumns)
      .from(connections)
      .where(and(eq(connections.userId, userId), eq(connections.name, name)));
    if (!row) {
      throw new StepError(`the connection '${name}' does not exist (it was deleted or renamed after the workflow was saved)`, {
        retryable: false,
        code: 'CONNECTION_NOT_FOUND',
        details: { connection: name },
      });
    }
    return { id: row.id, name: row.name, baseUrl: row.baseUrl, headers: row.headers, auth: this.openAuth(userId, row) };
  }

  private openAuth(
    userId: string,
    row: {
      id: string;
      name: string;
      baseUrl: string;
      authType: ConnectionAuthType;
      authUsername: string | null;
      authName: string | null;
      secretKeyId: string | null;
      secretCiphertext: string | null;
    },
  ): ConnectionAuth {
    if (row.authType === 'none') return { type: 'none' };
    const incomplete = (what: string) =>
      new StepError(`the connection '${row.name}' has no ${what} for its ${row.authType} auth; set it on the connection`, {
        retryable: false,
        code: 'SECRET_NOT_FOUND',
        details: { connection: row.name },
      });
    if (row.secretKeyId === null || row.secretCiphertext === null) throw incomplete('secret');
    const secret = this.open(
      { keyId: row.secretKeyId, ciphertext: row.secretCiphertext },
      // Bound to the origin of the baseUrl the request goes to: a base_url rewritten in the database alone leaves it unreadable.
      connectionSecretBinding({ id: row.id, userId, baseUrl: row.baseUrl }),
      `the secret of the connection '${row.name}'`,
    );
    switch (row.authType) {
      case 'bearer':
        return { type: 'bearer', secret };
      case 'basic':
        if (row.authUsername === null) throw incomplete('username');
        return { type: 'basic', username: row.authUsername, secret };
      case 'header':
      case 'query':
        if (row.authName === null) throw incomplete('name');
        return { type: row.authType, name: row.authName, secret };
    }
  }

  private async readVars(userId: string, need: Exclude<VarsRead, { kind: 'none' }>): Promise<Record<string, unknown>> {
    if (need.kind === 'keys' && need.keys.length === 0) return {};
    // The value exactly as stored (an exactJsonb column, db/schema/exact-jsonb.ts): a stored string
    // that reads as JSON ("42", "true") reaches expressions as that string.
    const rows = await this.db
      .select({ key: variables.key, value: variables.value })
      .from(variables)
      .where(and(eq(variables.userId, userId), eq(variables.secret, false), need.kind === 'keys' ? inArray(variables.key, [...need.keys]) : undefined));
    // fromEntries defines own properties, so a variable named "__proto__" is a plain key.
    return Object.fromEntries(rows.map((row) => [row.key, row.value]));
  }

  private secretRows(userId: string, keys: readonly string[]) {
    return this.db
      .select({ id: variables.id, key: variables.key, secret: variables.secret, secretKeyId: variables.secretKeyId, secretCiphertext: variables.secretCiphertext })
      .from(variables)
      .where(and(eq(variables.userId, userId), inArray(variables.key, [...keys])));
  }

  private async readSecrets(userId: string, keys: readonly string[]): Promise<Map<string, string>> {
    const rows = await this.secretRows(userId, keys);
    const byKey = new Map(rows.map((row) => [row.key, row]));
    const values = new Map<string, string>();
    for (const key of keys) {
      const row = byKey.get(key);
      if (!row || !row.secret || row.secretKeyId === null || row.secretCiphertext === null) {
        throw new StepError(`the secret variable '${key}' does not exist (it was deleted, or made non-secret, after the workflow was saved)`, {
          retryable: false,
          code: 'SECRET_NOT_FOUND',
          details: { key },
        });
      }
      values.set(key, this.open({ keyId: row.secretKeyId, ciphertext: row.secretCiphertext }, { table: 'variables', rowId: row.id, userId }, `the secret variable '${key}'`));
    }
    return values;
  }

  /**
   * The plaintext, or a non-retryable SECRET_UNREADABLE step failure: the row was altered or its
   * key left SECRETS_KEYS, which no retry mends. The operator learns which row from the log (the
   * id, never a value); the service itself goes on.
   */
  private open(sealed: { keyId: string; ciphertext: string }, binding: SecretBinding, what: string): string {
    try {
      return this.keyring.open(sealed, binding);
    } catch (error) {
      if (!(error instanceof SecretUnreadableError)) throw error;
      this.logger.warn({ table: binding.table, rowId: binding.rowId, keyId: sealed.keyId, reason: error.message }, 'a stored secret cannot be decrypted');
      throw new StepError(`${what} cannot be decrypted (it was altered, or its key is no longer configured); set it again`, {
        retryable: false,
        code: 'SECRET_UNREADABLE',
      });
    }
  }

  /**
   * Records that a run used the connection, beside the step's request: at most once a minute per
   * connection from this process, and in SQL only when the stored time is a minute old, so busy
   * workflows cost no write per run. Raw SQL: drizzle's update would also bump updated_at (and a
   * use is not a change: version and updated_at stay). A failure is logged, never the step's.
   */
  private async stampLastUsed(connectionId: string): Promise<void> {
    const now = this.clock();
    const last = this.stampedAt.get(connectionId);
    if (last !== undefined && now - last < LAST_USED_RESOLUTION_MS) return;
    this.stampedAt.set(connectionId, now);
    if (this.stampedAt.size > LAST_USED_MEMORY) {
      for (const [id, at] of this.stampedAt) if (now - at >= LAST_USED_RESOLUTION_MS) this.stampedAt.delete(id);
    }
    try {
      await this.db.execute(
        sql`update ${connections} set last_used_at = now() where id = ${connectionId} and (last_used_at is null or last_used_at < now() - interval '1 minute')`,
      );
    } catch (error) {
      // Stamped again at the next use rather than a minute later.
      this.stampedAt.delete(connectionId);
      this.logger.warn({ err: error, connectionId }, 'could not record when a connection was last used');
    }
  }
}

/** The `Authorization: Basic` credential of RFC 7617, in UTF-8. */
export function basicCredential(username: string, secret: string): string {
  return Buffer.from(`${username}:${secret}`, 'utf8').toString('base64');
}
