import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { request } from 'node:http';

/** The local PostgreSQL cluster (Debian's pg_ctlcluster), when this machine has one we may stop. */
export function localCluster(): { stop(): void; start(): void } | null {
  if (!existsSync('/etc/postgresql')) return null;
  const version = readdirSync('/etc/postgresql').sort().at(-1);
  if (!version) return null;
  const run = (action: 'stop' | 'start') =>
    execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', action, ...(action === 'stop' ? ['-m', 'fast'] : [])], { stdio: 'pipe' });
  return { stop: () => run('stop'), start: () => run('start') };
}

export interface Outcome {
  readonly at: number;
  readonly status: number | 'refused' | 'reset';
  readonly problem: boolean;
  readonly ms: number;
}

/** One request on a fresh connection (no keep-alive), so a refused connection is seen as such. */
export function probe(url: string, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<Outcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    const outgoing = request(url, { agent: false, headers, timeout: timeoutMs }, (response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => {
        const problem = String(response.headers['content-type']).startsWith('application/problem+json') && body.includes('"requestId"');
        resolve({ at: started, status: response.statusCode ?? 0, problem, ms: Date.now() - started });
      });
      response.on('error', () => resolve({ at: started, status: 'reset', problem: false, ms: Date.now() - started }));
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error('timeout')));
    outgoing.on('error', (error: NodeJS.ErrnoException) =>
      resolve({ at: started, status: error.code === 'ECONNREFUSED' ? 'refused' : 'reset', problem: false, ms: Date.now() - started }),
    );
    outgoing.end();
  });
}

export function tally(outcomes: readonly Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const outcome of outcomes) counts[String(outcome.status)] = (counts[String(outcome.status)] ?? 0) + 1;
  return counts;
}
