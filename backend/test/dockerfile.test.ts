import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Copy, Healthcheck, User } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { createDbClient } from '../src/db/client.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';
import {
  composeCommand,
  containerEnvironment,
  execForm,
  imageEnvironment,
  readComposeFile,
  readDockerfile,
  readDockerfileStages,
  repoRoot,
  runtimeCommand,
  type DockerfileStage,
} from './compose-file.js';
import { eventually } from './engine-helpers.js';
import { lacksConcurrentConnections, sampleGraph, uniqueEmail } from './helpers.js';
import { runNode, startCommand } from './process.js';
import { createScratchDatabase } from './scratch.js';

function keywordsOf(stage: DockerfileStage): string[] {
  return stage.instructions.map((instruction) => instruction.getKeyword());
}

async function stages(): Promise<{ build: DockerfileStage; runtime: DockerfileStage }> {
  const all = await readDockerfileStages();
  const runtime = all.at(-1);
  const build = all.find((stage) => stage.name === 'build');
  if (!runtime || !build || runtime === build) throw new Error('the Dockerfile needs a build stage and a separate runtime stage');
  return { build, runtime };
}

function healthcheckCommand(runtime: DockerfileStage): string[] {
  const healthcheck = runtime.instructions.find((instruction): instruction is Healthcheck => instruction instanceof Healthcheck);
  if (!healthcheck) throw new Error('the runtime stage has no HEALTHCHECK');
  expect(healthcheck.getSubcommand()?.getValue()).toBe('CMD');
  // The arguments after the flags and CMD: an exec-form JSON array.
  const content = healthcheck.getArgumentsContent() ?? '';
  const words: unknown = JSON.parse(content.slice(content.indexOf('[')));
  if (!Array.isArray(words) || !words.every((word) => typeof word === 'string')) throw new Error(`HEALTHCHECK CMD is not exec form: ${content}`);
  return words;
}

describe('Dockerfile', () => {
  it('builds in one stage and runs from another, on Node 24 LTS, as a non-root user, in production mode', async () => {
    const { build, runtime } = await stages();
    for (const stage of [build, runtime]) expect(stage.image).toMatch(/^node:\$\{NODE_VERSION\}-([a-z]+-slim|alpine[\d.]*)$/);
    expect(keywordsOf(build)).toContain('RUN');
    expect(keywordsOf(runtime)).not.toContain('RUN');

    const users = runtime.instructions.filter((instruction): instruction is User => instruction instanceof User);
    const user = users.at(-1)?.getArgumentsContent()?.trim();
    expect(user, 'the runtime stage sets USER').toBeDefined();
    expect(['root', '0', '0:0']).not.toContain(user);

    const environment = imageEnvironment(runtime);
    expect(environment.NODE_ENV).toBe('production');
    expect(environment.HOST).toBe('0.0.0.0');
  });

  it('pins the Node version CI tests on (.ci/run)', async () => {
    const ci = await readFile(path.join(repoRoot, '.ci', 'run'), 'utf8');
    const version = (await readDockerfile())
      .getInitialARGs()
      .flatMap((arg) => arg.getProperties())
      .find((property) => property.getName() === 'NODE_VERSION')
      ?.getValue();
    expect(version).toMatch(/^24\.\d+\.\d+$/);
    expect(ci).toContain(`node@${version}`);
  });

  it('starts node itself with npm start`s flags (exec form, no entrypoint, no npm, no shell) and checks /api/ready', async () => {
    const { runtime } = await stages();
    const { command } = runtimeCommand(runtime);
    const start = startCommand();
    expect(command[0]).toBe('node');
    expect(command.slice(1)).toEqual([...start.nodeFlags, start.entry]);
    const check = healthcheckCommand(runtime);
    expect(check[0]).toBe('node');
    expect(check.join(' ')).toContain('/api/ready');
  });

  it('keeps dependencies, builds, data, git, secrets and test artifacts out of the build context (.dockerignore)', async () => {
    const ignored = (await readFile(path.join(repoRoot, '.dockerignore'), 'utf8'))
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'));
    for (const pattern of ['**/node_modules', '**/dist', '.data', '.git', '.env', 'backend/test/.artifacts']) expect(ignored).toContain(pattern);
    // The example is the only .env file that may go in: it holds no secret.
    expect(ignored.filter((line) => line.startsWith('!'))).toEqual(['!.env.example']);
  });

  it('copies only built files and production dependencies from the build stage', async () => {
    const { runtime } = await stages();
    const copies = runtime.instructions.filter((instruction): instruction is Copy => instruction instanceof Copy);
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) expect(copy.getFromFlag()?.getValue(), copy.getArgumentsContent() ?? '').toBe('build');
    const sources = copies.flatMap((copy) => copy.getArguments().slice(0, -1).map((argument) => argument.getValue()));
    expect(sources).not.toContain('/app/backend/src');
    expect(sources).toContain('/app/backend/dist');
    for (const instruction of runtime.instructions) {
      if (instruction.getKeyword() === 'CMD' || instruction.getKeyword() === 'ENTRYPOINT') expect(execForm(instruction), 'exec form').toBeDefined();
    }
  });
});

