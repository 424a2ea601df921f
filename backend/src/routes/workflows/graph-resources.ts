import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { connections, variables } from '../../db/schema/index.js';
import { hasScheme, originOf, sharesOrigin } from '../../engine/connection-target.js';
import { paramPath, type WorkflowNode } from '../../engine/graph.js';
import { WebhookTriggerParams } from '../../engine/nodes/trigger.js';
import { secretUsage } from '../../engine/secret-templates.js';
import type { ProblemFieldError } from '../../lib/problem.js';
import { ProblemError } from '../../lib/problem.js';

/**
 * The checks of a graph that need its owner's rows (API.md, Connections and Variables), made in
 * the transaction that saves it, after validateGraph: every connection an `http.request` names is
 * one of the user's, a literal absolute url through it has its baseUrl's origin, and every
 * `{{ $secrets.KEY }}` names one of the user's secret variables. A graph that names none of them
 * costs no query.
 *
 * The named connection rows are locked FOR KEY SHARE until the save commits: deleting or renaming
 * a connection locks its row FOR UPDATE and then looks for the workflows that use it, so it either
 * waits for this save and sees the workflow (409), or goes first and this check no longer finds
 * the row (400). KEY SHARE does not wait for a plain update of the row (lastUsedAt).
 */
export async function assertGraphResources(tx: Db, userId: string, nodes: readonly WorkflowNode[]): Promise<void> {
  const connectionUses: { index: number; name: string; literalUrl: string | undefined }[] = [];
  const secretUses: { key: string; path: string }[] = [];
  nodes.forEach((node, index) => {
    // The secret a trigger.webhook checks deliveries with is one of the user's secret variables too.
    if (node.type === 'trigger.webhook') {
      const verify = WebhookTriggerParams.safeParse(node.params).data?.verify;
      if (verify && verify.scheme !== 'none') secretUses.push({ key: verify.secretVariable, path: paramPath(index, ['verify', 'secretVariable']) });
    }
    if (node.type !== 'http.request') return;
    const { connection, url } = node.params;
    if (typeof connection === 'string') {
      // A url with a template is only known when the step runs, which checks it then.
      connectionUses.push({ index, name: connection, literalUrl: typeof url === 'string' && !url.includes('{{') ? url : undefined });
    }
    for (const reference of secretUsage(node.type, node.params).references) secretUses.push({ key: reference.key, path: paramPath(index, reference.path) });
  });
  if (connectionUses.length === 0 && secretUses.length === 0) return;

  const connectionNames = [...new Set(connectionUses.map((use) => use.name))];
  const secretKeys = [...new Set(secretUses.map((use) => use.key))];
  // In id order, as every save locks them: two saves naming the same connections cannot deadlock.
  const namedConnections =
    connectionNames.length === 0
      ? []
      : await tx
          .select({ name: connections.name, baseUrl: connections.baseUrl })
          .from(connections)
          .where(and(eq(connections.userId, userId), inArray(connections.name, connectionNames)))
          .orderBy(asc(connections.id))
          .for('key share');
  const existingSecrets =
    secretKeys.length === 0
      ? []
      : await tx
          .select({ key: variables.key })
          .from(variables)
          .where(and(eq(variables.userId, userId), eq(variables.secret, true), inArray(variables.key, secretKeys)));

  const baseUrlByName = new Map(namedConnections.map((row) => [row.name, row.baseUrl]));
  const secretKeySet = new Set(existingSecrets.map((row) => row.key));
  const errors: ProblemFieldError[] = [];
  for (const use of connectionUses) {
    const baseUrl = baseUrlByName.get(use.name);
    if (baseUrl === undefined) {
      errors.push({ path: paramPath(use.index, ['connection']), message: `you have no connection named '${use.name}'` });
    } else if (use.literalUrl !== undefined && hasScheme(use.literalUrl) && !sharesOrigin(use.literalUrl, baseUrl)) {
      errors.push({
        path: paramPath(use.index, ['url']),
        message: `an absolute url must have the origin of the connection '${use.name}' (${originOf(baseUrl) ?? baseUrl}); or give a path relative to its baseUrl`,
      });
    }
  }
  for (const use of secretUses) {
    if (!secretKeySet.has(use.key)) errors.push({ path: use.path, message: `you have no secret variable named '${use.key}'` });
  }
  if (errors.length > 0) throw new ProblemError(400, 'INVALID_GRAPH', 'The workflow graph is invalid.', { errors });
}
