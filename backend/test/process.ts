import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const backendRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly baseUrl: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  /** Kills the process if it still runs, and waits for it. */
  stop(): Promise<void>;
}

/** A Node process of this suite's Node with only PATH, HOME and `env`, its output kept; `cwd` defaults to backend/. */
export function runNode(nodeArgs: readonly string[], env: Record<string, string | undefined>, cwd = backendRoot) {
  const child = spawn(process.execPath, nodeArgs, {
    cwd,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  return { child, exited, output: () => output };
}

/**
 * Runs an entry of the backend in a child process: a TypeScript one through tsx, a built one
 * (dist/, which the global setup builds) with plain node and `nodeFlags`.
 */
export function runScript(script: string, args: string[], env: Record<string, string | undefined>, nodeFlags: readonly string[] = []) {
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  return runNode([...nodeFlags, ...loader, script, ...args], env);
}

/** What `npm start` runs (backend/package.json): `exec node [flags] dist/server.js`, as flags and entry. */
export function startCommand(): { readonly nodeFlags: string[]; readonly entry: string } {
  const manifest = JSON.parse(readFileSync(path.join(backendRoot, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  const start = manifest.scripts?.start ?? '';
  const match = /^exec node((?: --[\w-]+(?:=\S+)?)*) (dist\/\S+\.js)$/.exec(start);
  if (!match?.[2]) throw new Error(`backend/package.json: expected "start": "exec node [flags] dist/<entry>.js", found "${start}"`);
  return { nodeFlags: (match[1] ?? '').split(' ').filter(Boolean), entry: match[2] };
}

/** Starts the built server as `npm start` does, on a random port, and waits until it listens. */
export async function startServerProcess(env: Record<string, string | undefined>, timeoutMs = 30_000): Promise<ServerProcess> {
  // Better Auth's sign-in/sign-up counters are shared through the database by every test on this
  // machine's address: the spawned servers get the same generous limit as the in-process test apps.
  const { nodeFlags, entry } = startCommand();
  const run = runScript(entry, [], { HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', AUTH_RATE_LIMIT_MAX: '100000', ...env }, nodeFlags);
  const deadline = Date.now() + timeoutMs;
  let baseUrl: string | undefined;
  while (!baseUrl) {
    const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(run.output());
    if (match?.[1]) baseUrl = match[1];
    else if (run.child.exitCode !== null) throw new Error(`server exited early (${run.child.exitCode}):\n${run.output()}`);
    else if (Date.now() > deadline) {
      run.child.kill('SIGKILL');
      throw new Error(`server did not listen within ${timeoutMs} ms:\n${run.output()}`);
    } else await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child: run.child,
    baseUrl,
    output: run.output,
    exited: run.exited,
    async stop() {
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
      await run.exited;
    },
  };
}