/** The runtime stage's file system, built here: each `COPY --from=build` of a repository path (the build stage's /app). */
async function stageRuntimeFiles(runtime: DockerfileStage, root: string): Promise<void> {
  let workdir = '/';
  for (const instruction of runtime.instructions) {
    if (instruction.getKeyword() === 'WORKDIR') workdir = path.posix.resolve(workdir, instruction.getArgumentsContent()?.trim() ?? '');
    if (!(instruction instanceof Copy)) continue;
    const [source, destination] = instruction.getArguments().map((argument) => argument.getValue());
    if (!source || !destination || !source.startsWith('/app/')) throw new Error(`unexpected COPY ${instruction.getArgumentsContent() ?? ''}`);
    const from = path.join(repoRoot, source.slice('/app/'.length));
    const to = path.join(root, path.posix.resolve(workdir, destination));
    await mkdir(path.dirname(to), { recursive: true });
    if (path.basename(from) === 'node_modules') await stageProductionDependencies(from, to);
    else await cp(from, to, { recursive: true });
  }
}

/**
 * What `npm prune --omit=dev` leaves of node_modules: every top-level package the lockfile does not
 * mark dev-only, each linked (not copied: hundreds of MB) from the installed tree. A built module
 * importing a dev dependency then fails here as it would in the image.
 */
async function stageProductionDependencies(installed: string, staged: string): Promise<void> {
  const lock = JSON.parse(await readFile(path.join(repoRoot, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; link?: boolean }>;
  };
  for (const [key, entry] of Object.entries(lock.packages)) {
    const name = /^node_modules\/((?:@[^/]+\/)?[^/]+)$/.exec(key)?.[1];
    if (!name || entry.dev || entry.link) continue;
    await mkdir(path.dirname(path.join(staged, name)), { recursive: true });
    await symlink(path.join(installed, name), path.join(staged, name), 'dir');
  }
}

interface Running {
  readonly exited: Promise<number | string>;
  output(): string;
  /** True once the process has ended (so a wait for it can stop with its output). */
  ended(): boolean;
  signal(name: NodeJS.Signals): void;
}

/** Runs an image command here: `node` is this suite's Node, the working directory the staged WORKDIR. */
function runCommand(command: readonly string[], cwd: string, env: Record<string, string>): Running {
  const [program, ...args] = command;
  if (program !== 'node') throw new Error(`the command must start node directly, not ${program}`);
  const { child, exited, output } = runNode(args, env, cwd);
  return {
    exited,
    output,
    ended: () => child.exitCode !== null || child.signalCode !== null,
    signal: (name) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(name);
    },
  };
}

/** util-linux's `script` (on Debian, always; BSD's, on macOS, takes other flags): it runs a command at a pseudo-terminal. */
const scriptInstalled = spawnSync('script', ['--version'], { encoding: 'utf8' }).stdout?.includes('util-linux') ?? false;

describe('the image`s commands, run here from the runtime stage`s files only', () => {
  // The stack needs a real PostgreSQL: api, worker and LISTEN connections at once.
  it.skipIf(lacksConcurrentConnections())(
    'migrate, api (the CMD) and worker start, run a workflow, pass the healthcheck, and exit 0 on SIGTERM',
    async () => {
      const { runtime } = await stages();
      const { command, workdir } = runtimeCommand(runtime);
      const compose = await readComposeFile('compose.yml');
      const root = await mkdtemp(path.join(tmpdir(), 'autonode-image-'));
      const database = await createScratchDatabase();
      const running: Running[] = [];
      try {
        // dist/ is this tree's build: the global setup built it, as the Dockerfile's build stage does.
        await stageRuntimeFiles(runtime, root);
        const cwd = path.join(root, workdir);
        // What .env gives compose; the database is this test's, the address a free loopback port.
        const variables = { POSTGRES_PASSWORD: 'unused', BETTER_AUTH_SECRET: randomBytes(32).toString('base64'), SECRETS_KEYS: generateKeyEntry('image') };
        const local = { DATABASE_URL: database.url, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info' };

        const migrate = runCommand(composeCommand(compose, 'migrate'), cwd, { ...(await containerEnvironment(compose, 'migrate', variables)), ...local });
        expect(await migrate.exited, migrate.output()).toBe(0);

        const api = runCommand(command, cwd, { ...(await containerEnvironment(compose, 'api', variables)), ...local });
        running.push(api);
        const baseUrl = await eventually(
          async () => {
            if (api.ended()) throw new Error(`the api exited:\n${api.output()}`);
            return /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(api.output())?.[1];
          },
          30_000,
          'the api listening',
        );
        expect((await fetch(`${baseUrl}/api/ready`)).status).toBe(200);
        const port = new URL(baseUrl).port;
        const healthcheck = runCommand(healthcheckCommand(runtime), cwd, { PORT: port });
        expect(await healthcheck.exited, healthcheck.output()).toBe(0);

        const worker = runCommand(composeCommand(compose, 'worker'), cwd, { ...(await containerEnvironment(compose, 'worker', variables)), ...local });
        running.push(worker);
        await database.use(async (client) =>
          eventually(async () => {
            if (worker.ended()) throw new Error(`the worker exited:\n${worker.output()}`);
            const rows = await client.sql`select 1 from pg_stat_activity where datname = current_database() and application_name = 'autonode-worker'`;
            return rows.length > 0;
          }, 30_000, 'the worker connected'),
        );

        // A run through the api, carried out by the worker (the api has no engine): the transform
        // runs in an expression worker process, whose entry is a file of the staged dist too.
        const origin = new URL(String((await containerEnvironment(compose, 'api', variables)).AUTH_BASE_URL)).origin;
        const signUp = await fetch(`${baseUrl}/api/auth/sign-up/email`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin },
          body: JSON.stringify({ name: 'Image', email: uniqueEmail('image'), password: 'correct-horse-battery' }),
        });
        expect(signUp.status, await signUp.clone().text()).toBe(200);
        const cookie = signUp.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ');
        const headers = { 'content-type': 'application/json', cookie, origin };
        const created = await fetch(`${baseUrl}/api/v1/workflows`, { method: 'POST', headers, body: JSON.stringify({ name: 'image', ...sampleGraph }) });
        expect(created.status, await created.clone().text()).toBe(201);
        const { id: workflowId } = (await created.json()) as { id: string };
        const run = await fetch(`${baseUrl}/api/v1/workflows/${workflowId}/run`, { method: 'POST', headers, body: JSON.stringify({ input: { n: 21 } }) });
        expect(run.status, await run.clone().text()).toBe(202);
        const { id: executionId } = (await run.json()) as { id: string };
        const finished = await eventually(async () => {
          const execution = (await (await fetch(`${baseUrl}/api/v1/executions/${executionId}`, { headers: { cookie } })).json()) as { status: string; output?: unknown };
          return ['completed', 'failed', 'cancelled'].includes(execution.status) ? execution : undefined;
        }, 30_000, 'the execution finished');
        expect(finished.status, JSON.stringify(finished)).toBe('completed');
        expect(JSON.stringify(finished.output)).toContain('42');

        // Key rotation ships in the image too (README, Secrets): the same files, the api's environment.
        const rotate = runCommand(['node', 'dist/rotate-secrets.js'], cwd, { ...(await containerEnvironment(compose, 'api', variables)), ...local });
        expect(await rotate.exited, rotate.output()).toBe(0);
        expect(rotate.output()).toMatch(/^connections: 0 rewrapped, \d+ already current, 0 unreadable$/m);
        // At a terminal too (`docker compose run` gives one), where the logger would pretty-print in
        // development: the image has no pino-pretty, and logs JSON instead of failing to start.
        if (scriptInstalled) {
          const rotateEnvironment = { ...(await containerEnvironment(compose, 'api', variables)), ...local, PATH: process.env.PATH ?? '' };
          const atTerminal = spawnSync('script', ['-qec', `${JSON.stringify(process.execPath)} dist/rotate-secrets.js`, '/dev/null'], { cwd, env: rotateEnvironment, encoding: 'utf8' });
          expect(atTerminal.status, atTerminal.stdout).toBe(0);
          expect(atTerminal.stdout).toMatch(/connections: 0 rewrapped/);
        }

        api.signal('SIGTERM');
        worker.signal('SIGTERM');
        expect(await api.exited, api.output()).toBe(0);
        expect(await worker.exited, worker.output()).toBe(0);
        // With the api gone the same healthcheck fails: it reports readiness, not merely that it ran.
        expect(await runCommand(healthcheckCommand(runtime), cwd, { PORT: port }).exited).toBe(1);
      } finally {
        for (const child of running) child.signal('SIGKILL');
        await Promise.all(running.map((child) => child.exited));
        await database.drop();
        await rm(root, { recursive: true, force: true });
      }
    },
    120_000,
  );
});
